//! `Server.Autoscale`: how many dispatchers a queue wants, in PAI-EAS's
//! words. The value is the option list of `eascmd autoscale`:
//!
//! ```text
//! -Dmin=0 -Dmax=10 -Dstrategies.queue[avgbacklog]=10
//! -Dbehavior.scaleUp.stabilizationWindowSeconds=0
//! -Dbehavior.scaleDown.stabilizationWindowSeconds=300
//! ```
//!
//! `avgbacklog` is the backlog one dispatcher should have at most; the
//! windows default to EAS's (scale up at once, scale down after 300 s).
//! [`ScalePolicy`] is the parsed value; `queue::autoscale` applies it.

use std::time::Duration;

use thiserror::Error;

/// The most dispatchers a policy may ask for.
pub const MAX_DISPATCHERS: u32 = 1000;
/// The longest stabilisation window, in seconds (an hour, as HPA's).
pub const MAX_WINDOW_SECS: u64 = 3600;

/// A parsed `Server.Autoscale`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePolicy {
    /// Fewest dispatchers (0: the queue may scale to zero).
    pub min: u32,
    /// Most dispatchers.
    pub max: u32,
    /// `strategies.queue[avgbacklog]`: unanswered jobs per dispatcher.
    pub avg_backlog: f64,
    /// How long a higher count must be wanted before it is taken.
    pub scale_up_window: Duration,
    /// How long a lower count must be wanted before it is taken.
    pub scale_down_window: Duration,
}

/// Why a policy does not parse; names the option.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum PolicyError {
    #[error("{0:?}: an option is -Dkey=value")]
    NotAnOption(String),
    #[error("unknown option -D{0} (min, max, strategies.queue[avgbacklog], behavior.scaleUp.stabilizationWindowSeconds, behavior.scaleDown.stabilizationWindowSeconds)")]
    UnknownKey(String),
    #[error("-D{key}={value}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("-Dstrategies.queue[avgbacklog] is required")]
    NoStrategy,
    #[error("min ({min}) is above max ({max})")]
    MinAboveMax { min: u32, max: u32 },
}

impl ScalePolicy {
    /// Parses `eascmd autoscale`'s options (whitespace-separated `-Dk=v`).
    pub fn parse(options: &str) -> Result<ScalePolicy, PolicyError> {
        let mut policy = ScalePolicy {
            min: 1,
            max: 10,
            avg_backlog: f64::NAN,
            scale_up_window: Duration::ZERO,
            scale_down_window: Duration::from_secs(300),
        };
        for option in options.split_whitespace() {
            let (key, value) = option
                .strip_prefix("-D")
                .and_then(|kv| kv.split_once('='))
                .ok_or_else(|| PolicyError::NotAnOption(option.to_string()))?;
            let bad = |why| PolicyError::BadValue {
                key: key.to_string(),
                value: value.to_string(),
                why,
            };
            let count = || {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= MAX_DISPATCHERS)
                    .ok_or_else(|| bad("an integer from 0 to 1000"))
            };
            let window = || {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s <= MAX_WINDOW_SECS)
                    .map(Duration::from_secs)
                    .ok_or_else(|| bad("whole seconds from 0 to 3600"))
            };
            match key {
                "min" => policy.min = count()?,
                "max" => policy.max = count()?,
                "strategies.queue[avgbacklog]" => {
                    policy.avg_backlog = value
                        .parse::<f64>()
                        .ok()
                        .filter(|b| b.is_finite() && *b > 0.0 && *b <= 1e9)
                        .ok_or_else(|| bad("a number above 0"))?;
                }
                "behavior.scaleUp.stabilizationWindowSeconds" => policy.scale_up_window = window()?,
                "behavior.scaleDown.stabilizationWindowSeconds" => {
                    policy.scale_down_window = window()?
                }
                other => return Err(PolicyError::UnknownKey(other.to_string())),
            }
        }
        if policy.avg_backlog.is_nan() {
            return Err(PolicyError::NoStrategy);
        }
        if policy.min > policy.max {
            return Err(PolicyError::MinAboveMax {
                min: policy.min,
                max: policy.max,
            });
        }
        Ok(policy)
    }

    /// The dispatchers `backlog` unanswered jobs call for, before
    /// stabilisation: ⌈backlog / avgbacklog⌉ within [min, max].
    pub fn recommend(&self, backlog: u64) -> u32 {
        let wanted = (backlog as f64 / self.avg_backlog).ceil();
        // `as` saturates; the clamp keeps it within the policy.
        (wanted.min(f64::from(self.max)) as u32).clamp(self.min, self.max)
    }

    /// The longer of the two windows: how much history a queue keeps.
    pub fn longest_window(&self) -> Duration {
        self.scale_up_window.max(self.scale_down_window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_command_parses_with_eass_default_windows() {
        let p = ScalePolicy::parse("-Dmin=0 -Dmax=10 -Dstrategies.queue[avgbacklog]=10").unwrap();
        assert_eq!((p.min, p.max, p.avg_backlog), (0, 10, 10.0));
        assert_eq!(p.scale_up_window, Duration::ZERO);
        assert_eq!(p.scale_down_window, Duration::from_secs(300));
        let p = ScalePolicy::parse(
            "-Dstrategies.queue[avgbacklog]=4\n -Dbehavior.scaleUp.stabilizationWindowSeconds=20 \
             -Dbehavior.scaleDown.stabilizationWindowSeconds=150",
        )
        .unwrap();
        assert_eq!((p.min, p.max), (1, 10));
        assert_eq!(p.scale_up_window, Duration::from_secs(20));
        assert_eq!(p.scale_down_window, Duration::from_secs(150));
    }

    #[test]
    fn bad_options_name_what_is_wrong() {
        let e = |s: &str| ScalePolicy::parse(s).unwrap_err().to_string();
        assert!(e("-Dmin=0").contains("avgbacklog] is required"));
        assert!(e("min=0").contains("-Dkey=value"));
        assert!(e("-Dcpu=50").contains("unknown option -Dcpu"));
        assert!(e("-Dstrategies.queue[avgbacklog]=0").contains("above 0"));
        assert!(e("-Dstrategies.queue[avgbacklog]=NaN").contains("above 0"));
        assert!(e("-Dmax=-1 -Dstrategies.queue[avgbacklog]=1").contains("0 to 1000"));
        assert!(e("-Dmax=99999999999 -Dstrategies.queue[avgbacklog]=1").contains("0 to 1000"));
        assert!(e("-Dmin=5 -Dmax=2 -Dstrategies.queue[avgbacklog]=1").contains("above max"));
        assert!(e("-Dbehavior.scaleDown.stabilizationWindowSeconds=7200 \
                   -Dstrategies.queue[avgbacklog]=1")
        .contains("3600"));
    }

    #[test]
    fn the_recommendation_is_the_backlog_over_the_target_within_bounds() {
        let p = ScalePolicy::parse("-Dmin=0 -Dmax=4 -Dstrategies.queue[avgbacklog]=10").unwrap();
        assert_eq!(p.recommend(0), 0);
        assert_eq!(p.recommend(1), 1);
        assert_eq!(p.recommend(10), 1);
        assert_eq!(p.recommend(11), 2);
        assert_eq!(p.recommend(u64::MAX), 4);
        let p = ScalePolicy::parse("-Dmin=2 -Dmax=4 -Dstrategies.queue[avgbacklog]=0.5").unwrap();
        assert_eq!(p.recommend(0), 2);
        assert_eq!(p.recommend(3), 4);
    }
}
