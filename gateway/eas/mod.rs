//! The asynchronous API over HTTP and WebSocket, wire-compatible with the
//! PAI-EAS queue service (what the `eas-prediction` SDK's `QueueClient`
//! speaks). One URL per queue: `/api/predict/<svc>` (input) and
//! `/api/predict/<svc>/sink`; the method and reserved query keys choose the
//! operation, one handler each in [`cmd`] (parse, then apply):
//!
//! | method | query | operation |
//! |---|---|---|
//! | POST | tags as `k=v` | [`cmd::put`]; body = payload; answer = index, header `X-Eas-Queueservice-Request-Id` |
//! | GET | `_index_ _length_ _timeout_ _auto_delete_ requestId` tags | [`cmd::get`] |
//! | GET | `_attrs_=true` | [`cmd::attributes`] (JSON) |
//! | GET | `_search_=true&_index_=I` | [`cmd::search`] (JSON) |
//! | GET + Upgrade | `_watch_=true&_index_&_window_&_auto_commit_&_index_only_` | [`cmd::watch`] (WebSocket, binary DataFrameProto frames) |
//! | PUT | `_indexes_=1,2` [`_negative_=true&_code_&_reason_`] | [`cmd::commit`] (or negative commit) |
//! | DELETE | `_indexes_=1,2` or `_index_=I&_trunc_=true` | [`cmd::delete`] (or truncate) |
//!
//! Every request carries the service's token in `Authorization` (401
//! otherwise, also for a service that does not exist; 429 with
//! `Retry-After` over the token's `API.RateLimit`). A put into the input queue runs the model's parameter check
//! first, so a payload the model would refuse is answered 400 and not stored.
//! Errors are [`ApiError`]s, turned into HTTP answers in one place
//! ([`error`]); [`grpc`] serves the same operations to gRPC clients.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use subtle::ConstantTimeEq;

use super::core::Gateway;
use super::rate::Identity;
use super::request::BodyLimits;
use crate::config::{QueueLimits, ServiceSpec, Settings};
use crate::metrics::gateway::RequestMetric;
use crate::proto::eas::payload_params;
use crate::proto::{AsyncQueueRef, EasLink};

pub mod cmd;
pub mod error;
pub mod grpc;
pub mod query;

pub use error::ApiError;
use query::Query;

/// The response header that carries a put's request id.
pub const HEADER_REQUEST_ID: &str = "X-Eas-Queueservice-Request-Id";

/// One service as the gateway sees it.
#[derive(Clone)]
struct ServiceEntry {
    token: String,
    spec: ServiceSpec,
}

/// Why the asynchronous API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EasApiError {
    #[error(transparent)]
    Settings(#[from] crate::config::KeyError),
    #[error("AsyncServices.{service}.model: no model is served at {model}")]
    NoModel { service: String, model: String },
}

/// What the asynchronous API serves.
#[derive(Clone)]
pub struct EasApi {
    link: Arc<dyn EasLink>,
    gateway: Arc<Gateway>,
    services: Arc<HashMap<String, ServiceEntry>>,
}

impl EasApi {
    pub fn new(
        settings: &Settings,
        gateway: Arc<Gateway>,
        link: Arc<dyn EasLink>,
    ) -> Result<Self, EasApiError> {
        let mut services = HashMap::new();
        for (name, s) in &settings.async_services {
            let spec = ServiceSpec::from_settings(name, s)?;
            if spec.input.enabled
                && gateway
                    .check_params(&spec.model, Default::default())
                    .is_none()
            {
                return Err(EasApiError::NoModel {
                    service: name.clone(),
                    model: spec.model,
                });
            }
            services.insert(
                name.clone(),
                ServiceEntry {
                    token: s.token.clone(),
                    spec,
                },
            );
        }
        Ok(EasApi {
            link,
            gateway,
            services: Arc::new(services),
        })
    }

    /// Checks the token of `service` and takes one request from its rate;
    /// the service when it passes. An unknown service answers as a wrong
    /// token does (401), so that names cannot be probed.
    pub fn authorize(&self, service: &str, token: Option<&str>) -> Result<&ServiceSpec, ApiError> {
        let given = token.unwrap_or_default();
        let Some(entry) = self.services.get(service) else {
            return Err(ApiError::Unauthorized(service.to_string()));
        };
        if !entry.token.is_empty() {
            if !bool::from(given.as_bytes().ct_eq(entry.token.as_bytes())) {
                return Err(ApiError::Unauthorized(service.to_string()));
            }
            self.gateway
                .check_rate(Identity::EasToken(&entry.token))
                .map_err(ApiError::RateLimited)?;
        }
        Ok(&entry.spec)
    }

