//! A Redis list as a reliable queue: producers `LPUSH`, the consumer moves each element
//! into a processing list of its own (`BLMOVE`) and removes it there (`LREM`) once the
//! handler finished. A consumer that starts moves what its predecessor of the same name
//! left in the processing list back to the queue first, so a killed worker loses nothing.
//!
//! List elements are bare bodies (no headers); a dead-letter record is a JSON object
//! `{"body", "error", "delivery_count", "source"}` pushed to the dead-letter list.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::Value;

use crate::delivery::{Delivery, Outgoing};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct ListOptions {
    pub url: String,
    pub list: String,
    /// Stable per worker slot (host and slot), so a restarted worker recovers its
    /// predecessor's unfinished elements.
    pub consumer: String,
    pub dead_letter: String,
    pub connect_timeout: Duration,
}

pub struct ListConsumer {
    opts: ListOptions,
    processing: String,
    reader: ConnectionManager,
    ctl: ConnectionManager,
}

impl ListConsumer {
    pub async fn connect(opts: ListOptions) -> Result<Self> {
        let reader = crate::redis_connect(&opts.url, opts.connect_timeout).await?;
        let mut ctl = crate::redis_connect(&opts.url, opts.connect_timeout).await?;
        let processing = format!("{}:processing:{}", opts.list, opts.consumer);
        // Unfinished elements of a previous run go back to the consuming end of the queue.
        loop {
            let moved: Value = redis::cmd("LMOVE")
                .arg(&processing)
                .arg(&opts.list)
                .arg("RIGHT")
                .arg("RIGHT")
                .query_async(&mut ctl)
                .await?;
            if moved == Value::Nil {
                break;
            }
        }
        Ok(Self {
            opts,
            processing,
            reader,
            ctl,
        })
    }

    pub fn source(&self) -> &str {
        &self.opts.list
    }

    /// Up to `max` elements, waiting up to `block` for the first.
    pub async fn fetch(&self, max: usize, block: Duration) -> Result<Vec<Delivery>> {
        let mut reader = self.reader.clone();
        let first: Value = redis::cmd("BLMOVE")
            .arg(&self.opts.list)
            .arg(&self.processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(block.as_secs_f64().max(0.01))
            .query_async(&mut reader)
            .await?;
        let mut out = Vec::new();
        let Some(d) = self.delivery(first) else {
            return Ok(out);
        };
        out.push(d);
        let mut ctl = self.ctl.clone();
        while out.len() < max {
            let next: Value = match redis::cmd("LMOVE")
                .arg(&self.opts.list)
                .arg(&self.processing)
                .arg("RIGHT")
                .arg("LEFT")
                .query_async(&mut ctl)
                .await
            {
                Ok(v) => v,
                // What was moved already is in the processing list: hand it over rather than
                // strand it there (the next fetch reports the lost connection).
                Err(e) => {
                    tracing::debug!("Redis: LMOVE from {:?} failed: {e}", self.opts.list);
                    break;
                }
            };
            match self.delivery(next) {
                Some(d) => out.push(d),
                None => break,
            }
        }
        Ok(out)
    }

    fn delivery(&self, v: Value) -> Option<Delivery> {
        let body = match v {
            Value::BulkString(b) => b,
            Value::SimpleString(s) => s.into_bytes(),
            _ => return None,
        };
        Some(Delivery {
            // The element is its own handle: LREM finds it in the processing list.
            id: String::new(),
            body,
            source: self.opts.list.clone(),
            delivery_count: 1,
            ..Delivery::default()
        })
    }

    pub async fn ack(&self, body: &[u8]) -> Result<()> {
        let mut ctl = self.ctl.clone();
        let _: Value = redis::cmd("LREM")
            .arg(&self.processing)
            .arg(1)
            .arg(body)
            .query_async(&mut ctl)
            .await?;
        Ok(())
    }

    /// `requeue`: back to the consuming end of the queue at once; otherwise dropped.
    pub async fn nack(&self, body: &[u8], requeue: bool) -> Result<()> {
        let mut ctl = self.ctl.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("LREM").arg(&self.processing).arg(1).arg(body).ignore();
        if requeue {
            pipe.cmd("RPUSH").arg(&self.opts.list).arg(body).ignore();
        }
        let _: Value = pipe.query_async(&mut ctl).await?;
        Ok(())
    }

    /// Elements waiting in the list (`LLEN`; those being handled sit in the processing list).
    pub async fn depth(&self) -> Result<u64> {
        let mut ctl = self.ctl.clone();
        let n: u64 = redis::cmd("LLEN").arg(&self.opts.list).query_async(&mut ctl).await?;
        Ok(n)
    }

    pub async fn dead_letter(&self, d: &Delivery, error: &str) -> Result<()> {
        let record = format!(
            "{{\"body\":{},\"error\":{},\"delivery_count\":{},\"source\":{}}}",
            crate::redis_stream::json_string(&String::from_utf8_lossy(&d.body)),
            crate::redis_stream::json_string(error),
            d.delivery_count,
            crate::redis_stream::json_string(&d.source),
        );
        let mut ctl = self.ctl.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("LPUSH").arg(&self.opts.dead_letter).arg(record).ignore();
        pipe.cmd("LREM").arg(&self.processing).arg(1).arg(&d.body).ignore();
        let _: Value = pipe.query_async(&mut ctl).await?;
        Ok(())
    }
}

/// A Redis producer: `XADD` to streams, `LPUSH` to lists.
pub struct RedisProducer {
    conn: ConnectionManager,
}

impl RedisProducer {
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self> {
        Ok(Self {
            conn: crate::redis_connect(url, timeout).await?,
        })
    }

