//! The asynchronous API over HTTP and WebSocket, wire-compatible with the
//! PAI-EAS queue service (what the `eas-prediction` SDK's `QueueClient`
//! speaks). One URL per queue: `/api/predict/<svc>` (input) and
//! `/api/predict/<svc>/sink`; the method and reserved query keys choose the
//! operation:
//!
//! | method | query | operation |
//! |---|---|---|
//! | POST | tags as `k=v` | put; body = payload; answer = index, header `X-Eas-Queueservice-Request-Id` |
//! | GET | `_index_ _length_ _timeout_ _auto_delete_ requestId` tags | get |
//! | GET | `_attrs_=true` | attributes (JSON) |
//! | GET | `_search_=true&_index_=I` | search (JSON) |
//! | GET + Upgrade | `_watch_=true&_index_&_window_&_auto_commit_&_index_only_` | watch (WebSocket, binary DataFrameProto frames) |
//! | PUT | `_indexes_=1,2` [`_negative_=true&_code_&_reason_`] | commit (or negative commit) |
//! | DELETE | `_indexes_=1,2` or `_index_=I&_trunc_=true` | delete, truncate |
//!
//! Every request carries the service's token in `Authorization` (401
//! otherwise). A put into the input queue runs the model's parameter check
//! first, so a payload the model would refuse is answered 400 and not stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures::StreamExt;
use prost::Message as _;
use subtle::ConstantTimeEq;
use tonic::{Code, Status};

use super::async_link::AsyncLink;
use super::core::Gateway;
use super::http::{read_limited, BodyError};
use crate::config::{QueueLimits, Settings};
use crate::metrics;
use crate::proto::{
    async_commit_request, AsyncAttributesRequest, AsyncCommitRequest, AsyncGetReply,
    AsyncGetRequest, AsyncPutRequest, AsyncQueueRef, AsyncSearchRequest, AsyncWatchRequest,
};
use crate::queue::async_api::MAX_GET_LENGTH;
use crate::queue::async_service::{payload_params, ServiceSpec, HEADER_PRIORITY, HEADER_USER};

/// The response header that carries a put's request id.
pub const HEADER_REQUEST_ID: &str = "X-Eas-Queueservice-Request-Id";
const PROTOBUF: &str = "application/vnd.google.protobuf";

/// One service as the gateway sees it.
#[derive(Clone)]
struct ServiceEntry {
    token: String,
    spec: ServiceSpec,
}

/// What the asynchronous API serves.
#[derive(Clone)]
pub struct EasApi {
    link: Arc<dyn AsyncLink>,
    gateway: Arc<Gateway>,
    services: Arc<HashMap<String, ServiceEntry>>,
}

