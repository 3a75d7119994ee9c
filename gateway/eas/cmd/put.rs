//! `POST`: put an item (the body) into the queue, with the query's tags.
//! Answers the item's index, and its request id in a header.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use crate::gateway::budget::HeldBytes;
use crate::gateway::eas::{ApiError, EasApi, Query, Target, HEADER_REQUEST_ID};
use crate::gateway::request::{read_limited, BodyError};
use crate::proto::eas::HEADER_PRIORITY;
use crate::proto::{AsyncPutRequest, AsyncQueueRef, EasLink};

pub struct Put {
    data: Vec<u8>,
    /// The body's bytes stay charged to the gateway's budget until stored.
    _held: HeldBytes,
    tags: std::collections::HashMap<String, String>,
    priority: u32,
}

impl Put {
    /// Reads the body (within the queue's `max_payload_size`) and checks it
    /// as the queue would, before anything is stored.
    pub async fn parse(
        api: &EasApi,
        target: &Target<'_>,
        q: &Query,
        parts: &Parts,
        body: Body,
    ) -> Result<Self, ApiError> {
        let max = target.spec.limits(target.sink).max_payload_bytes as usize;
        let (data, held) = match read_limited(body, max.max(1), api.body_limits()).await {
            Ok((b, held)) => (b.to_vec(), held),
            Err(BodyError::TooLarge) => {
                return Err(ApiError::TooLarge(format!(
                    "payload is over max_payload_size ({max} bytes)"
                )))
            }
            Err(BodyError::Busy(b)) => return Err(ApiError::Busy(b.to_string())),
            Err(e @ BodyError::TimedOut(_)) => return Err(ApiError::TimedOut(e.to_string())),
            Err(e @ BodyError::Read(_)) => return Err(ApiError::bad(e.to_string())),
        };
        api.check_put(target.spec, target.sink, &data)?;
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
                .ok_or_else(|| ApiError::bad(format!("{HEADER_PRIORITY}: 0 or 1 is required")))?,
            None => q.number::<u32>("_priority_")?.unwrap_or(0).min(1),
        };
        Ok(Put {
            data,
            _held: held,
            tags: q.tags(),
            priority,
        })
    }

    pub async fn apply(
        self,
        link: &dyn EasLink,
        queue: AsyncQueueRef,
    ) -> Result<Response, ApiError> {
        let reply = link
            .put(AsyncPutRequest {
                queue: Some(queue),
                data: self.data,
                tags: self.tags,
                priority: self.priority,
            })
            .await?;
        let mut r = reply.index.to_string().into_response();
        if let Ok(v) = HeaderValue::from_str(&reply.request_id) {
            r.headers_mut().insert(HEADER_REQUEST_ID, v);
        }
        Ok(r)
    }
}
