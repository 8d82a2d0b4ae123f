//! `cello.messaging`'s broker side: pyclasses over `cello-messaging`. Awaited through the
//! caller's [`Executor`]; the futures run on `cello_messaging::runtime()`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cello_messaging::kafka::{KafkaConsumer, KafkaOptions, KafkaProducer, MockBroker};
use cello_messaging::rabbitmq::{RabbitConsumer, RabbitOptions, RabbitProducer};
use cello_messaging::redis_list::{ListConsumer, ListOptions, RedisProducer};
use cello_messaging::redis_stream::{StreamConsumer, StreamOptions};
use cello_messaging::sqs::{SqsConnect, SqsConsumer, SqsOptions, SqsProducer};
use cello_messaging::{Delivery, Error, Outgoing};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::executor::Executor;

/// `cello.messaging.BrokerUnavailable` / `MessagingError`, made by the Python module.
fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    let (kind, message) = match e {
        Error::Unavailable(m) => ("BrokerUnavailable", m),
        Error::Broker(m) => ("MessagingError", m),
        Error::Config(m) => return pyo3::exceptions::PyValueError::new_err(m),
    };
    match py
        .import("cello.messaging")
        .and_then(|m| m.getattr("_make_error"))
        .and_then(|f| f.call1((kind, message)))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

/// Run `fut` on the messaging runtime and hand its result to `executor`'s loop.
fn spawn<F, T, C>(py: Python<'_>, executor: &Bound<'_, Executor>, fut: F, convert: C) -> PyResult<Py<PyAny>>
where
    F: Future<Output = cello_messaging::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let handle = cello_messaging::runtime().handle().clone();
    executor
        .get()
        .spawn_on(py, &handle, async move { Ok(fut.await) }, move |py, out| match out {
            Ok(v) => convert(py, v),
            Err(e) => Err(to_pyerr(py, e)),
        })
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::from_secs(3600))
}

/// A delivery as the tuple `cello.messaging.Message` wraps:
/// `(id, body, headers, key, source, partition, offset, delivery_count)`.
fn delivery_tuple(py: Python<'_>, d: Delivery) -> PyResult<Py<PyAny>> {
    let headers = PyList::empty(py);
    for (k, v) in d.headers {
        headers.append((k, v))?;
    }
    Ok(PyTuple::new(
        py,
        [
            PyString::new(py, &d.id).into_any().unbind(),
            PyBytes::new(py, &d.body).into_any().unbind(),
            headers.into_any().unbind(),
            d.key.into_pyobject(py)?.unbind(),
            PyString::new(py, &d.source).into_any().unbind(),
            d.partition.into_pyobject(py)?.unbind(),
            d.offset.into_pyobject(py)?.unbind(),
            d.delivery_count.into_pyobject(py)?.into_any().unbind(),
        ],
    )?
    .into_any()
    .unbind())
}

/// Message bodies: bytes as they are, `str` as UTF-8, anything else as JSON (serialised here).
pub(crate) fn body_of(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    crate::json::write::to_vec(value)
}

// One per consumer, behind an Arc: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Source {
    Stream(StreamConsumer),
    List(ListConsumer),
    Rabbit(RabbitConsumer),
    Sqs(SqsConsumer),
    Kafka(KafkaConsumer),
}

/// A connected consumer of one stream, list or queue.
#[pyclass(frozen, module = "cello._cello")]
pub struct BrokerConsumer {
    source: Arc<Source>,
}

impl BrokerConsumer {
    fn wrap(py: Python<'_>, source: Source) -> PyResult<Py<PyAny>> {
        Ok(Py::new(
            py,
            Self {
                source: Arc::new(source),
            },
        )?
        .into_any())
    }
}