    /// What bounds reading a put's body.
    pub fn body_limits(&self) -> &BodyLimits {
        self.gateway.body_limits()
    }

    /// Checks a put before it is sent to the queue: the size, and for the
    /// input queue the model's parameter check.
    pub fn check_put(&self, spec: &ServiceSpec, sink: bool, data: &[u8]) -> Result<(), ApiError> {
        let limits: &QueueLimits = spec.limits(sink);
        if !limits.enabled {
            return Err(ApiError::Unavailable(format!(
                "the {} queue of {} is turned off (queue.sink.memory_ratio)",
                if sink { "sink" } else { "input" },
                spec.name
            )));
        }
        if data.len() as u64 > limits.max_payload_bytes {
            return Err(ApiError::TooLarge(format!(
                "payload of {} bytes is over max_payload_size ({} bytes)",
                data.len(),
                limits.max_payload_bytes
            )));
        }
        // A model server takes the payload as it is: any bytes.
        if !sink && self.gateway.takes_payload_bytes(&spec.model) != Some(true) {
            let params = payload_params(data).map_err(|e| ApiError::bad(e.to_string()))?;
            match self.gateway.check_params(&spec.model, params) {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(ApiError::bad(format!(
                        "the model {} refused the payload: {}",
                        spec.model, e.message
                    )))
                }
                None => {
                    return Err(ApiError::Unavailable(format!(
                        "no model is served at {}",
                        spec.model
                    )))
                }
            }
        }
        Ok(())
    }

    pub fn link(&self) -> &Arc<dyn EasLink> {
        &self.link
    }
}

pub fn router(api: EasApi) -> Router {
    Router::new()
        .route("/api/predict/{service}", any(input_queue))
        .route("/api/predict/{service}/sink", any(sink_queue))
        .with_state(api)
}

async fn input_queue(
    State(api): State<EasApi>,
    Path(service): Path<String>,
    req: axum::extract::Request,
) -> Response {
    serve(api, service, false, req).await
}

async fn sink_queue(
    State(api): State<EasApi>,
    Path(service): Path<String>,
    req: axum::extract::Request,
) -> Response {
    serve(api, service, true, req).await
}

async fn serve(api: EasApi, service: String, sink: bool, req: axum::extract::Request) -> Response {
    let api_label = if sink { "eas_sink" } else { "eas" };
    let metric = RequestMetric::start("rest", Arc::from(api_label));
    let r = match handle(api, service, sink, req).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(reason) = e.refusal() {
                reason.count();
            }
            e.into_response()
        }
    };
    metric.finish(r.status().as_str(), "token");
    r
}

/// The queue a request is for, once its token has passed.
pub struct Target<'a> {
    pub spec: &'a ServiceSpec,
    pub sink: bool,
}

async fn handle(
    api: EasApi,
    service: String,
    sink: bool,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let spec = api.authorize(&service, token)?;
    let target = Target { spec, sink };
    let (mut parts, body) = req.into_parts();
    let q = Query::of(&parts.uri)?;
    let link = api.link.as_ref();
    let queue = AsyncQueueRef { service, sink };
    match parts.method {
        Method::POST => {
            let put = cmd::put::Put::parse(&api, &target, &q, &parts, body).await?;
            put.apply(link, queue).await
        }
        Method::GET if q.flag("_watch_")? => {
            let watch = cmd::watch::Watch::parse(&q, &mut parts).await?;
            watch.apply(&api.link, queue).await
        }
        Method::GET if q.flag("_attrs_")? => cmd::attributes::Attributes.apply(link, queue).await,
        Method::GET if q.flag("_search_")? => {
            cmd::search::Search::parse(&q)?.apply(link, queue).await
        }
        Method::GET => {
            cmd::get::Get::parse(&q, &parts.headers)?
                .apply(link, queue)
                .await
        }
        Method::PUT => cmd::commit::Commit::parse(&q)?.apply(link, queue).await,
        Method::DELETE => cmd::delete::Delete::parse(&q)?.apply(link, queue).await,
        other => Err(ApiError::bad(format!(
            "method {other} is not part of the queue API"
        ))),
    }
}
