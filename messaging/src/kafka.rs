//! Kafka on rdkafka (librdkafka, built from source): a consumer-group member whose offsets
//! are committed only for messages whose handler finished, and a producer with `acks=all`
//! (`send` returns once the broker has the message).
//!
//! Offsets: every fetched message is pending until it is settled (`ack`, `dead_letter`,
//! `requeue`, `reject`). Per partition the committable offset is the lowest pending one (or
//! one past the highest settled when none is pending), so a message is never committed
//! before its handler finished, whatever order handlers finish in. The offset is stored in
//! librdkafka's offset store and committed every second (`auto_commit`) or at once, on
//! revoke, and on `close`. A killed worker committed nothing it had not finished: its
//! successor gets the rest again.
//!
//! Revoke (a rebalance takes partitions away), so that the next owner starts where this one
//! stopped: no message of those partitions begins any more ([`KafkaConsumer::begin`] says
//! no; fetched ones are left to the next owner), the handlers already running for them get
//! up to [`REVOKE_WAIT`] to settle, then what settled is committed synchronously, before the
//! partitions are given up. The group uses the cooperative-sticky assignor: a rebalance
//! revokes only the partitions that move, the others keep being handled.
//!
//! Ids of deliveries are `<generation>:<partition>:<offset>`; the generation changes when a
//! partition is assigned again, so a message fetched before its partition was revoked is
//! neither committed nor begun.
//!
//! `requeue` publishes the message again at the end of its topic (with `x-delivery-count`),
//! Kafka having no way to give one message back; a dead letter goes to the topic
//! `<topic>.dlq` with the error in its headers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::delivery::{Delivery, Outgoing};
use crate::error::{Error, Result};

