//! The contract between gateway, queue and dispatcher.
//!
//! - the messages and gRPC services of `proto/inferq/v1/*.proto`, generated
//!   by `build.rs` (re-exported here from [`v1`]);
//! - [`link`]: the traits through which the gateway and the dispatcher reach
//!   the queue ([`QueueLink`], [`EasLink`], [`DispatchLink`]) and the errors a
//!   call can end in;
//! - [`eas`]: the PAI-EAS conventions shared by the components;
//! - [`client`]: how gateways and dispatchers reach the queue service (TLS,
//!   the internal token) and how the queue checks the token;
//! - [`trace`]: a request's id and traceparent as they travel between the
//!   components (gRPC metadata, job fields).
//!
//! Gateway and dispatcher depend on this module, never on `crate::queue`.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("inferq.v1");
}

pub use v1::*;

/// The contract's descriptors (and their imports), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inferq_descriptor");

pub mod client;
pub mod eas;
pub mod link;
pub mod trace;

pub use link::{CallError, DispatchLink, EasLink, Inbound, ItemStream, QueueLink};

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds (the unit of `Job.deadline_unix_ms`).
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl JobResult {
    /// A successful result carrying `output` (a JSON object, already encoded).
    pub fn output(request_id: impl Into<String>, output_json: Vec<u8>) -> Self {
        JobResult {
            request_id: request_id.into(),
            outcome: Some(job_result::Outcome::OutputJson(output_json)),
        }
    }

    /// A successful result whose bytes go to a sink as they are.
    pub fn output_bytes(request_id: impl Into<String>, output: Vec<u8>) -> Self {
        JobResult {
            request_id: request_id.into(),
            outcome: Some(job_result::Outcome::OutputBytes(output)),
        }
    }

    /// A failed result with an inferq code.
    pub fn error(request_id: impl Into<String>, code: i32, message: impl Into<String>) -> Self {
        JobResult {
            request_id: request_id.into(),
            outcome: Some(job_result::Outcome::Error(JobError {
                code,
                message: message.into(),
            })),
        }
    }
}

impl Job {
    /// The id this job's log lines carry: the gateway's request id, or the
    /// job's own when the job did not come through a gateway.
    pub fn trace_id(&self) -> &str {
        if self.trace_request_id.is_empty() {
            &self.request_id
        } else {
            &self.trace_request_id
        }
    }

    /// The span of this job in the queue and in the dispatcher, with the
    /// request id every component logs it under, the job id when an
    /// idempotency key named it, the delivery when it is a redelivery, and
    /// the client's traceparent when it sent one. Few fields, recorded only
    /// when they say something: the log layer formats them once per span,
    /// and this span is made once per job in each process.
    pub fn span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            "job",
            request_id = %self.trace_id(),
            job_id = tracing::field::Empty,
            api = %self.api_path,
            delivery = tracing::field::Empty,
            traceparent = tracing::field::Empty,
        );
        if self.trace_id() != self.request_id {
            span.record("job_id", self.request_id.as_str());
        }
        if self.deliveries > 1 {
            span.record("delivery", self.deliveries);
        }
        if !self.traceparent.is_empty() {
            span.record("traceparent", self.traceparent.as_str());
            crate::telemetry::adopt_traceparent(&span, &self.traceparent);
        }
        span
    }

    /// True when the caller's deadline has passed.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.deadline_unix_ms > 0 && now_ms >= self.deadline_unix_ms
    }

    /// What makes two stores of one request id the same request: the model
    /// and its parameters (SHA-256, first 16 bytes, hex). A second store with
    /// another fingerprint is a conflict, not a resend.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [self.api_path.as_bytes(), &self.params_json] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update([u8::from(self.from_payload)]);
        hex::encode(&h.finalize()[..16])
    }
}
