//! Amazon SQS on the AWS SDK (`aws-sdk-sqs`, rustls with ring; static keys or the pod's AWS
//! identity through `aws-config`'s providers): a consumer
//! that long-polls, keeps the visibility of the messages its handlers still run extended, and
//! deletes a message only once its handler finished; a failed message is made visible again
//! after a backoff (`ChangeMessageVisibility`), so SQS delivers it again and counts it
//! (`ApproximateReceiveCount`); past the retry limit it is sent — with the error in its message
//! attributes — to the dead-letter queue (named, the queue's redrive target, or `<queue>-dead`)
//! and then deleted. A producer that returns SQS's message id.
//!
//! A worker killed mid-batch deleted nothing: its messages become visible again after the
//! visibility timeout and are delivered again.
//!
//! Acks of the consume loop are batched ([`SqsConsumer::ack_queued`], see `acks.rs`): the
//! receipts that finished while the previous request was under way leave together, in
//! `DeleteMessageBatch` requests of ten sent side by side. A receipt stays among those whose
//! visibility is kept extended until its delete request goes out, so waiting in the queue
//! never lets SQS deliver it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sqs::config::{
    BehaviorVersion, Credentials, ProvideCredentials, Region, SharedCredentialsProvider, SharedHttpClient,
};
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use crate::acks::{AckQueue, Flusher};
use crate::delivery::{Delivery, Outgoing};
use crate::error::{Error, Result};

/// The message attribute that carries a producer's `key` on a standard queue (FIFO queues use
/// the message group id).
pub const KEY_ATTRIBUTE: &str = "x-message-key";
/// SQS allows ten message attributes per message.
const MAX_ATTRIBUTES: usize = 10;

/// Where SQS is and who calls it.
#[derive(Debug, Clone, Default)]
pub struct SqsConnect {
    pub region: String,
    /// A local stack (moto, LocalStack) instead of the region's endpoint.
    pub endpoint_url: Option<String>,
    /// Static keys (the queue binding's Secret); both empty: the credential chain of
    /// [`SqsConnect::credentials`].
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub connect_timeout: Duration,
}

/// The start-up error when no source has credentials: what the operator and AWS offer.
const NO_CREDENTIALS: &str = "SQS found no credentials. Give one of: the queue binding's ACCESS_KEY_ID and \
     SECRET_ACCESS_KEY (the CellApp queue's accessKeyIdSecret and secretAccessKeySecret); AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN); IRSA: AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (set by EKS \
     for a service account with an eks.amazonaws.com/role-arn annotation); EKS Pod Identity: \
     AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (set by EKS for a pod identity \
     association)";

impl SqsConnect {
    fn client(&self) -> Result<(Client, SharedCredentialsProvider)> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let credentials = self.credentials(http.clone())?;
        let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .build();
        let mut cfg = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(credentials.clone())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::standard().with_max_attempts(2));
        if let Some(url) = &self.endpoint_url {
            cfg = cfg.endpoint_url(url.clone());
        }
        Ok((Client::from_conf(cfg.build()), credentials))
    }

    /// The static keys, or else the first source that has credentials: the environment's keys,
    /// a web identity token (IRSA: STS `AssumeRoleWithWebIdentity`, at `AWS_ENDPOINT_URL_STS`
    /// when set), the container credentials endpoint (EKS Pod Identity, ECS). The client's
    /// identity cache renews temporary credentials before they expire.
    fn credentials(&self, http: SharedHttpClient) -> Result<SharedCredentialsProvider> {
        match (self.access_key_id.is_empty(), self.secret_access_key.is_empty()) {
            (false, false) => {
                return Ok(SharedCredentialsProvider::new(Credentials::new(
                    self.access_key_id.clone(),
                    self.secret_access_key.clone(),
                    self.session_token.clone(),
                    None,
                    "cello",
                )))
            }
            (true, true) => {}
            _ => {
                return Err(Error::Config(
                    "SQS: an access key id and a secret access key go together (one of them is empty)".into(),
                ))
            }
        }
        let conf = ProviderConfig::default()
            .with_region(Some(Region::new(self.region.clone())))
            .with_http_client(http);
        let chain = CredentialsProviderChain::first_try("Environment", EnvironmentVariableCredentialsProvider::new())
            .or_else(
                "WebIdentityToken",
                WebIdentityTokenCredentialsProvider::builder().configure(&conf).build(),
            )
            .or_else(
                "ContainerCredentials",
                EcsCredentialsProvider::builder().configure(&conf).build(),
            );
        Ok(SharedCredentialsProvider::new(chain))
    }
}

