//! `DELETE ?_indexes_=1,2`: delete items; `?_index_=I&_trunc_=true`: delete
//! every item before index I (truncate).

use axum::response::{IntoResponse, Response};

use crate::gateway::eas::{ApiError, Query};
use crate::proto::{async_commit_request::Kind, AsyncCommitRequest, AsyncQueueRef, EasLink};

pub enum Delete {
    Indexes(Vec<u64>),
    Before(u64),
}

impl Delete {
    pub fn parse(q: &Query) -> Result<Self, ApiError> {
        if q.flag("_trunc_")? {
            let before = q
                .number::<u64>("_index_")?
                .ok_or_else(|| ApiError::bad("_index_ is required to truncate"))?;
            Ok(Delete::Before(before))
        } else {
            Ok(Delete::Indexes(q.indexes()?))
        }
    }

    pub async fn apply(
        self,
        link: &dyn EasLink,
        queue: AsyncQueueRef,
    ) -> Result<Response, ApiError> {
        let (indexes, kind) = match self {
            Delete::Before(before) => (vec![before], Kind::Truncate),
            Delete::Indexes(list) => (list, Kind::Delete),
        };
        let r = link
            .commit(AsyncCommitRequest {
                queue: Some(queue),
                indexes,
                kind: kind as i32,
                ..Default::default()
            })
            .await?;
        Ok(format!("OK, {} deleted\n", r.count).into_response())
    }
}
