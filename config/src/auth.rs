//! Authentication, sessions and rate limiting (issue 11's layers).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::{invalid, Result};
use crate::Secret;

/// An HTTP token (RFC 9110 §5.6.2): header and cookie names.
pub const TOKEN_PATTERN: &str = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$";

const JWT_HMAC: [(&str, usize); 3] = [("HS256", 32), ("HS384", 48), ("HS512", 64)];
const JWT_ASYMMETRIC: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// JWT verification (`app.enable_jwt(JwtConfig)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtConfig {
    /// HMAC key (HS*), or the PEM public key for RS/PS/ES/EdDSA when `public_key` is unset.
    pub secret: Secret,
    /// The one algorithm accepted; tokens signed otherwise are rejected.
    pub algorithm: String,
    /// Header carrying `Bearer <token>`.
    #[serde(alias = "header_name")]
    #[schemars(regex(pattern = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"))]
    pub header_name: String,
    /// Cookie carrying the token, if any.
    #[serde(alias = "cookie_name")]
    #[schemars(regex(pattern = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"))]
    pub cookie_name: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, in seconds.
    #[schemars(range(min = 0))]
    pub leeway: f64,
    /// PEM public key for the asymmetric algorithms.
    #[serde(alias = "public_key")]
    pub public_key: Option<String>,
    /// A local JWKS file; the token's `kid` selects the key.
    #[serde(alias = "jwks_path")]
    #[schemars(extend("format" = "path"))]
    pub jwks_path: Option<String>,
    /// Required `iss` claim.
    pub issuer: Option<String>,
    /// Required `aud` claim.
    pub audience: Option<String>,
    /// Reject requests without a token (off: a valid token is used when present).
    pub required: bool,
    /// Paths (exact, or a prefix ending in `*`) that are never checked.
    #[serde(alias = "exclude_paths")]
    pub exclude_paths: Vec<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: Secret::default(),
            algorithm: "HS256".into(),
            header_name: "Authorization".into(),
            cookie_name: None,
            leeway: 0.0,
            public_key: None,
            jwks_path: None,
            issuer: None,
            audience: None,
            required: true,
            exclude_paths: Vec::new(),
        }
    }
}

impl JwtConfig {
    /// The algorithm and a key that suits it: an HMAC secret at least as long as the hash
    /// (RFC 7518 §3.2), a PEM key (or JWKS) for the asymmetric ones; `none` is refused.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)?;
        let alg = self.algorithm.as_str();
        let secret = self.secret.as_bytes();
        if let Some((_, need)) = JWT_HMAC.iter().find(|(a, _)| *a == alg) {
            if secret.len() < *need {
                return Err(invalid(
                    "secret",
                    format!(
                        "the {alg} secret must be at least {need} bytes long (got {})",
                        secret.len()
                    ),
                ));
            }
        } else if JWT_ASYMMETRIC.contains(&alg) {
            let pem = self.public_key.as_deref().map(str::as_bytes).unwrap_or(secret);
            let has_pem = pem.windows(10).any(|w| w == b"-----BEGIN");
            if !has_pem && self.jwks_path.is_none() {
                return Err(invalid(
                    "public_key",
                    format!("{alg} needs a PEM-encoded key (public_key, or the secret) or a jwks_path"),
                ));
            }
        } else if alg.eq_ignore_ascii_case("none") {
            return Err(invalid(
                "algorithm",
                "the 'none' JWT algorithm is refused: tokens would not be verified",
            ));
        } else {
            let known: Vec<&str> = JWT_HMAC.iter().map(|(a, _)| *a).chain(JWT_ASYMMETRIC).collect();
            return Err(invalid(
                "algorithm",
                format!("unknown JWT algorithm {alg:?}; use one of {}", known.join(", ")),
            ));
        }
        if self.leeway > 300.0 {
            return Err(invalid(
                "leeway",
                format!("leeway must be at most 300 seconds (got {})", self.leeway),
            ));
        }
        Ok(())
    }
}

