//! Client idempotency keys. A client that may repeat a request (it lost the
//! connection before the answer, or nginx passed it to another gateway after
//! the first one died) names it with an `Idempotency-Key` header (REST) or
//! `idempotency-key` metadata (gRPC). The job's request id is then derived
//! from the key, the caller's authenticated identity and the model's path,
//! so a repeat within the result TTL (`Server.ResultTTL`) joins the first
//! request's job, or gets its kept result, instead of running again (the
//! queue's enqueue is idempotent by request id). Two callers' keys never
//! meet, and a key cannot name another caller's request. A key used again
//! with other parameters is refused (`IdempotencyConflict`, 9813).

use sha2::{Digest, Sha256};

/// The header (and gRPC metadata key) that carries it.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Longest key taken.
pub const MAX_KEY_LEN: usize = 128;

/// A client's idempotency key: 1 to 128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key in a header value; why not, when it is not one.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_KEY_LEN {
            return Err(format!(
                "{IDEMPOTENCY_HEADER}: 1 to {MAX_KEY_LEN} characters, not {}",
                raw.len()
            ));
        }
        if !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(format!(
                "{IDEMPOTENCY_HEADER}: visible ASCII characters only"
            ));
        }
        Ok(IdempotencyKey(String::from_utf8_lossy(raw).into_owned()))
    }

    /// The request id of the job this key names for `identity` (the appId,
    /// or the API key) at `api_path`.
    pub fn job_id(&self, identity: &str, api_path: &str) -> String {
        let mut h = Sha256::new();
        for part in [identity, api_path, &self.0] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        format!("ik-{}", hex::encode(&h.finalize()[..16]))
    }
}

/// How a request's job is named when the client sent a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedJob {
    /// The derived request id.
    pub job_id: String,
    /// The request is a replay of a signature already seen: it may join the
    /// job its key names, never start one.
    pub join_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(IdempotencyKey::parse(b"order-17").is_ok());
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse(&[b'a'; MAX_KEY_LEN]).is_ok());
        assert!(IdempotencyKey::parse(&[b'a'; MAX_KEY_LEN + 1]).is_err());
        assert!(IdempotencyKey::parse(b"with space").is_err());
        assert!(IdempotencyKey::parse("é".as_bytes()).is_err());
    }

    #[test]
    fn a_key_names_one_job_per_caller_and_path() {
        let k = IdempotencyKey::parse(b"k1").unwrap();
        let a = k.job_id("app1", "/api/echo");
        assert_eq!(a, k.job_id("app1", "/api/echo"), "stable");
        assert_ne!(a, k.job_id("app2", "/api/echo"), "callers apart");
        assert_ne!(a, k.job_id("app1", "/api/other"), "paths apart");
        // Length-prefixed: shifting a boundary is another id.
        assert_ne!(k.job_id("ab", "c"), k.job_id("a", "bc"));
        assert!(a.starts_with("ik-") && a.len() == 35, "{a}");
    }
}
