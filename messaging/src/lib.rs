//! `cello-messaging`: broker clients without Python — Redis streams (consumer groups) and
//! lists (reliable queue), RabbitMQ, Kafka (rdkafka), Amazon SQS. The Python side (`cello.messaging`) runs handlers and
//! decides each message's fate; this crate fetches, acknowledges, requeues, dead-letters
//! and publishes.
//!
//! Every future runs on one process-wide runtime ([`runtime`]), started on first use — in a
//! worker, after the supervisor's fork.

mod acks;
pub mod delivery;
pub mod error;
pub mod kafka;
pub mod rabbitmq;
pub mod redis_list;
pub mod redis_stream;
pub mod sqs;

use std::sync::OnceLock;

pub use delivery::{Delivery, Outgoing};
pub use error::{Error, Result};

/// The messaging runtime (two threads).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cello-messaging")
            .enable_all()
            .build()
            .expect("cannot start the messaging runtime")
    })
}

/// Open a Redis connection manager within `timeout` (it reconnects by itself afterwards).
pub(crate) async fn redis_connect(url: &str, timeout: std::time::Duration) -> Result<redis::aio::ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| Error::Config(format!("Redis URL {url:?}: {e}")))?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_number_of_retries(1);
    match tokio::time::timeout(timeout, client.get_connection_manager_with_config(cfg)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Error::Unavailable(format!("Redis at {}: {e}", redacted(url)))),
        Err(_) => Err(Error::Unavailable(format!(
            "Redis at {}: no connection within {:.1} s",
            redacted(url),
            timeout.as_secs_f64()
        ))),
    }
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_credentials() {
        assert_eq!(super::redacted("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(super::redacted("amqp://u:p@h/"), "amqp://***@h/");
        assert_eq!(super::redacted("redis://h"), "redis://h");
    }
}
