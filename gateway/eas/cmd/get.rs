//! `GET`: read items from an index (`_index_`, -1 for the newest), by
//! request id, or by tags; waiting up to `_timeout_` for the first; removing
//! them with `_auto_delete_`. Answers protobuf, JSON or the raw payload,
//! as `Accept` asks.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message as _;

use crate::gateway::eas::{ApiError, Query, HEADER_REQUEST_ID};
use crate::proto::eas::{MAX_GET_LENGTH, REQUEST_ID_TAG};
use crate::proto::{AsyncGetReply, AsyncGetRequest, AsyncQueueRef, EasLink};

const PROTOBUF: &str = "application/vnd.google.protobuf";

pub struct Get {
    format: ResponseFormat,
    request: AsyncGetRequest,
}

impl Get {
    pub fn parse(q: &Query, headers: &HeaderMap) -> Result<Self, ApiError> {
        let format = ResponseFormat::of(headers, q.flag("_raw_")?)?;
        let index = q.number::<i64>("_index_")?.unwrap_or(0);
        if index < -1 {
            return Err(ApiError::bad("_index_ must be -1 (the newest) or an index"));
        }
        let length = q.number::<u32>("_length_")?.unwrap_or(1);
        if length == 0 || length > MAX_GET_LENGTH {
            return Err(ApiError::bad(format!(
                "_length_ must be from 1 to {MAX_GET_LENGTH}"
            )));
        }
        let timeout = q.duration("_timeout_")?;
        let mut tags = q.tags();
        let request_id = tags.remove(REQUEST_ID_TAG).unwrap_or_default();
        Ok(Get {
            format,
            request: AsyncGetRequest {
                queue: None,
                index,
                length,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                auto_delete: q.flag("_auto_delete_")?,
                request_id,
                tags,
            },
        })
    }

    pub async fn apply(
        self,
        link: &dyn EasLink,
        queue: AsyncQueueRef,
    ) -> Result<Response, ApiError> {
        let reply = link
            .get(AsyncGetRequest {
                queue: Some(queue),
                ..self.request
            })
            .await?;
        Ok(self.format.render(reply))
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
    fn of(headers: &HeaderMap, raw: bool) -> Result<Self, ApiError> {
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
        Err(ApiError::bad(format!(
            "cannot answer with {accept:?}: accept {PROTOBUF}, application/json or application/octet-stream"
        )))
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
                        .get(REQUEST_ID_TAG)
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
