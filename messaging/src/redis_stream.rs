//! Redis streams with a consumer group: `XREADGROUP` for new entries, `XAUTOCLAIM` for entries
//! another consumer (or a killed worker) left unacknowledged longer than `claim_idle`, `XACK`
//! once the handler finished, and the dead-letter stream written in the same `MULTI` as the
//! `XACK` (so a crash between them cannot lose the entry or record it twice).
//!
//! Acks of the consume loop are batched ([`StreamConsumer::ack_queued`], see `acks.rs`): one
//! `XACK` with the ids that finished meanwhile. The acks still queued go out in the same
//! round trip as, and before, the next `XAUTOCLAIM`, so this consumer never claims back an
//! entry it already finished. `XAUTOCLAIM` runs before every fetch while it finds entries, and
//! once per [`reclaim_every`] after one found none.
//!
//! Entries carry the body in the field `body`, the key in `key` and headers as `h:<name>`
//! fields; an entry without `body` (written by another client) gets its fields as a JSON
//! object instead.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Value;
use tokio::sync::Mutex;

use crate::acks::{AckQueue, Flusher};
use crate::delivery::{Delivery, HEADER_PREFIX};
use crate::error::{Error, Result};

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub url: String,
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub dead_letter: String,
    /// Entries pending longer than this are claimed again (their worker died or gave up).
    pub claim_idle: Duration,
    pub connect_timeout: Duration,
}

pub struct StreamConsumer {
    opts: StreamOptions,
    /// Blocks in `XREADGROUP`; commands on a multiplexed connection queue behind a blocked
    /// one, so acknowledgements use `ctl`.
    reader: ConnectionManager,
    ctl: ConnectionManager,
    cursor: Mutex<String>,
    /// No `XAUTOCLAIM` before this (the last found nothing to claim).
    quiet_until: std::sync::Mutex<Instant>,
    acks: Arc<AckQueue>,
    _flusher: Flusher,
}