    /// Append to a stream; the entry id.
    pub async fn xadd(
        &self,
        stream: &str,
        body: &[u8],
        key: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<String> {
        let mut conn = self.conn.clone();
        crate::redis_stream::publish(&mut conn, stream, body, key, headers).await
    }

    /// Push to a list queue; the list's length after.
    pub async fn lpush(&self, list: &str, body: &[u8]) -> Result<i64> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::cmd("LPUSH").arg(list).arg(body).query_async(&mut conn).await?;
        Ok(n)
    }

    /// Publish `messages` in one pipeline (one round trip): `LPUSH` of the bodies when `list`,
    /// else `XADD`. One result per message, in order — the entry id, or the list's length
    /// after the push. Redis runs every command of a pipeline, so one refused (say, a key of
    /// another type) fails alone; a lost connection fails them all (some may have been stored).
    pub async fn send_batch(&self, list: bool, messages: &[Outgoing]) -> Vec<Result<String>> {
        if messages.is_empty() {
            return Vec::new();
        }
        let mut pipe = redis::pipe();
        for m in messages {
            if list {
                pipe.cmd("LPUSH").arg(&m.dest).arg(&m.body);
            } else {
                let xadd = pipe.cmd("XADD").arg(&m.dest).arg("*");
                for (k, v) in crate::redis_stream::encode(&m.body, m.key.as_deref(), &m.headers) {
                    xadd.arg(k).arg(v);
                }
            }
        }
        let mut conn = self.conn.clone();
        // The raw replies, a refused command's error among them (a typed query fails whole).
        let replies = match conn.req_packed_commands(&pipe, 0, messages.len()).await {
            Ok(r) if r.len() == messages.len() => r,
            Ok(r) => {
                let e = Error::Broker(format!("Redis answered {} of {} commands", r.len(), messages.len()));
                return messages.iter().map(|_| Err(e.clone())).collect();
            }
            Err(e) => {
                let e = Error::from(e);
                return messages.iter().map(|_| Err(e.clone())).collect();
            }
        };
        replies
            .into_iter()
            .zip(messages)
            .map(|(v, m)| match v {
                Value::ServerError(e) => Err(Error::from(redis::RedisError::from(e))),
                Value::Int(n) => Ok(n.to_string()),
                v => crate::redis_stream::text(&v)
                    .ok_or_else(|| Error::Broker(format!("XADD to {} answered {v:?}", m.dest))),
            })
            .collect()
    }
}