/// Cookie sessions (`app.enable_session(SessionConfig)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionConfig {
    /// Name of the session cookie.
    #[serde(alias = "cookie_name")]
    #[schemars(regex(pattern = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"))]
    pub cookie_name: String,
    /// `Path` attribute of the cookie.
    #[serde(alias = "cookie_path")]
    pub cookie_path: String,
    /// `Domain` attribute of the cookie (unset: host-only).
    #[serde(alias = "cookie_domain")]
    pub cookie_domain: Option<String>,
    /// `Secure` attribute.
    #[serde(alias = "cookie_secure")]
    pub cookie_secure: bool,
    /// `HttpOnly` attribute.
    #[serde(alias = "cookie_http_only")]
    pub cookie_http_only: bool,
    /// `SameSite` attribute: `Strict`, `Lax` or `None` (unset: not sent).
    #[serde(alias = "cookie_same_site")]
    pub cookie_same_site: Option<String>,
    /// Lifetime in seconds (unset: a browser-session cookie).
    #[serde(alias = "max_age")]
    pub max_age: Option<i64>,
    /// Signing/encryption key (else `CELLO_SECRET_KEY`).
    pub secret: Option<Secret>,
    /// Where session data lives: `cookie` (signed and encrypted), `memory` or `redis`.
    #[schemars(extend("enum" = ["cookie", "memory", "redis"]))]
    pub store: String,
    /// Redis server of `store="redis"` (`redis://host:port[/db]`).
    #[serde(alias = "redis_url")]
    pub redis_url: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "session_id".into(),
            cookie_path: "/".into(),
            cookie_domain: None,
            cookie_secure: true,
            cookie_http_only: true,
            cookie_same_site: Some("Lax".into()),
            max_age: Some(86400),
            secret: None,
            store: "cookie".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
        }
    }
}

impl SessionConfig {
    /// SameSite (None needs Secure), path, max_age, domain and the `__Secure-`/`__Host-` prefixes.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)?;
        if let Some(same_site) = &self.cookie_same_site {
            let lower = same_site.to_ascii_lowercase();
            if !matches!(lower.as_str(), "strict" | "lax" | "none") {
                return Err(invalid(
                    "cookie_same_site",
                    format!("cookie_same_site must be 'Strict', 'Lax' or 'None', got {same_site:?}"),
                ));
            }
            if lower == "none" && !self.cookie_secure {
                return Err(invalid(
                    "cookie_same_site",
                    "cookie_same_site='None' requires cookie_secure=True (browsers reject it otherwise)",
                ));
            }
        }
        if !self.cookie_path.starts_with('/') {
            return Err(invalid(
                "cookie_path",
                format!("cookie_path must start with '/', got {:?}", self.cookie_path),
            ));
        }
        if let Some(age) = self.max_age {
            if age <= 0 {
                return Err(invalid(
                    "max_age",
                    format!("max_age must be positive (or None for a browser-session cookie), got {age}"),
                ));
            }
        }
        if let Some(domain) = &self.cookie_domain {
            if domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || c == ';' || c == ',') {
                return Err(invalid("cookie_domain", format!("invalid cookie_domain {domain:?}")));
            }
        }
        let name = &self.cookie_name;
        if (name.starts_with("__Secure-") || name.starts_with("__Host-")) && !self.cookie_secure {
            return Err(invalid(
                "cookie_name",
                format!("a cookie named {name} requires cookie_secure=True"),
            ));
        }
        if name.starts_with("__Host-") && (self.cookie_domain.is_some() || self.cookie_path != "/") {
            return Err(invalid(
                "cookie_name",
                format!("a cookie named {name} requires cookie_path='/' and no cookie_domain"),
            ));
        }
        if !matches!(self.store.as_str(), "cookie" | "memory" | "redis") {
            return Err(invalid(
                "store",
                format!("store must be 'cookie', 'memory' or 'redis', got {:?}", self.store),
            ));
        }
        if self.store == "redis" && !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://"))
        {
            return Err(invalid(
                "redis_url",
                format!("redis_url must be a redis:// URL, got {:?}", self.redis_url),
            ));
        }
        if let Some(s) = &self.secret {
            check_secret_len("secret", s)?;
        }
        Ok(())
    }
}

