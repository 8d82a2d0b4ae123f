//! RabbitMQ (AMQP 0-9-1) on lapin: a consumer with `prefetch` unacknowledged deliveries at
//! most, acknowledged after the handler; a dead-letter exchange declared with the queue
//! (`x-dead-letter-exchange`) to which a failed message is published — with the error in its
//! headers and a publisher confirm — before it is acknowledged; publishing with publisher
//! confirms (`send` returns once the broker has the message).
//!
//! A worker killed mid-batch never acknowledged its deliveries: the broker delivers them again
//! (`redelivered`; quorum queues also count them in `x-delivery-count`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex as AsyncMutex;

use crate::delivery::{Delivery, Outgoing};
use crate::error::{Error, Result};

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        use lapin::ErrorKind as K;
        match e.kind() {
            K::IOError(_) | K::InvalidConnectionState(_) | K::InvalidChannelState(..) => {
                Error::Unavailable(format!("RabbitMQ: {e}"))
            }
            _ => Error::Broker(format!("RabbitMQ: {e}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RabbitOptions {
    pub url: String,
    pub queue: String,
    /// Exchange a failed message is published to; its queue `<dead_letter>` is bound to it.
    pub dead_letter: String,
    pub prefetch: u16,
    pub connect_timeout: Duration,
    /// Declare the queue (durable, with the dead-letter exchange); off for queues managed elsewhere.
    pub declare: bool,
}

/// Connect within `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<Connection> {
    match tokio::time::timeout(timeout, Connection::connect(url, ConnectionProperties::default())).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Error::Unavailable(format!("RabbitMQ at {}: {e}", crate::redacted(url)))),
        Err(_) => Err(Error::Unavailable(format!(
            "RabbitMQ at {}: no connection within {:.1} s",
            crate::redacted(url),
            timeout.as_secs_f64()
        ))),
    }
}

/// Declare `queue` (durable) with `dead_letter` as its dead-letter exchange, the exchange
/// (fanout) and the queue `dead_letter` bound to it.
async fn declare(ch: &Channel, queue: &str, dead_letter: &str) -> Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.exchange_declare(
        dead_letter.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(dead_letter.into(), durable, FieldTable::default())
        .await?;
    ch.queue_bind(
        dead_letter.into(),
        dead_letter.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(dead_letter)),
    );
    ch.queue_declare(queue.into(), durable, args).await?;
    Ok(())
}

/// One connection and its channels; replaced as a whole when the connection is lost.
struct Session {
    /// Numbers the sessions: a delivery tag is only valid on the channel that delivered it.
    epoch: u64,
    conn: Connection,
    channel: Channel,
    /// Publishes dead letters, in confirm mode.
    confirm: Channel,
    /// Passive declares for the queue depth: an error there closes only this channel.
    stats: Channel,
    deliveries: AsyncMutex<lapin::Consumer>,
}

impl Session {
    fn alive(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }
}

/// A RabbitMQ consumer that reconnects: when its connection is lost, the next `fetch` opens
/// a new one (the caller backs off between failed fetches). The broker requeues what the lost
/// channel had delivered and not acknowledged; acknowledging such a delivery afterwards is a
/// no-op (its tag names the old channel), and the message comes again, flagged `redelivered`.
pub struct RabbitConsumer {
    opts: RabbitOptions,
    session: std::sync::Mutex<Option<Arc<Session>>>,
    epochs: AtomicU64,
    /// One reconnect at a time.
    reconnecting: AsyncMutex<()>,
}

impl RabbitConsumer {
    pub async fn connect(opts: RabbitOptions) -> Result<Self> {
        let me = Self {
            opts,
            session: std::sync::Mutex::new(None),
            epochs: AtomicU64::new(0),
            reconnecting: AsyncMutex::new(()),
        };
        me.session().await?;
        Ok(me)
    }

