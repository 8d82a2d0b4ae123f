//! `Bearer` JWTs (`enable_jwt`): one algorithm fixed by config, keys from the secret, a
//! PEM public key or a local JWKS file (`kid` selects), `exp`/`nbf`/`iat` with leeway,
//! `iss`/`aud` when configured. Claims become the [`Identity`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cello_config::JwtConfig;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

use super::{app_path, unauthorized, Gate, Identity, PathSet, Verdict};
use crate::stack::Req;
use crate::Error;

/// Tokens longer than this are refused before any parsing (a header is capped anyway;
/// this keeps a cookie-borne token from costing more than a sane one).
const MAX_TOKEN: usize = 8 * 1024;

/// Verified tokens kept (then the table starts over), and the longest one kept.
const CACHE_ENTRIES: usize = 1024;
const CACHE_TOKEN: usize = 2048;

/// Verified tokens by a keyed hash of their bytes: the token (compared in constant
/// time, so a lookup never tells by its timing how much of a guess matched a kept token)
/// and its claims.
#[derive(Default)]
struct Verified {
    hasher: std::collections::hash_map::RandomState,
    map: HashMap<u64, (Box<[u8]>, Arc<serde_json::Value>)>,
}

enum Keys {
    One(DecodingKey),
    /// JWKS: `kid` → key (a token without `kid` is accepted only when there is one key).
    Set(HashMap<String, DecodingKey>),
}

/// See the module docs.
pub struct JwtGate {
    keys: Keys,
    validation: Validation,
    header: http::HeaderName,
    cookie: Option<String>,
    required: bool,
    exclude: PathSet,
    /// Tokens whose signature and claims checked out, with their claims. Verification is
    /// a function of the token's bytes, the fixed key and validation, and the clock, so a
    /// kept token only has its time claims (`exp`, `nbf`, `iat`) checked again; one that
    /// fails them is verified in full (and answered exactly as the first time).
    verified: Mutex<Verified>,
}

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::Config(cello_config::Error::Invalid {
        field: "jwt".into(),
        reason: reason.to_string(),
    })
}

fn parse_alg(name: &str) -> Result<Algorithm, Error> {
    name.parse::<Algorithm>()
        .map_err(|_| bad(format!("unknown JWT algorithm {name:?}")))
}

fn pem_key(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, Error> {
    use Algorithm::*;
    let key = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
        ES256 | ES384 => DecodingKey::from_ec_pem(pem),
        EdDSA => DecodingKey::from_ed_pem(pem),
        HS256 | HS384 | HS512 => Ok(DecodingKey::from_secret(pem)),
    };
    key.map_err(|e| bad(format!("the {alg:?} public key cannot be read: {e}")))
}

fn jwks_keys(path: &str) -> Result<Keys, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read jwks_path {path}: {e}")))?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&text).map_err(|e| bad(format!("jwks_path {path} is not a JWKS document: {e}")))?;
    let mut keys = HashMap::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {i} of {path}: {e}")))?;
        keys.insert(jwk.common.key_id.clone().unwrap_or_default(), key);
    }
    if keys.is_empty() {
        return Err(bad(format!("jwks_path {path} has no keys")));
    }
    Ok(Keys::Set(keys))
}

impl JwtGate {
    /// Parse the key material once; a bad key is a start-up error.
    pub fn new(c: &JwtConfig) -> Result<Self, Error> {
        let alg = parse_alg(&c.algorithm)?;
        let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        let keys = if hmac {
            Keys::One(DecodingKey::from_secret(c.secret.as_bytes()))
        } else if let Some(path) = &c.jwks_path {
            jwks_keys(path)?
        } else {
            let pem = c
                .public_key
                .as_deref()
                .map(str::as_bytes)
                .unwrap_or(c.secret.as_bytes());
            Keys::One(pem_key(alg, pem)?)
        };
        // The one algorithm: `alg: none`, another algorithm and HS/RS confusion all fail
        // here, because the header's `alg` must equal this one.
        let mut validation = Validation::new(alg);
        validation.leeway = c.leeway.ceil() as u64;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        validation.validate_aud = c.audience.is_some();
        // A configured issuer/audience is also required to be present in the token.
        if let Some(aud) = &c.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(Self {
            keys,
            validation,
            header: http::HeaderName::from_bytes(c.header_name.as_bytes()).map_err(bad)?,
            cookie: c.cookie_name.clone(),
            required: c.required,
            exclude: PathSet::new(&c.exclude_paths),
            verified: Mutex::new(Verified::default()),
        })
    }