/// Session and CSRF keys: at least 32 bytes (the derived AES/HMAC keys need that much entropy).
fn check_secret_len(field: &str, s: &Secret) -> Result<()> {
    if s.as_bytes().len() < 32 {
        return Err(invalid(
            field,
            format!("the secret must be at least 32 bytes long (got {})", s.as_bytes().len()),
        ));
    }
    Ok(())
}

/// `app.enable_csrf(secret=None, cookie_name="csrftoken", header_name="X-CSRF-Token",
/// form_field="csrf_token", exempt_paths=None, trusted_origins=None)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CsrfConfig {
    /// HMAC key of the tokens (else `CELLO_SECRET_KEY`).
    pub secret: Option<Secret>,
    /// Cookie holding the token (double submit; readable by scripts on purpose).
    #[serde(alias = "cookie_name")]
    #[schemars(regex(pattern = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"))]
    pub cookie_name: String,
    /// Header an unsafe request may carry the token in.
    #[serde(alias = "header_name")]
    #[schemars(regex(pattern = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"))]
    pub header_name: String,
    /// Form field (urlencoded or multipart) that may carry the token instead.
    #[serde(alias = "form_field")]
    pub form_field: String,
    /// Paths (exact, or a prefix ending in `*`) that are never checked.
    #[serde(alias = "exempt_paths")]
    pub exempt_paths: Vec<String>,
    /// Origins (`https://host[:port]`) besides the request's own accepted in `Origin`/`Referer`
    /// of HTTPS requests.
    #[serde(alias = "trusted_origins")]
    pub trusted_origins: Vec<String>,
}

impl Default for CsrfConfig {
    fn default() -> Self {
        Self {
            secret: None,
            cookie_name: "csrftoken".into(),
            header_name: "X-CSRF-Token".into(),
            form_field: "csrf_token".into(),
            exempt_paths: Vec::new(),
            trusted_origins: Vec::new(),
        }
    }
}

impl CsrfConfig {
    /// Names, a long enough secret, origins written `scheme://host[:port]`.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)?;
        if self.form_field.is_empty() {
            return Err(invalid("form_field", "form_field must not be empty"));
        }
        if let Some(s) = &self.secret {
            check_secret_len("secret", s)?;
        }
        for o in &self.trusted_origins {
            let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(['/', ' ', '?', '#']) => {}
                _ => {
                    return Err(invalid(
                        "trusted_origins",
                        format!("a trusted origin is written https://host[:port], got {o:?}"),
                    ))
                }
            }
        }
        Ok(())
    }
}

const RATE_ALGORITHMS: [&str; 3] = ["token_bucket", "sliding_window", "adaptive"];
const RATE_KEYS: [&str; 5] = ["ip", "user", "api_key", "global", "route"];

/// Rate limiting (`app.enable_rate_limit(RateLimitConfig)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `token_bucket`, `sliding_window` or `adaptive`.
    pub algorithm: String,
    /// Bucket size (token bucket) or requests per window (sliding window).
    pub capacity: i64,
    /// Tokens added per second (token bucket, adaptive).
    #[serde(alias = "refill_rate")]
    pub refill_rate: f64,
    /// Window length in seconds (sliding window).
    #[serde(alias = "window_secs")]
    pub window_secs: f64,
    /// What a limit is counted per: `ip`, `user`, `api_key`, `global`, `route` or `header:<name>`.
    #[serde(alias = "key_by")]
    pub key_by: String,
    /// Adaptive: the capacity never shrinks below this.
    #[serde(alias = "min_capacity")]
    pub min_capacity: Option<i64>,
    /// Adaptive: shrink while the error rate (0-1) is above this.
    #[serde(alias = "error_threshold")]
    pub error_threshold: Option<f64>,
    /// Where counters live: `memory` (per worker) or `redis` (shared by workers and pods).
    #[schemars(extend("enum" = ["memory", "redis"]))]
    pub backend: String,
    /// Redis server for `backend="redis"` (`redis://host:port[/db]`).
    #[serde(alias = "redis_url")]
    pub redis_url: String,
    /// Per-route overrides: route template (as declared, e.g. `/items/{id}`) → its own limit.
    pub routes: std::collections::BTreeMap<String, RouteRateLimit>,
    /// Limit only the routes in `routes` (set when only per-route limits are declared).
    #[serde(alias = "routes_only")]
    pub routes_only: bool,
}

