//! Every `CELLO_*` environment variable, declared once. Rust reads them through [`var`] (and the
//! name constants below, e.g. in clap's `env = ...`), Python through `cello._env` (which reads
//! this table via `_cello.env_vars()`); `docs/env.md` is generated from it ([`markdown`]).
//! Names and behaviour are those the code had before the table; the operator's queue-binding
//! contract (`tests/operator/env-contract.json`) is checked against the family entry.

use serde::Serialize;

/// One variable.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EnvVar {
    /// The name; `<NAME>`/`<FIELD>` mark a family (`CELLO_QUEUE_<NAME>_<FIELD>`).
    pub name: &'static str,
    /// `bool` (1/true/yes/on, 0/false/no/off), `int`, `float`, `str`, `list` (comma-separated), `path`, `url`.
    pub kind: &'static str,
    /// Value when unset, as written in the docs (empty: unset means off / not used).
    pub default: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Who reads it (`cello run`, `app.run()`, `cello-dataplane`, operator, ...).
    pub read_by: &'static str,
    /// Who sets it for the process, if not the user (the operator's pod spec).
    pub set_by: &'static str,
    /// The Rust constant naming it (`cello_config::env::HOST`).
    pub rust: &'static str,
}

macro_rules! table {
    ($($const:ident = $name:literal, $kind:literal, $default:literal, $read:literal, $set:literal, $desc:literal;)*) => {
        $(
            #[doc = concat!("`", $name, "`: ", $desc)]
            pub const $const: &str = $name;
        )*
        /// The table, in documentation order.
        pub static VARS: &[EnvVar] = &[$(EnvVar {
            name: $name,
            kind: $kind,
            default: $default,
            description: $desc,
            read_by: $read,
            set_by: $set,
            rust: stringify!($const),
        }),*];
    };
}

