//! Response hardening and static files: security headers, Content-Security-Policy, static dirs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::{invalid, Result};

/// Security response headers (`app.enable_security_headers(SecurityHeadersConfig)`).
/// An unset header (or `x_content_type_options: false`) is left out; HSTS is sent when
/// `hsts_max_age` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityHeadersConfig {
    /// `X-Frame-Options`: `DENY` or `SAMEORIGIN`.
    #[serde(alias = "x_frame_options")]
    #[schemars(extend("enum" = ["DENY", "SAMEORIGIN", null]))]
    pub x_frame_options: Option<String>,
    /// `X-Content-Type-Options: nosniff`.
    #[serde(alias = "x_content_type_options")]
    pub x_content_type_options: bool,
    /// `X-XSS-Protection` value.
    #[serde(alias = "x_xss_protection")]
    #[schemars(regex(pattern = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"))]
    pub x_xss_protection: Option<String>,
    /// `Referrer-Policy` value.
    #[serde(alias = "referrer_policy")]
    #[schemars(extend("enum" = [
        "no-referrer", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin",
        "same-origin", "strict-origin", "strict-origin-when-cross-origin", "unsafe-url", null
    ]))]
    pub referrer_policy: Option<String>,
    /// `Strict-Transport-Security: max-age=...` in seconds.
    #[serde(alias = "hsts_max_age")]
    pub hsts_max_age: Option<u64>,
    /// `; includeSubDomains` on HSTS.
    #[serde(alias = "hsts_include_subdomains")]
    pub hsts_include_subdomains: bool,
    /// `; preload` on HSTS.
    #[serde(alias = "hsts_preload")]
    pub hsts_preload: bool,
    /// `Permissions-Policy` value (`camera=(), geolocation=()`).
    #[serde(alias = "permissions_policy")]
    #[schemars(regex(pattern = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"))]
    pub permissions_policy: Option<String>,
    /// `Cross-Origin-Opener-Policy`.
    #[serde(alias = "cross_origin_opener_policy")]
    #[schemars(extend("enum" = ["same-origin", "same-origin-allow-popups", "unsafe-none", "noopener-allow-popups", null]))]
    pub cross_origin_opener_policy: Option<String>,
    /// `Cross-Origin-Embedder-Policy`.
    #[serde(alias = "cross_origin_embedder_policy")]
    #[schemars(extend("enum" = ["require-corp", "credentialless", "unsafe-none", null]))]
    pub cross_origin_embedder_policy: Option<String>,
    /// `Cross-Origin-Resource-Policy`.
    #[serde(alias = "cross_origin_resource_policy")]
    #[schemars(extend("enum" = ["same-origin", "same-site", "cross-origin", null]))]
    pub cross_origin_resource_policy: Option<String>,
    /// `Content-Security-Policy` to send as well (Python sets it from a `CSP` builder).
    pub csp: Option<CspConfig>,
}

impl Default for SecurityHeadersConfig {
    fn default() -> Self {
        Self {
            x_frame_options: Some("DENY".into()),
            x_content_type_options: true,
            x_xss_protection: Some("1; mode=block".into()),
            referrer_policy: Some("strict-origin-when-cross-origin".into()),
            hsts_max_age: None,
            hsts_include_subdomains: false,
            hsts_preload: false,
            permissions_policy: None,
            cross_origin_opener_policy: None,
            cross_origin_embedder_policy: None,
            cross_origin_resource_policy: None,
            csp: None,
        }
    }
}

impl SecurityHeadersConfig {
    /// Field ranges and the CSP.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)?;
        if let Some(csp) = &self.csp {
            csp.validate()?;
        }
        Ok(())
    }
}

/// Directives in the order `build` writes them (CSP Level 3 order), so output is stable.
pub const CSP_DIRECTIVES: [&str; 27] = [
    "default-src",
    "script-src",
    "script-src-elem",
    "script-src-attr",
    "style-src",
    "style-src-elem",
    "style-src-attr",
    "img-src",
    "font-src",
    "connect-src",
    "media-src",
    "object-src",
    "frame-src",
    "child-src",
    "worker-src",
    "manifest-src",
    "prefetch-src",
    "base-uri",
    "form-action",
    "frame-ancestors",
    "sandbox",
    "upgrade-insecure-requests",
    "block-all-mixed-content",
    "require-trusted-types-for",
    "trusted-types",
    "report-uri",
    "report-to",
];

const CSP_KEYWORDS: [&str; 9] = [
    "self",
    "none",
    "unsafe-inline",
    "unsafe-eval",
    "unsafe-hashes",
    "strict-dynamic",
    "report-sample",
    "wasm-unsafe-eval",
    "inline-speculation-rules",
];
const CSP_QUOTED_PREFIXES: [&str; 4] = ["nonce-", "sha256-", "sha384-", "sha512-"];

/// The source that stands for the per-request nonce (`'nonce-<random>'` on the wire).
pub const CSP_NONCE: &str = "'nonce'";

/// A Content-Security-Policy (`CSP` builder in Python): directive → sources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CspConfig {
    /// Directive name (`script-src`) → sources (`'self'`, `https://cdn.example.com`).
    pub directives: BTreeMap<String, Vec<String>>,
}

