//! [`RateLimits`]: a token bucket (governor's GCRA) per client identity: an
//! appId of go-infer's envelope, a PAI-EAS service token, an OpenAI key.
//! The identities are the ones in settings.yaml, so the buckets are made at
//! start and their number never grows; a request is checked after it has
//! authenticated, so a stranger cannot spend someone else's rate.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::config::{RateLimitSettings, Settings};

/// Who a request is from, once authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity<'a> {
    AppId(&'a str),
    EasToken(&'a str),
    OpenAiKey(&'a str),
}

impl<'a> Identity<'a> {
    /// Which kind of identity (a bucket map each), and its name.
    fn parts(self) -> (usize, &'a str) {
        match self {
            Identity::AppId(s) => (0, s),
            Identity::EasToken(s) => (1, s),
            Identity::OpenAiKey(s) => (2, s),
        }
    }
}

/// Over the rate: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("over the rate limit; retry after {0:?}")]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for a `Retry-After` header (at least 1).
    pub fn secs(&self) -> u64 {
        self.0
            .as_secs()
            .saturating_add(u64::from(self.0.subsec_nanos() > 0))
            .max(1)
    }
}

#[derive(Default)]
pub struct RateLimits {
    /// Per kind of identity, its buckets by name (looked up without a copy).
    buckets: [HashMap<String, DefaultDirectRateLimiter>; 3],
    clock: DefaultClock,
}

impl RateLimits {
    /// A bucket for every identity the settings name, with `API.RateLimit`.
    pub fn from_settings(settings: &Settings) -> Self {
        let rl = &settings.api.rate_limit;
        let mut ids: Vec<Identity<'_>> = Vec::new();
        ids.extend(
            settings
                .api
                .app_id_secret
                .keys()
                .map(|a| Identity::AppId(a)),
        );
        ids.extend(
            settings
                .async_services
                .values()
                .filter(|s| !s.token.is_empty())
                .map(|s| Identity::EasToken(&s.token)),
        );
        ids.extend(
            settings
                .openai
                .api_keys
                .iter()
                .map(|k| Identity::OpenAiKey(k)),
        );
        Self::new(rl, ids)
    }

    pub fn new<'a>(rl: &RateLimitSettings, ids: impl IntoIterator<Item = Identity<'a>>) -> Self {
        let mut buckets: [HashMap<String, DefaultDirectRateLimiter>; 3] = Default::default();
        for id in ids {
            let (kind, name) = id.parts();
            let per_second = rl.per_key.get(name).copied().unwrap_or(rl.per_second);
            let Some(rate) = NonZeroU32::new(per_second) else {
                continue;
            };
            let burst = NonZeroU32::new(rl.burst).unwrap_or(rate);
            let quota = Quota::per_second(rate).allow_burst(burst);
            buckets[kind].insert(name.to_string(), DefaultDirectRateLimiter::direct(quota));
        }
        RateLimits {
            buckets,
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from `id`'s bucket.
    pub fn check(&self, id: Identity<'_>) -> Result<(), RetryAfter> {
        let (kind, name) = id.parts();
        let Some(bucket) = self.buckets[kind].get(name) else {
            return Ok(());
        };
        bucket
            .check()
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_has_its_own_bucket_and_unlisted_ones_none() {
        let rl = RateLimitSettings {
            per_second: 2,
            burst: 2,
            per_key: [("vip".to_string(), 0)].into_iter().collect(),
        };
        let limits = RateLimits::new(
            &rl,
            [
                Identity::AppId("a"),
                Identity::AppId("b"),
                Identity::OpenAiKey("vip"),
            ],
        );
        assert!(limits.check(Identity::AppId("a")).is_ok());
        assert!(limits.check(Identity::AppId("a")).is_ok());
        let retry = limits
            .check(Identity::AppId("a"))
            .expect_err("third in a burst of 2");
        assert!(
            retry.0 <= Duration::from_millis(500) && retry.secs() == 1,
            "{retry:?}"
        );
        assert!(
            limits.check(Identity::AppId("b")).is_ok(),
            "b has its own bucket"
        );
        // Same string, another kind of identity: not a's bucket.
        assert!(limits.check(Identity::EasToken("a")).is_ok());
        for _ in 0..100 {
            assert!(
                limits.check(Identity::OpenAiKey("vip")).is_ok(),
                "0: no limit"
            );
        }
    }
}
