//! `echo`: answers with its parameters. `sleep_ms` simulates work.
//!
//! Served at `/api/echo`. Useful for checking a deployment end to end and for
//! load tests of inferq itself (the model costs nothing unless asked to sleep).

use std::time::Duration;

use serde_json::Value;

use super::{Model, ModelError, Params};

/// The longest sleep a request may ask for.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// Returns its parameters; sleeps `sleep_ms` milliseconds first when given.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Model for Echo {
    fn api_path(&self) -> &str {
        "/api/echo"
    }

    fn check(&self, params: Params) -> Result<Params, ModelError> {
        if let Some(v) = params.get("sleep_ms") {
            match v.as_u64() {
                Some(ms) if ms <= MAX_SLEEP_MS => {}
                _ => {
                    return Err(ModelError::new(format!(
                        "sleep_ms: an integer from 0 to {MAX_SLEEP_MS} is required"
                    )))
                }
            }
        }
        Ok(params)
    }

    /// Inline unless asked to sleep.
    fn runs_inline(&self, params: &Params) -> bool {
        params.get("sleep_ms").and_then(Value::as_u64).unwrap_or(0) == 0
    }

    fn infer(&self, _request_id: &str, params: Params) -> Result<Params, ModelError> {
        if let Some(ms) = params.get("sleep_ms").and_then(Value::as_u64) {
            std::thread::sleep(Duration::from_millis(ms.min(MAX_SLEEP_MS)));
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_and_checks_sleep() {
        let mut p = Params::new();
        p.insert("text".into(), "你好".into());
        assert_eq!(Echo.infer("r", Echo.check(p.clone()).unwrap()).unwrap(), p);
        assert!(Echo.runs_inline(&p));
        p.insert("sleep_ms".into(), 5.into());
        assert!(!Echo.runs_inline(&p));
        p.insert("sleep_ms".into(), "x".into());
        assert!(Echo.check(p.clone()).is_err());
        p.insert("sleep_ms".into(), (MAX_SLEEP_MS + 1).into());
        assert!(Echo.check(p).is_err());
    }
}
