//! The REST side of the gateway: an axum router with one POST route per model
//! (and `/metrics` behind `API.AdminToken` when there is no admin listener),
//! wrapped in tower layers:
//! request id (a UUIDv7, also sent back as `X-Request-Id`) → tracing span with
//! that id → timeout (answered 9997) → concurrency limit. Bodies over
//! `API.MaxBodyBytes` get HTTP 413 with code 9810, after the body is read off
//! the connection (so the client sees the answer, not a reset). Every answer,
//! error or not, is a go-infer envelope.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Extension, Router};
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use super::core::{Failure, Gateway};
use super::eas::{self, EasApi};
use super::envelope::{failure_body, success_body};
use super::idempotency::{IdempotencyKey, IDEMPOTENCY_HEADER};
use super::openai::{self, OpenAiApi};
use super::request::{assign_request_id, bearer, read_limited, request_span, BodyError, RequestId};
use crate::codes::ErrorKind;
use crate::metrics;
use crate::metrics::gateway::{sign_label, RequestMetric};

#[derive(Clone)]
struct AppState {
    gateway: Arc<Gateway>,
    max_body: usize,
    admin_token: Option<Arc<str>>,
}

/// Limits of the REST server.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_concurrent_requests: usize,
    /// Backstop for a whole request (the queue call has its own deadline).
    pub request_timeout: Duration,
    /// `/metrics` on this router asks for this bearer token; None: not
    /// served here (it is on the admin listener).
    pub admin_token: Option<String>,
}

/// The REST API; `in_flight` is the gateway's concurrency limit, shared
/// with its gRPC API.
pub fn router(
    gateway: Arc<Gateway>,
    limits: HttpLimits,
    in_flight: Arc<tokio::sync::Semaphore>,
    openai: Option<OpenAiApi>,
    eas: Option<EasApi>,
) -> Router {
    let state = AppState {
        gateway: Arc::clone(&gateway),
        max_body: limits.max_body_bytes,
        admin_token: limits.admin_token.as_deref().map(Arc::from),
    };
    let mut app = Router::new();
    for path in gateway.paths() {
        app = app.route(&path, post(model_route));
    }
    let mut app: Router = app
        .route("/metrics", get(metrics_behind_token))
        .fallback(unknown_path)
        .method_not_allowed_fallback(unknown_path)
        .with_state(state.clone());
    if let Some(api) = openai {
        app = app.merge(openai::router(
            Arc::clone(&gateway),
            api,
            limits.max_body_bytes,
        ));
    }
    let app = app.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(assign_request_id))
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            .layer(HandleErrorLayer::new(
                move |Extension(id): Extension<RequestId>, err: BoxError| {
                    let gw = Arc::clone(&state.gateway);
                    async move { layer_error(&gw, &id, err) }
                },
            ))
            .layer(tower::timeout::TimeoutLayer::new(limits.request_timeout))
            .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
                Arc::clone(&in_flight),
            )),
    );
    match eas {
        // The asynchronous API: the same layers, with a timeout past its
        // longest wait (a get waits at most a minute; a watch's answer is
        // its upgrade, and the socket then lives on its own).
        Some(api) => app.merge(
            eas::router(api).layer(
                ServiceBuilder::new()
                    .layer(middleware::from_fn(assign_request_id))
                    .layer(TraceLayer::new_for_http().make_span_with(request_span))
                    .layer(HandleErrorLayer::new(|err: BoxError| async move {
                        eas_layer_error(err)
                    }))
                    .layer(tower::timeout::TimeoutLayer::new(
                        limits.request_timeout.max(EAS_REQUEST_TIMEOUT),
                    ))
                    .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
                        in_flight,
                    )),
            ),
        ),
        None => app,
    }
}

/// The backstop of a PAI-EAS request: past a get's longest wait.
pub const EAS_REQUEST_TIMEOUT: Duration = Duration::from_secs(75);

fn eas_layer_error(err: BoxError) -> Response {
    let e = if err.is::<tower::timeout::error::Elapsed>() {
        eas::ApiError::TimedOut("the request timed out in the gateway".into())
    } else {
        eas::ApiError::Busy(err.to_string())
    };
    e.into_response()
}

