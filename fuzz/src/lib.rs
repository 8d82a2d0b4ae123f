//! The modules under test, compiled from the main tree's sources. They are pure Rust (no
//! Python, no I/O), which is what can be fuzzed without an interpreter: the JSON writer's
//! byte level (strings, floats) is; its walk over Python containers and the Python-object
//! half of the reader need a live interpreter and are not fuzzed.

// `request/parse.rs` re-exports the forwarding-header helpers as `cello_server::forwarded`:
// here that name is this crate, whose `forwarded` is the same file.
extern crate self as cello_server;

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

#[path = "../../python/src/json/text.rs"]
pub mod json_text;

#[path = "../../python/src/request/form_parse.rs"]
pub mod form_parse;

/// What `forwarded.rs` takes from the server crate (its `resolve`, which the fuzz targets
/// do not call, needs them to compile): the client info, and a state that trusts no one.
pub mod ext {
    pub struct ClientInfo {
        pub ip: std::net::IpAddr,
        pub scheme: Option<&'static str>,
        pub host: Option<String>,
    }
}

pub mod service {
    pub struct AppState;
    impl AppState {
        pub fn is_trusted(&self, _ip: std::net::IpAddr) -> bool {
            false
        }
    }
}

#[path = "../../server/src/forwarded.rs"]
#[allow(dead_code)]
pub mod forwarded;
