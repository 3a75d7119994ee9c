//! The public gRPC API, `inferq.v1.Predict`: the same envelope and pipeline as
//! REST, carried in protobuf fields. Failures are gRPC statuses with the
//! inferq code in the `inferq-code` metadata key (and the message).

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::BoxError;
use prost_types::value::Kind;
use serde_json::{Map, Number, Value};
use tokio::sync::Semaphore;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};
use tower::ServiceBuilder;
use tracing::Instrument;

use super::core::{Failure, Gateway};
use super::http::{HttpLimits, EAS_REQUEST_TIMEOUT};
use super::idempotency::{IdempotencyKey, IDEMPOTENCY_HEADER};
use super::new_request_id;
use crate::codes::ErrorKind;
use crate::metrics::gateway::{sign_label, RequestMetric};
use crate::proto::async_queue_server::AsyncQueueServer;
use crate::proto::predict_request::Params as RequestParams;
use crate::proto::predict_server::{Predict, PredictServer};
use crate::proto::{PredictReply, PredictRequest};

pub struct PredictGrpc {
    gateway: Arc<Gateway>,
}

impl PredictGrpc {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        PredictGrpc { gateway }
    }
}

#[tonic::async_trait]
impl Predict for PredictGrpc {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictReply>, Status> {
        let request_id = new_request_id();
        let traceparent = request
            .metadata()
            .get(crate::proto::trace::TRACEPARENT_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|v| crate::proto::trace::valid_traceparent(v))
            .map(Arc::<str>::from);
        let span = tracing::info_span!("grpc_predict", request_id = %request_id, traceparent = tracing::field::Empty);
        if let Some(tp) = &traceparent {
            span.record("traceparent", &**tp);
            crate::telemetry::adopt_traceparent(&span, tp);
        }
        let key = request
            .metadata()
            .get(IDEMPOTENCY_HEADER)
            .map(|v| IdempotencyKey::parse(v.as_bytes()))
            .transpose();
        let r = request.into_inner();
        let gw = &self.gateway;
        let metric = RequestMetric::start("grpc", gw.api_label(&r.api_path));
        let served = async move {
            let key = match key {
                Ok(key) => key,
                Err(why) => {
                    let f = gw.fail(ErrorKind::SignFail1, &why);
                    metric.finish(&f.code.to_string(), sign_label(""));
                    return Err(status_of(&f, &request_id));
                }
            };
            let data = match r.params {
                Some(RequestParams::DataJson(text)) => match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(m)) => m,
                    _ => {
                        let f = gw.fail(ErrorKind::SignFail1, "data_json: must be a JSON object");
                        metric.finish(&f.code.to_string(), sign_label(&r.sign_type));
                        return Err(status_of(&f, &request_id));
                    }
                },
                Some(RequestParams::Data(s)) => struct_to_json(s),
                None => {
                    let f = gw.fail(ErrorKind::SignFail1, "data: is required");
                    metric.finish(&f.code.to_string(), sign_label(&r.sign_type));
                    return Err(status_of(&f, &request_id));
                }
            };
            let mut fields = Map::new();
            fields.insert("appId".into(), Value::String(r.app_id));
            fields.insert("signType".into(), Value::String(r.sign_type));
            fields.insert("signData".into(), Value::String(r.sign_data));
            fields.insert("timestamp".into(), Value::Number(r.timestamp.into()));
            fields.insert("data".into(), Value::Object(data));
            if !r.version.is_empty() {
                fields.insert("version".into(), Value::String(r.version));
            }
            if !r.enc_type.is_empty() {
                fields.insert("encType".into(), Value::String(r.enc_type));
            }
            let handled = gw
                .handle_fields(&request_id, &r.api_path, fields, key.as_ref())
                .await;
            match handled.outcome {
                Ok(output) => {
                    metric.finish("0", handled.sign);
                    tracing::debug!(code = 0, "answered");
                    let result_json = serde_json::to_string(&output).unwrap_or_default();
                    Ok(Response::new(PredictReply {
                        request_id: request_id.clone(),
                        code: 0,
                        msg: "success".into(),
                        result_json,
                        result: Some(json_to_struct(output)),
                    }))
                }
                Err(f) => {
                    super::http::count_refusal(&f);
                    metric.finish(&f.code.to_string(), handled.sign);
                    Err(status_of(&f, &request_id))
                }
            }
        };
        super::request::with_traceparent(traceparent, served.instrument(span)).await
    }
}

