//! The contract between gateway, queue and dispatcher.
//!
//! - the messages and gRPC services of `proto/inferq/v1/*.proto`, generated
//!   by `build.rs` (re-exported here from [`v1`]);
//! - [`link`]: the traits through which the gateway and the dispatcher reach
//!   the queue ([`QueueLink`], [`EasLink`], [`DispatchLink`]) and the errors a
//!   call can end in;
//! - [`eas`]: the PAI-EAS conventions shared by the components;
//! - [`client`]: how gateways and dispatchers reach the queue service (TLS,
//!   the internal token) and how the queue checks the token.
//!
//! Gateway and dispatcher depend on this module, never on `crate::queue`.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("inferq.v1");
}

pub use v1::*;

pub mod client;
pub mod eas;
pub mod link;

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