impl From<KafkaError> for Error {
    fn from(e: KafkaError) -> Self {
        use RDKafkaErrorCode as C;
        match e.rdkafka_error_code() {
            Some(
                C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Resolve
                | C::MessageTimedOut
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NetworkException
                | C::BrokerNotAvailable,
            ) => Error::Unavailable(format!("Kafka: {e}")),
            _ => Error::Broker(format!("Kafka: {e}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port,...`
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub client_id: Option<String>,
    /// Topic a failed message is published to.
    pub dead_letter: String,
    pub session_timeout_ms: u32,
    /// Commit stored offsets every second (true) or on each settled message (false).
    pub auto_commit: bool,
    pub connect_timeout: Duration,
}

/// How long a revoke waits for the running handlers of the revoked partitions to settle.
/// Longer ones are handled again by the next owner; librdkafka keeps heartbeating meanwhile.
pub const REVOKE_WAIT: Duration = Duration::from_secs(10);

/// Commits refused because the group is rebalancing are tried again this often, this far apart.
const COMMIT_TRIES: u32 = 5;
const COMMIT_RETRY: Duration = Duration::from_millis(200);

/// Per partition: what was fetched and not yet settled.
#[derive(Debug, Default)]
struct Part {
    generation: u64,
    /// Fetched, not settled (begun or not).
    pending: BTreeSet<i64>,
    /// Begun (its handler runs), not settled.
    running: BTreeSet<i64>,
    /// Being revoked: nothing begins any more.
    revoking: bool,
    /// One past the highest settled offset.
    high: i64,
    /// The offset last stored (next to consume), -1 before any.
    stored: i64,
}

impl Part {
    fn point(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.high)
    }
}

#[derive(Debug, Default)]
struct Tracker {
    generation: u64,
    parts: HashMap<i32, Part>,
}

impl Tracker {
    /// The partition's state, begun with a new generation when it is not tracked.
    fn part(&mut self, partition: i32) -> &mut Part {
        if !self.parts.contains_key(&partition) {
            self.generation += 1;
            let part = Part {
                generation: self.generation,
                stored: -1,
                ..Part::default()
            };
            self.parts.insert(partition, part);
        }
        self.parts.get_mut(&partition).expect("inserted above")
    }
}

/// The tracker, and a signal for a revoke waiting on running handlers.
#[derive(Debug, Default)]
struct Shared {
    tracker: Mutex<Tracker>,
    settled: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Message `o` of partition `p` (fetched in generation `g`) begins, unless the partition
    /// was revoked since or is being revoked.
    fn begin(&self, g: u64, p: i32, o: i64) -> bool {
        let mut tracker = self.lock();
        match tracker.parts.get_mut(&p) {
            Some(part) if part.generation == g && !part.revoking => {
                part.running.insert(o);
                true
            }
            _ => false,
        }
    }

    /// Message `o` of partition `p` is settled; the new commit point when it moved (None
    /// also when the partition was revoked since: its next owner handles the message again).
    fn settle(&self, g: u64, p: i32, o: i64) -> Option<i64> {
        let mut tracker = self.lock();
        let part = tracker.parts.get_mut(&p).filter(|part| part.generation == g)?;
        part.pending.remove(&o);
        if part.running.remove(&o) && part.revoking {
            self.settled.notify_all();
        }
        part.high = part.high.max(o + 1);
        let point = part.point();
        if point > part.stored {
            part.stored = point;
            Some(point)
        } else {
            None
        }
    }
}

/// Commits what finished on revoke and renews the generation on assign.
struct Ctx {
    topic: String,
    shared: Arc<Shared>,
}

impl Ctx {
    /// Stop beginning messages of `partitions`, wait up to `wait` for their running handlers,
    /// forget them; the offsets to commit (what settled).
    fn revoke(&self, partitions: &[i32], wait: Duration) -> TopicPartitionList {
        let mut tracker = self.shared.lock();
        for p in partitions {
            if let Some(part) = tracker.parts.get_mut(p) {
                part.revoking = true;
            }
        }
        let running = |t: &Tracker| {
            partitions
                .iter()
                .any(|p| t.parts.get(p).is_some_and(|part| !part.running.is_empty()))
        };
        let deadline = Instant::now() + wait;
        while running(&tracker) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "Kafka: handlers still running after {:.0} s on revoke: their messages go to the next owner",
                    wait.as_secs_f64()
                );
                break;
            }
            tracker = self
                .shared
                .settled
                .wait_timeout(tracker, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let mut commit = TopicPartitionList::new();
        for p in partitions {
            if let Some(part) = tracker.parts.remove(p) {
                // `stored` is the first message not settled: the fetched ones not begun come
                // after the (at most one) running one, so the next owner starts with them.
                if part.stored >= 0 {
                    let _ = commit.add_partition_offset(&self.topic, *p, Offset::Offset(part.stored));
                }
            }
        }
        commit
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|el| el.partition())
            .collect();
        // This runs on the thread polling the consumer, a runtime worker while `fetch` awaits:
        // the wait and the commit block, so the worker's other tasks move elsewhere meanwhile
        // (illegal outside a multi-threaded runtime, where there is nothing to move).
        let work = || {
            let commit = self.revoke(&partitions, REVOKE_WAIT);
            if commit.count() > 0 {
                commit_retrying(consumer, &commit);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(work)
            }
            _ => work(),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut tracker = self.shared.lock();
            for el in tpl.elements_for_topic(&self.topic) {
                tracker.parts.remove(&el.partition());
                tracker.part(el.partition());
            }
        }
    }
}

/// Commit synchronously; a commit the group refuses while it rebalances is tried again a few
/// times (the coordinator may take it once the group moved on).
fn commit_retrying(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
    use RDKafkaErrorCode as C;
    for attempt in 1..=COMMIT_TRIES {
        match consumer.commit(tpl, CommitMode::Sync) {
            Ok(()) => return,
            Err(e)
                if attempt < COMMIT_TRIES
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(C::RebalanceInProgress | C::IllegalGeneration)
                    ) =>
            {
                tracing::debug!("Kafka: committing on revoke refused ({e}), trying again");
                std::thread::sleep(COMMIT_RETRY);
            }
            Err(e) => {
                tracing::warn!("Kafka: committing on revoke failed: {e}");
                return;
            }
        }
    }
}

