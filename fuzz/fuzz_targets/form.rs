//! `application/x-www-form-urlencoded` bodies through `request/form_parse.rs::urlencoded`
//! (what `request.form()` uses). Checked: nothing panics, decoding is total, and the
//! decoded pairs survive a round trip through an encoder unchanged.
#![no_main]

use cello_fuzz::form_parse::urlencoded;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = urlencoded(data);
    assert!(parsed.files.is_empty());
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(parsed.fields.iter())
        .finish();
    let again = urlencoded(encoded.as_bytes());
    assert_eq!(again.fields, parsed.fields, "round trip of {encoded:?}");
});
