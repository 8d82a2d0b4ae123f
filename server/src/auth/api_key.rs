//! API keys (`enable_api_key`): from a header or a query parameter, compared in constant
//! time against every configured key (no early exit on the first match).

use std::sync::Arc;

use cello_config::ApiKeyConfig;

use super::{app_path, constant_time_eq, unauthorized, Gate, Identity, PathSet, Verdict};
use crate::stack::Req;

/// See the module docs.
pub struct ApiKeyGate {
    keys: Vec<(Vec<u8>, Arc<serde_json::Value>)>,
    header: http::HeaderName,
    query: Option<String>,
    exclude: PathSet,
}

impl ApiKeyGate {
    /// From the validated config.
    pub fn new(c: &ApiKeyConfig) -> Self {
        Self {
            keys: c
                .keys
                .iter()
                .map(|(k, id)| (k.as_bytes().to_vec(), Arc::new(id.clone())))
                .collect(),
            header: http::HeaderName::from_bytes(c.header_name.as_bytes())
                .unwrap_or(http::HeaderName::from_static("x-api-key")),
            query: c.query_param.clone(),
            exclude: PathSet::new(&c.exclude_paths),
        }
    }

    fn presented(&self, req: &Req) -> Option<Vec<u8>> {
        if let Some(v) = req.headers().get(&self.header) {
            return Some(v.as_bytes().to_vec());
        }
        let name = self.query.as_deref()?;
        let query = req.uri().query()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned().into_bytes())
    }
}

impl Gate for ApiKeyGate {
    fn check(&self, req: &mut Req) -> Verdict {
        if self.exclude.contains(app_path(req)) {
            return Verdict::Pass;
        }
        let challenge = || format!("ApiKey header=\"{}\"", self.header.as_str());
        let Some(key) = self.presented(req) else {
            return Verdict::Reject(unauthorized(challenge(), "an API key is required"));
        };
        // Every key is compared, so the time taken does not tell which one was close.
        let mut found = None;
        for (k, id) in &self.keys {
            if constant_time_eq(&key, k) && found.is_none() {
                found = Some(id.clone());
            }
        }
        match found {
            Some(id) => {
                req.extensions_mut().insert(Identity(id));
                Verdict::Pass
            }
            None => Verdict::Reject(unauthorized(challenge(), "the API key is not valid")),
        }
    }
}