    async fn open(&self) -> Result<Session> {
        let opts = &self.opts;
        let conn = connect(&opts.url, opts.connect_timeout).await?;
        let channel = conn.create_channel().await?;
        let confirm = conn.create_channel().await?;
        confirm.confirm_select(ConfirmSelectOptions::default()).await?;
        let stats = conn.create_channel().await?;
        if opts.declare {
            declare(&channel, &opts.queue, &opts.dead_letter).await?;
        }
        channel
            .basic_qos(opts.prefetch.max(1), BasicQosOptions::default())
            .await?;
        let deliveries = channel
            .basic_consume(
                opts.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Session {
            epoch: self.epochs.fetch_add(1, Ordering::Relaxed) + 1,
            conn,
            channel,
            confirm,
            stats,
            deliveries: AsyncMutex::new(deliveries),
        })
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The live session, connecting again when the last one was lost.
    async fn session(&self) -> Result<Arc<Session>> {
        if let Some(s) = self.current().filter(|s| s.alive()) {
            return Ok(s);
        }
        let _one = self.reconnecting.lock().await;
        if let Some(s) = self.current() {
            if s.alive() {
                return Ok(s);
            }
            self.drop_session(&s);
        }
        let s = Arc::new(self.open().await?);
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(s.clone());
        if s.epoch > 1 {
            tracing::info!("RabbitMQ: consumer of {:?} connected again", self.opts.queue);
        }
        Ok(s)
    }

    /// Forget `s` (if it is still the current session) and close its connection in the background.
    fn drop_session(&self, s: &Arc<Session>) {
        let mut slot = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|cur| cur.epoch == s.epoch) {
            *slot = None;
        }
        drop(slot);
        let s = s.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), s.conn.close(200, "reconnecting".into())).await;
        });
    }

    pub fn source(&self) -> &str {
        &self.opts.queue
    }

    /// Up to `max` deliveries, waiting up to `block` for the first. A lost connection is an
    /// [`Error::Unavailable`]; the next call connects again.
    pub async fn fetch(&self, max: usize, block: Duration) -> Result<Vec<Delivery>> {
        let s = self.session().await?;
        let mut stream = s.deliveries.lock().await;
        let mut out = Vec::new();
        let first = match tokio::time::timeout(block, stream.next()).await {
            Err(_) if s.alive() => return Ok(out),
            Err(_) | Ok(None) => {
                drop(stream);
                self.drop_session(&s);
                return Err(Error::Unavailable(format!(
                    "RabbitMQ: the connection of the consumer of {:?} was lost",
                    self.opts.queue
                )));
            }
            Ok(Some(Err(e))) => {
                drop(stream);
                self.drop_session(&s);
                return Err(e.into());
            }
            Ok(Some(Ok(d))) => d,
        };
        out.push(self.take(s.epoch, first));
        while out.len() < max {
            // Only what already arrived (up to the prefetch), without waiting.
            match tokio::time::timeout(Duration::ZERO, stream.next()).await {
                Ok(Some(Ok(d))) => out.push(self.take(s.epoch, d)),
                _ => break,
            }
        }
        Ok(out)
    }

    fn take(&self, epoch: u64, d: lapin::message::Delivery) -> Delivery {
        let tag = d.delivery_tag;
        let headers = d.properties.headers().as_ref().map(headers_of).unwrap_or_default();
        // Quorum queues count deliveries; classic queues only flag a redelivery.
        let count = headers
            .iter()
            .find(|(k, _)| k == "x-delivery-count")
            .and_then(|(_, v)| v.parse::<u32>().ok())
            .map(|n| n + 1)
            .unwrap_or(if d.redelivered { 2 } else { 1 });
        let key = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .or_else(|| Some(d.routing_key.to_string()).filter(|k| !k.is_empty() && k != &self.opts.queue));
        Delivery {
            id: format!("{epoch}:{tag}"),
            body: d.data,
            headers,
            key,
            source: self.opts.queue.clone(),
            partition: None,
            offset: None,
            delivery_count: count,
        }
    }

    /// The session that delivered `id` and its tag there; `None` when that session is gone
    /// (the broker has requeued the delivery).
    fn owner(&self, id: &str) -> Result<Option<(Arc<Session>, u64)>> {
        let bad = || Error::Config(format!("not a RabbitMQ delivery id: {id:?}"));
        let (epoch, tag) = id.split_once(':').ok_or_else(bad)?;
        let epoch: u64 = epoch.parse().map_err(|_| bad())?;
        let tag: u64 = tag.parse().map_err(|_| bad())?;
        Ok(self.current().filter(|s| s.epoch == epoch).map(|s| (s, tag)))
    }

    pub async fn ack(&self, id: &str) -> Result<()> {
        let Some((s, tag)) = self.owner(id)? else {
            tracing::debug!("RabbitMQ: delivery {id} came on a lost connection: redelivered, not acknowledged");
            return Ok(());
        };
        s.channel.basic_ack(tag, BasicAckOptions::default()).await?;
        Ok(())
    }

    /// `requeue`: back to the queue now; otherwise rejected (to the dead-letter exchange as
    /// RabbitMQ routes it, without an error header).
    pub async fn nack(&self, id: &str, requeue: bool) -> Result<()> {
        let Some((s, tag)) = self.owner(id)? else {
            return Ok(()); // its channel is gone: the broker requeued it already
        };
        s.channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: false,
                    requeue,
                },
            )
            .await?;
        Ok(())
    }

    /// Publish `d` with `error` to the dead-letter exchange (confirmed), then acknowledge it.
    pub async fn dead_letter(&self, d: &Delivery, error: &str) -> Result<()> {
        let Some((s, _)) = self.owner(&d.id)? else {
            return Ok(()); // delivered again on the new connection, where it is decided again
        };
        let mut headers = d.headers.clone();
        headers.push(("x-error".into(), error.to_owned()));
        headers.push(("x-delivery-count".into(), d.delivery_count.to_string()));
        headers.push(("x-original-queue".into(), d.source.clone()));
        publish_confirmed(
            &s.confirm,
            &self.opts.dead_letter,
            "",
            &d.body,
            d.key.as_deref(),
            &headers,
        )
        .await?;
        self.ack(&d.id).await
    }

    /// Messages ready in the queue (not counting those delivered and unacknowledged): a
    /// passive declare on a channel of its own.
    pub async fn depth(&self) -> Result<u64> {
        let s = self.session().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let q = s
            .stats
            .queue_declare(self.opts.queue.as_str().into(), passive, FieldTable::default())
            .await?;
        Ok(u64::from(q.message_count()))
    }
}