fn base_config(brokers: &str, client_id: Option<&str>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("client.id", client_id.unwrap_or("cello"))
        .set("log_level", "3");
    cfg
}

fn headers_of(h: Option<&rdkafka::message::BorrowedHeaders>) -> Vec<(String, String)> {
    h.map(|h| {
        h.iter()
            .map(|x| {
                (
                    x.key.to_owned(),
                    x.value
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

fn owned_headers(headers: &[(String, String)]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.len());
    for (k, v) in headers {
        out = out.insert(Header {
            key: k.as_str(),
            value: Some(v.as_bytes()),
        });
    }
    out
}

/// `<generation>:<partition>:<offset>`
fn parse_id(id: &str) -> Result<(u64, i32, i64)> {
    let mut it = id.splitn(3, ':');
    let bad = || Error::Config(format!("not a Kafka delivery id: {id:?}"));
    let g = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let p = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let o = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((g, p, o))
}

pub struct KafkaConsumer {
    opts: KafkaOptions,
    consumer: StreamConsumer<Ctx>,
    shared: Arc<Shared>,
    producer: KafkaProducer,
}

impl KafkaConsumer {
    pub async fn connect(opts: KafkaOptions) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let ctx = Ctx {
            topic: opts.topic.clone(),
            shared: shared.clone(),
        };
        let mut cfg = base_config(&opts.brokers, opts.client_id.as_deref());
        cfg.set("group.id", &opts.group)
            .set("enable.auto.commit", if opts.auto_commit { "true" } else { "false" })
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", opts.session_timeout_ms.to_string())
            // A rebalance revokes only the partitions that move (the others keep going), and
            // does so once the group is stable again, when the commit on revoke is taken.
            .set("partition.assignment.strategy", "cooperative-sticky");
        let consumer: StreamConsumer<Ctx> = cfg.create_with_context(ctx)?;
        // The producer (for requeues and dead letters) asks the brokers for metadata first:
        // an unreachable cluster fails here, within the timeout.
        let producer = KafkaProducer::connect(&opts.brokers, opts.client_id.as_deref(), opts.connect_timeout).await?;
        consumer.subscribe(&[&opts.topic])?;
        Ok(Self {
            opts,
            consumer,
            shared,
            producer,
        })
    }

    pub fn source(&self) -> &str {
        &self.opts.topic
    }

    /// Up to `max` messages, waiting up to `block` for the first.
    pub async fn fetch(&self, max: usize, block: Duration) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let first = match tokio::time::timeout(block, self.consumer.recv()).await {
            Err(_) => return Ok(out),
            Ok(r) => r?,
        };
        out.extend(self.take(&first));
        drop(first);
        while out.len() < max {
            match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                Ok(Ok(m)) => out.extend(self.take(&m)),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The message as a delivery; `None` when its partition is not (or no longer) assigned
    /// here — fetched before a revoke, it belongs to the partition's next owner.
    fn take(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Option<Delivery> {
        let headers = headers_of(m.headers());
        let count = headers
            .iter()
            .find(|(k, _)| k == "x-delivery-count")
            .and_then(|(_, v)| v.parse::<u32>().ok())
            .map(|n| n + 1)
            .unwrap_or(1);
        let mut tracker = self.shared.lock();
        let part = tracker.parts.get_mut(&m.partition()).filter(|part| !part.revoking)?;
        part.pending.insert(m.offset());
        let id = format!("{}:{}:{}", part.generation, m.partition(), m.offset());
        Some(Delivery {
            id,
            body: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            source: m.topic().to_owned(),
            partition: Some(m.partition()),
            offset: Some(m.offset()),
            delivery_count: count,
        })
    }

    /// The message's handler is about to run: false when its partition was (or is being)
    /// revoked since it was fetched — then it must not run, it belongs to the next owner. A
    /// revoke waits for the messages begun here to be settled before committing.
    pub fn begin(&self, id: &str) -> bool {
        let Ok((g, p, o)) = parse_id(id) else { return false };
        self.shared.begin(g, p, o)
    }

    /// The message is settled: its offset may be committed once those before it are.
    pub async fn ack(&self, id: &str) -> Result<()> {
        if let Some(tpl) = self.store(id)? {
            if !self.opts.auto_commit {
                self.commit(tpl).await?;
            }
        }
        Ok(())
    }

    /// `ack` where it needs no I/O (`auto_commit`: the offset is only stored, the commit comes
    /// within a second), done here and now — no round trip through the runtime per message.
    /// False when it needs the broker (commit at once): call `ack`.
    pub fn ack_local(&self, id: &str) -> Result<bool> {
        if !self.opts.auto_commit {
            return Ok(false);
        }
        self.store(id)?;
        Ok(true)
    }

    /// Settle the message in the tracker and store the new commit point, if it moved.
    fn store(&self, id: &str) -> Result<Option<TopicPartitionList>> {
        let (g, p, o) = parse_id(id)?;
        let Some(point) = self.shared.settle(g, p, o) else {
            return Ok(None);
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.opts.topic, p, Offset::Offset(point))?;
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // The partition went away between the check and the store.
            tracing::debug!("Kafka: storing offset {point} of partition {p} failed: {e}");
            return Ok(None);
        }
        Ok(Some(tpl))
    }

    async fn commit(&self, tpl: TopicPartitionList) -> Result<()> {
        // A synchronous commit blocks: off the runtime's threads.
        let consumer = &self.consumer;
        tokio::task::block_in_place(|| consumer.commit(&tpl, CommitMode::Sync))?;
        Ok(())
    }

    /// `requeue`: published again at the end of the topic; otherwise dropped. Either way settled.
    pub async fn nack(&self, d: &Delivery, requeue: bool) -> Result<()> {
        if requeue {
            let mut headers: Vec<(String, String)> = d
                .headers
                .iter()
                .filter(|(k, _)| k != "x-delivery-count")
                .cloned()
                .collect();
            headers.push(("x-delivery-count".into(), d.delivery_count.to_string()));
            self.producer
                .send(&self.opts.topic, &d.body, d.key.as_deref(), &headers)
                .await?;
        }
        self.ack(&d.id).await
    }

    /// Publish `d` with `error` to the dead-letter topic (acknowledged by the broker), then settle it.
    pub async fn dead_letter(&self, d: &Delivery, error: &str) -> Result<()> {
        let mut headers: Vec<(String, String)> = d
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("x-error") && k != "x-delivery-count")
            .cloned()
            .collect();
        headers.push(("x-error".into(), error.to_owned()));
        headers.push(("x-delivery-count".into(), d.delivery_count.to_string()));
        headers.push(("x-original-topic".into(), self.opts.topic.clone()));
        if let Ok((_, p, o)) = parse_id(&d.id) {
            headers.push(("x-original-partition".into(), p.to_string()));
            headers.push(("x-original-offset".into(), o.to_string()));
        }
        self.producer
            .send(&self.opts.dead_letter, &d.body, d.key.as_deref(), &headers)
            .await?;
        self.ack(&d.id).await
    }

    /// The consumer lag of the partitions assigned here: per partition, the high watermark
    /// minus the committed offset (or the offset stored to be committed, when ahead; the low
    /// watermark before any commit, as reading starts there). A few broker requests (one
    /// `OffsetFetch`, one `ListOffsets` per partition): called every few seconds, off the
    /// fetch path.
    pub async fn lag(&self) -> Result<u64> {
        let stored: HashMap<i32, i64> = {
            let tracker = self.shared.lock();
            tracker.parts.iter().map(|(p, part)| (*p, part.stored)).collect()
        };
        let consumer = &self.consumer;
        let topic = self.opts.topic.as_str();
        let timeout = self.opts.connect_timeout;
        // Blocking librdkafka calls: off the runtime's threads.
        tokio::task::block_in_place(|| -> Result<u64> {
            let assignment = consumer.assignment()?;
            if assignment.count() == 0 {
                return Ok(0);
            }
            let committed = consumer.committed_offsets(assignment, timeout)?;
            let mut total = 0u64;
            for el in committed.elements_for_topic(topic) {
                let (low, high) = consumer.fetch_watermarks(topic, el.partition(), timeout)?;
                let mut from = match el.offset() {
                    Offset::Offset(n) => n,
                    _ => low,
                };
                if let Some(s) = stored.get(&el.partition()) {
                    from = from.max(*s);
                }
                total += u64::try_from(high - from.max(low)).unwrap_or(0);
            }
            Ok(total)
        })
    }

    /// Commit what finished and leave the group (what settles later is the next reader's).
    pub async fn close(&self) -> Result<()> {
        let tpl = {
            // Forgotten: the revoke that leaving brings has nothing left to wait for.
            let parts = std::mem::take(&mut self.shared.lock().parts);
            let mut tpl = TopicPartitionList::new();
            for (p, part) in &parts {
                if part.stored > 0 {
                    tpl.add_partition_offset(&self.opts.topic, *p, Offset::Offset(part.stored))?;
                }
            }
            tpl
        };
        if tpl.count() > 0 {
            self.commit(tpl).await?;
        }
        self.consumer.unsubscribe();
        Ok(())
    }
}

/// A Kafka producer: `acks=all`, idempotent; `send` resolves once the broker has the message.
pub struct KafkaProducer {
    producer: FutureProducer,
}

impl KafkaProducer {
    pub async fn connect(brokers: &str, client_id: Option<&str>, timeout: Duration) -> Result<Self> {
        let producer: FutureProducer = base_config(brokers, client_id)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "1")
            .create()?;
        let probe = producer.clone();
        let brokers = brokers.to_owned();
        tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout).map(|_| ()))
            .await
            .map_err(|e| Error::Broker(format!("Kafka: {e}")))?
            .map_err(|e| {
                Error::Unavailable(format!(
                    "Kafka at {brokers}: no answer within {:.1} s ({e})",
                    timeout.as_secs_f64()
                ))
            })?;
        Ok(Self { producer })
    }

    /// Publish and wait for the broker's acknowledgement; resolves to `<partition>:<offset>`.
    pub async fn send(
        &self,
        topic: &str,
        body: &[u8],
        key: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<String> {
        let mut record = FutureRecord::to(topic).payload(body).headers(owned_headers(headers));
        if let Some(k) = key {
            record = record.key(k);
        }
        match self.producer.send(record, Duration::from_secs(30)).await {
            Ok(d) => Ok(format!("{}:{}", d.partition, d.offset)),
            Err((e, _)) => Err(e.into()),
        }
    }

    /// Publish `messages` in one round: every message is handed to librdkafka first (in order,
    /// so the idempotent producer keeps their order per partition), then the delivery reports
    /// are awaited together. One result per message, in order: `<partition>:<offset>` or why
    /// it was not delivered.
    pub async fn send_batch(&self, messages: &[Outgoing]) -> Vec<Result<String>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let mut record = FutureRecord::to(&m.dest)
                .payload(&m.body)
                .headers(owned_headers(&m.headers));
            if let Some(k) = &m.key {
                record = record.key(k);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(Ok(delivery));
                        break;
                    }
                    // The local queue is full: wait for deliveries to make room, as `send` does.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => {
                        pending.push(Err(Error::from(e)));
                        break;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(match p {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(d)) => Ok(format!("{}:{}", d.partition, d.offset)),
                    Ok(Err((e, _))) => Err(e.into()),
                    Err(_) => Err(Error::Broker(
                        "Kafka: the producer went away before the delivery report".into(),
                    )),
                },
                Err(e) => Err(e),
            });
        }
        out
    }
}