/// How long after an `XAUTOCLAIM` that found nothing the next one is due: entries are
/// claimed once idle between `claim_idle` and 1.25 × `claim_idle` (at most 1 s later), and a
/// busy consumer does not pay a round trip per fetch for it.
fn reclaim_every(claim_idle: Duration) -> Duration {
    (claim_idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// `XACK stream group id...` on `pipe`.
fn xack(pipe: &mut redis::Pipeline, stream: &str, group: &str, ids: &[String]) {
    pipe.cmd("XACK").arg(stream).arg(group).arg(ids).ignore();
}

/// `XGROUP CREATE ... 0 MKSTREAM` unless the group exists.
async fn create_group(ctl: &mut ConnectionManager, stream: &str, group: &str) -> Result<()> {
    let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(ctl)
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl StreamConsumer {
    /// Connect and create the group (at the stream's start, so entries written before the
    /// first consumer ran are consumed too) unless it exists.
    pub async fn connect(opts: StreamOptions) -> Result<Self> {
        let reader = crate::redis_connect(&opts.url, opts.connect_timeout).await?;
        let mut ctl = crate::redis_connect(&opts.url, opts.connect_timeout).await?;
        create_group(&mut ctl, &opts.stream, &opts.group).await?;
        let (acks, flusher) = AckQueue::start("Redis stream", {
            let (conn, stream, group) = (ctl.clone(), opts.stream.clone(), opts.group.clone());
            Box::new(move |ids: Vec<String>| {
                let (mut conn, stream, group) = (conn.clone(), stream.clone(), group.clone());
                Box::pin(async move {
                    let mut pipe = redis::pipe();
                    xack(&mut pipe, &stream, &group, &ids);
                    let _: Value = pipe.query_async(&mut conn).await?;
                    Ok(())
                })
            })
        });
        Ok(Self {
            opts,
            reader,
            ctl,
            cursor: Mutex::new("0-0".into()),
            quiet_until: std::sync::Mutex::new(Instant::now()),
            acks,
            _flusher: flusher,
        })
    }

    pub fn source(&self) -> &str {
        &self.opts.stream
    }

    /// Up to `max` entries: first those left pending past `claim_idle`, else new ones
    /// (waiting up to `block` for one). Empty when none came. A stream or group that is gone
    /// (a Redis restarted without its data, a deleted key) is made again, as at connect.
    pub async fn fetch(&self, max: usize, block: Duration) -> Result<Vec<Delivery>> {
        match self.fetch_once(max, block).await {
            Err(Error::Broker(m)) if m.contains("NOGROUP") => {
                create_group(&mut self.ctl.clone(), &self.opts.stream, &self.opts.group).await?;
                *self.cursor.lock().await = "0-0".into();
                self.fetch_once(max, block).await
            }
            other => other,
        }
    }

    async fn fetch_once(&self, max: usize, block: Duration) -> Result<Vec<Delivery>> {
        let due = Instant::now() >= *self.quiet_until.lock().unwrap_or_else(PoisonError::into_inner);
        if due {
            let claimed = self.reclaim(max).await?;
            if !claimed.is_empty() {
                return Ok(claimed);
            }
            *self.quiet_until.lock().unwrap_or_else(PoisonError::into_inner) =
                Instant::now() + reclaim_every(self.opts.claim_idle);
        }
        let mut reader = self.reader.clone();
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.opts.group)
            .arg(&self.opts.consumer)
            .arg("COUNT")
            .arg(max.max(1))
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.opts.stream)
            .arg(">")
            .query_async(&mut reader)
            .await?;
        let mut out = Vec::new();
        // RESP2: [[stream, [entry...]]]; RESP3: {stream: [entry...]}; nil after the timeout.
        let streams: Vec<Value> = match reply {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|s| match s {
                    Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                    _ => None,
                })
                .collect(),
            Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
            _ => Vec::new(),
        };
        for entries in streams {
            if let Value::Array(entries) = entries {
                for e in entries {
                    if let Some(d) = entry(&self.opts.stream, e, 1) {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn reclaim(&self, max: usize) -> Result<Vec<Delivery>> {
        let mut ctl = self.ctl.clone();
        let mut cursor = self.cursor.lock().await;
        // The acks still queued first, in the same round trip: what finished here is not
        // claimed again. The queue's sender waits meanwhile, so none is under way either.
        let sending = self.acks.lock().await;
        let acks = self.acks.take();
        let mut pipe = redis::pipe();
        if !acks.is_empty() {
            xack(&mut pipe, &self.opts.stream, &self.opts.group, &acks);
        }
        pipe.cmd("XAUTOCLAIM")
            .arg(&self.opts.stream)
            .arg(&self.opts.group)
            .arg(&self.opts.consumer)
            .arg(self.opts.claim_idle.as_millis() as u64)
            .arg(cursor.as_str())
            .arg("COUNT")
            .arg(max.max(1));
        let reply: Vec<Value> = match pipe.query_async(&mut ctl).await {
            Ok(r) => r,
            Err(e) => {
                self.acks.restore(acks);
                return Err(e.into());
            }
        };
        drop(sending);
        let Some(reply) = reply.into_iter().next() else {
            return Ok(Vec::new());
        };
        let Value::Array(mut parts) = reply else {
            return Ok(Vec::new());
        };
        if parts.len() < 2 {
            return Ok(Vec::new());
        }
        let entries = parts.remove(1);
        *cursor = text(&parts[0]).unwrap_or_else(|| "0-0".into());
        drop(cursor);
        let mut out = Vec::new();
        if let Value::Array(entries) = entries {
            for e in entries {
                if let Some(d) = entry(&self.opts.stream, e, 0) {
                    out.push(d);
                }
            }
        }
        if out.is_empty() {
            return Ok(out);
        }
        // XAUTOCLAIM counted this delivery; XPENDING tells how many there were.
        let mut pipe = redis::pipe();
        for d in &out {
            pipe.cmd("XPENDING")
                .arg(&self.opts.stream)
                .arg(&self.opts.group)
                .arg(&d.id)
                .arg(&d.id)
                .arg(1);
        }
        let counts: Vec<Value> = pipe.query_async(&mut ctl).await?;
        for (d, c) in out.iter_mut().zip(counts) {
            d.delivery_count = pending_count(c).unwrap_or(2);
        }
        Ok(out)
    }

    /// The handler finished: the entry is done, acknowledged with the next batch (no I/O here).
    pub fn ack_queued(&self, id: &str) {
        self.acks.push(id.to_owned());
    }

    /// Send the queued acks; returns once Redis has them.
    pub async fn flush(&self) {
        self.acks.flush().await;
    }

    /// The handler finished: the entry is done, acknowledged now.
    pub async fn ack(&self, id: &str) -> Result<()> {
        let mut ctl = self.ctl.clone();
        let _: Value = redis::cmd("XACK")
            .arg(&self.opts.stream)
            .arg(&self.opts.group)
            .arg(id)
            .query_async(&mut ctl)
            .await?;
        Ok(())
    }

    /// `requeue`: leave it pending, so it is claimed again after `claim_idle`; otherwise drop it.
    pub async fn nack(&self, id: &str, requeue: bool) -> Result<()> {
        if requeue {
            return Ok(());
        }
        self.ack(id).await
    }

    /// Entries not yet delivered to the group: its `lag` in `XINFO GROUPS` (Redis 7); `None`
    /// when Redis cannot tell (an older Redis, or entries deleted from the middle of the
    /// stream) or the group is gone.
    pub async fn lag(&self) -> Result<Option<u64>> {
        let mut ctl = self.ctl.clone();
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.opts.stream)
            .query_async(&mut ctl)
            .await?;
        let Value::Array(groups) = groups else {
            return Ok(None);
        };
        for g in groups {
            // RESP2: a flat [key, value, ...] array; RESP3: a map.
            let fields: Vec<(Value, Value)> = match g {
                Value::Array(flat) => {
                    let mut it = flat.into_iter();
                    std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
                }
                Value::Map(pairs) => pairs,
                _ => continue,
            };
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| text(k).as_deref() == Some(name))
                    .map(|(_, v)| v)
            };
            if field("name").and_then(text).as_deref() != Some(self.opts.group.as_str()) {
                continue;
            }
            return Ok(match field("lag") {
                Some(Value::Int(n)) => u64::try_from(*n).ok(),
                _ => None,
            });
        }
        Ok(None)
    }

    /// Write `d` with `error` to the dead-letter stream and acknowledge it, atomically.
    pub async fn dead_letter(&self, d: &Delivery, error: &str) -> Result<()> {
        let mut ctl = self.ctl.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let xadd = pipe.cmd("XADD").arg(&self.opts.dead_letter).arg("*");
        for (k, v) in dead_letter_fields(d, error) {
            xadd.arg(k).arg(v);
        }
        pipe.ignore();
        pipe.cmd("XACK")
            .arg(&self.opts.stream)
            .arg(&self.opts.group)
            .arg(&d.id)
            .ignore();
        let _: Value = pipe.query_async(&mut ctl).await?;
        Ok(())
    }
}

/// The fields of a dead-letter record: the message as it came, plus why it ended there.
pub(crate) fn dead_letter_fields(d: &Delivery, error: &str) -> Vec<(String, Vec<u8>)> {
    let mut f = encode(&d.body, d.key.as_deref(), &d.headers);
    for (k, v) in [
        ("x-error", error.to_owned()),
        ("x-delivery-count", d.delivery_count.to_string()),
        ("x-original-id", d.id.clone()),
        ("x-original-source", d.source.clone()),
    ] {
        f.push((format!("{HEADER_PREFIX}{k}"), v.into_bytes()));
    }
    f
}

/// A message as stream fields.
pub fn encode(body: &[u8], key: Option<&str>, headers: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    let mut f = vec![("body".to_owned(), body.to_vec())];
    if let Some(k) = key {
        f.push(("key".into(), k.as_bytes().to_vec()));
    }
    for (k, v) in headers {
        f.push((format!("{HEADER_PREFIX}{k}"), v.as_bytes().to_vec()));
    }
    f
}

/// `XADD stream * fields...`: the entry id.
pub async fn publish(
    conn: &mut ConnectionManager,
    stream: &str,
    body: &[u8],
    key: Option<&str>,
    headers: &[(String, String)],
) -> Result<String> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in encode(body, key, headers) {
        cmd.arg(k).arg(v);
    }
    let id: Value = cmd.query_async(conn).await?;
    text(&id).ok_or_else(|| Error::Broker(format!("XADD to {stream} answered {id:?}")))
}

pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::VerbatimString { text, .. } => text.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

/// `[id, [field, value, ...]]` as a delivery; None for a deleted entry (nil fields).
fn entry(stream: &str, v: Value, delivery_count: u32) -> Option<Delivery> {
    let Value::Array(mut pair) = v else { return None };
    if pair.len() != 2 {
        return None;
    }
    let fields = pair.pop()?;
    let id = text(&pair[0])?;
    let flat: Vec<Value> = match fields {
        Value::Array(f) => f,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return None,
    };
    let mut d = Delivery {
        offset: id.split('-').next().and_then(|ms| ms.parse().ok()),
        id,
        source: stream.to_owned(),
        delivery_count,
        ..Delivery::default()
    };
    let mut body = None;
    let mut plain = Vec::new();
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = text(&k).unwrap_or_default();
        let v = bytes(v);
        if k == "body" {
            body = Some(v);
        } else if k == "key" {
            d.key = Some(String::from_utf8_lossy(&v).into_owned());
        } else if let Some(h) = k.strip_prefix(HEADER_PREFIX) {
            d.headers.push((h.to_owned(), String::from_utf8_lossy(&v).into_owned()));
        } else {
            plain.push((k, String::from_utf8_lossy(&v).into_owned()));
        }
    }
    d.body = match body {
        Some(b) => b,
        None => json_object(&plain).into_bytes(),
    };
    Some(d)
}