impl EasApi {
    pub fn new(
        settings: &Settings,
        gateway: Arc<Gateway>,
        link: Arc<dyn AsyncLink>,
    ) -> Result<Self, String> {
        let mut services = HashMap::new();
        for (name, s) in &settings.async_services {
            let spec = ServiceSpec::from_settings(name, s)?;
            if spec.input.enabled
                && gateway
                    .check_params(&spec.model, Default::default())
                    .is_none()
            {
                return Err(format!(
                    "AsyncServices.{name}.model: no model is served at {}",
                    spec.model
                ));
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

    /// Checks the token of `service`; the service when it passes.
    pub fn authorize(&self, service: &str, token: Option<&str>) -> Result<&ServiceSpec, Status> {
        let entry = self.services.get(service).ok_or_else(|| {
            Status::not_found(format!("unknown asynchronous service {service:?}"))
        })?;
        if !entry.token.is_empty() {
            let given = token.unwrap_or_default();
            if !bool::from(given.as_bytes().ct_eq(entry.token.as_bytes())) {
                return Err(Status::unauthenticated(format!(
                    "wrong or missing token for service {service:?}"
                )));
            }
        }
        Ok(&entry.spec)
    }

    /// Checks a put before it is sent to the queue: the size, and for the
    /// input queue the model's parameter check.
    pub fn check_put(&self, spec: &ServiceSpec, sink: bool, data: &[u8]) -> Result<(), Status> {
        let limits: &QueueLimits = spec.limits(sink);
        if !limits.enabled {
            return Err(Status::failed_precondition(format!(
                "the {} queue of {} is turned off (queue.sink.memory_ratio)",
                if sink { "sink" } else { "input" },
                spec.name
            )));
        }
        if data.len() as u64 > limits.max_payload_bytes {
            return Err(Status::out_of_range(format!(
                "payload of {} bytes is over max_payload_size ({} bytes)",
                data.len(),
                limits.max_payload_bytes
            )));
        }
        if !sink {
            let params = payload_params(data).map_err(Status::invalid_argument)?;
            match self.gateway.check_params(&spec.model, params) {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(Status::invalid_argument(format!(
                        "the model {} refused the payload: {}",
                        spec.model, e.message
                    )))
                }
                None => {
                    return Err(Status::failed_precondition(format!(
                        "no model is served at {}",
                        spec.model
                    )))
                }
            }
        }
        Ok(())
    }

    pub fn link(&self) -> &Arc<dyn AsyncLink> {
        &self.link
    }
}

pub fn router(api: EasApi) -> Router {
    Router::new()
        .route("/api/predict/{service}", any(input_queue))
        .route("/api/predict/{service}/sink", any(sink_queue))
        .with_state(api)
}

/// An error answer: status and a text body.
fn status_response(s: &Status) -> Response {
    metrics::GATEWAY_ERRORS.inc();
    let code = match s.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition => StatusCode::NOT_FOUND,
        Code::OutOfRange => StatusCode::PAYLOAD_TOO_LARGE,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::info!(status = code.as_u16(), error = %s.message(), "asynchronous API error");
    (code, format!("{}\n", s.message())).into_response()
}

fn bad(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
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
    metrics::GATEWAY_REQUESTS.inc();
    match route(api, service, sink, req).await {
        Ok(r) => r,
        Err(s) => status_response(&s),
    }
}

/// The query as a map (the last of repeated keys wins).
type QueryMap = HashMap<String, String>;

fn flag(q: &QueryMap, key: &str) -> Result<bool, Status> {
    match q.get(key).map(|v| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" || v == "1" => Ok(true),
        Some(v) if v == "false" || v == "0" || v.is_empty() => Ok(false),
        Some(v) => Err(bad(format!("{key}: true or false is required, not {v:?}"))),
    }
}

fn number<T: std::str::FromStr>(q: &QueryMap, key: &str) -> Result<Option<T>, Status> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("{key}: a number is required, not {v:?}"))),
    }
}

/// Tags: every query key not reserved (reserved keys look like `_name_`).
fn tags(q: &QueryMap) -> HashMap<String, String> {
    q.iter()
        .filter(|(k, _)| !(k.starts_with('_') && k.ends_with('_')))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A Go-style duration ("5s", "500ms", "1m", "1.5s"); a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "ns" => n / 1e9,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)))
}

fn indexes(q: &QueryMap) -> Result<Vec<u64>, Status> {
    let text = q
        .get("_indexes_")
        .ok_or_else(|| bad("_indexes_ is required (comma-separated indexes)"))?;
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("_indexes_: {s:?} is not an index")))
        })
        .collect()
}

