//! Sessions (issue 11): the `session` layer of the stack and the [`SessionSlot`] the
//! Python `request.session` reads and writes.
//!
//! The layer loads the session named by the cookie before the inner layers run (a missing,
//! forged, edited or expired cookie is an empty session, never an error), hands the slot
//! to the request, and after the response saves it — only when the handler changed it
//! (or the CSRF layer bound a token to a new session's id). Stores ([`store`]): `cookie`
//! (the data itself, encrypted and authenticated with the `cookie` crate's private jar),
//! `memory` (moka, bounded) and `redis` (shared by workers and pods); the server stores
//! keep only an opaque, signed id in the cookie.

pub mod store;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{header, HeaderValue};
use serde_json::{Map, Value};

use crate::stack::{Req, Resp};
use crate::target::BoxFuture;
use store::Store;

/// Browsers keep cookies up to 4096 bytes (name, value and attributes, RFC 6265 §6.1).
pub const COOKIE_LIMIT: usize = 4096;

/// What the handler did to the session, shared by the layer and `request.session`.
#[derive(Debug)]
pub struct SessionSlot {
    state: Mutex<SlotState>,
    /// Largest JSON of the data that still fits the cookie (cookie store only).
    max_json: Option<usize>,
}

/// The session as the request sees it.
#[derive(Debug, Default)]
pub struct SlotState {
    /// The data (a JSON object).
    pub data: Map<String, Value>,
    /// The current id (also the CSRF binding); empty until something needs it (a new
    /// session's id is drawn only when it is read or saved, not on every request).
    pub id: String,
    /// The id the request came with, when it had a valid session.
    pub loaded_id: Option<String>,
    /// The handler changed the data, or rotated/cleared the session.
    pub changed: bool,
    /// Keep the session even when empty (a CSRF token is bound to its id).
    pub keep: bool,
}

impl SessionSlot {
    fn new(loaded: Option<(String, Map<String, Value>)>, max_json: Option<usize>) -> Self {
        let state = match loaded {
            Some((id, data)) => SlotState {
                data,
                loaded_id: Some(id.clone()),
                id,
                ..SlotState::default()
            },
            None => SlotState::default(),
        };
        Self {
            state: Mutex::new(state),
            max_json,
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock, with the id drawn if it was not yet.
    fn lock_with_id(&self) -> MutexGuard<'_, SlotState> {
        let mut s = self.lock();
        if s.id.is_empty() {
            s.id = crate::keys::random_id();
        }
        s
    }

    /// The data as JSON (what `request.session` starts from).
    pub fn data_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.lock().data).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The handler changed the session in this request.
    pub fn changed(&self) -> bool {
        self.lock().changed
    }

    /// The current id.
    pub fn id(&self) -> String {
        self.lock_with_id().id.clone()
    }

    /// Replace the data with `json` (an object). Refused when the cookie store could not
    /// hold it: the error names the size and the way out.
    pub fn store_json(&self, json: &[u8]) -> Result<(), String> {
        if let Some(max) = self.max_json {
            if json.len() > max {
                return Err(format!(
                    "the session is too large for the cookie store: {} bytes of JSON, at most {max} fit \
                     in a {COOKIE_LIMIT}-byte cookie; keep less in it or use store=\"memory\" or \"redis\"",
                    json.len()
                ));
            }
        }
        let data: Map<String, Value> =
            serde_json::from_slice(json).map_err(|e| format!("session data must be a JSON object: {e}"))?;
        let mut s = self.lock();
        s.data = data;
        s.changed = true;
        Ok(())
    }

    /// A new id for the same data (call at login: a fixated id becomes worthless).
    pub fn regenerate(&self) {
        let mut s = self.lock();
        s.id = crate::keys::random_id();
        s.changed = true;
    }

    /// Log out: no data, a new id, the old record deleted.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.data.clear();
        s.id = crate::keys::random_id();
        s.changed = true;
    }

    /// Keep this session even if it stays empty (its id carries a CSRF binding).
    pub fn keep(&self) {
        self.lock().keep = true;
    }
}

/// The request's session (request extension).
#[derive(Clone, Debug)]
pub struct SessionHandle(pub Arc<SessionSlot>);

/// The session layer's settings and store, built once.
pub struct Sessions {
    config: cello_config::SessionConfig,
    store: Store,
    max_json: Option<usize>,
}

