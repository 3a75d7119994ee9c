//! Dynamic batching: a model's jobs that wait in this dispatcher run together.
//!
//! One [`Batcher`] per model that asks for it ([`Model::batch_policy`]). Jobs
//! wait in it until the model may run (an infer slot is free); then, for at
//! most `max_queue_delay` after the oldest arrived, more jobs may join, until
//! the batch is full. (When the last batch was a lone job and only one waits
//! now, traffic is light: the batch runs at once rather than paying the delay.) A batch is built around the oldest job (so none
//! starves) from the waiting jobs closest to it in length (so short texts are
//! not padded to a long one), within `max_batch_size` items and
//! `max_batch_tokens` padded tokens, and runs as one [`Model::infer_batch`]
//! call on a blocking thread. The rest wait for the next batch. A model with a
//! server of its own gets the batch's bodies in one
//! [`crate::model_zoo::ServedModel::call_batch`], awaited on the runtime.
//!
//! Credits stay the flow control: the queue sends at most MaxWorkers jobs, so
//! at most that many wait here; batches are formed from what is held.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use super::answer::{model_answer, served_answer, Answer, Reply};
use crate::model_zoo::{BatchCost, BatchPolicy, Model, ModelError, Params};
use crate::proto::{unix_ms_now, Job, JobResult};

/// What a job brings to its batch.
pub enum BatchInput {
    /// Parameters for an in-process model.
    Params(Params),
    /// The job's body as it came, for a model server (`from_payload`: a
    /// PAI-EAS item, whose answer goes to a sink as it is).
    Body {
        body: bytes::Bytes,
        from_payload: bool,
    },
}

/// A job waiting for a batch.
pub struct Pending {
    pub request_id: String,
    pub input: BatchInput,
    pub cost: BatchCost,
    pub deadline_unix_ms: i64,
    /// Where its result goes; holds the job's place in the node.
    pub done: Reply,
    pub span: tracing::Span,
}

/// Codes the batcher answers with itself.
#[derive(Debug, Clone, Copy)]
pub struct BatchCodes {
    pub expired: i32,
    pub infer_fail: i32,
}

/// The handle jobs are submitted through; the batching task runs until the
/// handle is dropped.
pub struct Batcher {
    /// Unbounded in type only: every job in it holds one of the node's
    /// MaxWorkers places (its `Reply`).
    tx: mpsc::UnboundedSender<Pending>,
    model: Arc<dyn Model>,
    infer_fail: i32,
}

impl Batcher {
    pub fn start(
        model: Arc<dyn Model>,
        policy: BatchPolicy,
        slots: Arc<Semaphore>,
        codes: BatchCodes,
    ) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!("batcher", model = %model.api_path());
        tokio::spawn(run(Arc::clone(&model), policy, slots, codes, rx).instrument(span));
        Batcher {
            tx,
            model,
            infer_fail: codes.infer_fail,
        }
    }

    /// Hands a job to the batcher, with its size for batching. Parameters that
    /// are not a JSON object, or a batcher that has stopped, are answered
    /// InferFail at once.
    pub fn submit(&self, job: Job, done: Reply) {
        let span = job.span();
        let (input, cost) = if self.model.served().is_some() {
            let input = BatchInput::Body {
                body: job.params_json.into(),
                from_payload: job.from_payload,
            };
            (
                input,
                BatchCost {
                    items: 1,
                    longest: 1,
                },
            )
        } else {
            match serde_json::from_slice::<Params>(&job.params_json) {
                Ok(p) => {
                    let cost = self.model.batch_cost(&p);
                    (BatchInput::Params(p), cost)
                }
                Err(e) => {
                    let r = JobResult::error(
                        &job.request_id,
                        self.infer_fail,
                        format!("parameters are not a JSON object: {e}"),
                    );
                    return done.send(r);
                }
            }
        };
        let pending = Pending {
            cost,
            request_id: job.request_id,
            input,
            deadline_unix_ms: job.deadline_unix_ms,
            done,
            span,
        };
        if let Err(mpsc::error::SendError(p)) = self.tx.send(pending) {
            let r = JobResult::error(&p.request_id, self.infer_fail, "the batcher has stopped");
            p.done.send(r);
        }
    }
}

struct Waiting {
    arrived: Instant,
    job: Pending,
}

fn items(waiting: &[Waiting]) -> usize {
    waiting.iter().map(|w| w.job.cost.items.max(1)).sum()
}