/// A route's own limit (`@app.get(..., rate_limit=RateLimitConfig(...))`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRateLimit {
    /// `token_bucket`, `sliding_window` or `adaptive` (adaptive acts as a token bucket here).
    pub algorithm: String,
    /// Bucket size or requests per window.
    pub capacity: i64,
    /// Tokens per second.
    #[serde(default, alias = "refill_rate")]
    pub refill_rate: f64,
    /// Window length in seconds.
    #[serde(default, alias = "window_secs")]
    pub window_secs: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            algorithm: "token_bucket".into(),
            capacity: 100,
            refill_rate: 10.0,
            window_secs: 60.0,
            key_by: "ip".into(),
            min_capacity: None,
            error_threshold: None,
            backend: "memory".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            routes: std::collections::BTreeMap::new(),
            routes_only: false,
        }
    }
}

impl RateLimitConfig {
    /// The algorithm and the parameters it needs; `key_by`.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)?;
        let alg = self.algorithm.as_str();
        if !RATE_ALGORITHMS.contains(&alg) {
            return Err(invalid(
                "algorithm",
                format!(
                    "unknown rate limit algorithm {alg:?}; use one of {}",
                    RATE_ALGORITHMS.join(", ")
                ),
            ));
        }
        if self.capacity <= 0 {
            return Err(invalid(
                "capacity",
                format!("capacity must be greater than 0, got {}", self.capacity),
            ));
        }
        if matches!(alg, "token_bucket" | "adaptive")
            && self.refill_rate.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return Err(invalid(
                "refill_rate",
                format!("refill_rate must be greater than 0, got {}", self.refill_rate),
            ));
        }
        if alg == "sliding_window" && self.window_secs.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(invalid(
                "window_secs",
                format!("window_secs must be greater than 0, got {}", self.window_secs),
            ));
        }
        if alg == "adaptive" {
            if !self.min_capacity.is_some_and(|m| 0 < m && m <= self.capacity) {
                return Err(invalid(
                    "min_capacity",
                    format!(
                        "the adaptive algorithm needs 0 < min_capacity <= capacity, got min_capacity={}",
                        show(self.min_capacity)
                    ),
                ));
            }
            if !self.error_threshold.is_some_and(|t| 0.0 < t && t <= 1.0) {
                return Err(invalid(
                    "error_threshold",
                    format!(
                        "the adaptive algorithm needs an error_threshold in (0, 1], got {}",
                        show(self.error_threshold)
                    ),
                ));
            }
        }
        let key = self.key_by.as_str();
        let header_ok = key
            .strip_prefix("header:")
            .is_some_and(|h| !h.is_empty() && h.bytes().all(is_tchar));
        if !RATE_KEYS.contains(&key) && !header_ok {
            return Err(invalid(
                "key_by",
                format!(
                    "key_by must be one of {} or 'header:<name>', got {key:?}",
                    RATE_KEYS.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

impl RouteRateLimit {
    /// Same rules as the app-wide limit for the algorithm's parameters.
    pub fn validate(&self, template: &str) -> Result<()> {
        let full = RateLimitConfig {
            algorithm: if self.algorithm == "adaptive" {
                "token_bucket".into()
            } else {
                self.algorithm.clone()
            },
            capacity: self.capacity,
            refill_rate: self.refill_rate,
            window_secs: self.window_secs,
            ..RateLimitConfig::default()
        };
        full.validate()
            .map_err(|e| invalid("routes", format!("rate limit of route {template}: {e}")))
    }
}

impl RateLimitConfig {
    /// The backend and the per-route overrides.
    pub fn validate_backend(&self) -> Result<()> {
        if !matches!(self.backend.as_str(), "memory" | "redis") {
            return Err(invalid(
                "backend",
                format!("backend must be 'memory' or 'redis', got {:?}", self.backend),
            ));
        }
        if self.backend == "redis" && !self.redis_url.starts_with("redis://") {
            return Err(invalid(
                "redis_url",
                format!("redis_url must be a redis:// URL, got {:?}", self.redis_url),
            ));
        }
        for (t, r) in &self.routes {
            r.validate(t)?;
        }
        Ok(())
    }
}

/// `app.enable_api_key(keys, header_name="X-API-Key", query_param=None, exclude_paths=None)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Accepted key → the identity put in `request.context["user"]` (any JSON value).
    pub keys: std::collections::BTreeMap<String, serde_json::Value>,
    /// Header carrying the key.
    #[serde(alias = "header_name")]
    #[schemars(regex(pattern = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"))]
    pub header_name: String,
    /// Query parameter that may carry the key instead.
    #[serde(alias = "query_param")]
    pub query_param: Option<String>,
    /// Paths (exact, or a prefix ending in `*`) that are never checked.
    #[serde(alias = "exclude_paths")]
    pub exclude_paths: Vec<String>,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        Self {
            keys: Default::default(),
            header_name: "X-API-Key".into(),
            query_param: None,
            exclude_paths: Vec::new(),
        }
    }
}

impl ApiKeyConfig {
    /// At least one key; no empty key.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)?;
        if self.keys.is_empty() {
            return Err(invalid("keys", "enable_api_key needs at least one key"));
        }
        if self.keys.keys().any(|k| k.is_empty()) {
            return Err(invalid("keys", "an API key must not be empty"));
        }
        Ok(())
    }
}

/// `app.enable_basic_auth(users=None, verify=None, realm="cello", exclude_paths=None)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// User → password: plain text, or an `$argon2…` / `$2b$…` hash.
    pub users: std::collections::BTreeMap<String, Secret>,
    /// The realm of the `WWW-Authenticate` challenge.
    pub realm: String,
    /// Paths (exact, or a prefix ending in `*`) that are never checked.
    #[serde(alias = "exclude_paths")]
    pub exclude_paths: Vec<String>,
    /// Credentials are checked by a Python `verify(user, password)` callable (set by the
    /// Python `App`; the data plane then only refuses missing or malformed credentials).
    #[serde(alias = "python_verify")]
    pub python_verify: bool,
}

