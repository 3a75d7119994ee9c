//! How a request's identity travels between components: the gateway's
//! request id (`x-request-id`) and the client's W3C `traceparent`, in the
//! gRPC metadata of a queue call and in the [`Job`] a dispatcher receives,
//! so that the log lines of one request carry one id in all three.
//!
//! Both come from outside (a client's header, a peer's metadata): only
//! values of the expected shape are carried; anything else is dropped.

use tonic::metadata::{MetadataMap, MetadataValue};

use super::Job;

pub const REQUEST_ID_KEY: &str = "x-request-id";
pub const TRACEPARENT_KEY: &str = "traceparent";

/// The longest request id carried (a UUID is 32 or 36 characters).
const MAX_REQUEST_ID: usize = 64;

/// A request id as carried: 1 to 64 of `[0-9A-Za-z_-]`.
pub fn valid_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A W3C trace context `traceparent`: `vv-<32 hex>-<16 hex>-ff`, lower-case
/// hex, version not `ff`, trace and parent ids not all zeros.
pub fn valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zeros = |s: &str| s.bytes().all(|b| b == b'0');
    matches!(parts.as_slice(), [ver, trace, parent, flags]
        if hex(ver, 2) && *ver != "ff" && hex(trace, 32) && !zeros(trace)
            && hex(parent, 16) && !zeros(parent) && hex(flags, 2))
}

/// The trace identity of one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceMetadata {
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
}

impl TraceMetadata {
    /// What a job carries.
    pub fn of(job: &Job) -> Self {
        TraceMetadata {
            request_id: Some(job.trace_id().to_string()).filter(|v| valid_request_id(v)),
            traceparent: Some(job.traceparent.clone()).filter(|v| valid_traceparent(v)),
        }
    }

    /// What a call's metadata carries (values of the wrong shape dropped).
    pub fn read(md: &MetadataMap) -> Self {
        let get = |key: &str, ok: fn(&str) -> bool| {
            md.get(key)
                .and_then(|v| v.to_str().ok())
                .filter(|v| ok(v))
                .map(str::to_string)
        };
        TraceMetadata {
            request_id: get(REQUEST_ID_KEY, valid_request_id),
            traceparent: get(TRACEPARENT_KEY, valid_traceparent),
        }
    }

    pub fn write(&self, md: &mut MetadataMap) {
        for (key, value) in [
            (REQUEST_ID_KEY, &self.request_id),
            (TRACEPARENT_KEY, &self.traceparent),
        ] {
            if let Some(v) = value
                .as_deref()
                .and_then(|v| MetadataValue::try_from(v).ok())
            {
                md.insert(key, v);
            }
        }
    }

    /// Fills the job's trace fields the caller left empty.
    pub fn fill(self, job: &mut Job) {
        if job.trace_request_id.is_empty() {
            job.trace_request_id = self.request_id.unwrap_or_default();
        }
        if job.traceparent.is_empty() {
            job.traceparent = self.traceparent.unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_values_travel() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nx",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
        }
        assert!(valid_request_id("0192f0c1a2b34c5d8e9f0a1b2c3d4e5f"));
        assert!(!valid_request_id(&"a".repeat(65)));
        assert!(!valid_request_id("a b"));
    }

    #[test]
    fn metadata_round_trip_fills_only_empty_fields() {
        let job = Job {
            request_id: "job1".into(),
            trace_request_id: "req1".into(),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            ..Job::default()
        };
        let mut md = MetadataMap::new();
        TraceMetadata::of(&job).write(&mut md);
        let mut other = Job {
            request_id: "job1".into(),
            ..Job::default()
        };
        TraceMetadata::read(&md).fill(&mut other);
        assert_eq!(other.trace_request_id, "req1");
        assert_eq!(other.traceparent, job.traceparent);
    }
}
