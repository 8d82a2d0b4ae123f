//! `backend="redis"`: the counters of [`crate::ratelimit`] in Redis, so one limit holds
//! across workers and pods. One Lua script per check (atomic; the clock is Redis's own, so
//! every worker sees the same time). When Redis cannot be reached the worker falls back to
//! its in-memory counters and says so in the log (failing open per worker, not closed).

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use crate::ratelimit::{Algo, Decision};

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[2])
if ARGV[1] == 'bucket' then
  local rate = tonumber(ARGV[3])
  local v = redis.call('HMGET', KEYS[1], 't', 'at')
  local tokens = tonumber(v[1]) or cap
  local at = tonumber(v[2]) or now
  tokens = math.min(cap, tokens + math.max(0, now - at) / 1000 * rate)
  local allowed = 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  end
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 1000)
  return {allowed, tostring(tokens), '0'}
else
  local win = math.floor(tonumber(ARGV[3]) * 1000)
  local start = now - (now % win)
  local ck = KEYS[1] .. ':' .. start
  local cur = tonumber(redis.call('GET', ck) or '0')
  local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. (start - win)) or '0')
  local elapsed = now - start
  local weight = 1 - elapsed / win
  local allowed = 0
  if prev * weight + cur + 1 <= cap then
    allowed = 1
    cur = redis.call('INCR', ck)
    redis.call('PEXPIRE', ck, win * 2)
  end
  return {allowed, tostring(prev * weight + cur), tostring(win - elapsed)}
end
"#;

/// Shared counters in Redis.
pub struct RedisStore {
    url: String,
    conn: OnceCell<ConnectionManager>,
    script: redis::Script,
}

impl RedisStore {
    /// Connects lazily, on the first request (inside the server's runtime).
    pub fn new(url: &str) -> crate::Result<Self> {
        redis::Client::open(url).map_err(|e| {
            crate::Error::Config(cello_config::Error::Invalid {
                field: "redis_url".into(),
                reason: format!("bad redis_url {url:?}: {e}"),
            })
        })?;
        Ok(Self {
            url: url.to_owned(),
            conn: OnceCell::new(),
            script: redis::Script::new(SCRIPT),
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

    /// Count one request for `key`.
    pub async fn hit(&self, key: &str, algo: Algo) -> redis::RedisResult<Decision> {
        let mut conn = self.conn().await?;
        let mut inv = self.script.key(format!("cello:rl:{key}"));
        match algo {
            Algo::Bucket { capacity, rate } => inv.arg("bucket").arg(capacity).arg(rate),
            Algo::Window { max, window } => inv.arg("window").arg(max).arg(window),
        };
        let (allowed, level, left_ms): (i64, String, String) = inv.invoke_async(&mut conn).await?;
        let level: f64 = level.parse().unwrap_or(0.0);
        let left = left_ms.parse::<f64>().unwrap_or(0.0) / 1000.0;
        let allowed = allowed == 1;
        Ok(match algo {
            Algo::Bucket { capacity, rate } => Decision {
                allowed,
                limit: capacity as u64,
                remaining: level.floor().max(0.0) as u64,
                reset: secs((capacity - level) / rate),
                retry_after: if allowed { 0 } else { secs((1.0 - level) / rate).max(1) },
            },
            Algo::Window { max, .. } => Decision {
                allowed,
                limit: max as u64,
                remaining: (max - level).floor().max(0.0) as u64,
                reset: secs(left),
                retry_after: if allowed { 0 } else { secs(left).max(1) },
            },
        })
    }
}

fn secs(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        s.ceil() as u64
    } else {
        0
    }
}
