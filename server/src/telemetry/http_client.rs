//! The OTLP/HTTP transport: hyper's client, driven on the I/O runtime.
//!
//! The SDK exports from its own batch thread with a plain `block_on`; hyper needs a
//! tokio reactor, so each request runs as a task on the runtime that was current when
//! the exporter was built, and the batch thread only waits for its result.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

const MAX_RESPONSE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(super) struct TokioHttpClient {
    handle: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl TokioHttpClient {
    pub(super) fn new(timeout: Duration) -> Result<Self, String> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "the OTLP/HTTP exporter must be built inside the I/O runtime".to_owned())?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            handle,
            client,
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for TokioHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        let task = self.handle.spawn(async move {
            let request = request.map(Full::new);
            let fut = async {
                let resp = client.request(request).await?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(HttpError::from("OTLP export timed out")),
            }
        });
        task.await
            .map_err(|e| HttpError::from(format!("OTLP export task failed: {e}")))?
    }
}
