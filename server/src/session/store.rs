//! Where sessions live. The cookie store puts `{"i": id, "e": expiry, "d": data}` into the
//! cookie, encrypted and authenticated (AES-256-GCM, the cookie name as associated data:
//! the `cookie` crate's private jar); the server stores put only the id in the cookie,
//! signed (HMAC-SHA256, the signed jar), so a forged id never reaches the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cookie::{Cookie, CookieJar, Key};
use redis::aio::ConnectionManager;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

/// At most this many bytes of session data in the memory store (per worker).
const MEMORY_BYTES: u64 = 64 * 1024 * 1024;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The cookie store's expiry for a session saved now: whole seconds, rounded up, so that a
/// session lasts at least `ttl` seconds (rounded down, one saved late in a second could
/// expire at once: `max_age=1` lasted anywhere from 0 to 1 s).
fn expiry(ttl: u64) -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_secs() + u64::from(d.subsec_nanos() > 0) + ttl
}

/// The largest data JSON the cookie store takes for this config: a 4096-byte cookie
/// minus name, attributes, the envelope, nonce and tag, and base64.
pub fn cookie_json_budget(c: &cello_config::SessionConfig) -> usize {
    // "name=" + "; Path=..." + Domain + "; Max-Age=..." + flags + SameSite, generously.
    let attrs = c.cookie_name.len()
        + 1
        + 7
        + c.cookie_path.len()
        + c.cookie_domain.as_ref().map_or(0, |d| 9 + d.len())
        + 30
        + 8
        + 10
        + 16;
    let b64 = super::COOKIE_LIMIT.saturating_sub(attrs);
    // base64 of (12-byte nonce + payload + 16-byte tag); envelope: `{"i":"<43>","e":<≤20>,"d":}`.
    (b64 / 4 * 3).saturating_sub(12 + 16 + 75)
}

/// A session store.
pub enum Store {
    /// The data in the cookie.
    Cookie(Key),
    /// Ids in the cookie, data in memory (moka, bounded by bytes; per worker).
    Memory(Key, moka::sync::Cache<String, Arc<Vec<u8>>>),
    /// Ids in the cookie, data in Redis (shared).
    Redis(Key, Box<RedisSessions>),
}

impl Store {
    /// The store `config.store` names, keyed by `secret` (≥ 32 bytes).
    pub fn new(config: &cello_config::SessionConfig, secret: &[u8]) -> crate::Result<Self> {
        if secret.len() < crate::keys::MIN_LEN {
            return Err(crate::Error::Config(cello_config::Error::Invalid {
                field: "session.secret".into(),
                reason: format!("the secret must be at least {} bytes long", crate::keys::MIN_LEN),
            }));
        }
        // Separate encryption and signing keys, derived (HKDF) from the one secret.
        let key = Key::derive_from(secret);
        let ttl = Duration::from_secs(config.max_age.unwrap_or(86_400).max(1) as u64);
        Ok(match config.store.as_str() {
            "memory" => Store::Memory(
                key,
                moka::sync::Cache::builder()
                    .max_capacity(MEMORY_BYTES)
                    .weigher(|k: &String, v: &Arc<Vec<u8>>| (k.len() + v.len() + 64).try_into().unwrap_or(u32::MAX))
                    .time_to_live(ttl)
                    .build(),
            ),
            "redis" => Store::Redis(key, Box::new(RedisSessions::new(&config.redis_url)?)),
            _ => Store::Cookie(key),
        })
    }

    /// The session a cookie value names: `None` when forged, edited, expired or unknown.
    pub async fn load(&self, name: &str, raw: &str) -> Option<(String, Map<String, Value>)> {
        match self {
            Store::Cookie(key) => {
                let jar = CookieJar::new();
                let plain = jar.private(key).decrypt(Cookie::new(name.to_owned(), raw.to_owned()))?;
                let env: Value = serde_json::from_str(plain.value()).ok()?;
                let expires = env.get("e")?.as_u64()?;
                if expires <= now() {
                    return None;
                }
                let id = env.get("i")?.as_str()?.to_owned();
                let data = env.get("d")?.as_object()?.clone();
                Some((id, data))
            }
            Store::Memory(key, cache) => {
                let id = verify_id(key, name, raw)?;
                let bytes = cache.get(&id)?;
                Some((id, serde_json::from_slice(&bytes).ok()?))
            }
            Store::Redis(key, redis) => {
                let id = verify_id(key, name, raw)?;
                let bytes = redis.get(&id).await?;
                Some((id, serde_json::from_slice(&bytes).ok()?))
            }
        }
    }

