//! gRPC on the HTTP port: a request with an `application/grpc*` content type (over HTTP/2, or
//! gRPC-Web over HTTP/1.1) goes to the [`GrpcEndpoint`] the embedding installed, before the
//! route table (gRPC paths are `/package.Service/Method`, not routes). Installed late (the
//! gRPC server starts with the app's startup hooks), so it sits in a slot.

use std::sync::{Arc, PoisonError, RwLock};

use http::{header, Request, Version};

use crate::body::RequestBody;
use crate::endpoint::ResponseFuture;

/// Serves gRPC requests that arrive on the HTTP port.
pub trait GrpcEndpoint: Send + Sync {
    /// Answer one call (the status travels in the response's trailers).
    fn call(&self, req: Request<RequestBody>) -> ResponseFuture;
}

/// Where the [`GrpcEndpoint`] is installed (empty: gRPC requests are routed like any other).
#[derive(Default)]
pub struct GrpcSlot(RwLock<Option<Arc<dyn GrpcEndpoint>>>);

impl GrpcSlot {
    /// Install (or with `None` remove) the endpoint.
    pub fn set(&self, endpoint: Option<Arc<dyn GrpcEndpoint>>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = endpoint;
    }

    /// The endpoint for `req` when it is a gRPC call.
    pub(crate) fn for_request(&self, req: &Request<RequestBody>) -> Option<Arc<dyn GrpcEndpoint>> {
        let ct = req.headers().get(header::CONTENT_TYPE)?.as_bytes();
        if !ct.starts_with(b"application/grpc") {
            return None;
        }
        if req.version() != Version::HTTP_2 && !ct.starts_with(b"application/grpc-web") {
            return None;
        }
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