fn headers_of(t: &FieldTable) -> Vec<(String, String)> {
    t.inner().iter().map(|(k, v)| (k.to_string(), value_text(v))).collect()
}

fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// Publish and wait for the broker's confirm; a nack or an unroutable return is an error.
async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    key: Option<&str>,
    headers: &[(String, String)],
) -> Result<()> {
    let confirm = publish(ch, exchange, routing_key, body, key, headers).await?;
    confirmed(confirm, exchange, routing_key).await
}

/// Publish (persistent, mandatory); the confirm is awaited apart, so a batch can publish
/// every message before it waits for any confirm.
async fn publish(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    key: Option<&str>,
    headers: &[(String, String)],
) -> Result<lapin::PublisherConfirm> {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(
            ShortString::from(k.as_str()),
            AMQPValue::LongString(LongString::from(v.as_str())),
        );
    }
    let mut props = BasicProperties::default().with_headers(table).with_delivery_mode(2);
    if let Some(k) = key {
        props = props.with_message_id(ShortString::from(k));
    }
    Ok(ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            props,
        )
        .await?)
}

/// The broker's answer to one publish: an error when it was returned (unroutable) or nacked.
async fn confirmed(confirm: lapin::PublisherConfirm, exchange: &str, routing_key: &str) -> Result<()> {
    match confirm.await? {
        lapin::Confirmation::Ack(None) => Ok(()),
        lapin::Confirmation::Ack(Some(_)) => Err(Error::Broker(format!(
            "RabbitMQ: no queue is bound to {exchange:?} with routing key {routing_key:?} (message returned)"
        ))),
        lapin::Confirmation::Nack(_) => Err(Error::Broker("RabbitMQ refused the message (publisher nack)".into())),
        lapin::Confirmation::NotRequested => Ok(()),
    }
}

/// A RabbitMQ producer: publisher confirms on, persistent messages. When its connection is
/// lost, the send under way fails (`Error::Unavailable`) and the next one connects again; a
/// send never waits longer than the connect timeout plus [`CONFIRM_TIMEOUT`].
pub struct RabbitProducer {
    url: String,
    timeout: Duration,
    session: std::sync::Mutex<Option<Arc<(Connection, Channel)>>>,
    reconnecting: AsyncMutex<()>,
}

/// The longest wait for a publisher confirm.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

impl RabbitProducer {
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let me = Self {
            url: url.to_owned(),
            timeout,
            session: std::sync::Mutex::new(None),
            reconnecting: AsyncMutex::new(()),
        };
        me.session().await?;
        Ok(me)
    }

    async fn session(&self) -> Result<Arc<(Connection, Channel)>> {
        let current = || self.session.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let alive = |s: &Arc<(Connection, Channel)>| s.0.status().connected() && s.1.status().connected();
        if let Some(s) = current().filter(alive) {
            return Ok(s);
        }
        let _one = self.reconnecting.lock().await;
        if let Some(s) = current().filter(alive) {
            return Ok(s);
        }
        let conn = connect(&self.url, self.timeout).await?;
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let s = Arc::new((conn, channel));
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(s.clone());
        Ok(s)
    }

    /// To the default exchange with routing key `queue` (or to `exchange` with `routing_key`).
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        key: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<()> {
        let s = self.session().await?;
        let publish = publish_confirmed(&s.1, exchange, routing_key, body, key, headers);
        match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(format!(
                "RabbitMQ: no publisher confirm within {} s",
                CONFIRM_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Publish `messages` to the default exchange (routing key: each one's `dest`, a queue),
    /// every one first and then every publisher confirm awaited (all within
    /// [`CONFIRM_TIMEOUT`]). One result per message, in order: a message that is returned or
    /// nacked fails alone; a lost connection fails those not yet confirmed; past the timeout
    /// every one is reported failed (some may have arrived: sending again may duplicate them).
    pub async fn send_batch(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        let s = match self.session().await {
            Ok(s) => s,
            Err(e) => return messages.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            confirms.push(publish(&s.1, "", &m.dest, &m.body, m.key.as_deref(), &m.headers).await);
        }
        let all = futures_util::future::join_all(
            confirms
                .into_iter()
                .zip(messages)
                .map(|(c, m)| async move { confirmed(c?, "", &m.dest).await }),
        );
        match tokio::time::timeout(CONFIRM_TIMEOUT, all).await {
            Ok(results) => results,
            Err(_) => {
                let e = Error::Unavailable(format!(
                    "RabbitMQ: no publisher confirm within {} s",
                    CONFIRM_TIMEOUT.as_secs()
                ));
                messages.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }

    /// Declare `queue` as consumers declare it (durable, with its dead-letter exchange).
    pub async fn declare(&self, queue: &str, dead_letter: &str) -> Result<()> {
        let s = self.session().await?;
        let ch = s.0.create_channel().await?;
        declare(&ch, queue, dead_letter).await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }
}