impl Default for BasicAuthConfig {
    fn default() -> Self {
        Self {
            users: Default::default(),
            realm: "cello".into(),
            exclude_paths: Vec::new(),
            python_verify: false,
        }
    }
}

impl BasicAuthConfig {
    /// Users or a verifier; a realm that fits in a quoted string; known hash formats.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)?;
        if self.users.is_empty() && !self.python_verify {
            return Err(invalid("users", "enable_basic_auth needs users or a verify callable"));
        }
        if self.realm.contains(['"', '\\', '\r', '\n']) {
            return Err(invalid(
                "realm",
                "the realm must not contain quotes, backslashes or newlines",
            ));
        }
        for (user, pw) in &self.users {
            if user.contains(':') {
                return Err(invalid("users", format!("user name {user:?} must not contain ':'")));
            }
            let pw = pw.as_bytes();
            if pw.starts_with(b"$2") && !pw.starts_with(b"$2b$") && !pw.starts_with(b"$2a$") && !pw.starts_with(b"$2y$")
            {
                return Err(invalid(
                    "users",
                    format!("unknown bcrypt hash variant for user {user:?}"),
                ));
            }
        }
        Ok(())
    }
}

fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "None".to_owned(), |v| v.to_string())
}

/// A byte allowed in an HTTP token (header or cookie name).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