async fn route(
    api: EasApi,
    service: String,
    sink: bool,
    req: axum::extract::Request,
) -> Result<Response, Status> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let spec = api.authorize(&service, token.as_deref())?;
    let queue = Some(AsyncQueueRef {
        service: service.clone(),
        sink,
    });
    let (mut parts, body) = req.into_parts();
    let Query(q): Query<QueryMap> =
        Query::try_from_uri(&parts.uri).map_err(|e| bad(format!("bad query string: {e}")))?;
    match parts.method {
        Method::POST => {
            let max = spec.limits(sink).max_payload_bytes as usize;
            let data = match read_limited(body, max.max(1)).await {
                Ok(b) => b.to_vec(),
                Err(BodyError::TooLarge) => {
                    return Err(Status::out_of_range(format!(
                        "payload is over max_payload_size ({max} bytes)"
                    )))
                }
                Err(BodyError::Read(e)) => {
                    return Err(bad(format!("could not read the body: {e}")))
                }
            };
            api.check_put(spec, sink, &data)?;
            let priority = match parts
                .headers
                .get(HEADER_PRIORITY)
                .and_then(|v| v.to_str().ok())
            {
                Some(p) => p
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|p| *p <= 1)
                    .ok_or_else(|| bad(format!("{HEADER_PRIORITY}: 0 or 1 is required")))?,
                None => number::<u32>(&q, "_priority_")?.unwrap_or(0).min(1),
            };
            let reply = api
                .link
                .put(AsyncPutRequest {
                    queue,
                    data,
                    tags: tags(&q),
                    priority,
                })
                .await?;
            let mut r = reply.index.to_string().into_response();
            if let Ok(v) = HeaderValue::from_str(&reply.request_id) {
                r.headers_mut().insert(HEADER_REQUEST_ID, v);
            }
            Ok(r)
        }
        Method::GET if flag(&q, "_watch_")? => {
            let consumer = parts
                .headers
                .get(HEADER_USER)
                .and_then(|v| v.to_str().ok())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    bad(format!(
                        "{HEADER_USER} (the consumer id) is required to watch"
                    ))
                })?
                .to_string();
            let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .map_err(|e| bad(format!("a watch is a WebSocket upgrade: {e}")))?;
            let window = number::<u32>(&q, "_window_")?.unwrap_or(1);
            if window == 0 {
                return Err(bad("_window_ must be at least 1"));
            }
            let index_only = flag(&q, "_index_only_")?;
            let request = AsyncWatchRequest {
                queue,
                consumer,
                index: number::<u64>(&q, "_index_")?.unwrap_or(0),
                window,
                auto_commit: flag(&q, "_auto_commit_")?,
                tags: tags(&q),
            };
            // Claims the watch now, so a second one is refused before upgrading.
            let items = api.link.watch(request).await?;
            Ok(ws.on_upgrade(move |socket| watch(socket, items, index_only)))
        }
        Method::GET if flag(&q, "_attrs_")? => {
            let reply = api
                .link
                .attributes(AsyncAttributesRequest { queue })
                .await?;
            let map: BTreeMap<_, _> = reply.attributes.into_iter().collect();
            Ok(axum::Json(map).into_response())
        }
        Method::GET if flag(&q, "_search_")? => {
            let index = number::<u64>(&q, "_index_")?
                .ok_or_else(|| bad("_index_ is required to search"))?;
            let r = api.link.search(AsyncSearchRequest { queue, index }).await?;
            if !r.found {
                return Err(Status::not_found(format!("no item {index} in this queue")));
            }
            let mut body = serde_json::json!({
                "IsPending": r.is_pending,
                "WaitCount": r.wait_count,
            });
            if r.is_pending {
                body["Consumer"] = r.consumer.into();
            }
            if r.rejected {
                body["Negative"] = serde_json::json!({"code": r.code, "reason": r.reason});
            }
            Ok(axum::Json(body).into_response())
        }
        Method::GET => {
            let format = ResponseFormat::of(&parts.headers, flag(&q, "_raw_")?)?;
            let index = number::<i64>(&q, "_index_")?.unwrap_or(0);
            if index < -1 {
                return Err(bad("_index_ must be -1 (the newest) or an index"));
            }
            let length = number::<u32>(&q, "_length_")?.unwrap_or(1);
            if length == 0 || length > MAX_GET_LENGTH {
                return Err(bad(format!("_length_ must be from 1 to {MAX_GET_LENGTH}")));
            }
            let timeout = match q.get("_timeout_") {
                Some(t) => parse_duration(t).ok_or_else(|| {
                    bad(format!(
                        "_timeout_: a duration like 5s or 500ms is required, not {t:?}"
                    ))
                })?,
                None => Duration::ZERO,
            };
            let mut tags = tags(&q);
            let request_id = tags.remove("requestId").unwrap_or_default();
            let reply = api
                .link
                .get(AsyncGetRequest {
                    queue,
                    index,
                    length,
                    timeout_ms: timeout.as_millis() as u64,
                    auto_delete: flag(&q, "_auto_delete_")?,
                    request_id,
                    tags,
                })
                .await?;
            Ok(format.render(reply))
        }
        Method::PUT => {
            let list = indexes(&q)?;
            let negative = flag(&q, "_negative_")?;
            let request = if negative {
                AsyncCommitRequest {
                    queue,
                    indexes: list,
                    kind: async_commit_request::Kind::Negative as i32,
                    code: number::<i32>(&q, "_code_")?.unwrap_or(0),
                    reason: q.get("_reason_").cloned().unwrap_or_default(),
                }
            } else {
                AsyncCommitRequest {
                    queue,
                    indexes: list,
                    kind: async_commit_request::Kind::Commit as i32,
                    ..Default::default()
                }
            };
            let r = api.link.commit(request).await?;
            Ok(format!("OK, {} committed\n", r.count).into_response())
        }
        Method::DELETE => {
            let request = if flag(&q, "_trunc_")? {
                let before = number::<u64>(&q, "_index_")?
                    .ok_or_else(|| bad("_index_ is required to truncate"))?;
                AsyncCommitRequest {
                    queue,
                    indexes: vec![before],
                    kind: async_commit_request::Kind::Truncate as i32,
                    ..Default::default()
                }
            } else {
                AsyncCommitRequest {
                    queue,
                    indexes: indexes(&q)?,
                    kind: async_commit_request::Kind::Delete as i32,
                    ..Default::default()
                }
            };
            let r = api.link.commit(request).await?;
            Ok(format!("OK, {} deleted\n", r.count).into_response())
        }
        other => Err(bad(format!("method {other} is not part of the queue API"))),
    }
}

