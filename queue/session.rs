//! One dispatcher's `Dispatch` stream, seen from the queue.
//!
//! The stream opens with the dispatcher's Hello (node, queue, MaxWorkers). The
//! session then runs two loops:
//! - the lease loop waits for credits, leases that many jobs from the backend
//!   under this session's consumer name and sends them;
//! - the read loop takes results, completes their jobs in the backend and gives
//!   one credit back per result.
//!
//! When the stream ends, for any reason (dispatcher drained, crashed, network
//! gone), every job still leased to the session is released to the head of its
//! queue for another dispatcher. Expired jobs (the caller stopped waiting) are
//! completed as expired and not sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::Instrument;

use super::credit::CreditWindow;
use super::registry::{SessionInfo, SessionRegistry};
use super::source::{JobSource, Lease, SourceError};
use crate::backoff::Backoff;
use crate::clip::clip;
use crate::metrics::queue::QueueCounters;
use crate::proto::{
    dispatcher_message, queue_message, unix_ms_now, DispatcherMessage, Hello, JobResult,
    QueueMessage, Welcome,
};

type Outbound = mpsc::Sender<Result<QueueMessage, Status>>;

/// The leases a session holds, by request id. The same request id can be
/// stored twice (a gateway's failover resend), so an id may hold several
/// leases: the job is sent once, and its one result completes them all and
/// gives all their credits back.
pub(crate) type InHand = Arc<Mutex<HashMap<String, Vec<Lease>>>>;

/// How sessions behave.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// How long one lease request waits for a job before it is renewed.
    pub lease_wait: Duration,
    /// Code for jobs dropped because their caller's deadline passed (QueueTimeout).
    pub expired_code: i32,
    /// Code a result without an outcome is answered with (InferFail).
    pub empty_result_code: i32,
    /// How long a new Dispatch stream may take to send Hello.
    pub hello_timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            lease_wait: Duration::from_secs(5),
            expired_code: 9997,
            empty_result_code: 9998,
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// Finds the job source a Hello's queue name stands for.
pub type SourceFor =
    Box<dyn FnOnce(&str) -> Result<Arc<dyn JobSource>, SourceError> + Send + 'static>;