table! {
    HOST = "CELLO_HOST", "str", "127.0.0.1", "cello run, app.run(), cello-dataplane", "",
        "Interface to bind.";
    PORT = "CELLO_PORT", "int", "8000", "cello run, app.run(), cello-dataplane", "",
        "Port to bind (0 picks a free one); `PORT` is read after it.";
    WORKERS = "CELLO_WORKERS", "str", "1", "cello run, app.run()", "",
        "Worker processes: a number, or `auto` (the CPU quota).";
    RELOAD = "CELLO_RELOAD", "bool", "false", "cello run, app.run()", "",
        "Restart when `.py` files change (development).";
    RELOADER_PORT = "CELLO_RELOADER_PORT", "int", "", "cello run (internal)", "the reloader",
        "Port the reloader hands to the process it restarts.";
    ENV = "CELLO_ENV", "str", "development", "cello run, app.run()", "operator",
        "Environment name (`production`, `development`, ...).";
    DEBUG = "CELLO_DEBUG", "bool", "false", "cello run, app.run()", "",
        "Debug mode: tracebacks in error responses, access log on.";
    LOG_LEVEL = "CELLO_LOG_LEVEL", "str", "info", "cello run, app.run()", "",
        "Log level: debug, info, warning, error or critical.";
    LOG_FORMAT = "CELLO_LOG_FORMAT", "str", "text", "cello run, app.run(), cello.observability", "",
        "Log line format: `text` or `json`.";
    LOG = "CELLO_LOG", "str", "info", "cello-dataplane", "",
        "tracing filter of the data-plane sidecar (`RUST_LOG` syntax).";
    HEALTH_CHECKS = "CELLO_HEALTH_CHECKS", "bool", "", "cello run, app.run(), App.server_config()", "",
        "Serve `/health/live`, `/ready` and `/startup` (off turns them off even when enabled in code).";
    ACCESS_LOG = "CELLO_ACCESS_LOG", "bool", "false", "cello run, app.run()", "",
        "Log one line per request on `cello.access`.";
    ROOT_PATH = "CELLO_ROOT_PATH", "str", "", "cello run, app.run()", "",
        "Path prefix the app is mounted under behind a proxy (ASGI `root_path`).";
    FORWARDED_ALLOW_IPS = "CELLO_FORWARDED_ALLOW_IPS", "list", "", "cello run, app.run()", "",
        "Proxy IPs/CIDRs whose `Forwarded`/`X-Forwarded-*` headers are trusted, or `*`.";
    TIMEOUT_GRACEFUL_SHUTDOWN = "CELLO_TIMEOUT_GRACEFUL_SHUTDOWN", "float", "30", "cello run, app.run()", "operator",
        "Seconds in-flight requests may take to finish on shutdown.";
    SHUTDOWN_TIMEOUT = "CELLO_SHUTDOWN_TIMEOUT", "float", "30", "cello-dataplane", "operator",
        "Seconds the sidecar drains on shutdown (the operator sets it from the pod's drain budget).";
    WORKER_TIMEOUT = "CELLO_WORKER_TIMEOUT", "float", "30", "cello run, app.run()", "",
        "Seconds a worker's Python thread may go without turning its event loop before `/health/live` answers 503 and the supervisor replaces the worker (`timeouts.workerTimeout`).";
    MAX_RESTARTS = "CELLO_MAX_RESTARTS", "int", "5", "cello run, app.run()", "",
        "Worker crashes per minute after which every restart waits the full backoff (restarts never stop).";
    MAX_CONNECTIONS_PER_IP = "CELLO_MAX_CONNECTIONS_PER_IP", "int", "", "cello run, app.run(), cello-dataplane", "",
        "Open connections one client IP may hold per worker (`limits.maxConnectionsPerIp`); unset: no cap.";
    CGROUP_ROOT = "CELLO_CGROUP_ROOT", "path", "/sys/fs/cgroup", "cello run (workers=auto)", "",
        "Where the cgroup CPU quota is read from.";
    CONFIG = "CELLO_CONFIG", "path", "", "app.run(), cello run, cello-dataplane", "operator",
        "A `cello.yaml` (ServerConfig) overlaid on the code's configuration.";
    METRICS_DIR = "CELLO_METRICS_DIR", "path", "", "workers, cello-server metrics", "the supervisor",
        "Directory where workers share metric snapshots (one `/metrics` for all workers).";
    IO_THREADS = "CELLO_IO_THREADS", "int", "1", "the embedded server (_cello)", "",
        "tokio I/O threads per worker.";
    INLINE = "CELLO_INLINE", "str", "auto", "cello run, app.run()", "",
        "`auto`, `on` or `off`: sync handlers that proved fast run on the I/O thread instead of being handed to the loop thread. `auto`: when workers are at least the CPUs the process may use.";
    UPSTREAM = "CELLO_UPSTREAM", "url", "", "cello-dataplane", "operator",
        "The app the sidecar proxies to.";
    OPERATOR_PORT = "CELLO_OPERATOR_PORT", "int", "8080", "operator", "",
        "Port of the operator's `/metrics` and `/health`.";
    OPERATOR_HOST = "CELLO_OPERATOR_HOST", "str", "", "operator", "",
        "Address of the operator's `/metrics` and `/health` (default: `POD_IP`, else 127.0.0.1).";
    LEADER_ELECTION = "CELLO_LEADER_ELECTION", "bool", "false", "operator", "chart",
        "`true`: elect a leader through a Lease (needs `POD_NAME` and `POD_NAMESPACE`).";
    TLS_CERT_FILE = "CELLO_TLS_CERT_FILE", "path", "", "cello run, app.run(), cello-dataplane", "operator",
        "Serve HTTPS with this PEM certificate chain (`--ssl-certfile`; the operator mounts it for `spec.tls` with `termination: pod`).";
    TLS_KEY_FILE = "CELLO_TLS_KEY_FILE", "path", "", "cello run, app.run(), cello-dataplane", "operator",
        "PEM private key (PKCS#8, RSA or EC) of `CELLO_TLS_CERT_FILE` (`--ssl-keyfile`).";
    TLS_CA_FILE = "CELLO_TLS_CA_FILE", "path", "", "cello run, app.run(), cello-dataplane", "",
        "PEM CA bundle: clients must present a certificate it signs (mutual TLS, `--ssl-ca-certs`).";
    SECRET_KEY = "CELLO_SECRET_KEY", "str", "", "enable_session, enable_csrf, cello-dataplane", "",
        "Default key of sessions and CSRF tokens (`SessionConfig.secret`, `enable_csrf(secret=)`); at least 32 bytes. Unset with `CELLO_ENV=production`: startup error; otherwise a random key and a warning.";
    CONSUMER = "CELLO_CONSUMER", "str", "", "(nothing yet)", "operator",
        "Name of the consumer a consumer Deployment runs.";
    QUEUES = "CELLO_QUEUES", "list", "", "cello.bindings", "operator",
        "Names of the queue bindings (see `CELLO_QUEUE_<NAME>_<FIELD>`).";
    QUEUE_PREFIX = "CELLO_QUEUE_<NAME>_<FIELD>", "str", "", "cello.bindings", "operator",
        "One queue binding: `<NAME>` upper case with `-` → `_`; `<FIELD>` is `KIND` (kafka | rabbitmq | redis | sqs) and, per kind, kafka `BOOTSTRAP_SERVERS` `TOPIC` `GROUP` `PASSWORD`, rabbitmq `URL` `QUEUE`, redis `ADDRESS` `LIST` or `STREAM` `GROUP`, `PASSWORD`, sqs `QUEUE_URL` `REGION` `ENDPOINT` `ACCESS_KEY_ID` `SECRET_ACCESS_KEY`.";
}