/// Credentials now, within `timeout`: no source, or one that refuses, fails the start with its
/// reason instead of every later request; an unreachable one may come back, like a broker.
async fn check_credentials(credentials: &SharedCredentialsProvider, timeout: Duration) -> Result<()> {
    let got = within(timeout, "credentials", async {
        credentials.provide_credentials().await.map_err(|e| match e {
            CredentialsError::CredentialsNotLoaded(_) => Error::Config(NO_CREDENTIALS.into()),
            CredentialsError::ProviderTimedOut(_) => Error::Unavailable(format!("SQS credentials: {e}")),
            _ if unreachable(&e) => Error::Unavailable(format!("SQS credentials: {}", DisplayErrorContext(&e))),
            _ => Error::Config(format!("SQS credentials: {}", DisplayErrorContext(&e))),
        })
    })
    .await;
    got.map(|_| ())
}

/// A connection that failed somewhere in `e`'s chain (STS or the credentials endpoint down).
fn unreachable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<aws_sdk_sqs::error::ConnectorError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn sdk_error<E, R>(what: &str, e: SdkError<E, R>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let unavailable = matches!(
        e,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    let text = format!("SQS {what}: {}", DisplayErrorContext(&e));
    if unavailable {
        Error::Unavailable(text)
    } else {
        Error::Broker(text)
    }
}

/// `op` within `timeout`, or [`Error::Unavailable`].
async fn within<T>(timeout: Duration, what: &str, op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(timeout, op).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unavailable(format!(
            "SQS {what}: no answer within {:.1} s",
            timeout.as_secs_f64()
        ))),
    }
}

/// The queue name of a queue URL (its last path segment).
pub fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

fn is_fifo(url: &str) -> bool {
    url.ends_with(".fifo")
}

fn attribute(value: &str) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| Error::Config(format!("SQS message attribute: {e}")))
}

fn text_body(body: &[u8]) -> Result<&str> {
    std::str::from_utf8(body).map_err(|_| Error::Config("an SQS message body is text: this body is not UTF-8".into()))
}

/// Send one message; SQS's message id once it has it.
async fn send_message(
    client: &Client,
    queue_url: &str,
    body: &[u8],
    key: Option<&str>,
    headers: &[(String, String)],
) -> Result<String> {
    let mut req = client
        .send_message()
        .queue_url(queue_url)
        .message_body(text_body(body)?);
    if is_fifo(queue_url) {
        req = req.message_group_id(key.unwrap_or("default"));
    } else if let Some(k) = key {
        req = req.message_attributes(KEY_ATTRIBUTE, attribute(k)?);
    }
    for (k, v) in headers {
        req = req.message_attributes(k, attribute(v)?);
    }
    let out = req.send().await.map_err(|e| sdk_error("SendMessage", e))?;
    Ok(out.message_id().unwrap_or_default().to_owned())
}

/// SendMessageBatch takes ten entries of at most 256 KiB together.
const BATCH_ENTRIES: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;

/// What SQS counts of a message towards the batch size: body, attribute names, types and values.
fn entry_size(m: &Outgoing) -> usize {
    let attrs: usize = m.headers.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    m.body.len() + attrs + m.key.as_ref().map_or(0, |k| KEY_ATTRIBUTE.len() + k.len() + 6)
}

fn batch_entry(index: usize, queue_url: &str, m: &Outgoing) -> Result<SendMessageBatchRequestEntry> {
    let mut e = SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(text_body(&m.body)?);
    if is_fifo(queue_url) {
        e = e.message_group_id(m.key.as_deref().unwrap_or("default"));
    } else if let Some(k) = &m.key {
        e = e.message_attributes(KEY_ATTRIBUTE, attribute(k)?);
    }
    for (k, v) in &m.headers {
        e = e.message_attributes(k, attribute(v)?);
    }
    e.build()
        .map_err(|err| Error::Config(format!("SQS batch entry: {err}")))
}

