//! TLS termination (`app.enable_tls(TlsConfig)`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::{invalid, Result};

const TLS_VERSIONS: [&str; 2] = ["1.2", "1.3"];

/// TLS certificate, key and protocol versions (`TlsConfig` in Python).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain.
    #[serde(alias = "cert_path")]
    #[schemars(extend("format" = "path"))]
    pub cert_path: String,
    /// PEM file with the private key.
    #[serde(alias = "key_path")]
    #[schemars(extend("format" = "path"))]
    pub key_path: String,
    /// PEM file with the CA that signs client certificates.
    #[serde(alias = "ca_path")]
    #[schemars(extend("format" = "path"))]
    pub ca_path: Option<String>,
    /// Lowest TLS version accepted (`1.2` or `1.3`).
    #[serde(alias = "min_version")]
    pub min_version: String,
    /// Highest TLS version accepted (`1.2` or `1.3`).
    #[serde(alias = "max_version")]
    pub max_version: String,
    /// Ask for, and verify, a client certificate signed by `ca_path`.
    #[serde(alias = "require_client_cert")]
    pub require_client_cert: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_path: String::new(),
            key_path: String::new(),
            ca_path: None,
            min_version: "1.2".into(),
            max_version: "1.3".into(),
            require_client_cert: false,
        }
    }
}

impl TlsConfig {
    /// Versions and the client-certificate CA. The files themselves are read when the
    /// listener starts (and by Python's `validate_tls_config`).
    pub fn validate(&self) -> Result<()> {
        check_fields("", self)?;
        for (name, v) in [("min_version", &self.min_version), ("max_version", &self.max_version)] {
            if !TLS_VERSIONS.contains(&v.as_str()) {
                return Err(invalid(name, format!("{name} must be '1.2' or '1.3', got {v:?}")));
            }
        }
        if self.min_version > self.max_version {
            return Err(invalid(
                "min_version",
                format!(
                    "min_version {} is greater than max_version {}",
                    self.min_version, self.max_version
                ),
            ));
        }
        if self.ca_path.is_none() && self.require_client_cert {
            return Err(invalid(
                "ca_path",
                "require_client_cert=True needs ca_path (the CA that signs client certificates)",
            ));
        }
        Ok(())
    }
}
