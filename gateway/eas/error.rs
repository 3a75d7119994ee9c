//! [`ApiError`]: how a PAI-EAS request fails in the gateway, mapped once to
//! an HTTP status ([`IntoResponse`]) and once to a gRPC status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use thiserror::Error;
use tonic::{Code, Status};

use crate::clip::clip;
use crate::gateway::rate::RetryAfter;
use crate::metrics::gateway::Refusal;

#[derive(Debug, Error)]
pub enum ApiError {
    /// A wrong or missing token, or a service that does not exist: the two
    /// answer alike, so service names cannot be probed.
    #[error("wrong or missing token for service {:?}", clip(.0))]
    Unauthorized(String),
    /// The token's rate (`API.RateLimit`) is spent.
    #[error("{0}")]
    RateLimited(RetryAfter),
    /// The gateway holds its budget of request bytes.
    #[error("{0}")]
    Busy(String),
    /// The body did not arrive in time.
    #[error("{0}")]
    TimedOut(String),
    /// A malformed request: query, header, body or payload.
    #[error("{0}")]
    BadRequest(String),
    /// The queue is turned off, or no model is served for the service.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotFound(String),
    /// What the queue answered.
    #[error("{}", .0.message())]
    Queue(Status),
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    fn http_status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::Unavailable(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Queue(s) => match s.code() {
                Code::NotFound | Code::FailedPrecondition => StatusCode::NOT_FOUND,
                Code::OutOfRange => StatusCode::PAYLOAD_TOO_LARGE,
                Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                Code::AlreadyExists => StatusCode::CONFLICT,
                Code::InvalidArgument => StatusCode::BAD_REQUEST,
                Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl ApiError {
    /// Why the request was refused for load or abuse, if it was (metrics).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            ApiError::RateLimited(_) => Some(Refusal::Rate),
            ApiError::Busy(_) => Some(Refusal::Limit),
            ApiError::TooLarge(_) => Some(Refusal::BodySize),
            ApiError::Queue(s) if s.code() == Code::ResourceExhausted => Some(Refusal::QueueFull),
            _ => None,
        }
    }

    /// When to come back: a spent rate's wait; a second for a full queue
    /// or a spent budget.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited(retry) => Some(retry.secs()),
            ApiError::Busy(_) => Some(1),
            ApiError::Queue(s) if s.code() == Code::ResourceExhausted => Some(1),
            _ => None,
        }
    }
}

impl From<Status> for ApiError {
    fn from(s: Status) -> Self {
        ApiError::Queue(s)
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let m = e.to_string();
        match e {
            ApiError::NotFound(_) => Status::not_found(m),
            ApiError::Unauthorized(_) => Status::unauthenticated(m),
            ApiError::RateLimited(_) | ApiError::Busy(_) => Status::resource_exhausted(m),
            ApiError::TimedOut(_) => Status::deadline_exceeded(m),
            ApiError::BadRequest(_) => Status::invalid_argument(m),
            ApiError::Unavailable(_) => Status::failed_precondition(m),
            ApiError::TooLarge(_) => Status::out_of_range(m),
            ApiError::Queue(s) => s,
        }
    }
}

/// An error answer: the status and the message as a text body.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.http_status();
        let message = self.to_string();
        tracing::info!(status = code.as_u16(), error = %clip(&message), "asynchronous API error");
        let mut r = (code, format!("{message}\n")).into_response();
        if let Some(secs) = self.retry_after() {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_http_and_one_grpc_status() {
        let cases = [
            (ApiError::NotFound("s".into()), 404, Code::NotFound),
            (
                ApiError::RateLimited(RetryAfter(std::time::Duration::from_millis(10))),
                429,
                Code::ResourceExhausted,
            ),
            (ApiError::Busy("b".into()), 429, Code::ResourceExhausted),
            (
                ApiError::Unauthorized("s".into()),
                401,
                Code::Unauthenticated,
            ),
            (ApiError::bad("x"), 400, Code::InvalidArgument),
            (ApiError::TooLarge("x".into()), 413, Code::OutOfRange),
            (
                ApiError::Unavailable("x".into()),
                404,
                Code::FailedPrecondition,
            ),
            (
                ApiError::Queue(Status::resource_exhausted("full")),
                429,
                Code::ResourceExhausted,
            ),
            (
                ApiError::Queue(Status::already_exists("w")),
                409,
                Code::AlreadyExists,
            ),
            (
                ApiError::Queue(Status::unavailable("r")),
                503,
                Code::Unavailable,
            ),
        ];
        for (e, http, grpc) in cases {
            assert_eq!(e.http_status().as_u16(), http, "{e}");
            assert_eq!(Status::from(e).code(), grpc);
        }
    }
}