/// Runs one Dispatch stream to its end: Hello, then leasing and results;
/// whatever the session still holds at the end is released.
pub async fn run(
    opts: SessionOptions,
    source_for: SourceFor,
    registry: Arc<SessionRegistry>,
    mut inbound: BoxStream<'static, Result<DispatcherMessage, Status>>,
    out: Outbound,
) {
    let hello = match tokio::time::timeout(opts.hello_timeout, inbound.next()).await {
        Ok(Some(Ok(DispatcherMessage {
            kind: Some(dispatcher_message::Kind::Hello(h)),
        }))) => h,
        _ => {
            let _ = out
                .send(Err(Status::invalid_argument(
                    "the first message on Dispatch must be Hello",
                )))
                .await;
            return;
        }
    };
    if let Err(why) = check_hello(&hello) {
        let _ = out.send(Err(Status::invalid_argument(why))).await;
        return;
    }
    let source: Arc<dyn JobSource> = match source_for(&hello.queue) {
        Ok(s) => s,
        Err(why) => {
            let _ = out
                .send(Err(Status::invalid_argument(why.to_string())))
                .await;
            return;
        }
    };
    let session_id = format!("{}#{}", hello.node_id, uuid::Uuid::now_v7().simple());
    let span = tracing::info_span!("dispatch", node = %hello.node_id, queue = %hello.queue, session = %session_id);
    async move {
        let window = Arc::new(CreditWindow::new(hello.max_workers));
        let counters = QueueCounters::new(&hello.queue);
        let welcome = QueueMessage {
            kind: Some(queue_message::Kind::Welcome(Welcome {
                session_id: session_id.clone(),
                credits: window.size(),
            })),
        };
        if out.send(Ok(welcome)).await.is_err() {
            return;
        }
        let in_hand: InHand = Arc::default();
        registry.register(
            &session_id,
            SessionInfo {
                node_id: hello.node_id.clone(),
                queue: hello.queue.clone(),
                window: window.size(),
                in_hand: Arc::clone(&in_hand),
            },
        );
        tracing::info!(credits = window.size(), models = ?hello.api_paths, "dispatcher connected");

        let stop = CancellationToken::new();
        let leaser = tokio::spawn(
            lease_loop(
                opts.clone(),
                Arc::clone(&source),
                session_id.clone(),
                Held {
                    window: Arc::clone(&window),
                    in_hand: Arc::clone(&in_hand),
                },
                out.clone(),
                stop.clone(),
                counters.clone(),
            )
            .in_current_span(),
        );

        // Results that have already arrived are stored together (one round
        // trip to Redis for all of them).
        let mut results = Vec::new();
        // Answers to jobs of the dispatcher's lost stream, sent again on this
        // one: the last MaxWorkers answers of the lost stream and those of
        // the jobs it was running then, so two windows' worth at most.
        let mut unleased_budget = window.size().saturating_mul(2);
        let ended_by = loop {
            let mut next = inbound.next().await;
            let ended = loop {
                match next {
                    Some(Ok(DispatcherMessage { kind: Some(kind) })) => match kind {
                        dispatcher_message::Kind::Result(result) => {
                            results.push(defined(result, opts.empty_result_code))
                        }
                        dispatcher_message::Kind::Drain(_) => {
                            tracing::info!("dispatcher draining: no more jobs sent");
                            stop.cancel();
                        }
                        dispatcher_message::Kind::Hello(_) => {
                            tracing::warn!("second Hello ignored");
                        }
                    },
                    Some(Ok(DispatcherMessage { kind: None })) => {}
                    Some(Err(status)) => {
                        break Some(format!("stream error: {}", status.message()))
                    }
                    None => break Some("stream closed".to_string()),
                }
                if results.len() >= MAX_RESULT_BATCH {
                    break None;
                }
                match inbound.next().now_or_never() {
                    Some(m) => next = m,
                    None => break None,
                }
            };
            if !results.is_empty() {
                let results = std::mem::take(&mut results);
                let budget = &mut unleased_budget;
                take_results(&source, &in_hand, &window, results, budget, &counters).await;
            }
            if let Some(why) = ended {
                break why;
            }
        };
        stop.cancel();
        let _ = leaser.await;
        let held: usize = in_hand.lock().values().map(Vec::len).sum();
        in_hand.lock().clear();
        match source.release(&session_id).await {
            Ok(0) => tracing::info!(%ended_by, "dispatcher disconnected"),
            Ok(n) => {
                counters.redelivered.inc_by(n as u64);
                tracing::warn!(%ended_by, returned = n, "dispatcher gone with jobs in hand; returned them to the queue");
            }
            Err(e) => tracing::error!(%ended_by, held, error = %e, "could not return jobs of a gone dispatcher; they are reclaimed when the backend is back"),
        }
        registry.unregister(&session_id);
    }
    .instrument(span)
    .await
}

/// A dispatcher's result as the queue stores it: one without an outcome
/// (a dispatcher's bug, or a hostile one) becomes an error with `code`, so
/// its caller, or its PAI-EAS sink, gets a defined answer rather than none.
fn defined(result: JobResult, code: i32) -> JobResult {
    if result.outcome.is_some() {
        return result;
    }
    tracing::warn!(request_id = %clip(&result.request_id), "result without an outcome; answered as an error");
    JobResult::error(
        &result.request_id,
        code,
        "the dispatcher sent a result without an outcome",
    )
}

fn check_hello(h: &Hello) -> Result<(), &'static str> {
    if h.queue.is_empty() {
        return Err("Hello.queue is empty");
    }
    if h.max_workers == 0 {
        return Err("Hello.max_workers must be at least 1");
    }
    if h.node_id.is_empty() {
        return Err("Hello.node_id is empty");
    }
    Ok(())
}

