//! What every HTTP route of the gateway shares: the request id (a UUIDv7,
//! also sent back as `X-Request-Id`) with its tracing span, and reading a
//! body within a limit.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;

use super::budget::{HeldBytes, InFlightBytes, LargeRequests, OverBudget};
use super::new_request_id;

/// The id of the request being served, set by the first layer.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

tokio::task_local! {
    /// The client's W3C traceparent for the request being served, when it
    /// sent a well-formed one.
    static TRACEPARENT: Option<Arc<str>>;
}

/// The traceparent of the request this task serves, if any.
pub fn traceparent() -> Option<Arc<str>> {
    TRACEPARENT.try_with(|t| t.clone()).ok().flatten()
}

/// Runs `f` as the serving of a request that came with `traceparent`.
pub async fn with_traceparent<F: std::future::Future>(
    traceparent: Option<Arc<str>>,
    f: F,
) -> F::Output {
    TRACEPARENT.scope(traceparent, f).await
}

/// A client's `traceparent` header, when well formed.
pub fn traceparent_header(headers: &axum::http::HeaderMap) -> Option<Arc<str>> {
    headers
        .get(crate::proto::trace::TRACEPARENT_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|v| crate::proto::trace::valid_traceparent(v))
        .map(Arc::from)
}

/// The span of one request, with the id `assign_request_id` gave it.
pub fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| Arc::from(""));
    let span = tracing::info_span!("request", request_id = %id, traceparent = tracing::field::Empty, method = %req.method(), path = %req.uri().path());
    if let Some(tp) = traceparent_header(req.headers()) {
        span.record("traceparent", &*tp);
        crate::telemetry::adopt_traceparent(&span, &tp);
    }
    span
}

pub async fn assign_request_id(mut req: Request, next: Next) -> Response {
    let id: Arc<str> = Arc::from(new_request_id());
    req.extensions_mut().insert(RequestId(Arc::clone(&id)));
    let tp = traceparent_header(req.headers());
    let mut resp = with_traceparent(tp, next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Bodies up to this many times the limit are read and dropped before the 413
/// answer; larger ones are answered at once and the connection closed.
const DRAIN_FACTOR: usize = 16;

/// Why a body could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("the body is over the limit")]
    TooLarge,
    #[error("could not read the body: {0}")]
    Read(String),
    #[error("the body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Busy(#[from] OverBudget),
}

/// What bounds a body read: its size, the time it may take, and the
/// gateway's budget of bytes in flight (charged as the body arrives).
#[derive(Clone)]
pub struct BodyLimits {
    pub timeout: Duration,
    pub budget: InFlightBytes,
    pub large: LargeRequests,
}

/// Reads at most `max` bytes within `limits`. A larger body is read on (and
/// dropped) up to `DRAIN_FACTOR * max`, so the client gets the 413 answer.
/// The bytes stay charged to the budget until the `HeldBytes` is dropped.
pub async fn read_limited(
    body: Body,
    max: usize,
    limits: &BodyLimits,
) -> Result<(bytes::Bytes, HeldBytes), BodyError> {
    let mut held = HeldBytes::default();
    match tokio::time::timeout(limits.timeout, read_into(body, max, limits, &mut held)).await {
        Ok(Ok(bytes)) => {
            limits.large.admit(&mut held, bytes.len()).await;
            Ok((bytes, held))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::TimedOut(limits.timeout)),
    }
}

async fn read_into(
    mut body: Body,
    max: usize,
    limits: &BodyLimits,
    held: &mut HeldBytes,
) -> Result<bytes::Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let drain_cap = max.saturating_mul(DRAIN_FACTOR);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > max {
                if seen > drain_cap {
                    return Err(BodyError::TooLarge);
                }
                continue;
            }
            limits.budget.charge(held, data.len())?;
            buf.extend_from_slice(&data);
        }
    }
    if seen > max {
        Err(BodyError::TooLarge)
    } else {
        Ok(buf.freeze())
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}
