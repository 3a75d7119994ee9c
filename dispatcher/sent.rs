//! [`SentAnswers`]: the last answers a dispatcher sent on its stream.
//!
//! A queue instance can read an answer and die before storing it; the
//! dispatcher cannot tell, so it keeps its last answers and, when the stream
//! is lost, sends them again on the next one. The queue holds a credit until
//! it has stored an answer, so its unstored answers are among the last
//! MaxWorkers sent; the queue ignores the ones it had stored.

use std::collections::VecDeque;

use crate::proto::JobResult;

/// The last `keep` answers sent on one stream (twice MaxWorkers: the lost
/// stream's answers sent first count too).
pub(super) struct SentAnswers {
    last: VecDeque<JobResult>,
    keep: usize,
}

impl SentAnswers {
    pub(super) fn new(keep: usize) -> Self {
        SentAnswers {
            last: VecDeque::with_capacity(keep),
            keep,
        }
    }

    pub(super) fn sent(&mut self, result: &JobResult) {
        if self.keep == 0 {
            return;
        }
        if self.last.len() == self.keep {
            self.last.pop_front();
        }
        self.last.push_back(result.clone());
    }

    /// The kept answers, oldest first.
    pub(super) fn into_vec(self) -> Vec<JobResult> {
        self.last.into()
    }
}
