//! One received message, as every broker hands it over.

/// A message as fetched; `id` names it to `ack`/`nack`/`dead_letter` of its consumer.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Stream entry id, AMQP delivery tag, or the list element itself.
    pub id: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub key: Option<String>,
    /// Topic, queue, stream or list it came from.
    pub source: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// 1 on the first delivery; more when the broker delivers it again.
    pub delivery_count: u32,
}

/// Stream entries and dead-letter records carry headers as fields with this prefix.
pub const HEADER_PREFIX: &str = "h:";

/// A message to publish, one of a batch.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// Topic or queue URL.
    pub dest: String,
    pub body: Vec<u8>,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
}