impl CspConfig {
    /// Quote keywords (`self` → `'self'`, `nonce-…`) and reject sources that would break
    /// out of their directive.
    pub fn source(source: &str) -> Result<String> {
        if source.is_empty() || source.contains(|c: char| c.is_whitespace() || c == ';' || c == ',' || c.is_control()) {
            return Err(invalid(
                "csp",
                format!("a CSP source must be non-empty, without whitespace, ';' or ',': {source:?}"),
            ));
        }
        let lower = source.to_ascii_lowercase();
        if lower == "nonce" || lower == "'nonce'" {
            // The placeholder the security-headers layer replaces with each request's nonce.
            return Ok(CSP_NONCE.to_owned());
        }
        if CSP_KEYWORDS.contains(&lower.as_str()) || CSP_QUOTED_PREFIXES.iter().any(|p| source.starts_with(p)) {
            return Ok(format!("'{source}'"));
        }
        Ok(source.to_owned())
    }

    /// Directive names and sources are well-formed.
    pub fn validate(&self) -> Result<()> {
        for (name, sources) in &self.directives {
            let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(invalid("csp", format!("invalid CSP directive name {name:?}")));
            }
            for s in sources {
                if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == ';' || c == ',' || c.is_control()) {
                    return Err(invalid("csp", format!("invalid CSP source {s:?}")));
                }
            }
        }
        Ok(())
    }

    /// Whether a directive asks for the per-request nonce.
    pub fn has_nonce(&self) -> bool {
        self.directives.values().flatten().any(|s| s == CSP_NONCE)
    }

    /// The header value with the nonce placeholder replaced by `'nonce-{nonce}'`.
    pub fn build_with_nonce(&self, nonce: &str) -> String {
        self.build().replace(CSP_NONCE, &format!("'nonce-{nonce}'"))
    }

    /// The header value, directives in [`CSP_DIRECTIVES`] order, unknown ones after, sorted.
    pub fn build(&self) -> String {
        let known = CSP_DIRECTIVES
            .iter()
            .filter(|d| self.directives.contains_key(**d))
            .copied();
        let extra = self
            .directives
            .keys()
            .map(String::as_str)
            .filter(|d| !CSP_DIRECTIVES.contains(d));
        known
            .chain(extra)
            .map(|d| {
                let mut parts = vec![d.to_owned()];
                parts.extend(self.directives[d].iter().cloned());
                parts.join(" ")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A directory served by Rust (`app.enable_static_files(StaticFilesConfig)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticFilesConfig {
    /// Directory to serve.
    #[schemars(extend("format" = "path"))]
    pub root: String,
    /// URL prefix the directory is mounted at.
    #[schemars(regex(pattern = r"^/"))]
    pub prefix: String,
    /// File answered for a directory.
    #[serde(alias = "index_file")]
    pub index_file: Option<String>,
    /// Send `ETag` and answer `If-None-Match`.
    #[serde(alias = "enable_etag")]
    pub enable_etag: bool,
    /// Send `Last-Modified` and answer `If-Modified-Since`.
    #[serde(alias = "enable_last_modified")]
    pub enable_last_modified: bool,
    /// `Cache-Control` value for served files.
    #[serde(alias = "cache_control")]
    #[schemars(regex(pattern = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"))]
    pub cache_control: Option<String>,
    /// List directories without an index file.
    #[serde(alias = "directory_listing")]
    pub directory_listing: bool,
}

impl Default for StaticFilesConfig {
    fn default() -> Self {
        Self {
            root: String::new(),
            prefix: "/static".into(),
            index_file: Some("index.html".into()),
            enable_etag: true,
            enable_last_modified: true,
            cache_control: None,
            directory_listing: false,
        }
    }
}

impl StaticFilesConfig {
    /// Field checks; the directory is opened when the server starts.
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)?;
        if self.root.trim().is_empty() {
            return Err(invalid("staticFiles.root", "must name a directory"));
        }
        if self.prefix.contains(['{', '}', '*', '\\', '\0', '?', '#'])
            || self.prefix.split('/').any(|s| s == ".." || s == ".")
        {
            return Err(invalid(
                "staticFiles.prefix",
                format!("{:?} is not a plain URL path", self.prefix),
            ));
        }
        if let Some(index) = &self.index_file {
            if index.is_empty() || index.contains(['/', '\\', '\0']) || index == ".." {
                return Err(invalid("staticFiles.indexFile", "must be a plain file name"));
            }
        }
        Ok(())
    }

    /// The prefix without a trailing `/` (`/` stays `/`).
    pub fn mount_prefix(&self) -> &str {
        match self.prefix.trim_end_matches('/') {
            "" => "/",
            p => p,
        }
    }
}

/// Every mount is valid and no two share a prefix.
pub fn validate_mounts(mounts: &[StaticFilesConfig]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for m in mounts {
        m.validate()?;
        if !seen.insert(m.mount_prefix()) {
            return Err(invalid(
                "staticFiles",
                format!("two static mounts share the prefix {:?}", m.mount_prefix()),
            ));
        }
    }
    Ok(())
}

/// `staticFiles: {...}` (one mount) or `staticFiles: [{...}, ...]`.
pub(crate) fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<StaticFilesConfig>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Box<StaticFilesConfig>),
        Many(Vec<StaticFilesConfig>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(m) => vec![*m],
        OneOrMany::Many(v) => v,
    })
}