/// `/metrics` on the public port: only with the admin token (constant-time
/// compare), else the same answer as any unknown path.
async fn metrics_behind_token(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: axum::http::HeaderMap,
    uri: Uri,
) -> Response {
    use subtle::ConstantTimeEq;
    let given = bearer(&headers).unwrap_or_default();
    match &state.admin_token {
        Some(t) if bool::from(t.as_bytes().ct_eq(given.as_bytes())) => metrics::handler().await,
        _ => unknown_path(State(state), Extension(id), uri).await,
    }
}

fn layer_error(gw: &Gateway, id: &RequestId, err: BoxError) -> Response {
    let f = if err.is::<tower::timeout::error::Elapsed>() {
        gw.fail(ErrorKind::QueueTimeout, "request timed out in the gateway")
    } else {
        gw.fail(ErrorKind::RecvMsgFail, &err.to_string())
    };
    envelope_response(StatusCode::OK, failure_body("", &id.0, f.code, &f.msg))
}

async fn model_route(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let gw = &state.gateway;
    let metric = RequestMetric::start("rest", gw.api_label(uri.path()));
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(why) => {
            let f = gw.fail(ErrorKind::SignFail1, &why);
            metric.finish(&f.code.to_string(), sign_label(""));
            return envelope_response(StatusCode::OK, failure_body("", &id.0, f.code, &f.msg));
        }
    };
    let (bytes, _held) = match read_limited(body, state.max_body, gw.body_limits()).await {
        Ok(b) => b,
        Err(e) => {
            let (status, f) = body_failure(gw, &e, state.max_body);
            count_refusal(&f);
            metric.finish(&f.code.to_string(), sign_label(""));
            let mut r = envelope_response(status, failure_body("", &id.0, f.code, &f.msg));
            set_retry_after(&mut r, f.retry_after);
            return r;
        }
    };
    let handled = gw
        .handle_body(&id.0, uri.path(), &bytes, key.as_ref())
        .await;
    let app_id = handled.app_id;
    match handled.outcome {
        Ok(output) => {
            metric.finish("0", handled.sign);
            tracing::debug!(code = 0, "answered");
            envelope_response(StatusCode::OK, success_body(&app_id, &id.0, output))
        }
        Err(f) => {
            count_refusal(&f);
            metric.finish(&f.code.to_string(), handled.sign);
            let Failure { code, msg, .. } = f;
            tracing::info!(code, %msg, "answered with an error");
            envelope_response(StatusCode::OK, failure_body(&app_id, &id.0, code, &msg))
        }
    }
}

/// Counts a failure that refused the request for load or abuse.
pub fn count_refusal(f: &Failure) {
    if let Some(r) = f.refusal() {
        r.count();
    }
}

/// Adds `Retry-After` (whole seconds, at least 1) when the failure asks
/// the client to come back later.
pub fn set_retry_after(r: &mut Response, after: Option<Duration>) {
    if let Some(after) = after {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// The client's `Idempotency-Key`, if it sent one; why not, when malformed.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, String> {
    headers
        .get(IDEMPOTENCY_HEADER)
        .map(|v| IdempotencyKey::parse(v.as_bytes()))
        .transpose()
}

/// The answer to a body that could not be read.
pub fn body_failure(gw: &Gateway, e: &BodyError, max_body: usize) -> (StatusCode, Failure) {
    match e {
        BodyError::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            gw.fail(
                ErrorKind::BodyTooLarge,
                &format!("the limit is {max_body} bytes"),
            ),
        ),
        // The gateway's budget of bytes is spent: come back in a second.
        BodyError::Busy(b) => (StatusCode::TOO_MANY_REQUESTS, {
            let mut f = gw.fail(ErrorKind::ServerBusy, &b.to_string());
            f.retry_after = Some(Duration::from_secs(1));
            f
        }),
        BodyError::TimedOut(_) => (
            StatusCode::REQUEST_TIMEOUT,
            gw.fail(ErrorKind::SignFail1, &e.to_string()),
        ),
        BodyError::Read(_) => (
            StatusCode::OK,
            gw.fail(ErrorKind::SignFail1, &e.to_string()),
        ),
    }
}

async fn unknown_path(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    uri: Uri,
) -> Response {
    let metric = RequestMetric::start("rest", state.gateway.api_label(uri.path()));
    let f = state.gateway.fail(ErrorKind::UnknownApiPath, uri.path());
    metric.finish(&f.code.to_string(), sign_label(""));
    envelope_response(StatusCode::OK, failure_body("", &id.0, f.code, &f.msg))
}

fn envelope_response(status: StatusCode, body: serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}
