//! `GET ?_search_=true&_index_=I`: where an item is (waiting, held, or
//! rejected), as JSON.

use axum::response::{IntoResponse, Response};

use crate::gateway::eas::{ApiError, Query};
use crate::proto::{AsyncQueueRef, AsyncSearchRequest, EasLink};

pub struct Search {
    index: u64,
}

impl Search {
    pub fn parse(q: &Query) -> Result<Self, ApiError> {
        let index = q
            .number::<u64>("_index_")?
            .ok_or_else(|| ApiError::bad("_index_ is required to search"))?;
        Ok(Search { index })
    }

    pub async fn apply(
        self,
        link: &dyn EasLink,
        queue: AsyncQueueRef,
    ) -> Result<Response, ApiError> {
        let index = self.index;
        let r = link
            .search(AsyncSearchRequest {
                queue: Some(queue),
                index,
            })
            .await?;
        if !r.found {
            return Err(ApiError::NotFound(format!("no item {index} in this queue")));
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
}
