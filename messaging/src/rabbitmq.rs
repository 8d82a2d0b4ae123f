//! RabbitMQ (AMQP 0-9-1) on lapin: a consumer with `prefetch` unacknowledged deliveries at
//! most, acknowledged after the handler; a dead-letter exchange declared with the queue
//! (`x-dead-letter-exchange`) to which a failed message is published — with the error in its
//! headers and a publisher confirm — before it is acknowledged; publishing with publisher
//! confirms (`send` returns once the broker has the message).
//!
//! A worker killed mid-batch never acknowledged its deliveries: the broker delivers them again
//! (`redelivered`; quorum queues also count them in `x-delivery-count`).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex as AsyncMutex;

use crate::delivery::Delivery;
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

pub struct RabbitConsumer {
    opts: RabbitOptions,
    _conn: Connection,
    channel: Channel,
    /// Publishes dead letters, in confirm mode.
    confirm: Channel,
    deliveries: AsyncMutex<lapin::Consumer>,
}

impl RabbitConsumer {
    pub async fn connect(opts: RabbitOptions) -> Result<Self> {
        let conn = connect(&opts.url, opts.connect_timeout).await?;
        let channel = conn.create_channel().await?;
        let confirm = conn.create_channel().await?;
        confirm.confirm_select(ConfirmSelectOptions::default()).await?;
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
        Ok(Self {
            opts,
            _conn: conn,
            channel,
            confirm,
            deliveries: AsyncMutex::new(deliveries),
        })
    }

    pub fn source(&self) -> &str {
        &self.opts.queue
    }

    /// Up to `max` deliveries, waiting up to `block` for the first.
    pub async fn fetch(&self, max: usize, block: Duration) -> Result<Vec<Delivery>> {
        let mut stream = self.deliveries.lock().await;
        let mut out = Vec::new();
        let first = match tokio::time::timeout(block, stream.next()).await {
            Err(_) => return Ok(out),
            Ok(None) => return Err(Error::Unavailable("RabbitMQ: the consumer was cancelled".into())),
            Ok(Some(d)) => d?,
        };
        out.push(self.take(first));
        while out.len() < max {
            // Only what already arrived (up to the prefetch), without waiting.
            match tokio::time::timeout(Duration::ZERO, stream.next()).await {
                Ok(Some(Ok(d))) => out.push(self.take(d)),
                _ => break,
            }
        }
        Ok(out)
    }

    fn take(&self, d: lapin::message::Delivery) -> Delivery {
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
            id: tag.to_string(),
            body: d.data,
            headers,
            key,
            source: self.opts.queue.clone(),
            partition: None,
            offset: None,
            delivery_count: count,
        }
    }

    fn tag(&self, id: &str) -> Result<u64> {
        id.parse()
            .map_err(|_| Error::Config(format!("not a RabbitMQ delivery tag: {id:?}")))
    }

    pub async fn ack(&self, id: &str) -> Result<()> {
        let tag = self.tag(id)?;
        self.channel.basic_ack(tag, BasicAckOptions::default()).await?;
        Ok(())
    }

    /// `requeue`: back to the queue now; otherwise rejected (to the dead-letter exchange as
    /// RabbitMQ routes it, without an error header).
    pub async fn nack(&self, id: &str, requeue: bool) -> Result<()> {
        let tag = self.tag(id)?;
        self.channel
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
        let mut headers = d.headers.clone();
        headers.push(("x-error".into(), error.to_owned()));
        headers.push(("x-delivery-count".into(), d.delivery_count.to_string()));
        headers.push(("x-original-queue".into(), d.source.clone()));
        publish_confirmed(
            &self.confirm,
            &self.opts.dead_letter,
            "",
            &d.body,
            d.key.as_deref(),
            &headers,
        )
        .await?;
        self.ack(&d.id).await
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
    let confirm = ch
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
        .await?
        .await?;
    match confirm {
        lapin::Confirmation::Ack(None) => Ok(()),
        lapin::Confirmation::Ack(Some(_)) => Err(Error::Broker(format!(
            "RabbitMQ: no queue is bound to {exchange:?} with routing key {routing_key:?} (message returned)"
        ))),
        lapin::Confirmation::Nack(_) => Err(Error::Broker("RabbitMQ refused the message (publisher nack)".into())),
        lapin::Confirmation::NotRequested => Ok(()),
    }
}

/// A RabbitMQ producer: publisher confirms on, persistent messages.
pub struct RabbitProducer {
    _conn: Connection,
    channel: Channel,
}

impl RabbitProducer {
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let conn = connect(url, timeout).await?;
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { _conn: conn, channel })
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
        publish_confirmed(&self.channel, exchange, routing_key, body, key, headers).await
    }

    /// Declare `queue` as consumers declare it (durable, with its dead-letter exchange).
    pub async fn declare(&self, queue: &str, dead_letter: &str) -> Result<()> {
        let ch = self._conn.create_channel().await?;
        declare(&ch, queue, dead_letter).await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }
}
