//! Who a request speaks for and what it carries, as axum extractors: an
//! operator route takes `Admin`, a `ctl` route `TaskCaller`, the agent
//! socket `AgentCaller`; bodies are `Body<T>`, path parameters `Path<T>`,
//! query strings `Params`. Each refuses with a problem, so no handler reads
//! a header or parses a body itself.

use crate::Hub;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_core::{AgentName, TaskId};
use muster_proto::from_json;
use std::collections::HashMap;
use std::time::Duration;

/// Largest request body. Prompts are capped at 1 MiB by validation, which
/// names the field; this only stops bodies far beyond any valid request.
pub(crate) const MAX_BODY_BYTES: usize = 8 << 20;
/// Longest a long-poll (`?wait=`) may hold a request.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A request made with the admin token or a signed-in dashboard session:
/// operator routes take this, so no handler checks a header itself.
pub(crate) struct Admin(pub muster_store::TokenRecord);

impl axum::extract::FromRequestParts<Hub> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, hub: &Hub) -> ApiResult<Admin> {
        hub.admin(&parts.headers).await.map(Admin)
    }
}

/// A run speaking for its own task with the task token it was given: the
/// `ctl` routes take this.
pub(crate) struct TaskCaller(pub TaskId, pub muster_core::Epoch);

impl axum::extract::FromRequestParts<Hub> for TaskCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, hub: &Hub) -> ApiResult<TaskCaller> {
        let (task, epoch) = hub.task_caller(&parts.headers).await?;
        Ok(TaskCaller(task, epoch))
    }
}

/// An agent with its own token: the agent socket takes this.
pub(crate) struct AgentCaller(pub AgentName);

impl axum::extract::FromRequestParts<Hub> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, hub: &Hub) -> ApiResult<AgentCaller> {
        match hub.caller(&parts.headers).await? {
            Caller::Agent(name) => Ok(AgentCaller(name)),
            Caller::Admin(_) => {
                Err(ApiError::Forbidden("an admin token cannot connect as an agent; use the agent's own token".into()))
            }
            Caller::Task { task, .. } => Err(ApiError::Forbidden(format!(
                "{task}'s task token cannot connect as an agent; use the agent's own token"
            ))),
        }
    }
}

/// A path parameter; one that cannot be read is a 400 problem like any
/// other bad input.
pub(crate) struct Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<Hub> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, hub: &Hub) -> ApiResult<Path<T>> {
        match axum::extract::Path::<T>::from_request_parts(parts, hub).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(e) => Err(ApiError::bad("path", e.body_text())),
        }
    }
}

/// A WebSocket route asked without what an upgrade needs: a 400 problem
/// naming what was missing.
pub(crate) fn not_a_socket(e: axum::extract::ws::rejection::WebSocketUpgradeRejection) -> ApiError {
    ApiError::bad("", e.body_text())
}

/// A JSON request body, read as `muster_proto::from_json` reads it: a bad
/// body is a 400 naming the field.
pub(crate) struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<Hub> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, hub: &Hub) -> Result<Body<T>, Response> {
        let bytes = match Bytes::from_request(request, hub).await {
            Ok(bytes) => bytes,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(
                    ApiError::TooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes")).into_response()
                );
            }
            Err(e) => return Err(ApiError::bad("", e.body_text()).into_response()),
        };
        from_json(&bytes).map(Body).map_err(|e| ApiError::from(e).into_response())
    }
}

impl Hub {
    pub(crate) async fn caller(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        let header = match headers.get(header::AUTHORIZATION) {
            // A browser signed in to the dashboard.
            None if let Some(id) = crate::auth::session_cookie(headers) => {
                let caller = Caller::Admin(self.session_token(&id).await?);
                let _ = crate::edge::CONN.try_with(|c| c.authenticated());
                self.take_request(&caller)?;
                return Ok(caller);
            }
            None => None,
            Some(v) => {
                Some(v.to_str().map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?)
            }
        };
        let caller = self.authenticate(header).await?;
        // A run's task token speaks for code the hub does not trust with its
        // capacity: its connections stay sheddable.
        if !matches!(caller, Caller::Task { .. }) {
            let _ = crate::edge::CONN.try_with(|c| c.authenticated());
        }
        self.take_request(&caller)?;
        Ok(caller)
    }

    /// Only the admin token may use operator routes.
    pub(crate) async fn admin(&self, headers: &HeaderMap) -> ApiResult<muster_store::TokenRecord> {
        match self.caller(headers).await? {
            Caller::Admin(token) => Ok(token),
            Caller::Agent(name) => {
                Err(ApiError::Forbidden(format!("agent {name}'s token cannot use operator routes; use an admin token")))
            }
            Caller::Task { task, .. } => Err(ApiError::Forbidden(format!(
                "{task}'s task token cannot use operator routes; it is for muster ctl inside the run"
            ))),
        }
    }

    /// Only a run's own task token may use the `ctl` routes, for its task.
    pub(crate) async fn task_caller(&self, headers: &HeaderMap) -> ApiResult<(TaskId, muster_core::Epoch)> {
        match self.caller(headers).await? {
            Caller::Task { task, epoch } => Ok((task, epoch)),
            _ => Err(ApiError::Forbidden(
                "ctl routes take the task token a run is given (MUSTER_TASK_TOKEN), not an admin or agent token".into(),
            )),
        }
    }
}

/// Query parameters, refusing any the route does not know.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn parse(raw: Option<String>, allowed: &[&str]) -> ApiResult<Params> {
        let raw = raw.unwrap_or_default();
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let (k, v) = (k.into_owned(), v.into_owned());
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad(&k, format!("unknown query parameter; allowed: {}", allowed.join(", "))));
            }
            if map.contains_key(&k) {
                return Err(ApiError::bad(&k, "given more than once"));
            }
            map.insert(k, v);
        }
        Ok(Params(map))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub(crate) fn number<T: std::str::FromStr>(&self, key: &str) -> ApiResult<Option<T>> {
        self.get(key)
            .map(|v| v.parse::<T>().map_err(|_| ApiError::bad(key, format!("{v:?} is not a valid number"))))
            .transpose()
    }

    /// `true` or `false`; absent is `false`.
    pub(crate) fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::bad(key, format!("{other:?} is not true or false"))),
        }
    }

    pub(crate) fn wait(&self) -> ApiResult<Duration> {
        Ok(match self.get("wait") {
            None => Duration::ZERO,
            Some(w) => muster_proto::parse_duration("wait", w)?.min(MAX_WAIT),
        })
    }
}

/// Whether the request's `Origin` is the hub itself (the `Host` it was sent to).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => {
            let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
            authority == Some(host)
        }
        _ => false,
    }
}

/// A request not sent from another origin's page: a browser's socket
/// carries the session cookie, so one opened from elsewhere is refused
/// before its cookie is even read.
pub(crate) struct NotCrossOrigin;

impl axum::extract::FromRequestParts<Hub> for NotCrossOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &Hub) -> ApiResult<NotCrossOrigin> {
        if parts.headers.get(header::ORIGIN).is_some() && !same_origin(&parts.headers) {
            return Err(ApiError::Forbidden("a socket from another origin is refused".into()));
        }
        Ok(NotCrossOrigin)
    }
}
