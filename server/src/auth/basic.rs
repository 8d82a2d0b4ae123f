//! HTTP Basic (`enable_basic_auth`): users with plain passwords (constant-time compare)
//! or `$argon2…` / `$2b$…` hashes, or a Python `verify(user, password)` callable — then
//! this gate only refuses missing or malformed credentials and hands the pair on as
//! [`PendingBasic`] for Python to check.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use cello_config::BasicAuthConfig;

use super::{app_path, constant_time_eq, unauthorized, Gate, Identity, PathSet, PendingBasic, Verdict};
use crate::stack::Req;

enum Password {
    Plain(Vec<u8>),
    Argon2(String),
    Bcrypt(String),
}

impl Password {
    fn matches(&self, given: &str) -> bool {
        match self {
            Password::Plain(p) => constant_time_eq(given.as_bytes(), p),
            Password::Argon2(h) => {
                use argon2::password_hash::{PasswordHash, PasswordVerifier};
                PasswordHash::new(h).is_ok_and(|parsed| {
                    argon2::Argon2::default()
                        .verify_password(given.as_bytes(), &parsed)
                        .is_ok()
                })
            }
            Password::Bcrypt(h) => bcrypt::verify(given, h).unwrap_or(false),
        }
    }
}

/// See the module docs.
pub struct BasicGate {
    users: HashMap<String, Password>,
    realm: Arc<str>,
    python_verify: bool,
    exclude: PathSet,
    /// Compared against when the user is unknown, so that case costs the same.
    dummy: Password,
}

impl BasicGate {
    /// From the validated config.
    pub fn new(c: &BasicAuthConfig) -> Self {
        let users = c
            .users
            .iter()
            .map(|(u, p)| {
                let bytes = p.as_bytes();
                let text = String::from_utf8_lossy(bytes).into_owned();
                let pw = if text.starts_with("$argon2") {
                    Password::Argon2(text)
                } else if text.starts_with("$2b$") || text.starts_with("$2a$") || text.starts_with("$2y$") {
                    Password::Bcrypt(text)
                } else {
                    Password::Plain(bytes.to_vec())
                };
                (u.clone(), pw)
            })
            .collect();
        Self {
            users,
            realm: c.realm.as_str().into(),
            python_verify: c.python_verify,
            exclude: PathSet::new(&c.exclude_paths),
            dummy: Password::Plain(b"\0cello-no-such-user".to_vec()),
        }
    }

    fn challenge(&self) -> String {
        format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm)
    }
}

/// `(user, password)` from `Authorization: Basic ...`.
pub fn credentials(req: &Req) -> Option<(String, String)> {
    let v = req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

impl Gate for BasicGate {
    fn check(&self, req: &mut Req) -> Verdict {
        if self.exclude.contains(app_path(req)) {
            return Verdict::Pass;
        }
        let Some((user, password)) = credentials(req) else {
            return Verdict::Reject(unauthorized(self.challenge(), "credentials are required"));
        };
        if let Some(pw) = self.users.get(&user) {
            if pw.matches(&password) {
                let id = serde_json::json!({ "username": user });
                req.extensions_mut().insert(Identity(Arc::new(id)));
                return Verdict::Pass;
            }
        } else {
            self.dummy.matches(&password);
        }
        if self.python_verify {
            req.extensions_mut().insert(PendingBasic {
                user,
                password,
                realm: self.realm.clone(),
            });
            return Verdict::Pass;
        }
        Verdict::Reject(unauthorized(self.challenge(), "invalid credentials"))
    }
}
