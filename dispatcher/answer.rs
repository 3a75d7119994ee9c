//! How a job's outcome becomes its answer on the stream, the same for jobs
//! run one by one ([`super::node`]) and in batches ([`super::batcher`]).
//!
//! A job holds one of the node's MaxWorkers places from the moment it
//! arrives until its session has taken its answer ([`Reply`], [`Answered`]).
//! So the jobs running, waiting for a batch, or answered and not yet sent
//! never number more than MaxWorkers, across streams: the channels they sit
//! in need no bound of their own.

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::metrics;
use crate::model_zoo::{ModelError, Params};
use crate::proto::JobResult;

/// A job's answer from its model's output: the output as JSON, or the model's
/// error with its code (InferFail when it gave none).
pub fn model_answer(
    request_id: &str,
    out: Result<Params, ModelError>,
    infer_fail: i32,
) -> JobResult {
    match out {
        Ok(params) => match serde_json::to_vec(&params) {
            Ok(bytes) => JobResult::output(request_id, bytes),
            Err(e) => JobResult::error(
                request_id,
                infer_fail,
                format!("output not serialisable: {e}"),
            ),
        },
        Err(e) => JobResult::error(request_id, e.code.unwrap_or(infer_fail), e.message),
    }
}

/// A job's answer on its way to the session, still holding the job's place.
pub struct Answered {
    pub result: JobResult,
    _place: OwnedSemaphorePermit,
}

/// Where one job's answer goes: its session's result channel. Holds the
/// job's place in the node until the session takes the answer (or, when the
/// session is gone, until the answer is dropped).
pub struct Reply {
    to: mpsc::UnboundedSender<Answered>,
    place: OwnedSemaphorePermit,
}

impl Reply {
    pub fn new(to: mpsc::UnboundedSender<Answered>, place: OwnedSemaphorePermit) -> Self {
        Reply { to, place }
    }

    /// Sends the answer and counts the job done.
    pub fn send(self, result: JobResult) {
        metrics::DISPATCHER_JOBS_IN_HAND.add(-1);
        metrics::DISPATCHER_JOBS_DONE.inc();
        let _ = self.to.send(Answered {
            result,
            _place: self.place,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::job_result::Outcome;

    #[test]
    fn outputs_and_model_errors_become_results() {
        let mut p = Params::new();
        p.insert("y".into(), 1.into());
        let r = model_answer("r1", Ok(p), 9998);
        assert_eq!(r.outcome, Some(Outcome::OutputJson(br#"{"y":1}"#.to_vec())));
        let r = model_answer("r2", Err(ModelError::new("no")), 9998);
        match r.outcome {
            Some(Outcome::Error(e)) => assert_eq!((e.code, e.message.as_str()), (9998, "no")),
            other => panic!("{other:?}"),
        }
        let r = model_answer("r3", Err(ModelError::with_code(9701, "bad")), 9998);
        assert!(matches!(r.outcome, Some(Outcome::Error(e)) if e.code == 9701));
    }
}