/// `{"k": "v", ...}` for an entry another client wrote without a `body` field.
fn json_object(pairs: &[(String, String)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&json_string(k));
        s.push(':');
        s.push_str(&json_string(v));
    }
    s.push('}');
    s
}

pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The delivery count of an `XPENDING stream group id id 1` reply.
fn pending_count(v: Value) -> Option<u32> {
    let Value::Array(rows) = v else { return None };
    let Value::Array(row) = rows.into_iter().next()? else {
        return None;
    };
    match row.get(3)? {
        Value::Int(n) => u32::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entry_with_body_key_and_headers() {
        let v = Value::Array(vec![
            bulk("17-0"),
            Value::Array(vec![
                bulk("body"),
                bulk("hi"),
                bulk("key"),
                bulk("k1"),
                bulk("h:trace"),
                bulk("t"),
            ]),
        ]);
        let d = entry("s", v, 1).unwrap();
        assert_eq!(d.id, "17-0");
        assert_eq!(d.offset, Some(17));
        assert_eq!(d.body, b"hi");
        assert_eq!(d.key.as_deref(), Some("k1"));
        assert_eq!(d.headers, vec![("trace".to_owned(), "t".to_owned())]);
    }

    #[test]
    fn foreign_entry_becomes_json() {
        let v = Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("a"), bulk("x\"y")])]);
        assert_eq!(entry("s", v, 1).unwrap().body, br#"{"a":"x\"y"}"#);
    }

    #[test]
    fn deleted_entry_is_skipped() {
        assert!(entry("s", Value::Array(vec![bulk("1-0"), Value::Nil]), 1).is_none());
    }

    #[test]
    fn dead_letter_carries_the_error() {
        let d = Delivery {
            id: "5-0".into(),
            body: b"b".to_vec(),
            delivery_count: 3,
            source: "s".into(),
            ..Delivery::default()
        };
        let f = dead_letter_fields(&d, "boom");
        assert!(f.contains(&("h:x-error".to_owned(), b"boom".to_vec())));
        assert!(f.contains(&("h:x-delivery-count".to_owned(), b"3".to_vec())));
    }
}
