//! `cello.messaging` beside HTTP (`app.enable_messaging`): the consumers' figures in the
//! app's `/metrics` (an [`ExtraSample`] source fed from Python, added up across workers like
//! every other figure) and whether this process exports spans (the trace context producers
//! put in message headers).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use cello_server::metrics::ExtraSample;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// (name after `{namespace}_`, help, counter — else a gauge). The names match the ones
/// `cello consume` serves on its admin port.
const FIGURES: [(&str, &str, bool); 11] = [
    (
        "messaging_messages_received_total",
        "Messages handed to a handler.",
        true,
    ),
    (
        "messaging_messages_acked_total",
        "Messages acknowledged after their handler finished.",
        true,
    ),
    (
        "messaging_messages_nacked_total",
        "Handler failures (exception or NACK), each retry counted.",
        true,
    ),
    (
        "messaging_messages_requeued_total",
        "Messages given back to the broker.",
        true,
    ),
    (
        "messaging_messages_rejected_total",
        "Messages dropped by the handler's REJECT.",
        true,
    ),
    (
        "messaging_messages_dead_lettered_total",
        "Messages sent to the dead-letter destination.",
        true,
    ),
    (
        "messaging_process_duration_seconds_sum",
        "Seconds spent in message handlers.",
        true,
    ),
    (
        "messaging_process_duration_seconds_count",
        "Message handler runs timed.",
        true,
    ),
    (
        "messaging_consumers_connected",
        "Consumers whose broker connection works (1 each; 0 while disconnected).",
        false,
    ),
    (
        "messaging_kafka_consumer_lag",
        "Kafka messages of the partitions assigned to the consumers not yet committed (high watermark - committed offset).",
        false,
    ),
    (
        "messaging_queue_depth",
        "Messages waiting in the queue, not yet delivered (RabbitMQ ready, SQS ApproximateNumberOfMessages, Redis LLEN, Redis stream group lag).",
        false,
    ),
];

type Key = (usize, String, String);

static VALUES: Mutex<BTreeMap<Key, f64>> = Mutex::new(BTreeMap::new());

/// Add `value` to a counter, or set a gauge, of (`messaging_system`, `messaging_destination_name`).
#[pyfunction]
pub fn messaging_metric(name: &str, system: String, destination: String, value: f64) -> PyResult<()> {
    let index = FIGURES
        .iter()
        .position(|f| f.0 == name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown messaging figure {name:?}")))?;
    let mut values = VALUES.lock().unwrap_or_else(PoisonError::into_inner);
    let slot = values.entry((index, system, destination)).or_insert(0.0);
    if FIGURES[index].2 {
        *slot += value;
    } else {
        *slot = value;
    }
    Ok(())
}

fn samples() -> Vec<ExtraSample> {
    let values = VALUES.lock().unwrap_or_else(PoisonError::into_inner);
    values
        .iter()
        .map(|((index, system, destination), value)| {
            let (name, help, counter) = FIGURES[*index];
            ExtraSample {
                name,
                help,
                counter,
                labels: vec![
                    ("messaging_system".to_owned(), system.clone()),
                    ("messaging_destination_name".to_owned(), destination.clone()),
                ],
                value: *value,
            }
        })
        .collect()
}

/// Whether this process exports spans (`enable_telemetry` and a started server, or
/// [`start_telemetry`]).
#[pyfunction]
pub fn telemetry_enabled() -> bool {
    cello_server::telemetry::current().is_some()
}

/// The telemetry `cello consume` started (no server owns one there); kept alive here.
static OWN_TELEMETRY: Mutex<Option<std::sync::Arc<cello_server::telemetry::Telemetry>>> = Mutex::new(None);

/// Start exporting spans in a process without a server (`cello consume`): `config_json` is a
/// server config with its `telemetry` section (the app's `enable_telemetry`). The exporter
/// runs on the messaging runtime.
#[pyfunction]
pub fn start_telemetry(config_json: &str) -> PyResult<()> {
    let config =
        cello_config::ServerConfig::from_json(config_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let telemetry = cello_server::telemetry::Telemetry::new(config.telemetry);
    let _runtime = cello_messaging::runtime().enter();
    telemetry.start();
    *OWN_TELEMETRY.lock().unwrap_or_else(PoisonError::into_inner) = Some(telemetry);
    Ok(())
}

/// Export what is left and stop the telemetry of [`start_telemetry`] (within `timeout_secs`).
#[pyfunction]
pub fn stop_telemetry(py: Python<'_>, timeout_secs: f64) {
    let telemetry = OWN_TELEMETRY.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(t) = telemetry {
        let timeout = std::time::Duration::try_from_secs_f64(timeout_secs.max(0.0)).unwrap_or_default();
        py.detach(|| t.shutdown(timeout));
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(messaging_metric, m)?)?;
    m.add_function(wrap_pyfunction!(telemetry_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(start_telemetry, m)?)?;
    m.add_function(wrap_pyfunction!(stop_telemetry, m)?)?;
    cello_server::metrics::register_source(samples);
    Ok(())
}