/// The declared entry of `name` (a family member such as `CELLO_QUEUE_ORDERS_KIND` matches its family).
pub fn lookup(name: &str) -> Option<&'static EnvVar> {
    VARS.iter().find(|v| match v.name.split_once('<') {
        Some((prefix, _)) => name.starts_with(prefix) && name.len() > prefix.len(),
        None => v.name == name,
    })
}

/// Read a declared variable (`std::env::var` semantics). Reading an undeclared name is a bug:
/// debug builds panic on it so tests catch it.
pub fn var(name: &str) -> Option<String> {
    debug_assert!(lookup(name).is_some(), "{name} is not declared in cello_config::env");
    std::env::var(name).ok()
}

/// `docs/env.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Environment variables\n\n<!-- generated from config/src/env.rs by `make generate`; do not edit -->\n\n\
         Every `CELLO_*` variable Cello reads or sets. Flags win over variables, variables over\n\
         `app.run()` arguments and defaults. Booleans take `1/true/yes/on` and `0/false/no/off`.\n\n\
         | variable | type | default | read by | set by | meaning |\n|---|---|---|---|---|---|\n",
    );
    for v in VARS {
        let cell = |s: &str| {
            if s.is_empty() {
                "–".to_owned()
            } else {
                s.replace('|', "\\|")
            }
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            v.name,
            v.kind,
            if v.default.is_empty() {
                "–".to_owned()
            } else {
                format!("`{}`", v.default)
            },
            cell(v.read_by),
            cell(v.set_by),
            cell(v.description),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for v in VARS {
            assert!(v.name.starts_with("CELLO_"), "{}", v.name);
            assert!(seen.insert(v.name), "{} twice", v.name);
        }
        assert_eq!(lookup("CELLO_QUEUE_ORDERS_KIND").map(|v| v.name), Some(QUEUE_PREFIX));
        assert_eq!(lookup(QUEUES).map(|v| v.name), Some("CELLO_QUEUES"));
        assert!(lookup("CELLO_NOPE").is_none());
    }
}