#[pymethods]
impl BrokerConsumer {
    /// Awaitable: a consumer of a Redis stream in consumer group `group`.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn redis_stream(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        url: String,
        stream: String,
        group: String,
        consumer: String,
        dead_letter: String,
        claim_idle_secs: f64,
        connect_timeout_secs: f64,
    ) -> PyResult<Py<PyAny>> {
        let opts = StreamOptions {
            url,
            stream,
            group,
            consumer,
            dead_letter,
            claim_idle: secs(claim_idle_secs),
            connect_timeout: secs(connect_timeout_secs),
        };
        spawn(py, executor, StreamConsumer::connect(opts), |py, c| {
            BrokerConsumer::wrap(py, Source::Stream(c))
        })
    }

    /// Awaitable: a consumer of a Redis list used as a reliable queue.
    #[staticmethod]
    fn redis_list(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        url: String,
        list: String,
        consumer: String,
        dead_letter: String,
        connect_timeout_secs: f64,
    ) -> PyResult<Py<PyAny>> {
        let opts = ListOptions {
            url,
            list,
            consumer,
            dead_letter,
            connect_timeout: secs(connect_timeout_secs),
        };
        spawn(py, executor, ListConsumer::connect(opts), |py, c| {
            BrokerConsumer::wrap(py, Source::List(c))
        })
    }

    /// Awaitable: a consumer of a RabbitMQ queue (declared durable with its dead-letter
    /// exchange when `declare`), at most `prefetch` unacknowledged deliveries.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn rabbitmq(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        url: String,
        queue: String,
        dead_letter: String,
        prefetch: u16,
        connect_timeout_secs: f64,
        declare: bool,
    ) -> PyResult<Py<PyAny>> {
        let opts = RabbitOptions {
            url,
            queue,
            dead_letter,
            prefetch,
            connect_timeout: secs(connect_timeout_secs),
            declare,
        };
        spawn(py, executor, RabbitConsumer::connect(opts), |py, c| {
            BrokerConsumer::wrap(py, Source::Rabbit(c))
        })
    }

    /// Awaitable: a consumer of the SQS queue `queue_url` (its dead-letter queue found or
    /// created on connect).
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn sqs(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        queue_url: String,
        region: String,
        endpoint_url: Option<String>,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        dead_letter: Option<String>,
        declare: bool,
        visibility_timeout_secs: f64,
        wait_time_secs: f64,
        connect_timeout_secs: f64,
    ) -> PyResult<Py<PyAny>> {
        let opts = SqsOptions {
            connect: SqsConnect {
                region,
                endpoint_url,
                access_key_id,
                secret_access_key,
                session_token,
                connect_timeout: secs(connect_timeout_secs),
            },
            queue_url,
            dead_letter,
            declare,
            visibility_timeout: secs(visibility_timeout_secs),
            wait_time: secs(wait_time_secs),
        };
        spawn(py, executor, SqsConsumer::connect(opts), |py, c| {
            BrokerConsumer::wrap(py, Source::Sqs(c))
        })
    }

    /// Awaitable: a member of Kafka consumer group `group` reading `topic`; offsets are
    /// committed only for settled messages (every second with `auto_commit`, else at once).
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn kafka(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        brokers: String,
        topic: String,
        group: String,
        client_id: Option<String>,
        dead_letter: String,
        session_timeout_ms: u32,
        auto_commit: bool,
        connect_timeout_secs: f64,
    ) -> PyResult<Py<PyAny>> {
        let opts = KafkaOptions {
            brokers,
            topic,
            group,
            client_id,
            dead_letter,
            session_timeout_ms,
            auto_commit,
            connect_timeout: secs(connect_timeout_secs),
        };
        spawn(py, executor, KafkaConsumer::connect(opts), |py, c| {
            BrokerConsumer::wrap(py, Source::Kafka(c))
        })
    }

    /// The fetched message's handler is about to run; false when it must not (Kafka: its
    /// partition was revoked since, or is being revoked — a revoke waits for the messages
    /// begun to settle; other brokers: always true).
    fn begin(&self, id: &str) -> bool {
        match &*self.source {
            Source::Kafka(c) => c.begin(id),
            _ => true,
        }
    }

    /// Awaitable: leave (Kafka: commit what finished and leave the group; Redis streams, SQS:
    /// send the acks still queued; others: nothing to do).
    fn close(&self, py: Python<'_>, executor: &Bound<'_, Executor>) -> PyResult<Py<PyAny>> {
        let source = self.source.clone();
        spawn(
            py,
            executor,
            async move {
                match &*source {
                    Source::Kafka(c) => c.close().await,
                    Source::Stream(c) => {
                        c.flush().await;
                        Ok(())
                    }
                    Source::Sqs(c) => {
                        c.flush().await;
                        Ok(())
                    }
                    Source::List(_) | Source::Rabbit(_) => Ok(()),
                }
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// Awaitable: the consumer's backlog — Kafka: the lag of the partitions assigned here;
    /// RabbitMQ, SQS, Redis lists: messages waiting in the queue; Redis streams: the group's
    /// lag — or None when the broker does not tell. A few broker requests: not per message.
    fn backlog(&self, py: Python<'_>, executor: &Bound<'_, Executor>) -> PyResult<Py<PyAny>> {
        let source = self.source.clone();
        spawn(
            py,
            executor,
            async move {
                match &*source {
                    Source::Stream(c) => c.lag().await,
                    Source::List(c) => c.depth().await.map(Some),
                    Source::Rabbit(c) => c.depth().await.map(Some),
                    Source::Sqs(c) => c.depth().await,
                    Source::Kafka(c) => c.lag().await.map(Some),
                }
            },
            |py, n| Ok(n.into_pyobject(py)?.unbind()),
        )
    }

    /// Awaitable: a list of delivery tuples (empty when none came within `block_secs`).
    fn fetch(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        max: usize,
        block_secs: f64,
    ) -> PyResult<Py<PyAny>> {
        let source = self.source.clone();
        let block = secs(block_secs);
        spawn(
            py,
            executor,
            async move {
                match &*source {
                    Source::Stream(c) => c.fetch(max, block).await,
                    Source::List(c) => c.fetch(max, block).await,
                    Source::Rabbit(c) => c.fetch(max, block).await,
                    Source::Sqs(c) => c.fetch(max, block).await,
                    Source::Kafka(c) => c.fetch(max, block).await,
                }
            },
            |py, ds| {
                let list = PyList::empty(py);
                for d in ds {
                    list.append(delivery_tuple(py, d)?)?;
                }
                Ok(list.into_any().unbind())
            },
        )
    }

    /// The message is done, settled here without waiting when that is how this broker is
    /// acknowledged: Kafka with `auto_commit` stores the offset; Redis streams and SQS queue
    /// the ack for the next batch (one `XACK` / `DeleteMessageBatch`, sent by the messaging
    /// runtime; `close` sends what is still queued). False when it needs the awaitable `ack`.
    fn ack_now(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        match &*self.source {
            Source::Kafka(c) => c.ack_local(id).map_err(|e| to_pyerr(py, e)),
            Source::Stream(c) => {
                c.ack_queued(id);
                Ok(true)
            }
            Source::Sqs(c) => {
                c.ack_queued(id);
                Ok(true)
            }
            Source::List(_) | Source::Rabbit(_) => Ok(false),
        }
    }

    /// Awaitable: the message is done.
    fn ack(&self, py: Python<'_>, executor: &Bound<'_, Executor>, id: String, body: Vec<u8>) -> PyResult<Py<PyAny>> {
        let source = self.source.clone();
        spawn(
            py,
            executor,
            async move {
                match &*source {
                    Source::Stream(c) => c.ack(&id).await,
                    Source::List(c) => c.ack(&body).await,
                    Source::Rabbit(c) => c.ack(&id).await,
                    Source::Sqs(c) => c.ack(&id).await,
                    Source::Kafka(c) => c.ack(&id).await,
                }
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// Awaitable: give the message back (`requeue`) or drop it. SQS: visible again after
    /// `delay_secs` (whole seconds, rounded up). Kafka republishes a requeued message, so it
    /// needs its `headers`, `key` and `delivery_count` too.
    #[pyo3(signature = (executor, id, body, requeue, delay_secs = 0.0, headers = None, key = None, delivery_count = 1))]
    #[allow(clippy::too_many_arguments)]
    fn nack(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        id: String,
        body: Vec<u8>,
        requeue: bool,
        delay_secs: f64,
        headers: Option<Vec<(String, String)>>,
        key: Option<String>,
        delivery_count: u32,
    ) -> PyResult<Py<PyAny>> {
        let source = self.source.clone();
        spawn(
            py,
            executor,
            async move {
                match &*source {
                    Source::Stream(c) => c.nack(&id, requeue).await,
                    Source::List(c) => c.nack(&body, requeue).await,
                    Source::Rabbit(c) => c.nack(&id, requeue).await,
                    Source::Sqs(c) => c.nack(&id, requeue, secs(delay_secs.ceil())).await,
                    Source::Kafka(c) => {
                        let d = Delivery {
                            source: c.source().to_owned(),
                            id,
                            body,
                            headers: headers.unwrap_or_default(),
                            key,
                            delivery_count,
                            ..Delivery::default()
                        };
                        c.nack(&d, requeue).await
                    }
                }
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// Awaitable: to the dead-letter destination with `error` in its headers, and done here.
    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        id: String,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
        key: Option<String>,
        delivery_count: u32,
        error: String,
    ) -> PyResult<Py<PyAny>> {
        let source = self.source.clone();
        spawn(
            py,
            executor,
            async move {
                let d = Delivery {
                    id,
                    body,
                    headers,
                    key,
                    source: match &*source {
                        Source::Stream(c) => c.source().to_owned(),
                        Source::List(c) => c.source().to_owned(),
                        Source::Rabbit(c) => c.source().to_owned(),
                        Source::Sqs(c) => c.source().to_owned(),
                        Source::Kafka(c) => c.source().to_owned(),
                    },
                    delivery_count,
                    ..Delivery::default()
                };
                match &*source {
                    Source::Stream(c) => c.dead_letter(&d, &error).await,
                    Source::List(c) => c.dead_letter(&d, &error).await,
                    Source::Rabbit(c) => c.dead_letter(&d, &error).await,
                    Source::Sqs(c) => c.dead_letter(&d, &error).await,
                    Source::Kafka(c) => c.dead_letter(&d, &error).await,
                }
            },
            |py, ()| Ok(py.None()),
        )
    }
}

#[allow(clippy::large_enum_variant)]
enum Sink {
    Redis(RedisProducer),
    Rabbit(RabbitProducer),
    Sqs(SqsProducer),
    Kafka(KafkaProducer),
}

/// A connected producer.
#[pyclass(frozen, module = "cello._cello")]
pub struct BrokerProducer {
    sink: Arc<Sink>,
}

impl BrokerProducer {
    fn wrap(py: Python<'_>, sink: Sink) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, Self { sink: Arc::new(sink) })?.into_any())
    }
}

#[pymethods]
impl BrokerProducer {
    /// Awaitable: a Redis producer.
    #[staticmethod]
    fn redis(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        url: String,
        connect_timeout_secs: f64,
    ) -> PyResult<Py<PyAny>> {
        let timeout = secs(connect_timeout_secs);
        spawn(
            py,
            executor,
            async move { RedisProducer::connect(&url, timeout).await },
            |py, p| BrokerProducer::wrap(py, Sink::Redis(p)),
        )
    }

    /// Awaitable: a RabbitMQ producer (publisher confirms on).
    #[staticmethod]
    fn rabbitmq(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        url: String,
        connect_timeout_secs: f64,
    ) -> PyResult<Py<PyAny>> {
        let timeout = secs(connect_timeout_secs);
        spawn(
            py,
            executor,
            async move { RabbitProducer::connect(&url, timeout).await },
            |py, p| BrokerProducer::wrap(py, Sink::Rabbit(p)),
        )
    }

    /// Awaitable: an SQS producer, once SQS answered (within `connect_timeout_secs`).
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn sqs(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        region: String,
        endpoint_url: Option<String>,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        connect_timeout_secs: f64,
    ) -> PyResult<Py<PyAny>> {
        let connect = SqsConnect {
            region,
            endpoint_url,
            access_key_id,
            secret_access_key,
            session_token,
            connect_timeout: secs(connect_timeout_secs),
        };
        spawn(
            py,
            executor,
            async move {
                let p = SqsProducer::new(&connect)?;
                p.check(connect.connect_timeout).await?;
                Ok(p)
            },
            |py, p| BrokerProducer::wrap(py, Sink::Sqs(p)),
        )
    }

    /// Awaitable: a Kafka producer (`acks=all`, idempotent).
    #[staticmethod]
    fn kafka(
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        brokers: String,
        client_id: Option<String>,
        connect_timeout_secs: f64,
    ) -> PyResult<Py<PyAny>> {
        let timeout = secs(connect_timeout_secs);
        spawn(
            py,
            executor,
            async move { KafkaProducer::connect(&brokers, client_id.as_deref(), timeout).await },
            |py, p| BrokerProducer::wrap(py, Sink::Kafka(p)),
        )
    }

    /// Awaitable: declare a RabbitMQ queue as consumers do (durable, with its dead-letter exchange).
    fn declare_queue(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        queue: String,
        dead_letter: String,
    ) -> PyResult<Py<PyAny>> {
        let sink = self.sink.clone();
        spawn(
            py,
            executor,
            async move {
                match &*sink {
                    Sink::Rabbit(p) => p.declare(&queue, &dead_letter).await,
                    Sink::Redis(_) | Sink::Sqs(_) | Sink::Kafka(_) => Ok(()),
                }
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// Awaitable: publish one message to `dest` (`kind`: "stream" or "list"); resolves to the
    /// broker's id for it once the broker has it.
    #[pyo3(signature = (executor, kind, dest, value, key = None, headers = None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        kind: String,
        dest: String,
        value: &Bound<'_, PyAny>,
        key: Option<String>,
        headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Py<PyAny>> {
        let body = body_of(value)?;
        let headers = headers.unwrap_or_default();
        let sink = self.sink.clone();
        spawn(
            py,
            executor,
            async move {
                match &*sink {
                    Sink::Redis(p) if kind == "list" => p.lpush(&dest, &body).await.map(|n| n.to_string()),
                    Sink::Redis(p) => p.xadd(&dest, &body, key.as_deref(), &headers).await,
                    // The default exchange routes by queue name; confirmed before this returns.
                    Sink::Rabbit(p) => p
                        .send("", &dest, &body, key.as_deref(), &headers)
                        .await
                        .map(|()| String::new()),
                    // `dest` is the queue URL; SQS's message id once it has the message.
                    Sink::Sqs(p) => p.send(&dest, &body, key.as_deref(), &headers).await,
                    // Acknowledged by the brokers (acks=all) before this returns.
                    Sink::Kafka(p) => p.send(&dest, &body, key.as_deref(), &headers).await,
                }
            },
            |py, id| Ok(PyString::new(py, &id).into_any().unbind()),
        )
    }

    /// Awaitable: publish `messages` — `(dest, value, key, headers)` each — in one round (Kafka:
    /// all handed to the producer, then all acknowledgements awaited; SQS: SendMessageBatch of
    /// up to ten; Redis: one pipeline of `XADD`, or `LPUSH` when `kind` is "list"; RabbitMQ:
    /// all published, then all publisher confirms awaited). Resolves to one `(id, None, None)` or `(None, kind, why)` per message, in
    /// order, `kind` naming the exception (`MessagingError`, `BrokerUnavailable`, `ValueError`).
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (executor, messages, kind = String::from("stream")))]
    fn send_batch(
        &self,
        py: Python<'_>,
        executor: &Bound<'_, Executor>,
        messages: Vec<(String, Bound<'_, PyAny>, Option<String>, Vec<(String, String)>)>,
        kind: String,
    ) -> PyResult<Py<PyAny>> {
        let mut batch = Vec::with_capacity(messages.len());
        for (dest, value, key, headers) in messages {
            batch.push(Outgoing {
                dest,
                body: body_of(&value)?,
                key,
                headers,
            });
        }
        let sink = self.sink.clone();
        spawn(
            py,
            executor,
            async move {
                Ok(match &*sink {
                    Sink::Kafka(p) => p.send_batch(&batch).await,
                    Sink::Sqs(p) => p.send_batch(&batch).await,
                    Sink::Redis(p) => p.send_batch(kind == "list", &batch).await,
                    Sink::Rabbit(p) => p
                        .send_batch(&batch)
                        .await
                        .into_iter()
                        .map(|r| r.map(|()| String::new()))
                        .collect(),
                })
            },
            |py, results| {
                let out = PyList::empty(py);
                for r in results {
                    let (id, kind, why): (Option<String>, Option<&str>, Option<String>) = match r {
                        Ok(id) => (Some(id), None, None),
                        Err(Error::Unavailable(m)) => (None, Some("BrokerUnavailable"), Some(m)),
                        Err(Error::Broker(m)) => (None, Some("MessagingError"), Some(m)),
                        Err(Error::Config(m)) => (None, Some("ValueError"), Some(m)),
                    };
                    out.append((id, kind, why))?;
                }
                Ok(out.into_any().unbind())
            },
        )
    }
}

/// librdkafka's mock Kafka cluster, for tests: brokers on 127.0.0.1 that other processes
/// reach through `bootstrap_servers()`; gone with this object.
#[pyclass(unsendable, module = "cello._cello")]
pub struct KafkaMockCluster {
    mock: MockBroker,
}

#[pymethods]
impl KafkaMockCluster {
    #[new]
    #[pyo3(signature = (brokers = 1))]
    fn new(brokers: i32) -> PyResult<Self> {
        MockBroker::new(brokers)
            .map(|mock| Self { mock })
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
    }

    fn bootstrap_servers(&self) -> String {
        self.mock.bootstrap_servers()
    }

    fn create_topic(&self, topic: &str, partitions: i32) -> PyResult<()> {
        self.mock
            .create_topic(topic, partitions)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
    }

    /// Every broker answers each request `ms` milliseconds after it is ready.
    fn set_round_trip_time(&self, ms: u64) -> PyResult<()> {
        self.mock
            .round_trip_time(std::time::Duration::from_millis(ms))
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BrokerConsumer>()?;
    m.add_class::<BrokerProducer>()?;
    m.add_class::<KafkaMockCluster>()?;
    Ok(())
}