/// Picks the next batch: the oldest job, then the others closest to it in
/// length while the limits allow. Removes them from `waiting`.
fn pick_batch(waiting: &mut Vec<Waiting>, policy: &BatchPolicy) -> Vec<Waiting> {
    if waiting.is_empty() {
        return Vec::new();
    }
    let anchor = waiting.remove(0);
    let target = anchor.job.cost.longest;
    let mut n_items = anchor.job.cost.items.max(1);
    let mut longest = target.max(1);
    let mut order: Vec<usize> = (0..waiting.len()).collect();
    order.sort_by_key(|&i| (waiting[i].job.cost.longest.abs_diff(target), i));
    let mut chosen = Vec::new();
    for i in order {
        let c = waiting[i].job.cost;
        let items_after = n_items + c.items.max(1);
        let longest_after = longest.max(c.longest);
        if items_after > policy.max_batch_size
            || longest_after * items_after > policy.max_batch_tokens
        {
            continue;
        }
        n_items = items_after;
        longest = longest_after;
        chosen.push(i);
    }
    chosen.sort_unstable_by(|a, b| b.cmp(a));
    let mut batch = vec![anchor];
    for i in chosen {
        batch.push(waiting.remove(i));
    }
    batch
}

async fn run(
    model: Arc<dyn Model>,
    policy: BatchPolicy,
    slots: Arc<Semaphore>,
    codes: BatchCodes,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut open = true;
    // Items of the last batch: when it was a lone job, nobody else is coming
    // soon, and waiting `max_queue_delay` for company would only add latency.
    let mut last_batch_items = 0usize;
    loop {
        if waiting.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(job) => waiting.push(Waiting {
                    arrived: Instant::now(),
                    job,
                }),
                None => return,
            }
        }
        // The model must be free before a batch is formed: meanwhile jobs gather.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let deadline = if last_batch_items > 1 || items(&waiting) > 1 {
            waiting[0].arrived + policy.max_queue_delay
        } else {
            waiting[0].arrived
        };
        while open && items(&waiting) < policy.max_batch_size {
            while let Ok(job) = rx.try_recv() {
                waiting.push(Waiting {
                    arrived: Instant::now(),
                    job,
                });
            }
            if items(&waiting) >= policy.max_batch_size {
                break;
            }
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => waiting.push(Waiting { arrived: Instant::now(), job }),
                    None => open = false,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Jobs whose caller gave up are answered, not run.
        let now = unix_ms_now();
        let (expired, live): (Vec<Waiting>, Vec<Waiting>) = waiting
            .into_iter()
            .partition(|w| w.job.deadline_unix_ms > 0 && now >= w.job.deadline_unix_ms);
        waiting = live;
        for w in expired {
            let r = JobResult::error(&w.job.request_id, codes.expired, "expired before it ran");
            w.job.done.send(r);
        }
        let batch = pick_batch(&mut waiting, &policy);
        if batch.is_empty() {
            continue;
        }
        last_batch_items = items(&batch);
        let model = Arc::clone(&model);
        let span = tracing::debug_span!("batch", jobs = batch.len());
        tokio::spawn(
            async move {
                let _slot = slot;
                let mut batch = batch;
                for w in &batch {
                    let _e = w.job.span.enter();
                    tracing::debug!("job started");
                }
                tracing::debug!(
                    items = items(&batch),
                    waited_us = batch[0].arrived.elapsed().as_micros() as u64,
                    "batch started"
                );
                let started = std::time::Instant::now();
                let (n, longest) = (
                    items(&batch),
                    batch.iter().map(|w| w.job.cost.longest).max().unwrap_or(0),
                );
                let answers = if let Some(server) = model.served() {
                    run_served(server, &mut batch, codes.infer_fail).await
                } else {
                    run_in_process(&model, &mut batch, codes.infer_fail).await
                };
                crate::metrics::dispatcher::model_run(model.api_path(), started, n, longest);
                for (w, answer) in batch.into_iter().zip(answers) {
                    w.job.done.send(answer);
                }
            }
            .instrument(span),
        );
    }
}