/// The gRPC status for a failure, with `inferq-code` and `inferq-request-id`.
fn status_of(f: &Failure, request_id: &str) -> Status {
    let code = match f.kind {
        Some(
            ErrorKind::SignFail
            | ErrorKind::SignFail2
            | ErrorKind::SignFail3
            | ErrorKind::SignFail5
            | ErrorKind::SignReplay,
        ) => Code::Unauthenticated,
        Some(ErrorKind::RateLimited | ErrorKind::ServerBusy) => Code::ResourceExhausted,
        // A full queue: come back later.
        Some(ErrorKind::SendMsgFail) if f.retry_after.is_some() => Code::ResourceExhausted,
        Some(ErrorKind::IdempotencyConflict) => Code::AlreadyExists,
        Some(
            ErrorKind::SignFail1
            | ErrorKind::SignFail6
            | ErrorKind::ApiEntryFail
            | ErrorKind::BodyTooLarge,
        ) => Code::InvalidArgument,
        Some(ErrorKind::UnknownApiPath | ErrorKind::UnknownApi) => Code::NotFound,
        Some(ErrorKind::QueueTimeout) => Code::DeadlineExceeded,
        Some(ErrorKind::SendMsgFail) => Code::Unavailable,
        Some(ErrorKind::RecvMsgFail | ErrorKind::InferFail) | None => Code::Internal,
    };
    let mut md = MetadataMap::new();
    if let Ok(v) = MetadataValue::try_from(f.code.to_string()) {
        md.insert("inferq-code", v);
    }
    if let Ok(v) = MetadataValue::try_from(request_id) {
        md.insert("inferq-request-id", v);
    }
    if let Some(after) = f.retry_after {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = MetadataValue::try_from(secs.to_string()) {
            md.insert("retry-after", v);
        }
    }
    Status::with_metadata(code, format!("{}: {}", f.code, f.msg), md)
}

/// Struct → JSON; whole numbers become integers (Struct has only doubles).
pub fn struct_to_json(s: prost_types::Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                Value::Number(Number::from(n as i64))
            } else {
                Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

/// JSON object → Struct.
pub fn json_to_struct(m: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
    }
}

fn json_to_value(v: Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(json_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The public gRPC API (with `eas`, also `inferq.v1.AsyncQueue`) as a router
/// with the REST API's layers: messages up to `API.MaxBodyBytes`, the
/// gateway's concurrency limit (`in_flight`, shared with REST), a timeout
/// past the longest wait (a `Predict` has its own deadline, `MessageTimeout`).
pub fn router(
    gateway: Arc<Gateway>,
    eas: Option<super::eas::EasApi>,
    limits: &HttpLimits,
    in_flight: Arc<Semaphore>,
    stop: tokio_util::sync::CancellationToken,
) -> axum::Router {
    let max = limits.max_body_bytes;
    let budget = BudgetedBody {
        gateway: Arc::clone(&gateway),
        // A message and its 5-byte gRPC frame header.
        max: max.saturating_add(5),
    };
    let mut routes = Routes::new(
        PredictServer::new(PredictGrpc::new(Arc::clone(&gateway))).max_decoding_message_size(max),
    );
    let mut services: &'static [&'static str] = &["inferq.v1.Predict"];
    if let Some(api) = eas {
        routes = routes.add_service(
            AsyncQueueServer::new(super::eas::grpc::EasQueueGrpc::new(api))
                .max_decoding_message_size(max),
        );
        services = &["inferq.v1.Predict", "inferq.v1.AsyncQueue"];
    }
    // Serving while a queue service answers, as `/readyz`.
    let (routes, health) = crate::serve::grpc::with_health_and_reflection(routes, services);
    crate::serve::grpc::track_health(
        health,
        services,
        move || {
            let gw = Arc::clone(&gateway);
            async move { gw.queue_ready().await.is_ok() }
        },
        stop,
    );
    routes
        .into_axum_router()
        .layer(axum::middleware::from_fn(move |req, next| {
            let budget = budget.clone();
            async move { budget.read(req, next).await }
        }))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|err: BoxError| async move {
                    let status = if err.is::<tower::timeout::error::Elapsed>() {
                        Status::deadline_exceeded("the request timed out in the gateway")
                    } else {
                        Status::resource_exhausted(err.to_string())
                    };
                    status.into_http::<axum::body::Body>()
                }))
                .layer(tower::timeout::TimeoutLayer::new(
                    limits.request_timeout.max(EAS_REQUEST_TIMEOUT),
                ))
                .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
                    in_flight,
                )),
        )
}

/// Reads a gRPC request's body (every RPC of the public services takes one
/// message) before tonic does, charging it to the gateway's in-flight budget
/// and body timeout as the REST routes do; the bytes stay charged until the
/// call is answered.
#[derive(Clone)]
struct BudgetedBody {
    gateway: Arc<Gateway>,
    max: usize,
}

impl BudgetedBody {
    async fn read(
        self,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let limits = self.gateway.body_limits();
        let (bytes, held) = match super::request::read_limited(body, self.max, limits).await {
            Ok(read) => read,
            Err(e) => {
                let (_, failure) = super::http::body_failure(&self.gateway, &e, self.max);
                let mut status = status_of(&failure, "");
                if matches!(e, super::request::BodyError::TimedOut(_)) {
                    status = Status::deadline_exceeded(status.message().to_string());
                }
                return status.into_http();
            }
        };
        let response = next
            .run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await;
        drop(held);
        response
    }
}