/// librdkafka's mock cluster (for tests): brokers on 127.0.0.1 that other processes reach
/// through [`MockBroker::bootstrap_servers`].
pub struct MockBroker(rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>);

impl MockBroker {
    pub fn new(brokers: i32) -> Result<Self> {
        Ok(Self(rdkafka::mocking::MockCluster::new(brokers)?))
    }

    pub fn bootstrap_servers(&self) -> String {
        self.0.bootstrap_servers()
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.0.create_topic(topic, partitions, 1)?;
        Ok(())
    }

    /// Every broker answers each request `delay` after it is ready (a network's round trip).
    pub fn round_trip_time(&self, delay: Duration) -> Result<()> {
        self.0.broker_round_trip_time(-1, delay)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_point_waits_for_the_lowest_pending_offset() {
        let mut t = Tracker::default();
        let p = t.part(0);
        p.pending.extend([5, 6, 7]);
        p.pending.remove(&6);
        p.high = 7;
        assert_eq!(p.point(), 5);
        p.pending.remove(&5);
        assert_eq!(p.point(), 7);
        p.pending.remove(&7);
        p.high = 8;
        assert_eq!(p.point(), 8);
    }

    /// A context with partition 0 tracked (generation 1) and messages 5, 6, 7 fetched.
    fn ctx() -> Ctx {
        let shared = Arc::new(Shared::default());
        shared.lock().part(0).pending.extend([5, 6, 7]);
        Ctx {
            topic: "t".into(),
            shared,
        }
    }

    fn offsets(tpl: &TopicPartitionList) -> Vec<(i32, Offset)> {
        tpl.elements().iter().map(|el| (el.partition(), el.offset())).collect()
    }

    #[test]
    fn revoke_waits_for_the_running_handler_and_commits_past_it_only() {
        let ctx = ctx();
        assert!(ctx.shared.begin(1, 0, 5));
        let shared = ctx.shared.clone();
        let settler = std::thread::spawn(move || {
            // Once the revoke is under way: nothing else begins, the running one settles.
            while !shared.lock().parts.get(&0).is_some_and(|p| p.revoking) {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(!shared.begin(1, 0, 6));
            std::thread::sleep(Duration::from_millis(100));
            shared.settle(1, 0, 5)
        });
        let t0 = Instant::now();
        let commit = ctx.revoke(&[0], Duration::from_secs(10));
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert_eq!(settler.join().unwrap(), Some(6));
        // 6 and 7 were fetched, not begun: the next owner starts with 6.
        assert_eq!(offsets(&commit), vec![(0, Offset::Offset(6))]);
        assert!(!ctx.shared.begin(1, 0, 6)); // forgotten
        assert_eq!(ctx.shared.settle(1, 0, 6), None);
    }

    #[test]
    fn revoke_gives_up_on_a_handler_after_the_wait() {
        let ctx = ctx();
        assert!(ctx.shared.begin(1, 0, 5));
        assert_eq!(ctx.shared.settle(1, 0, 5), Some(6));
        assert!(ctx.shared.begin(1, 0, 6));
        let t0 = Instant::now();
        let commit = ctx.revoke(&[0], Duration::from_millis(50));
        assert!(t0.elapsed() >= Duration::from_millis(50));
        // 6 still runs: it is the next owner's, from the commit point 6.
        assert_eq!(offsets(&commit), vec![(0, Offset::Offset(6))]);
        assert_eq!(ctx.shared.settle(1, 0, 6), None);
    }

    #[test]
    fn revoke_without_anything_settled_commits_nothing() {
        let ctx = ctx();
        assert_eq!(ctx.revoke(&[0, 1], Duration::from_secs(10)).count(), 0);
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_id("3:1:42").unwrap(), (3, 1, 42));
        assert!(parse_id("x").is_err());
    }
}
