//! The JSON writer's byte level, `json/text.rs`: how every string and float of a response
//! body is spelled. Checked against independent references:
//! - `write_str` of any text is exactly what serde_json writes (the escapes of
//!   `json.dumps(ensure_ascii=False)`), and reads back as the same text;
//! - `write_float` of any finite double reads back as the same double, with as few digits
//!   as Rust's shortest `{:e}` (the same digits but on an exact tie, which Python rounds
//!   half to even), laid out as Python's `repr()`; non-finite values are `null`.
#![no_main]

use cello_fuzz::json_text::{write_float, write_str};
use libfuzzer_sys::fuzz_target;

/// Significant digits and decimal exponent (`d.ddd × 10^exp`) of a finite, non-zero
/// number spelled positionally or with an exponent.
fn digits_exp(s: &str) -> (String, i32) {
    let s = s.trim_start_matches('-');
    let (mant, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().expect("an integer exponent")),
        None => (s, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let all = format!("{int}{frac}");
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0').to_owned();
    (digits, exp + int.len() as i32 - 1 - lead as i32)
}

/// Python's `repr(float)` layout for these digits: exponent form when the decimal point
/// would be more than 4 places left of the first digit or more than 16 right of it.
fn python_layout(neg: bool, digits: &str, exp: i32) -> String {
    let decpt = exp + 1;
    let nd = digits.len() as i32;
    let body = if decpt <= -4 || decpt > 16 {
        let rest = &digits[1..];
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}{dot}e{sign}{:02}", &digits[..1], exp.unsigned_abs())
    } else if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat(decpt.unsigned_abs() as usize))
    } else if decpt >= nd {
        format!("{digits}{}.0", "0".repeat((decpt - nd) as usize))
    } else {
        let p = decpt as usize;
        format!("{}.{}", &digits[..p], &digits[p..])
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

/// Python's repr of `v`, given the writer's digits: they must be as short as Rust's own
/// shortest round-trip digits (`{:e}`) and equal to them, except on an exact tie, which
/// Python (and the writer) round half to even where Rust rounds half up.
fn check_float(v: f64, written: &str) {
    let back: f64 = written.parse().expect("a float");
    // Rust's parser is exact (serde_json's default one may be off by an ULP).
    assert_eq!(back.to_bits(), v.to_bits(), "{written} reads back as {back:e}");
    assert!(
        serde_json::from_str::<serde_json::Value>(written).is_ok(),
        "{written} is not JSON"
    );
    if v == 0.0 {
        assert_eq!(written, if v.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    let (digits, exp) = digits_exp(written);
    let (rust_digits, rust_exp) = digits_exp(&format!("{v:e}"));
    assert_eq!(digits.len(), rust_digits.len(), "{written} vs {v:e}: not the shortest");
    if (&digits, exp) != (&rust_digits, rust_exp) {
        let last = |d: &str| d.as_bytes()[d.len() - 1] - b'0';
        assert!(
            last(&digits) % 2 == 0 && last(&rust_digits) % 2 == 1,
            "{written} vs {v:e}: not a tie rounded to even"
        );
    }
    assert_eq!(
        written,
        python_layout(v.is_sign_negative(), &digits, exp),
        "bits {:#x}",
        v.to_bits()
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    write_str(&mut out, &text);
    assert_eq!(out, serde_json::to_vec(&text).unwrap(), "escaping of {text:?}");
    assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), text);

    for chunk in data.chunks_exact(8) {
        let v = f64::from_le_bytes(chunk.try_into().unwrap());
        let mut out = Vec::new();
        write_float(&mut out, v);
        let s = std::str::from_utf8(&out).unwrap();
        if !v.is_finite() {
            assert_eq!(s, "null");
            continue;
        }
        check_float(v, s);
    }
});
