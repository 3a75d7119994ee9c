//! Replay protection for go-infer's envelope: a signature already seen
//! within the timestamp window is refused (`SignReplay`, 9807).
//!
//! Which signatures are checked is [`ReplayPolicy`] (`API.RefuseReplays`):
//! SM2 signatures are randomised, so a repeat can only be a copy; SHA256
//! ones are deterministic (the fields, the timestamp in seconds and the
//! secret), so two identical requests sent within one second sign alike and
//! are let through unless the operator turns the check on. The key
//! remembered is a SHA-256 digest of the sign type, appId and signature,
//! kept by the queue service (`QueueLink::mark_seen`) so that a replay sent
//! to another gateway is refused too.

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::envelope::Envelope;
use crate::config::ReplaySettings;

#[derive(Debug, Clone, Default)]
pub struct ReplayPolicy {
    sm2: bool,
    sha256: bool,
    app_ids: HashMap<String, bool>,
}

impl ReplayPolicy {
    pub fn new(s: &ReplaySettings) -> Self {
        ReplayPolicy {
            sm2: s.sm2,
            sha256: s.sha256,
            app_ids: s.app_ids.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    /// Whether a request of `app_id` signed with `sign_type` is checked.
    pub fn applies(&self, sign_type: &str, app_id: &str) -> bool {
        if let Some(on) = self.app_ids.get(app_id) {
            return *on && sign_type != "plain";
        }
        match sign_type {
            "SM2" => self.sm2,
            "SHA256" => self.sha256,
            _ => false,
        }
    }
}

/// The key remembered for a signed envelope.
pub fn signature_key(env: &Envelope) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [&env.sign_type, &env.app_id, &env.sign_data] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// How long a signature with `timestamp` stays acceptable, seen at `now`
/// (unix seconds): until `timestamp + window`, and a second more.
pub fn remember_for(timestamp: i64, now: i64, window_secs: f64) -> Duration {
    let window = Duration::from_secs_f64(window_secs.clamp(0.0, 1e9));
    let until = Duration::from_secs(timestamp.saturating_sub(now).max(0).unsigned_abs());
    window
        .saturating_add(until)
        .saturating_add(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm2_is_checked_by_default_sha256_not_and_app_ids_override_both() {
        let mut s = ReplaySettings::default();
        let p = ReplayPolicy::new(&s);
        assert!(p.applies("SM2", "a"));
        assert!(!p.applies("SHA256", "a"));
        assert!(!p.applies("plain", "a"));
        s.app_ids.insert("strict".into(), true);
        s.app_ids.insert("lax".into(), false);
        let p = ReplayPolicy::new(&s);
        assert!(p.applies("SHA256", "strict"));
        assert!(!p.applies("SM2", "lax"));
        assert!(!p.applies("plain", "strict"));
    }

    #[test]
    fn a_signature_is_remembered_while_its_timestamp_is_in_the_window() {
        assert_eq!(remember_for(1000, 1000, 300.0), Duration::from_secs(301));
        assert_eq!(remember_for(1100, 1000, 300.0), Duration::from_secs(401));
        assert_eq!(remember_for(900, 1000, 300.0), Duration::from_secs(301));
        assert!(remember_for(i64::MAX, i64::MIN, f64::MAX) > Duration::from_secs(1));
    }
}
