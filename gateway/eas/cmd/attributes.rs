//! `GET ?_attrs_=true`: the queue's attributes, as JSON.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};

use crate::gateway::eas::ApiError;
use crate::proto::{AsyncAttributesRequest, AsyncQueueRef, EasLink};

pub struct Attributes;

impl Attributes {
    pub async fn apply(
        self,
        link: &dyn EasLink,
        queue: AsyncQueueRef,
    ) -> Result<Response, ApiError> {
        let reply = link
            .attributes(AsyncAttributesRequest { queue: Some(queue) })
            .await?;
        let map: BTreeMap<_, _> = reply.attributes.into_iter().collect();
        Ok(axum::Json(map).into_response())
    }
}
