//! The key of sessions and CSRF tokens when the config gives none: `CELLO_SECRET_KEY`.
//!
//! Production is `CELLO_ENV=production` (or `prod`), the environment switch `cello run`
//! and the operator already use; there a missing key is a startup error. Anywhere else a
//! random key is made once per process, with a warning (sessions then do not survive a
//! restart, and workers only share it when the Python app exported it before forking).

use std::sync::OnceLock;

/// The shortest accepted key (AES-256 and HMAC-SHA256 keys are derived from it).
pub const MIN_LEN: usize = 32;

fn production() -> bool {
    std::env::var("CELLO_ENV").is_ok_and(|e| matches!(e.trim().to_ascii_lowercase().as_str(), "production" | "prod"))
}

fn err(field: &str, reason: String) -> crate::Error {
    crate::Error::Config(cello_config::Error::Invalid {
        field: field.into(),
        reason,
    })
}

/// The configured key, else `CELLO_SECRET_KEY`, else (development only) a random one.
pub fn resolve(configured: Option<&cello_config::Secret>, field: &str) -> crate::Result<Vec<u8>> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    if let Ok(v) = std::env::var("CELLO_SECRET_KEY") {
        if !v.is_empty() {
            if v.len() < MIN_LEN {
                return Err(err(
                    field,
                    format!(
                        "CELLO_SECRET_KEY must be at least {MIN_LEN} bytes long (got {})",
                        v.len()
                    ),
                ));
            }
            return Ok(v.into_bytes());
        }
    }
    if production() {
        return Err(err(
            field,
            "no secret: set CELLO_SECRET_KEY (at least 32 bytes) or pass secret=..., \
             a random key is only made outside production (CELLO_ENV=production)"
                .into(),
        ));
    }
    static DEV: OnceLock<Vec<u8>> = OnceLock::new();
    Ok(DEV
        .get_or_init(|| {
            tracing::warn!(
                "no CELLO_SECRET_KEY: using a random key for sessions/CSRF (development only; \
                 sessions end when the process restarts)"
            );
            random_bytes(32)
        })
        .clone())
}

/// `n` bytes from the OS generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    // The OS generator failing is not recoverable; the ids would be predictable.
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the OS random number generator failed");
    buf
}

/// A random 256-bit id, base64url without padding (43 characters).
pub fn random_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(32))
}