/// How a `get` answers.
enum ResponseFormat {
    /// `DataFrameListProto` (Accept: application/vnd.google.protobuf).
    Protobuf,
    /// A JSON list of {index, tags, data (UTF-8 text, or base64 with "encoding")}.
    Json,
    /// The first item's payload as it is (204 when none).
    Raw,
}

impl ResponseFormat {
    fn of(headers: &HeaderMap, raw: bool) -> Result<Self, Status> {
        if raw {
            return Ok(ResponseFormat::Raw);
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let types: Vec<&str> = accept
            .split(',')
            .map(|t| t.split(';').next().unwrap_or("").trim())
            .filter(|t| !t.is_empty())
            .collect();
        if types.is_empty() {
            return Ok(ResponseFormat::Raw);
        }
        for t in &types {
            match *t {
                PROTOBUF => return Ok(ResponseFormat::Protobuf),
                "application/json" => return Ok(ResponseFormat::Json),
                "*/*" | "application/octet-stream" | "application/*" => {
                    return Ok(ResponseFormat::Raw)
                }
                _ => {}
            }
        }
        Err(Status::new(
            Code::InvalidArgument,
            format!("cannot answer with {accept:?}: accept {PROTOBUF}, application/json or application/octet-stream"),
        ))
    }

    fn render(self, reply: AsyncGetReply) -> Response {
        match self {
            // AsyncGetReply has DataFrameListProto's fields and numbers.
            ResponseFormat::Protobuf => (
                [(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF))],
                reply.encode_to_vec(),
            )
                .into_response(),
            ResponseFormat::Json => {
                use base64::Engine;
                let list: Vec<serde_json::Value> = reply
                    .items
                    .into_iter()
                    .map(|it| {
                        let tags: BTreeMap<_, _> = it.tags.into_iter().collect();
                        match String::from_utf8(it.data) {
                            Ok(text) => serde_json::json!({"index": it.index, "tags": tags, "data": text}),
                            Err(e) => serde_json::json!({
                                "index": it.index, "tags": tags, "encoding": "base64",
                                "data": base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                            }),
                        }
                    })
                    .collect();
                axum::Json(list).into_response()
            }
            ResponseFormat::Raw => match reply.items.into_iter().next() {
                None => StatusCode::NO_CONTENT.into_response(),
                Some(it) => {
                    let mut r = it.data.into_response();
                    if let Ok(v) = HeaderValue::from_str(&it.index.to_string()) {
                        r.headers_mut().insert("X-Eas-Queueservice-Index", v);
                    }
                    if let Some(v) = it
                        .tags
                        .get("requestId")
                        .and_then(|r| HeaderValue::from_str(r).ok())
                    {
                        r.headers_mut().insert(HEADER_REQUEST_ID, v);
                    }
                    r
                }
            },
        }
    }
}

/// Sends the watch's items as binary DataFrameProto frames until either
/// side ends. The socket is read throughout, so pings are answered and a
/// close is seen at once; ending drops the item stream, which releases the
/// consumer's uncommitted items for its next watch.
async fn watch(
    mut socket: WebSocket,
    mut items: crate::queue::async_api::ItemStream,
    index_only: bool,
) {
    loop {
        tokio::select! {
            item = items.next() => match item {
                Some(Ok(mut it)) => {
                    if index_only {
                        it.data.clear();
                    }
                    if socket.send(Message::Binary(it.encode_to_vec().into())).await.is_err() {
                        return;
                    }
                }
                Some(Err(status)) => {
                    tracing::warn!(error = %status.message(), "watch ended by the queue");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }
}