/// Send `messages` with SendMessageBatch: per queue, in order, chunks of up to ten entries
/// (and 256 KiB); one result per message, in order — SQS's message id, or why SQS (or the
/// chunk's request) refused it. A FIFO queue's chunks go one after the other, to keep their order;
/// a standard queue's together.
pub async fn send_batch(client: &Client, messages: &[Outgoing]) -> Vec<Result<String>> {
    let mut out: Vec<Option<Result<String>>> = messages.iter().map(|_| None).collect();
    // Per queue, the messages' indices in order.
    let mut queues: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match queues.iter_mut().find(|(q, _)| *q == m.dest) {
            Some((_, idx)) => idx.push(i),
            None => queues.push((&m.dest, vec![i])),
        }
    }
    for (queue_url, indices) in queues {
        let mut chunks: Vec<Vec<(usize, SendMessageBatchRequestEntry)>> = Vec::new();
        let mut size = 0;
        for i in indices {
            let entry = match batch_entry(i, queue_url, &messages[i]) {
                Ok(e) => e,
                Err(e) => {
                    out[i] = Some(Err(e));
                    continue;
                }
            };
            let n = entry_size(&messages[i]);
            let full = chunks
                .last()
                .is_none_or(|c| c.len() >= BATCH_ENTRIES || size + n > BATCH_BYTES);
            if full {
                chunks.push(Vec::new());
                size = 0;
            }
            size += n;
            chunks.last_mut().expect("pushed above").push((i, entry));
        }
        let send = |chunk: Vec<(usize, SendMessageBatchRequestEntry)>| async move {
            let indices: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
            let entries = chunk.into_iter().map(|(_, e)| e).collect();
            let res = client
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            let mut answers: Vec<(usize, Result<String>)> = Vec::with_capacity(indices.len());
            match res {
                Ok(r) => {
                    for ok in r.successful() {
                        if let Ok(i) = ok.id().parse::<usize>() {
                            answers.push((i, Ok(ok.message_id().to_owned())));
                        }
                    }
                    for failed in r.failed() {
                        if let Ok(i) = failed.id().parse::<usize>() {
                            let who = if failed.sender_fault() { "refused" } else { "failed on" };
                            let why = failed.message().unwrap_or("no reason given");
                            let e = Error::Broker(format!("SQS {who} the message: {why} ({})", failed.code()));
                            answers.push((i, Err(e)));
                        }
                    }
                }
                Err(e) => match sdk_error("SendMessageBatch", e) {
                    // Refused as a whole (one message too long refuses them all): nothing was
                    // sent, so each goes alone and only the bad ones fail.
                    Error::Broker(_) if indices.len() > 1 => {
                        for i in indices {
                            let m = &messages[i];
                            let one = send_message(client, queue_url, &m.body, m.key.as_deref(), &m.headers).await;
                            answers.push((i, one));
                        }
                    }
                    e => answers.extend(indices.into_iter().map(|i| (i, Err(e.clone())))),
                },
            }
            answers
        };
        let answers = if is_fifo(queue_url) {
            let mut a = Vec::with_capacity(chunks.len());
            for c in chunks {
                a.push(send(c).await);
            }
            a
        } else {
            futures_util::future::join_all(chunks.into_iter().map(send)).await
        };
        for (i, result) in answers.into_iter().flatten() {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(result);
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Broker("SQS answered nothing about the message".into()))))
        .collect()
}

#[derive(Debug, Clone)]
pub struct SqsOptions {
    pub connect: SqsConnect,
    pub queue_url: String,
    /// A dead-letter queue URL or name; unset, the queue's redrive target or `<queue>-dead`.
    pub dead_letter: Option<String>,
    /// Create `<queue>-dead` when no dead-letter queue is named or configured.
    pub declare: bool,
    pub visibility_timeout: Duration,
    /// The longest long poll (SQS allows 20 s).
    pub wait_time: Duration,
}

/// Receipt handles of the messages whose handlers run, with when their visibility was last set.
type InFlight = Mutex<HashMap<String, Instant>>;

pub struct SqsConsumer {
    opts: SqsOptions,
    client: Client,
    dead_letter_url: String,
    inflight: Arc<InFlight>,
    keeper: tokio::task::JoinHandle<()>,
    acks: Arc<AckQueue>,
    _flusher: Flusher,
}