/// Runs a batch in the model, on a blocking thread: one answer per job.
async fn run_in_process(
    model: &Arc<dyn Model>,
    batch: &mut [Waiting],
    infer_fail: i32,
) -> Vec<Answer> {
    let inputs: Vec<(String, Params)> = batch
        .iter_mut()
        .map(|w| {
            let params =
                match std::mem::replace(&mut w.job.input, BatchInput::Params(Params::new())) {
                    BatchInput::Params(p) => p,
                    // Only a served model's jobs carry bodies.
                    BatchInput::Body { .. } => Params::new(),
                };
            (w.job.request_id.clone(), params)
        })
        .collect();
    let n = inputs.len();
    let ran = tokio::task::spawn_blocking({
        let model = Arc::clone(model);
        move || model.infer_batch(inputs)
    })
    .await;
    let outputs: Vec<Result<Params, ModelError>> = match ran {
        Ok(v) if v.len() == n => v,
        Ok(v) => {
            tracing::error!(
                got = v.len(),
                want = n,
                "infer_batch returned the wrong number of results"
            );
            (0..n)
                .map(|_| Err(ModelError::new("the model returned too few results")))
                .collect()
        }
        Err(join) => {
            tracing::error!(error = %join, "model panicked");
            (0..n)
                .map(|_| Err(ModelError::new("the model panicked")))
                .collect()
        }
    };
    batch
        .iter()
        .zip(outputs)
        .map(|(w, out)| model_answer(&w.job.request_id, out, infer_fail))
        .collect()
}