    /// Save `data` under `id`; the cookie value to send.
    pub async fn save(&self, name: &str, id: &str, data: &Map<String, Value>, ttl: u64) -> Result<String, String> {
        let json = serde_json::to_vec(data).map_err(|e| e.to_string())?;
        match self {
            Store::Cookie(key) => {
                let env = serde_json::json!({"i": id, "e": expiry(ttl), "d": data});
                let mut jar = CookieJar::new();
                jar.private_mut(key).add(Cookie::new(name.to_owned(), env.to_string()));
                Ok(jar.get(name).map(|c| c.value().to_owned()).unwrap_or_default())
            }
            Store::Memory(key, cache) => {
                cache.insert(id.to_owned(), Arc::new(json));
                Ok(sign_id(key, name, id))
            }
            Store::Redis(key, redis) => {
                redis.set(id, &json, ttl).await.map_err(|e| e.to_string())?;
                Ok(sign_id(key, name, id))
            }
        }
    }

    /// Forget `id` (rotated or cleared). The cookie store has nothing to forget: a copied
    /// cookie stays valid until its expiry (see docs/auth.md).
    pub async fn delete(&self, id: &str) {
        match self {
            Store::Cookie(_) => {}
            Store::Memory(_, cache) => cache.invalidate(id),
            Store::Redis(_, redis) => {
                if let Err(e) = redis.del(id).await {
                    tracing::warn!(error = %e, "could not delete a session from Redis");
                }
            }
        }
    }
}

fn sign_id(key: &Key, name: &str, id: &str) -> String {
    let mut jar = CookieJar::new();
    jar.signed_mut(key).add(Cookie::new(name.to_owned(), id.to_owned()));
    jar.get(name).map(|c| c.value().to_owned()).unwrap_or_default()
}

fn verify_id(key: &Key, name: &str, raw: &str) -> Option<String> {
    let jar = CookieJar::new();
    let c = jar.signed(key).verify(Cookie::new(name.to_owned(), raw.to_owned()))?;
    let id = c.value();
    // Our ids are 43 base64url characters; anything else was not made here.
    (id.len() == 43 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')).then(|| id.to_owned())
}

/// Session records in Redis under `cello:session:<id>`, expiring with `max_age`.
pub struct RedisSessions {
    url: String,
    conn: OnceCell<ConnectionManager>,
}

impl RedisSessions {
    fn new(url: &str) -> crate::Result<Self> {
        redis::Client::open(url).map_err(|e| {
            crate::Error::Config(cello_config::Error::Invalid {
                field: "session.redis_url".into(),
                reason: format!("bad redis_url {url:?}: {e}"),
            })
        })?;
        Ok(Self {
            url: url.to_owned(),
            conn: OnceCell::new(),
        })
    }

    async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        self.conn
            .get_or_try_init(|| async {
                let client = redis::Client::open(self.url.as_str())?;
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(Duration::from_secs(2));
                ConnectionManager::new_with_config(client, cfg).await
            })
            .await
            .cloned()
    }

    fn key(id: &str) -> String {
        format!("cello:session:{id}")
    }

    async fn get(&self, id: &str) -> Option<Vec<u8>> {
        let mut conn = match self.conn().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "Redis unreachable: the request gets an empty session");
                return None;
            }
        };
        match redis::cmd("GET")
            .arg(Self::key(id))
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a session from Redis");
                None
            }
        }
    }

    async fn set(&self, id: &str, json: &[u8], ttl: u64) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        redis::cmd("SET")
            .arg(Self::key(id))
            .arg(json)
            .arg("EX")
            .arg(ttl)
            .query_async::<()>(&mut conn)
            .await
    }

    async fn del(&self, id: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        redis::cmd("DEL").arg(Self::key(id)).query_async::<()>(&mut conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_session_lasts_at_least_its_max_age() {
        for _ in 0..5 {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
            assert!(
                expiry(1) as f64 >= now + 1.0,
                "a session could expire before its max_age"
            );
            std::thread::sleep(std::time::Duration::from_millis(130));
        }
    }
}
