//! The modules under test, compiled from the main tree's sources. They are pure Rust (no
//! Python, no I/O), which is what can be fuzzed without an interpreter: the JSON *writer*
//! and the Python-object half of the reader need a live interpreter and are not fuzzed.

/// The router's error type, reduced to what `router.rs` uses.
pub mod error {
    #[derive(Debug)]
    pub enum Error {
        Route { path: String, reason: String },
    }
    pub type Result<T> = std::result::Result<T, Error>;
}

#[path = "../../server/src/router.rs"]
#[allow(dead_code)]
pub mod router;

#[path = "../../python/src/request/parse.rs"]
#[allow(dead_code)]
pub mod parse;

#[path = "../../python/src/json/scan.rs"]
pub mod scan;
