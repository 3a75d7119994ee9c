//! Runs one job's in-process model: on a blocking thread under an infer
//! slot (so inference never stalls the stream), or, for a model that says
//! the job takes microseconds ([`Model::runs_inline`]), right here on the
//! runtime, where handing it to a thread and back would cost more than the
//! model. A panicking model answers an error either way.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::metrics::dispatcher as dispatcher_metrics;
use crate::model_zoo::{Model, ModelError, Params};

/// Runs `model` on `params` for request `id`; the model's answer.
pub async fn run_model(
    model: Arc<dyn Model>,
    id: &str,
    params: Params,
    slots: Arc<Semaphore>,
) -> Result<Params, ModelError> {
    let inline = model.runs_inline(&params);
    // Blocking threads are bounded by the infer slots; an inline job needs none.
    let _slot = match inline {
        true => None,
        false => Some(slots.acquire_owned().await),
    };
    tracing::debug!("job started");
    let started = std::time::Instant::now();
    let api = Arc::clone(&model);
    let ran = if inline {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.infer(id, params)))
            .map_err(|_| "the model panicked".to_string())
    } else {
        let rid = id.to_string();
        tokio::task::spawn_blocking(move || model.infer(&rid, params))
            .await
            .map_err(|join| join.to_string())
    };
    dispatcher_metrics::model_run(api.api_path(), started, 1, 0);
    ran.unwrap_or_else(|why| {
        tracing::error!(error = %why, "model panicked");
        Err(ModelError::new("the model panicked"))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Panics on `{"panic": true}`; inline unless `{"slow": true}`.
    struct Probe;

    impl Model for Probe {
        fn api_path(&self) -> &str {
            "/api/probe"
        }
        fn runs_inline(&self, params: &Params) -> bool {
            !params.contains_key("slow")
        }
        fn infer(&self, _request_id: &str, params: Params) -> Result<Params, ModelError> {
            assert!(!params.contains_key("panic"), "asked to panic");
            Ok(params)
        }
    }

    fn params(key: &str) -> Params {
        let mut p = Params::new();
        p.insert(key.into(), true.into());
        p
    }

    /// The answer within `ms` milliseconds, if any.
    async fn run(p: Params, permits: usize, ms: u64) -> Option<Result<Params, ModelError>> {
        let slots = Arc::new(Semaphore::new(permits));
        tokio::time::timeout(
            Duration::from_millis(ms),
            run_model(Arc::new(Probe), "r1", p, slots),
        )
        .await
        .ok()
    }

    #[tokio::test]
    async fn an_inline_job_needs_no_infer_slot_and_a_blocking_one_waits_for_one() {
        let out = run(params("x"), 0, 5000).await.expect("ran without a slot");
        assert_eq!(out.expect("answer"), params("x"));
        assert!(
            run(params("slow"), 0, 200).await.is_none(),
            "waited for a slot"
        );
        let out = run(params("slow"), 1, 5000)
            .await
            .expect("ran on a blocking thread");
        assert_eq!(out.expect("answer"), params("slow"));
    }

    #[tokio::test]
    async fn a_model_that_panics_inline_answers_an_error() {
        let out = run(params("panic"), 0, 5000).await.expect("answered");
        assert!(out.is_err(), "{out:?}");
    }
}