impl Sessions {
    /// Build from the validated config (the key: `secret`, else `CELLO_SECRET_KEY`).
    pub fn new(config: &cello_config::SessionConfig) -> crate::Result<Self> {
        let secret = crate::keys::resolve(config.secret.as_ref(), "session.secret")?;
        let store = Store::new(config, &secret)?;
        let max_json = (config.store == "cookie").then(|| store::cookie_json_budget(config));
        Ok(Self {
            config: config.clone(),
            store,
            max_json,
        })
    }

    fn cookie_value<'a>(&self, req: &'a Req) -> Option<&'a str> {
        let name = self.config.cookie_name.as_str();
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    /// `Set-Cookie` for `value` (`None`: delete the cookie).
    fn set_cookie(&self, resp: &mut Resp, value: Option<&str>) {
        let c = &self.config;
        let mut out = format!("{}={}; Path={}", c.cookie_name, value.unwrap_or(""), c.cookie_path);
        if let Some(d) = &c.cookie_domain {
            out.push_str("; Domain=");
            out.push_str(d);
        }
        match (value, c.max_age) {
            (None, _) => out.push_str("; Max-Age=0"),
            (Some(_), Some(age)) => out.push_str(&format!("; Max-Age={age}")),
            (Some(_), None) => {}
        }
        if c.cookie_secure {
            out.push_str("; Secure");
        }
        if c.cookie_http_only {
            out.push_str("; HttpOnly");
        }
        if let Some(s) = &c.cookie_same_site {
            let s = match s.to_ascii_lowercase().as_str() {
                "strict" => "Strict",
                "none" => "None",
                _ => "Lax",
            };
            out.push_str("; SameSite=");
            out.push_str(s);
        }
        if let Ok(v) = HeaderValue::from_str(&out) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }

    /// Save what the handler changed, or forget what it cleared.
    async fn finish(&self, slot: &SessionSlot, had_cookie: bool, resp: &mut Resp) {
        let (id, loaded_id, data, empty) = {
            let mut s = slot.lock();
            let persisted = s.loaded_id.is_some();
            let new_and_kept = s.keep && !persisted;
            if !s.changed && !new_and_kept {
                return; // saved only when changed
            }
            if s.id.is_empty() {
                s.id = crate::keys::random_id();
            }
            (
                s.id.clone(),
                s.loaded_id.clone(),
                s.data.clone(),
                s.data.is_empty() && !s.keep,
            )
        };
        // A rotated or cleared session's old record goes (replaying its cookie finds nothing).
        if let Some(old) = loaded_id.as_deref().filter(|old| *old != id || empty) {
            self.store.delete(old).await;
        }
        if empty {
            if had_cookie {
                self.set_cookie(resp, None);
            }
            return;
        }
        let ttl = self.config.max_age.unwrap_or(86_400).max(1) as u64;
        match self.store.save(&self.config.cookie_name, &id, &data, ttl).await {
            Ok(value) => self.set_cookie(resp, Some(&value)),
            Err(e) => {
                tracing::error!(error = %e, "could not save the session");
                *resp = crate::problem::problem(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "the session could not be saved; try again",
                );
            }
        }
    }
}

/// The session layer.
pub struct SessionLayer(pub Arc<Sessions>);

impl<S> tower::Layer<S> for SessionLayer {
    type Service = SessionService<S>;
    fn layer(&self, inner: S) -> SessionService<S> {
        SessionService {
            inner,
            sessions: self.0.clone(),
        }
    }
}

/// See [`SessionLayer`].
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    sessions: Arc<Sessions>,
}

impl<S> tower::Service<Req> for SessionService<S>
where
    S: tower::Service<Req, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFuture;
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut req: Req) -> BoxFuture {
        let sessions = self.sessions.clone();
        // The service that was polled ready serves this request; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let raw = sessions.cookie_value(&req).map(str::to_owned);
            let loaded = match &raw {
                Some(raw) => sessions.store.load(&sessions.config.cookie_name, raw).await,
                None => None,
            };
            let slot = Arc::new(SessionSlot::new(loaded, sessions.max_json));
            req.extensions_mut().insert(SessionHandle(slot.clone()));
            let mut resp = match tower::Service::call(&mut inner, req).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            sessions.finish(&slot, raw.is_some(), &mut resp).await;
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests;
