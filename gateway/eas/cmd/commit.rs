//! `PUT ?_indexes_=1,2`: commit (remove) items; with `_negative_=true`, a
//! negative commit of one item with `_code_` and `_reason_`.

use axum::response::{IntoResponse, Response};

use crate::gateway::eas::{ApiError, Query};
use crate::proto::{async_commit_request::Kind, AsyncCommitRequest, AsyncQueueRef, EasLink};

pub struct Commit {
    indexes: Vec<u64>,
    /// `(code, reason)` of a negative commit.
    negative: Option<(i32, String)>,
}

impl Commit {
    pub fn parse(q: &Query) -> Result<Self, ApiError> {
        let indexes = q.indexes()?;
        let negative = if q.flag("_negative_")? {
            Some((
                q.number::<i32>("_code_")?.unwrap_or(0),
                q.get("_reason_").cloned().unwrap_or_default(),
            ))
        } else {
            None
        };
        Ok(Commit { indexes, negative })
    }

    pub async fn apply(
        self,
        link: &dyn EasLink,
        queue: AsyncQueueRef,
    ) -> Result<Response, ApiError> {
        let request = match self.negative {
            Some((code, reason)) => AsyncCommitRequest {
                queue: Some(queue),
                indexes: self.indexes,
                kind: Kind::Negative as i32,
                code,
                reason,
            },
            None => AsyncCommitRequest {
                queue: Some(queue),
                indexes: self.indexes,
                kind: Kind::Commit as i32,
                ..Default::default()
            },
        };
        let r = link.commit(request).await?;
        Ok(format!("OK, {} committed\n", r.count).into_response())
    }
}