/// Stores results and gives their credits back. When the backend cannot take
/// them (Redis down), they are retried in the background with backoff for up
/// to `RESULT_RETRY_FOR`, holding the credits meanwhile, so the dispatcher
/// gets no new job it could not answer either. Given up, the jobs are
/// reclaimed and run again, still with one answer to each caller.
///
/// A result for a job this session does not hold is a dispatcher's answer
/// to a job of a stream it lost (its queue instance died): it is stored if
/// its request id is stored and unanswered (the job is then not run again),
/// while `unleased_budget` lasts; it gives no credit back.
async fn take_results(
    source: &Arc<dyn JobSource>,
    in_hand: &InHand,
    window: &Arc<CreditWindow>,
    results: Vec<JobResult>,
    unleased_budget: &mut u32,
    counters: &QueueCounters,
) {
    let mut done = Vec::with_capacity(results.len());
    let mut unleased = Vec::new();
    {
        let mut held = in_hand.lock();
        for result in results {
            match held.remove(&result.request_id) {
                Some(mut leases) => {
                    // Copies only for the rare extra leases of one id.
                    let last = leases.pop();
                    for lease in leases {
                        done.push((lease, result.clone()));
                    }
                    if let Some(lease) = last {
                        done.push((lease, result));
                    }
                }
                None if *unleased_budget > 0 => {
                    *unleased_budget -= 1;
                    unleased.push(result);
                }
                None => {
                    tracing::warn!(request_id = %clip(&result.request_id), "result for a job this dispatcher does not hold; ignored")
                }
            }
        }
    }
    for result in unleased {
        let id = clip(&result.request_id).to_string();
        match source.complete_unleased(result).await {
            Ok(true) => {
                counters.completed.inc();
                tracing::info!(request_id = %id, "stored an answer sent again after a lost stream");
            }
            Ok(false) => {
                tracing::debug!(request_id = %id, "answer to a job not stored (answered already); ignored")
            }
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "could not store an answer sent again; its job runs again")
            }
        }
    }
    if done.is_empty() {
        return;
    }
    let n = done.len();
    match source.complete_batch(&done).await {
        Ok(()) => {
            counters.completed.inc_by(n as u64);
            window.give_back(n);
        }
        Err(e) => {
            tracing::warn!(results = n, error = %e, "could not store results; retrying");
            let source = Arc::clone(source);
            let window = Arc::clone(window);
            let counters = counters.clone();
            tokio::spawn(
                async move {
                    let give_up = tokio::time::Instant::now() + RESULT_RETRY_FOR;
                    let mut backoff =
                        Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
                    loop {
                        tokio::time::sleep(backoff.next_delay()).await;
                        match source.complete_batch(&done).await {
                            Ok(()) => {
                                counters.completed.inc_by(n as u64);
                                tracing::info!(results = n, "results stored after retrying");
                                break;
                            }
                            Err(e) if tokio::time::Instant::now() >= give_up => {
                                tracing::error!(results = n, error = %e, "gave up storing results; their jobs will be reclaimed and run again");
                                break;
                            }
                            Err(_) => {}
                        }
                    }
                    window.give_back(n);
                }
                .in_current_span(),
            );
        }
    }
}

/// Most results stored in one batch.
const MAX_RESULT_BATCH: usize = 256;
const RESULT_RETRY_FOR: Duration = Duration::from_secs(60);

/// A session's credits and the jobs they are in use by.
struct Held {
    window: Arc<CreditWindow>,
    in_hand: InHand,
}

async fn lease_loop(
    opts: SessionOptions,
    source: Arc<dyn JobSource>,
    session_id: String,
    held: Held,
    out: Outbound,
    stop: CancellationToken,
    counters: QueueCounters,
) {
    let Held { window, in_hand } = held;
    // Capped at 500 ms: after a store outage, leasing resumes within half a
    // second of the store's return.
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            n = window.take_all() => n,
        };
        let leased = tokio::select! {
            biased;
            _ = stop.cancelled() => { window.give_back(n); return }
            r = source.lease(&session_id, n, opts.lease_wait) => r,
        };
        let leases = match leased {
            Ok(v) => {
                backoff.reset();
                v
            }
            Err(e) => {
                window.give_back(n);
                tracing::warn!(error = %e, "lease failed; retrying");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
        };
        window.give_back(n.saturating_sub(leases.len()));
        let now = unix_ms_now();
        let mut to_send = Vec::with_capacity(leases.len());
        for lease in leases {
            if lease.job.is_expired(now) {
                let r = JobResult::error(
                    &lease.job.request_id,
                    opts.expired_code,
                    "expired in the queue: the caller's deadline passed",
                );
                if source.complete_batch(&[(lease, r)]).await.is_ok() {
                    counters.expired.inc();
                }
                window.give_back(1);
                continue;
            }
            let mut held = in_hand.lock();
            match held.get_mut(&lease.job.request_id) {
                // Already running here under another lease: its result will
                // answer this one too; the job is not sent twice.
                Some(leases) => leases.push(lease),
                None => {
                    held.insert(lease.job.request_id.clone(), vec![lease.clone()]);
                    to_send.push(lease.job);
                }
            }
        }
        for job in to_send {
            counters.delivered(job.deliveries, job.enqueued_unix_ms, now);
            let msg = QueueMessage {
                kind: Some(queue_message::Kind::Job(job)),
            };
            if out.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    }
}
