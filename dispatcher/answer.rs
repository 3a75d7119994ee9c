//! How a job's outcome becomes its answer on the stream, the same for jobs
//! run one by one ([`super::node`]) and in batches ([`super::batcher`]).
//!
//! A job holds one of the node's MaxWorkers places from the moment it
//! arrives until its session has taken its answer ([`Reply`], [`Answered`]).
//! So the jobs running, waiting for a batch, or answered and not yet sent
//! never number more than MaxWorkers, across streams: the channels they sit
//! in need no bound of their own.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::metrics::dispatcher::NodeGauges;
use crate::model_zoo::{ModelError, Params};
use crate::proto::JobResult;

/// How a job left the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Its result, sent to the queue.
    Result(JobResult),
    /// It did not run (its model's server could not be reached): no result
    /// is sent; the session gives the job back by ending its stream, and the
    /// queue delivers it again.
    NotRun { request_id: String, why: String },
}

impl From<JobResult> for Answer {
    fn from(r: JobResult) -> Self {
        Answer::Result(r)
    }
}

impl Answer {
    pub fn request_id(&self) -> &str {
        match self {
            Answer::Result(r) => &r.request_id,
            Answer::NotRun { request_id, .. } => request_id,
        }
    }

    /// The model's error as an answer: not run, or its code (InferFail when
    /// it gave none).
    pub fn from_error(request_id: &str, e: ModelError, infer_fail: i32) -> Self {
        if e.not_run {
            Answer::NotRun {
                request_id: request_id.to_string(),
                why: e.message,
            }
        } else {
            JobResult::error(request_id, e.code.unwrap_or(infer_fail), e.message).into()
        }
    }
}

/// A job's answer from its model's output: the output as JSON, or the model's
/// error with its code (InferFail when it gave none).
pub fn model_answer(request_id: &str, out: Result<Params, ModelError>, infer_fail: i32) -> Answer {
    match out {
        Ok(params) => match serde_json::to_vec(&params) {
            Ok(bytes) => JobResult::output(request_id, bytes).into(),
            Err(e) => JobResult::error(
                request_id,
                infer_fail,
                format!("output not serialisable: {e}"),
            )
            .into(),
        },
        Err(e) => Answer::from_error(request_id, e, infer_fail),
    }
}

/// A job's answer from a model server's response body (the HTTP processor).
/// A PAI-EAS item's answer is the body as it is (for its sink). Any other
/// job's answer must be JSON (an object is the answer's data; the gateway
/// wraps another value as `{"result": value}`); an empty body is `{}`.
pub fn served_answer(
    request_id: &str,
    from_payload: bool,
    out: Result<bytes::Bytes, ModelError>,
    infer_fail: i32,
) -> Answer {
    let body = match out {
        Ok(body) => body,
        Err(e) => return Answer::from_error(request_id, e, infer_fail),
    };
    if from_payload {
        return JobResult::output_bytes(request_id, body.to_vec()).into();
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return JobResult::output(request_id, b"{}".to_vec()).into();
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => JobResult::output(request_id, body.to_vec()).into(),
        Err(e) => JobResult::error(
            request_id,
            infer_fail,
            format!("the model's server answered with something that is not JSON: {e}"),
        )
        .into(),
    }
}

/// A job's answer on its way to the session, still holding the job's place.
pub struct Answered {
    pub answer: Answer,
    _place: OwnedSemaphorePermit,
}

/// Where one job's answer goes: its session's result channel. Holds the
/// job's place in the node until the session takes the answer (or, when the
/// session is gone, until the answer is dropped).
pub struct Reply {
    to: mpsc::UnboundedSender<Answered>,
    place: OwnedSemaphorePermit,
    gauges: Arc<NodeGauges>,
}

impl Reply {
    /// A job's reply; the job counts as in hand until it is sent.
    pub fn new(
        to: mpsc::UnboundedSender<Answered>,
        place: OwnedSemaphorePermit,
        gauges: Arc<NodeGauges>,
    ) -> Self {
        gauges.job_taken();
        Reply { to, place, gauges }
    }

    /// Sends the answer and counts the job done.
    pub fn send(self, answer: impl Into<Answer>) {
        self.gauges.job_answered();
        let _ = self.to.send(Answered {
            answer: answer.into(),
            _place: self.place,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::job_result::Outcome;

    fn outcome(a: Answer) -> Option<Outcome> {
        match a {
            Answer::Result(r) => r.outcome,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outputs_and_model_errors_become_results() {
        let mut p = Params::new();
        p.insert("y".into(), 1.into());
        let r = model_answer("r1", Ok(p), 9998);
        assert_eq!(
            outcome(r),
            Some(Outcome::OutputJson(br#"{"y":1}"#.to_vec()))
        );
        let r = model_answer("r2", Err(ModelError::new("no")), 9998);
        match outcome(r) {
            Some(Outcome::Error(e)) => assert_eq!((e.code, e.message.as_str()), (9998, "no")),
            other => panic!("{other:?}"),
        }
        let r = model_answer("r3", Err(ModelError::with_code(9701, "bad")), 9998);
        assert!(matches!(outcome(r), Some(Outcome::Error(e)) if e.code == 9701));
        let r = model_answer("r4", Err(ModelError::not_run("refused")), 9998);
        assert!(matches!(r, Answer::NotRun { ref request_id, .. } if request_id == "r4"));
    }

    #[test]
    fn server_bodies_are_sink_bytes_or_json_answers() {
        let body = |b: &'static [u8]| Ok(bytes::Bytes::from_static(b));
        // A PAI-EAS item: the bytes as they are, empty included.
        assert_eq!(
            outcome(served_answer("a", true, body(b"not json"), 9998)),
            Some(Outcome::OutputBytes(b"not json".to_vec()))
        );
        assert_eq!(
            outcome(served_answer("a", true, body(b""), 9998)),
            Some(Outcome::OutputBytes(Vec::new()))
        );
        // A go-infer job: JSON, or `{}` for nothing.
        assert_eq!(
            outcome(served_answer("b", false, body(br#"{"y": 2}"#), 9998)),
            Some(Outcome::OutputJson(br#"{"y": 2}"#.to_vec()))
        );
        assert_eq!(
            outcome(served_answer("b", false, body(b" \n"), 9998)),
            Some(Outcome::OutputJson(b"{}".to_vec()))
        );
        assert!(matches!(
            outcome(served_answer("b", false, body(b"<html>"), 9998)),
            Some(Outcome::Error(e)) if e.code == 9998
        ));
        assert!(matches!(
            served_answer("c", false, Err(ModelError::not_run("down")), 9998),
            Answer::NotRun { .. }
        ));
    }
}