    /// The claims of `token` when it was verified before and its time claims still hold
    /// (the same checks, with the same integer rules, as `jsonwebtoken` and [`Self::verify`]).
    fn remembered(&self, token: &str) -> Option<Arc<serde_json::Value>> {
        self.remembered_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Self::remembered`] at the time `now` (seconds since the epoch).
    fn remembered_at(&self, token: &str, now: u64) -> Option<Arc<serde_json::Value>> {
        let claims = {
            use std::hash::BuildHasher;
            use subtle::ConstantTimeEq;
            let v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if v.map.is_empty() {
                return None;
            }
            let (kept, claims) = v.map.get(&v.hasher.hash_one(token.as_bytes()))?;
            let same = kept.len() == token.len() && bool::from(kept.ct_eq(token.as_bytes()));
            if !same {
                return None;
            }
            claims.clone()
        };
        let leeway = self.validation.leeway;
        let int = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
        if self.validation.validate_exp && int("exp").is_some_and(|exp| exp < now.saturating_sub(leeway)) {
            return None;
        }
        if self.validation.validate_nbf && int("nbf").is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return None;
        }
        if let Some(iat) = claims.get("iat").and_then(serde_json::Value::as_f64) {
            if iat > now as f64 + leeway as f64 {
                return None;
            }
        }
        Some(claims)
    }

    fn remember(&self, token: &str, claims: &Arc<serde_json::Value>) {
        if token.len() > CACHE_TOKEN {
            return;
        }
        use std::hash::BuildHasher;
        let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if v.map.len() >= CACHE_ENTRIES {
            v.map.clear();
        }
        let key = v.hasher.hash_one(token.as_bytes());
        v.map.insert(key, (token.as_bytes().into(), claims.clone()));
    }

    /// [`Self::verify`], or the claims of the same token verified before.
    fn verify_cached(&self, token: &str) -> Result<Arc<serde_json::Value>, &'static str> {
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err("malformed or oversized token");
        }
        if let Some(claims) = self.remembered(token) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify(token)?);
        self.remember(token, &claims);
        Ok(claims)
    }

    fn token<'a>(&self, req: &'a Req) -> Option<&'a str> {
        if let Some(v) = req.headers().get(&self.header).and_then(|v| v.to_str().ok()) {
            let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(rest.trim());
            }
            // A header that is there but is not `Bearer ...` is a malformed credential.
            return Some("");
        }
        let name = self.cookie.as_deref()?;
        cookie_value(req, name)
    }

    fn verify(&self, token: &str) -> Result<serde_json::Value, &'static str> {
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err("malformed or oversized token");
        }
        let key = match &self.keys {
            Keys::One(k) => k,
            Keys::Set(set) => {
                let head = decode_header(token).map_err(|_| "malformed token")?;
                match head.kid {
                    Some(kid) => set.get(&kid).ok_or("unknown key id")?,
                    None if set.len() == 1 => set.values().next().ok_or("unknown key id")?,
                    None => return Err("the token has no key id"),
                }
            }
        };
        let data = decode::<serde_json::Value>(token, key, &self.validation).map_err(|e| describe(&e))?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err("the claims are not an object");
        }
        // `iat` in the future (beyond the leeway) is refused too: a token cannot be issued later.
        if let Some(iat) = claims.get("iat").and_then(serde_json::Value::as_f64) {
            let now = jsonwebtoken::get_current_timestamp() as f64;
            if iat > now + self.validation.leeway as f64 {
                return Err("the token was issued in the future");
            }
        }
        Ok(claims)
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "the token has expired",
        ImmatureSignature => "the token is not valid yet",
        InvalidSignature => "the token signature is invalid",
        InvalidAlgorithm => "the token algorithm is not accepted",
        InvalidIssuer => "the token issuer is not accepted",
        InvalidAudience => "the token audience is not accepted",
        _ => "the token is invalid",
    }
}

/// The value of cookie `name` in the `Cookie` header(s).
pub fn cookie_value<'a>(req: &'a Req, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

impl Gate for JwtGate {
    fn check(&self, req: &mut Req) -> Verdict {
        if self.exclude.contains(app_path(req)) {
            return Verdict::Pass;
        }
        let Some(token) = self.token(req) else {
            if !self.required {
                return Verdict::Pass;
            }
            return Verdict::Reject(unauthorized(
                "Bearer error=\"invalid_request\", error_description=\"a bearer token is required\"".into(),
                "a bearer token is required",
            ));
        };
        match self.verify_cached(token) {
            Ok(claims) => {
                req.extensions_mut().insert(Identity(claims));
                Verdict::Pass
            }
            Err(why) => Verdict::Reject(unauthorized(
                format!("Bearer error=\"invalid_token\", error_description=\"{why}\""),
                why,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use cello_config::{JwtConfig, Secret};
    use serde_json::json;

    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn gate(leeway: f64) -> JwtGate {
        JwtGate::new(&JwtConfig {
            secret: Secret(KEY.into()),
            leeway,
            ..JwtConfig::default()
        })
        .unwrap()
    }

    fn sign(claims: &serde_json::Value, key: &str) -> String {
        let head = jsonwebtoken::Header::new(Algorithm::HS256);
        jsonwebtoken::encode(&head, claims, &jsonwebtoken::EncodingKey::from_secret(key.as_bytes())).unwrap()
    }

    fn kept(g: &JwtGate) -> usize {
        g.verified.lock().unwrap().map.len()
    }

    #[test]
    fn a_cached_token_is_refused_once_exp_is_past_the_leeway() {
        let g = gate(5.0);
        let now = jsonwebtoken::get_current_timestamp();
        let token = sign(&json!({"sub": "a", "exp": now + 100}), KEY);
        assert!(g.verify_cached(&token).is_ok());
        assert_eq!(kept(&g), 1, "verified tokens are kept");
        // The same integer rule as jsonwebtoken: refused once `exp < now - leeway`.
        assert!(g.remembered_at(&token, now + 100).is_some());
        assert!(g.remembered_at(&token, now + 105).is_some());
        assert!(g.remembered_at(&token, now + 106).is_none());

        // A token kept while valid and expired since: the cache does not answer for it, the
        // full check does, and refuses it.
        let expired = json!({"sub": "a", "exp": now - 60});
        let old = sign(&expired, KEY);
        g.remember(&old, &Arc::new(expired));
        assert!(g.remembered(&old).is_none());
        assert_eq!(g.verify_cached(&old).unwrap_err(), "the token has expired");
        // Within the leeway the full check and the cache agree: accepted.
        let fresh = sign(&json!({"sub": "a", "exp": now - 2}), KEY);
        assert!(g.verify_cached(&fresh).is_ok());
        assert!(g.remembered(&fresh).is_some());
        // `nbf` too: kept, then presented before it (beyond the leeway) is refused.
        let later = sign(&json!({"sub": "a", "nbf": now}), KEY);
        assert!(g.verify_cached(&later).is_ok());
        assert!(g.remembered_at(&later, now - 5).is_some());
        assert!(g.remembered_at(&later, now - 6).is_none());
    }

    #[test]
    fn another_token_never_answers_from_a_kept_one() {
        let g = gate(0.0);
        let claims = json!({"sub": "a", "exp": jsonwebtoken::get_current_timestamp() + 300});
        let good = sign(&claims, KEY);
        assert!(g.verify_cached(&good).is_ok());
        // The same claims signed with another key: another signature, refused.
        let forged = sign(&claims, "another key of thirty-two bytes!");
        assert_ne!(forged, good);
        assert_eq!(g.verify_cached(&forged).unwrap_err(), "the token signature is invalid");
        // The kept token with a character of its signature changed (not the last one,
        // whose low bits are padding).
        let mut tampered = good.clone();
        let at = tampered.len() - 10;
        let swap = if &tampered[at..=at] == "A" { "B" } else { "A" };
        tampered.replace_range(at..=at, swap);
        assert!(g.verify_cached(&tampered).is_err());
        // Even under the forged token's own hash slot (a hash collision), the kept entry
        // is compared byte for byte and does not answer for it.
        {
            let mut v = g.verified.lock().unwrap();
            let slot = v.hasher.hash_one(forged.as_bytes());
            let entry = (good.as_bytes().into(), Arc::new(claims.clone()));
            v.map.insert(slot, entry);
        }
        assert!(g.remembered(&forged).is_none());
        assert!(g.verify_cached(&forged).is_err());
        assert!(g.verify_cached(&good).is_ok());
    }

    #[test]
    fn the_cache_is_bounded() {
        let g = gate(0.0);
        let claims = Arc::new(json!({"sub": "a"}));
        for i in 0..3 * CACHE_ENTRIES {
            g.remember(&format!("token-{i}"), &claims);
            assert!(kept(&g) <= CACHE_ENTRIES);
        }
        // A token longer than the kept maximum is verified every time, never kept.
        let before = kept(&g);
        let long = sign(&json!({"sub": "x".repeat(CACHE_TOKEN)}), KEY);
        assert!(long.len() > CACHE_TOKEN && long.len() <= MAX_TOKEN);
        assert!(g.verify_cached(&long).is_ok());
        assert!(g.remembered(&long).is_none());
        assert_eq!(kept(&g), before);
    }
}