/// Sends a batch to the model's server as one call: one answer per job.
async fn run_served(
    server: &dyn crate::model_zoo::ServedModel,
    batch: &mut [Waiting],
    infer_fail: i32,
) -> Vec<Answer> {
    let mut from_payload = Vec::with_capacity(batch.len());
    let bodies: Vec<(String, bytes::Bytes)> = batch
        .iter_mut()
        .map(|w| {
            let (body, payload) =
                match std::mem::replace(&mut w.job.input, BatchInput::Params(Params::new())) {
                    BatchInput::Body { body, from_payload } => (body, from_payload),
                    BatchInput::Params(p) => {
                        (serde_json::to_vec(&p).unwrap_or_default().into(), false)
                    }
                };
            from_payload.push(payload);
            (w.job.request_id.clone(), body)
        })
        .collect();
    let n = bodies.len();
    let mut outputs = server.call_batch(bodies).await;
    if outputs.len() != n {
        tracing::error!(
            got = outputs.len(),
            want = n,
            "call_batch returned the wrong number of answers"
        );
        outputs = (0..n)
            .map(|_| {
                Err(ModelError::new(
                    "the model server returned the wrong number of answers",
                ))
            })
            .collect();
    }
    batch
        .iter()
        .zip(outputs)
        .zip(from_payload)
        .map(|((w, out), payload)| served_answer(&w.job.request_id, payload, out, infer_fail))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A reply to `tx`, with a place of its own.
    fn reply(tx: &mpsc::UnboundedSender<crate::dispatcher::answer::Answered>) -> Reply {
        let place = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a place");
        Reply::new(
            tx.clone(),
            place,
            Arc::new(crate::metrics::dispatcher::NodeGauges::new("test")),
        )
    }

    fn waiting(costs: &[(usize, usize)]) -> Vec<Waiting> {
        let (tx, _rx) = mpsc::unbounded_channel();
        costs
            .iter()
            .enumerate()
            .map(|(i, &(items, longest))| Waiting {
                arrived: Instant::now(),
                job: Pending {
                    request_id: format!("j{i}"),
                    input: BatchInput::Params(Params::new()),
                    cost: BatchCost { items, longest },
                    deadline_unix_ms: 0,
                    done: reply(&tx),
                    span: tracing::Span::none(),
                },
            })
            .collect()
    }

    fn ids(batch: &[Waiting]) -> Vec<&str> {
        batch.iter().map(|w| w.job.request_id.as_str()).collect()
    }

    #[test]
    fn oldest_first_then_nearest_length_within_budget() {
        let policy = BatchPolicy {
            max_batch_size: 3,
            max_queue_delay: Duration::ZERO,
            max_batch_tokens: 1000,
        };
        // j0 short; j1 long; j2, j3 short; j4 medium.
        let mut w = waiting(&[(1, 10), (1, 200), (1, 12), (1, 9), (1, 60)]);
        let b = pick_batch(&mut w, &policy);
        assert_eq!(
            ids(&b),
            ["j0", "j3", "j2"],
            "the oldest and the two closest in length"
        );
        let b = pick_batch(&mut w, &policy);
        assert_eq!(ids(&b), ["j1", "j4"], "long with medium: 200*2 within 1000");
        assert!(w.is_empty());
    }

    #[test]
    fn token_budget_splits_long_items() {
        let policy = BatchPolicy {
            max_batch_size: 32,
            max_queue_delay: Duration::ZERO,
            max_batch_tokens: 300,
        };
        let mut w = waiting(&[(1, 100), (1, 100), (1, 100), (1, 100)]);
        assert_eq!(pick_batch(&mut w, &policy).len(), 3, "3 x 100 fits 300");
        assert_eq!(pick_batch(&mut w, &policy).len(), 1);
        // An anchor over the budget alone still runs (alone).
        let mut w = waiting(&[(4, 500), (1, 1)]);
        assert_eq!(ids(&pick_batch(&mut w, &policy)), ["j0"]);
    }

    /// Records the size of every batch it runs; echoes each job.
    struct Recorder(parking_lot::Mutex<Vec<usize>>);

    impl Model for Recorder {
        fn api_path(&self) -> &str {
            "/api/rec"
        }
        fn infer(&self, _id: &str, p: Params) -> Result<Params, ModelError> {
            Ok(p)
        }
        fn infer_batch(&self, jobs: Vec<(String, Params)>) -> Vec<Result<Params, ModelError>> {
            self.0.lock().push(jobs.len());
            jobs.into_iter().map(|(_, p)| Ok(p)).collect()
        }
    }

    fn job(id: &str) -> Job {
        Job {
            request_id: id.into(),
            api_path: "/api/rec".into(),
            params_json: b"{}".to_vec(),
            ..Default::default()
        }
    }

    fn start(
        model: &Arc<Recorder>,
        max_batch_size: usize,
        max_queue_delay: Duration,
        slots: Arc<Semaphore>,
    ) -> Batcher {
        let policy = BatchPolicy {
            max_batch_size,
            max_queue_delay,
            max_batch_tokens: 1 << 20,
        };
        let codes = BatchCodes {
            expired: 9997,
            infer_fail: 9998,
        };
        Batcher::start(model.clone(), policy, slots, codes)
    }

    /// Runs `n` jobs submitted while the only slot is taken, then freed.
    async fn batches_of(n: usize, max_batch_size: usize) -> Vec<usize> {
        let model = Arc::new(Recorder(Default::default()));
        let slots = Arc::new(Semaphore::new(1));
        let batcher = start(
            &model,
            max_batch_size,
            Duration::from_millis(5),
            Arc::clone(&slots),
        );
        let busy = Arc::clone(&slots).acquire_owned().await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..n {
            batcher.submit(job(&format!("j{i}")), reply(&tx));
        }
        tokio::task::yield_now().await;
        drop(busy);
        let mut answered = 0;
        while answered < n {
            let r = rx.recv().await.expect("every job is answered").answer;
            assert!(matches!(
                r,
                Answer::Result(crate::proto::JobResult {
                    outcome: Some(crate::proto::job_result::Outcome::OutputJson(_)),
                    ..
                })
            ));
            answered += 1;
        }
        let sizes = model.0.lock().clone();
        sizes
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_that_wait_for_the_model_run_together_within_the_size() {
        assert_eq!(batches_of(3, 8).await, [3]);
        assert_eq!(batches_of(5, 2).await, [2, 2, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_job_does_not_wait_for_company() {
        let model = Arc::new(Recorder(Default::default()));
        let batcher = start(
            &model,
            8,
            Duration::from_secs(10),
            Arc::new(Semaphore::new(1)),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        batcher.submit(job("alone"), reply(&tx));
        rx.recv().await.expect("answered");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(model.0.lock().as_slice(), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_job_is_answered_and_not_run() {
        let model = Arc::new(Recorder(Default::default()));
        let batcher = start(&model, 8, Duration::ZERO, Arc::new(Semaphore::new(1)));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut late = job("late");
        late.deadline_unix_ms = unix_ms_now() - 1;
        batcher.submit(late, reply(&tx));
        match rx.recv().await.expect("answered").answer {
            Answer::Result(crate::proto::JobResult {
                outcome: Some(crate::proto::job_result::Outcome::Error(e)),
                ..
            }) => assert_eq!(e.code, 9997),
            other => panic!("{other:?}"),
        }
        assert!(model.0.lock().is_empty());
    }
}