/// Delete `receipts` from `queue_url`, `DeleteMessageBatch` requests of ten side by side. An
/// entry SQS refuses (an expired receipt: the message was delivered again meanwhile) is
/// logged, not retried; a request that failed as a whole is an error (the batch is tried again).
async fn delete_batch(client: &Client, queue_url: &str, receipts: &[String]) -> Result<()> {
    let requests = receipts.chunks(BATCH_ENTRIES).map(|chunk| {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .ok()
            })
            .collect();
        client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
    });
    let mut first_error = None;
    for res in futures_util::future::join_all(requests).await {
        match res {
            Ok(out) => {
                for f in out.failed() {
                    tracing::warn!(
                        "SQS: deleting a finished message failed ({}: {}); it will be delivered again",
                        f.code(),
                        f.message().unwrap_or("no reason given")
                    );
                }
            }
            Err(e) => {
                first_error.get_or_insert(sdk_error("DeleteMessageBatch", e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl Drop for SqsConsumer {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

fn secs_i32(d: Duration) -> i32 {
    d.as_secs().min(43_200) as i32
}

impl SqsConsumer {
    /// Check the queue (within the connect timeout) and find its dead-letter queue.
    pub async fn connect(opts: SqsOptions) -> Result<Self> {
        let (client, credentials) = opts.connect.client()?;
        let timeout = opts.connect.connect_timeout;
        check_credentials(&credentials, timeout).await?;
        let attrs = within(timeout, "GetQueueAttributes", async {
            client
                .get_queue_attributes()
                .queue_url(&opts.queue_url)
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("queue {}", opts.queue_url), e))
        })
        .await?;
        let redrive = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .cloned();
        let dead_letter_url = within(timeout, "dead-letter queue", dead_letter_queue(&client, &opts, redrive)).await?;
        let inflight: Arc<InFlight> = Arc::default();
        let keeper = tokio::spawn(keep_visible(
            client.clone(),
            opts.queue_url.clone(),
            opts.visibility_timeout,
            Arc::downgrade(&inflight),
        ));
        let (acks, flusher) = AckQueue::start("SQS", {
            let (client, queue_url, inflight) = (client.clone(), opts.queue_url.clone(), Arc::downgrade(&inflight));
            Box::new(move |receipts: Vec<String>| {
                let (client, queue_url, inflight) = (client.clone(), queue_url.clone(), inflight.clone());
                Box::pin(async move {
                    // No longer extended from here: if the request fails and its retries too,
                    // the message becomes visible again (at least a quarter of the visibility
                    // timeout is left when it was last extended).
                    if let Some(map) = inflight.upgrade() {
                        let mut m = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        for r in &receipts {
                            m.remove(r);
                        }
                    }
                    delete_batch(&client, &queue_url, &receipts).await
                })
            })
        });
        Ok(Self {
            opts,
            client,
            dead_letter_url,
            inflight,
            keeper,
            acks,
            _flusher: flusher,
        })
    }

    pub fn source(&self) -> &str {
        &self.opts.queue_url
    }

    pub fn dead_letter_url(&self) -> &str {
        &self.dead_letter_url
    }

    /// Up to `max` (at most 10) messages, long-polling up to `block` (at most the configured
    /// wait time; whole seconds).
    pub async fn fetch(&self, max: usize, block: Duration) -> Result<Vec<Delivery>> {
        let wait = block.min(self.opts.wait_time).min(Duration::from_secs(20));
        let out = self
            .client
            .receive_message()
            .queue_url(&self.opts.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout(secs_i32(self.opts.visibility_timeout).max(1))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        let out = within(
            wait + self.opts.connect.connect_timeout + Duration::from_secs(5),
            "ReceiveMessage",
            async { out.await.map_err(|e| sdk_error("ReceiveMessage", e)) },
        )
        .await?;
        let now = Instant::now();
        let mut deliveries = Vec::new();
        for m in out.messages() {
            let Some(receipt) = m.receipt_handle() else { continue };
            let system = m.attributes();
            let sys = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name)).cloned();
            let mut key = sys(MessageSystemAttributeName::MessageGroupId);
            let mut headers = Vec::new();
            for (k, v) in m.message_attributes().into_iter().flatten() {
                let value = v.string_value().map(str::to_owned).unwrap_or_else(|| {
                    v.binary_value()
                        .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned())
                        .unwrap_or_default()
                });
                if k == KEY_ATTRIBUTE {
                    key = Some(value);
                } else {
                    headers.push((k.clone(), value));
                }
            }
            headers.sort();
            if let Some(id) = m.message_id() {
                headers.push(("x-sqs-message-id".into(), id.to_owned()));
            }
            self.inflight.lock().unwrap().insert(receipt.to_owned(), now);
            deliveries.push(Delivery {
                id: receipt.to_owned(),
                body: m.body().unwrap_or_default().as_bytes().to_vec(),
                headers,
                key,
                source: self.opts.queue_url.clone(),
                partition: None,
                offset: sys(MessageSystemAttributeName::SequenceNumber).and_then(|s| s.parse().ok()),
                delivery_count: sys(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            });
        }
        Ok(deliveries)
    }

    fn settled(&self, receipt: &str) {
        self.inflight.lock().unwrap().remove(receipt);
    }

    /// Done: deleted with the next batch (no I/O here).
    pub fn ack_queued(&self, receipt: &str) {
        self.acks.push(receipt.to_owned());
    }

    /// Send the queued deletes; returns once SQS answered.
    pub async fn flush(&self) {
        self.acks.flush().await;
    }

    /// Done: delete it now.
    pub async fn ack(&self, receipt: &str) -> Result<()> {
        self.settled(receipt);
        self.client
            .delete_message()
            .queue_url(&self.opts.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteMessage", e))?;
        Ok(())
    }

    /// `requeue`: visible again after `delay` (SQS delivers it again and counts the receive);
    /// otherwise deleted (dropped).
    pub async fn nack(&self, receipt: &str, requeue: bool, delay: Duration) -> Result<()> {
        if !requeue {
            return self.ack(receipt).await;
        }
        self.settled(receipt);
        self.client
            .change_message_visibility()
            .queue_url(&self.opts.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs_i32(delay))
            .send()
            .await
            .map_err(|e| sdk_error("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Messages visible in the queue (`ApproximateNumberOfMessages`: not counting those
    /// received and not yet deleted); `None` when SQS does not say.
    pub async fn depth(&self) -> Result<Option<u64>> {
        let attrs = within(
            self.opts.connect.connect_timeout + Duration::from_secs(5),
            "GetQueueAttributes",
            async {
                self.client
                    .get_queue_attributes()
                    .queue_url(&self.opts.queue_url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .send()
                    .await
                    .map_err(|e| sdk_error("GetQueueAttributes", e))
            },
        )
        .await?;
        Ok(attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok()))
    }

    /// Send `d` to the dead-letter queue with `error` in its attributes, then delete it here.
    pub async fn dead_letter(&self, d: &Delivery, error: &str) -> Result<()> {
        let mut error = error.to_owned();
        if error.len() > 1024 {
            let mut cut = 1024;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        let mut headers = vec![
            ("x-error".to_owned(), error),
            ("x-delivery-count".to_owned(), d.delivery_count.to_string()),
            ("x-original-queue".to_owned(), d.source.clone()),
        ];
        let room = MAX_ATTRIBUTES - headers.len() - usize::from(d.key.is_some() && !is_fifo(&self.dead_letter_url));
        let own = |k: &str| {
            k.starts_with("x-error") || k == "x-delivery-count" || k == "x-original-queue" || k == "x-sqs-message-id"
        };
        headers.extend(d.headers.iter().filter(|(k, _)| !own(k)).take(room).cloned());
        send_message(&self.client, &self.dead_letter_url, &d.body, d.key.as_deref(), &headers).await?;
        self.ack(&d.id).await
    }
}

/// The dead-letter queue's URL: the named one, the redrive policy's target, or `<queue>-dead`
/// (created when `declare`).
async fn dead_letter_queue(client: &Client, opts: &SqsOptions, redrive: Option<String>) -> Result<String> {
    if let Some(named) = &opts.dead_letter {
        if named.starts_with("http://") || named.starts_with("https://") {
            return Ok(named.clone());
        }
        return queue_url_of(client, named, None).await;
    }
    if let Some(policy) = redrive {
        let arn = serde_json::from_str::<serde_json::Value>(&policy)
            .ok()
            .and_then(|v| v.get("deadLetterTargetArn")?.as_str().map(str::to_owned))
            .ok_or_else(|| Error::Broker(format!("SQS: cannot read the queue's redrive policy {policy:?}")))?;
        // arn:aws:sqs:<region>:<account>:<name>
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() == 6 {
            return queue_url_of(client, parts[5], Some(parts[4])).await;
        }
        return Err(Error::Broker(format!(
            "SQS: not a queue ARN in the redrive policy: {arn:?}"
        )));
    }
    let name = queue_name(&opts.queue_url);
    let dead = match name.strip_suffix(".fifo") {
        Some(stem) => format!("{stem}-dead.fifo"),
        None => format!("{name}-dead"),
    };
    if !opts.declare {
        return Err(Error::Config(format!(
            "SQS queue {name}: no dead-letter queue (name one with dead_letter=, give the queue a redrive policy, or let cello create {dead} with declare=True)"
        )));
    }
    let mut req = client.create_queue().queue_name(&dead);
    if is_fifo(&dead) {
        req = req
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true");
    }
    let out = req
        .send()
        .await
        .map_err(|e| sdk_error(&format!("CreateQueue {dead}"), e))?;
    Ok(out.queue_url().unwrap_or_default().to_owned())
}

async fn queue_url_of(client: &Client, name: &str, owner: Option<&str>) -> Result<String> {
    let mut req = client.get_queue_url().queue_name(name);
    if let Some(account) = owner {
        req = req.queue_owner_aws_account_id(account);
    }
    let out = req
        .send()
        .await
        .map_err(|e| sdk_error(&format!("GetQueueUrl {name}"), e))?;
    Ok(out.queue_url().unwrap_or_default().to_owned())
}

/// While a handler runs, its message's visibility is extended whenever half of the visibility
/// timeout has passed, so a long handler does not see its message delivered elsewhere.
async fn keep_visible(client: Client, queue_url: String, visibility: Duration, inflight: Weak<InFlight>) {
    let visibility = visibility.max(Duration::from_secs(1));
    let tick = (visibility / 4).max(Duration::from_millis(250));
    loop {
        tokio::time::sleep(tick).await;
        let Some(map) = inflight.upgrade() else { return };
        let due: Vec<String> = {
            let now = Instant::now();
            let mut m = map.lock().unwrap();
            let due: Vec<String> = m
                .iter()
                .filter(|(_, at)| now.duration_since(**at) >= visibility / 2)
                .map(|(r, _)| r.clone())
                .collect();
            for r in &due {
                m.insert(r.clone(), now);
            }
            due
        };
        drop(map);
        for chunk in due.chunks(10) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(secs_i32(visibility))
                        .build()
                        .ok()
                })
                .collect();
            let sent = client
                .change_message_visibility_batch()
                .queue_url(&queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            if let Err(e) = sent {
                tracing::warn!(
                    "SQS: extending the visibility of {} message(s) failed: {}",
                    chunk.len(),
                    DisplayErrorContext(&e)
                );
            }
        }
    }
}

/// An SQS producer.
pub struct SqsProducer {
    client: Client,
    credentials: SharedCredentialsProvider,
}

impl SqsProducer {
    /// A client; credentials are fetched and SQS is reached on first use (`check` does both now).
    pub fn new(connect: &SqsConnect) -> Result<Self> {
        let (client, credentials) = connect.client()?;
        Ok(Self { client, credentials })
    }

    /// Get credentials and reach SQS, each within `timeout` (lists at most one queue).
    pub async fn check(&self, timeout: Duration) -> Result<()> {
        check_credentials(&self.credentials, timeout).await?;
        within(timeout, "ListQueues", async {
            self.client
                .list_queues()
                .max_results(1)
                .send()
                .await
                .map_err(|e| sdk_error("ListQueues", e))
        })
        .await?;
        Ok(())
    }

    /// Send to `queue_url`; SQS's message id once SQS has it.
    pub async fn send(
        &self,
        queue_url: &str,
        body: &[u8],
        key: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<String> {
        send_message(&self.client, queue_url, body, key, headers).await
    }

    /// Send `messages` with SendMessageBatch (see [`send_batch`]); one result per message.
    pub async fn send_batch(&self, messages: &[Outgoing]) -> Vec<Result<String>> {
        send_batch(&self.client, messages).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_names() {
        assert_eq!(super::queue_name("http://127.0.0.1:5000/123456789012/orders"), "orders");
        assert_eq!(
            super::queue_name("https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo/"),
            "jobs.fifo"
        );
        assert!(super::is_fifo("https://x/1/jobs.fifo"));
    }

    #[test]
    fn one_static_key_without_the_other_is_refused() {
        let c = super::SqsConnect {
            region: "us-east-1".into(),
            access_key_id: "AKIA".into(),
            ..Default::default()
        };
        let err = c.client().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("go together"), "{err}");
    }
}
