//! `POST /v1/embeddings` in OpenAI's request and response shape, for the
//! embedding clients that speak it (OpenAI SDKs, LangChain, LlamaIndex...).
//!
//! Authenticated with `Authorization: Bearer <key>` against `OpenAI.ApiKeys`
//! (compared in constant time). The request's `model` names an embedding model
//! of the settings' `Models`; `input` is a string or a list of strings. The
//! job goes through the same path as a go-infer request (the model's check,
//! the queue, a dispatcher, batching), as `{"texts": [...]}` on that model's
//! API path. Errors use OpenAI's `{"error": {message, type, param, code}}`
//! with an HTTP status; `code` carries inferq's numeric code where there is one.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::core::{Failure, Gateway};
use super::idempotency::KeyedJob;
use super::rate::Identity;
use super::request::{bearer, read_limited, RequestId};
use crate::codes::ErrorKind;
use crate::metrics::gateway::{Refusal, RequestMetric};
use crate::model_zoo::Params;

/// What the OpenAI-style API serves.
#[derive(Debug, Clone, Default)]
pub struct OpenAiApi {
    /// Accepted bearer tokens.
    pub api_keys: Vec<String>,
    /// Model name → API path of an embedding model.
    pub models: BTreeMap<String, String>,
}

#[derive(Clone)]
struct ApiState {
    gateway: Arc<Gateway>,
    api: Arc<OpenAiApi>,
    max_body: usize,
}

pub fn router(gateway: Arc<Gateway>, api: OpenAiApi, max_body: usize) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(ApiState {
            gateway,
            api: Arc::new(api),
            max_body,
        })
}

fn error(status: StatusCode, kind: &str, code: Value, message: impl Into<String>) -> Response {
    let body = json!({"error": {
        "message": message.into(),
        "type": kind,
        "param": Value::Null,
        "code": code,
    }});
    (status, Json(body)).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Value::Null,
        message,
    )
}

fn authorised(headers: &HeaderMap, keys: &[String]) -> bool {
    let Some(token) = bearer(headers) else {
        return false;
    };
    // Check every key, so the time taken does not tell which one matched.
    keys.iter().fold(false, |ok, k| {
        ok | bool::from(k.as_bytes().ct_eq(token.trim().as_bytes()))
    })
}

fn failure_response(f: Failure) -> Response {
    super::http::count_refusal(&f);
    let status = match f.kind {
        // A full queue: come back later.
        _ if f.retry_after.is_some() => StatusCode::TOO_MANY_REQUESTS,
        Some(ErrorKind::ApiEntryFail) => StatusCode::BAD_REQUEST,
        Some(ErrorKind::SendMsgFail) => StatusCode::SERVICE_UNAVAILABLE,
        Some(ErrorKind::QueueTimeout) => StatusCode::GATEWAY_TIMEOUT,
        Some(ErrorKind::BodyTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        Some(ErrorKind::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
        Some(ErrorKind::ServerBusy) => StatusCode::SERVICE_UNAVAILABLE,
        Some(ErrorKind::IdempotencyConflict) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let kind = if status == StatusCode::BAD_REQUEST {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let retry_after = f.retry_after;
    let mut r = error(status, kind, json!(f.code), f.msg);
    super::http::set_retry_after(&mut r, retry_after);
    r
}

async fn embeddings(
    State(state): State<ApiState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metric = RequestMetric::start("rest", Arc::from("/v1/embeddings"));
    let r = embed(state, id, headers, body).await;
    metric.finish(r.status().as_str(), "bearer");
    r
}

async fn embed(state: ApiState, id: RequestId, headers: HeaderMap, body: Body) -> Response {
    if !authorised(&headers, &state.api.api_keys) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            json!("invalid_api_key"),
            "missing or wrong API key (Authorization: Bearer <key>)",
        );
    }
    if let Some(token) = bearer(&headers) {
        if let Err(retry) = state.gateway.check_rate(Identity::OpenAiKey(token)) {
            Refusal::Rate.count();
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                json!("rate_limit_exceeded"),
                retry.to_string(),
            );
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry.secs().into());
            return r;
        }
    }
    let key = match super::http::idempotency_key(&headers) {
        Ok(key) => key,
        Err(why) => return bad_request(why),
    };
    let (bytes, _held) = match read_limited(body, state.max_body, state.gateway.body_limits()).await
    {
        Ok(b) => b,
        Err(e) => {
            let (status, f) = super::http::body_failure(&state.gateway, &e, state.max_body);
            super::http::count_refusal(&f);
            let status = if status == StatusCode::OK {
                StatusCode::BAD_REQUEST
            } else {
                status
            };
            let retry_after = f.retry_after;
            let mut r = error(status, "invalid_request_error", json!(f.code), f.msg);
            super::http::set_retry_after(&mut r, retry_after);
            return r;
        }
    };
    let request: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("the body must be a JSON object"),
        Err(e) => return bad_request(format!("the body is not JSON: {e}")),
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return bad_request("`model` (a string) is required");
    };
    let Some(api_path) = state.api.models.get(model) else {
        let known: Vec<&String> = state.api.models.keys().collect();
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            json!("model_not_found"),
            format!("no embedding model {model:?}; served: {known:?}"),
        );
    };
    let texts: Vec<Value> =
        match request.get("input") {
            Some(Value::String(s)) => vec![Value::String(s.clone())],
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.clone(),
            Some(Value::Array(_)) => return bad_request(
                "`input` must be a string or a list of strings (token arrays are not supported)",
            ),
            Some(_) => return bad_request("`input` must be a string or a list of strings"),
            None => return bad_request("`input` is required"),
        };
    let base64 = match request.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return bad_request(format!(
                "`encoding_format` {other:?} is not supported (float, base64)"
            ))
        }
    };
    if request.get("dimensions").is_some_and(|d| !d.is_null()) {
        return bad_request("`dimensions` is not supported by this model");
    }
    let mut params = Params::new();
    params.insert("texts".into(), Value::Array(texts));
    // The key's owner is the API key (hashed into the job id, never shown).
    let keyed = key.map(|k| KeyedJob {
        job_id: k.job_id(bearer(&headers).unwrap_or_default(), api_path),
        join_only: false,
    });
    let mut out = match state
        .gateway
        .run_model(&id.0, api_path, params, keyed)
        .await
    {
        Ok(out) => out,
        Err(f) => return failure_response(f),
    };
    let vectors = match out.remove("embeddings") {
        Some(Value::Array(v)) => v,
        _ => {
            return failure_response(
                state
                    .gateway
                    .fail(ErrorKind::RecvMsgFail, "the model returned no embeddings"),
            )
        }
    };
    let tokens = out.get("tokens").and_then(Value::as_u64).unwrap_or(0);
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let floats: Vec<u8> = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .flat_map(|x| (x.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
                            .collect()
                    })
                    .unwrap_or_default();
                json!(base64::engine::general_purpose::STANDARD.encode(floats))
            } else {
                v
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}
