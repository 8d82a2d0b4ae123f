//! Edge middleware switches of the data plane: CORS, compression, request ids,
//! conditional requests and the access-log layer's options (issue 10).
//! Each is an optional `ServerConfig` section; present means on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::{invalid, Result};

/// Cross-origin resource sharing (`app.enable_cors(...)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact (`https://app.example.com`), `*`, or a pattern with one `*`
    /// in the host (`https://*.example.com`).
    pub origins: Vec<String>,
    /// Methods a preflight allows (default: GET, HEAD, POST, PUT, PATCH, DELETE).
    pub methods: Vec<String>,
    /// Request headers a preflight allows; empty: the ones the browser asks for.
    pub headers: Vec<String>,
    /// `Access-Control-Allow-Credentials: true` (then `*` is not allowed in `origins`).
    pub credentials: bool,
    /// `Access-Control-Max-Age` in seconds for preflight answers.
    #[serde(alias = "max_age")]
    pub max_age: Option<u64>,
    /// Response headers the browser may read (`Access-Control-Expose-Headers`).
    #[serde(alias = "expose_headers")]
    pub expose_headers: Vec<String>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            origins: vec!["*".into()],
            methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec(),
            headers: Vec::new(),
            credentials: false,
            max_age: None,
            expose_headers: Vec::new(),
        }
    }
}

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl CorsConfig {
    /// Origins are well-formed and `*` is never combined with credentials.
    pub fn validate(&self) -> Result<()> {
        if self.origins.is_empty() {
            return Err(invalid("cors.origins", "list at least one origin (or \"*\")"));
        }
        for o in &self.origins {
            if o == "*" {
                continue;
            }
            let ok = (o.starts_with("http://") || o.starts_with("https://"))
                && o.matches('*').count() <= 1
                && !o.ends_with('/')
                && !o.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',');
            if !ok {
                return Err(invalid(
                    "cors.origins",
                    format!("`{o}` is not an origin (scheme://host[:port], one `*` allowed in the host)"),
                ));
            }
        }
        if self.credentials && self.origins.iter().any(|o| o == "*") {
            return Err(invalid(
                "cors",
                "origins=[\"*\"] together with credentials=True is refused: browsers reject \
                 `Access-Control-Allow-Origin: *` on credentialed requests, and echoing every \
                 origin would let any site read users' responses; list the allowed origins",
            ));
        }
        for (field, list) in [
            ("cors.methods", &self.methods),
            ("cors.headers", &self.headers),
            ("cors.exposeHeaders", &self.expose_headers),
        ] {
            if let Some(bad) = list.iter().find(|m| !token(m)) {
                return Err(invalid(field, format!("`{bad}` is not a valid HTTP token")));
            }
        }
        Ok(())
    }
}

/// Response compression (`app.enable_compression(...)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CompressionConfig {
    /// Bodies smaller than this (bytes, when known) are sent as they are.
    #[serde(alias = "min_size")]
    pub min_size: u64,
    /// Encodings offered, in the server's order of preference when q-values tie.
    #[schemars(extend("items" = {"type": "string", "enum": ["br", "zstd", "gzip"]}))]
    pub algorithms: Vec<String>,
    /// Compression level (gzip 0-9, br 0-11, zstd 1-22); unset: each codec's fast default.
    #[schemars(range(max = 22))]
    pub level: Option<u32>,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            min_size: 1024,
            algorithms: ["br", "zstd", "gzip"].map(String::from).to_vec(),
            level: None,
        }
    }
}

impl CompressionConfig {
    /// Known algorithms only, at least one.
    pub fn validate(&self) -> Result<()> {
        check_fields("compression", self)?;
        if self.algorithms.is_empty() {
            return Err(invalid("compression.algorithms", "list at least one of br, zstd, gzip"));
        }
        if let Some(a) = self
            .algorithms
            .iter()
            .find(|a| !matches!(a.as_str(), "br" | "zstd" | "gzip"))
        {
            return Err(invalid(
                "compression.algorithms",
                format!("unknown algorithm `{a}` (use br, zstd or gzip)"),
            ));
        }
        Ok(())
    }
}

/// Request ids (`app.enable_request_id(header_name=...)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestIdConfig {
    /// Header read from the request and echoed on the response.
    #[serde(alias = "header_name")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub header_name: String,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self {
            header_name: "X-Request-ID".into(),
        }
    }
}

impl RequestIdConfig {
    /// The header name is a valid token.
    pub fn validate(&self) -> Result<()> {
        check_fields("requestId", self)
    }
}

/// Conditional requests (`app.enable_etag()`): ETags for buffered bodies, 304 and 412.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct EtagConfig {
    /// Largest buffered body (bytes) hashed for an ETag; larger bodies get none.
    #[serde(alias = "max_size")]
    pub max_size: Option<u64>,
}

/// Access-log layer options (`app.enable_logging(exclude_paths=..., format=...)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Paths (exact, or a prefix ending in `*`) that are not logged.
    #[serde(alias = "exclude_paths")]
    pub exclude_paths: Vec<String>,
    /// `common` (one text line), `json` (one JSON object per line), or a template with
    /// `{client} {method} {path} {version} {status} {size} {duration_ms} {request_id}
    /// {trace_id}` placeholders.
    pub format: String,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            exclude_paths: Vec::new(),
            format: "common".into(),
        }
    }
}

/// The placeholders an access-log template may use.
pub const ACCESS_LOG_FIELDS: [&str; 10] = [
    "client",
    "method",
    "path",
    "version",
    "status",
    "size",
    "duration_ms",
    "request_id",
    "trace_id",
    "span_id",
];

impl AccessLogConfig {
    /// The format is `common`, `json` or a template of known placeholders.
    pub fn validate(&self) -> Result<()> {
        if matches!(self.format.as_str(), "common" | "json") {
            return Ok(());
        }
        let mut rest = self.format.as_str();
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else {
                return Err(invalid("accessLogOptions.format", "unclosed `{` in the template"));
            };
            let name = &rest[start + 1..start + len];
            if !ACCESS_LOG_FIELDS.contains(&name) {
                return Err(invalid(
                    "accessLogOptions.format",
                    format!("unknown placeholder `{{{name}}}`; use {}", ACCESS_LOG_FIELDS.join(", ")),
                ));
            }
            rest = &rest[start + len + 1..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_with_credentials_is_refused() {
        let c = CorsConfig {
            credentials: true,
            ..CorsConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("credentials=True is refused"), "{err}");
        let ok = CorsConfig {
            origins: vec!["https://*.example.com".into()],
            credentials: true,
            ..CorsConfig::default()
        };
        ok.validate().unwrap();
        let bad = CorsConfig {
            origins: vec!["example.com".into()],
            ..CorsConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn compression_and_log_formats_are_checked() {
        let c = CompressionConfig {
            algorithms: vec!["lz4".into()],
            ..CompressionConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("lz4"));
        let l = AccessLogConfig {
            format: "{method} {nope}".into(),
            ..AccessLogConfig::default()
        };
        assert!(l.validate().unwrap_err().to_string().contains("nope"));
        AccessLogConfig {
            format: "{method} {path} {status} {request_id}".into(),
            ..AccessLogConfig::default()
        }
        .validate()
        .unwrap();
    }
}
