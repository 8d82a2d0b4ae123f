//! Router: compile templates from the input, then look paths up in them and in a fixed table.
//! Input: lines; the first line holding `=` ends the template lines (one template per line);
//! the remaining lines are request paths. Checked: nothing panics, and a safe catch-all
//! (`{rest:path}`) never hands out a value that could leave a directory.
#![no_main]

use std::path::{Component, Path};

use cello_fuzz::router::{is_safe_relative_path, Lookup, Router, RouterBuilder};
use http::Method;
use libfuzzer_sys::fuzz_target;

const FIXED: &[&str] = &[
    "/",
    "/users/{id:int}",
    "/users/{name:re(^[a-z-]{2,}$)}",
    "/items/{id:uuid}",
    "/f/{x:float}",
    "/static/{rest:path}",
    "/star/{*rest}",
    "/raw/{rest:path(unsafe)}",
    "/a/{b}/c/{d}",
];

fn fixed() -> Router<usize> {
    let mut b = RouterBuilder::new();
    for (i, t) in FIXED.iter().enumerate() {
        b.add(&[Method::GET], t, i).expect("fixed templates compile");
    }
    b.build().expect("fixed table builds")
}

fn check_safe(value: &str) {
    assert!(is_safe_relative_path(value), "unsafe value matched: {value:?}");
    for c in Path::new(value).components() {
        assert!(
            matches!(c, Component::Normal(_)),
            "component {c:?} in a safe value {value:?}"
        );
    }
    assert!(!value.contains('\0') && !value.contains('\\'), "{value:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let mut builder = RouterBuilder::new();
    for (i, t) in lines.by_ref().take_while(|l| !l.contains('=')).enumerate().take(16) {
        let _ = builder.add(&[Method::GET, Method::POST], t, i);
    }
    let custom = builder.build().ok();
    let table = fixed();
    for path in lines.take(16) {
        if let Some(r) = &custom {
            let _ = r.lookup(&Method::GET, path);
            let _ = r.lookup(&Method::OPTIONS, path);
        }
        match table.lookup(&Method::GET, path) {
            Lookup::Found { route, params, .. } => {
                let t = FIXED[route.target];
                if t.starts_with("/static/") || t.starts_with("/star/") {
                    check_safe(&params[0].1);
                }
            }
            Lookup::NotFound | Lookup::BadPath | Lookup::MethodNotAllowed { .. } | Lookup::Options { .. } => {}
        }
        let _ = table.lookup(&Method::HEAD, path);
        let _ = table.lookup(&Method::DELETE, path);
    }
});
