//! [`DispatcherNode`]: pulls jobs over one Dispatch stream and runs them.
//!
//! The node says Hello with its MaxWorkers; the queue then sends at most that
//! many jobs before results come back (the credit window), and the node holds
//! it to that: MaxWorkers places, one per job until its answer is taken, so a
//! job beyond them ends the stream, and a new stream waits for the jobs of a
//! lost one. Each job runs on a
//! blocking thread (bounded by `infer_threads`) so inference never stalls the
//! stream, unless the model says it is a matter of microseconds for its
//! parameters ([`crate::model_zoo::Model::runs_inline`]: echo without a
//! sleep, logistic regression), which runs on the runtime. When the stream drops the node reconnects with backoff; the jobs
//! it was running finish, and their answers are sent first on the next
//! stream (to any queue instance: the queue stores an answer for a job that
//! is still stored, so it does not run again). So are the last MaxWorkers
//! answers sent on the lost stream: the queue gives a credit back only once
//! it has stored an answer, so the answers it may have received and not
//! stored when it died are among those ([`SentAnswers`]); the queue ignores
//! the ones it had stored. On shutdown it sends Drain,
//! finishes the jobs it holds, sends their results, closes the stream and
//! returns.
//!
//! A model with a server of its own ([`crate::model_zoo::ServedModel`]) is
//! awaited on the runtime rather than run on a blocking thread, so its calls
//! in flight are bounded by the credits alone. While such a server is not
//! ready the node offers no credits: it opens no stream, and when the server
//! goes down (or a job could not reach it) the open stream is drained and
//! ended, which gives the jobs that did not run back to the queue.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::answer::{model_answer, served_answer, Answer, Answered, Reply};
use super::batcher::{BatchCodes, Batcher};
use super::infer::run_model;
use super::sent::SentAnswers;
use crate::backoff::Backoff;
use crate::metrics::dispatcher::{self as dispatcher_metrics, NodeGauges};
use crate::model_zoo::{ModelError, ModelSet, Params};
use crate::proto::{
    dispatcher_message, queue_message, unix_ms_now, DispatchLink, DispatcherMessage, Drain, Hello,
    Job, JobResult, QueueMessage,
};

/// How a node identifies itself and behaves.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub node_id: String,
    pub queue: String,
    /// The credit window: most jobs held at once.
    pub max_workers: u32,
    /// Most `Infer` calls running at once.
    pub infer_threads: usize,
    /// How long to wait for jobs in hand on shutdown.
    pub drain_timeout: Duration,
    pub unknown_api_code: i32,
    pub infer_fail_code: i32,
    /// For asynchronous items whose payload the model's check refuses.
    pub api_entry_fail_code: i32,
    pub expired_code: i32,
}

/// The codes a job may be answered with, copied into each job's task.
#[derive(Clone, Copy)]
struct JobCodes {
    expired: i32,
    unknown_api: i32,
    infer_fail: i32,
}

impl From<&NodeOptions> for JobCodes {
    fn from(o: &NodeOptions) -> Self {
        JobCodes {
            expired: o.expired_code,
            unknown_api: o.unknown_api_code,
            infer_fail: o.infer_fail_code,
        }
    }
}

pub struct DispatcherNode {
    models: Arc<ModelSet>,
    opts: NodeOptions,
    codes: JobCodes,
    link: Arc<dyn DispatchLink>,
    infer_slots: Arc<Semaphore>,
    /// The node's MaxWorkers places: a job holds one from its arrival until
    /// its session has taken its answer, whichever stream it came on.
    places: Arc<Semaphore>,
    /// Models that batch, by API path.
    batchers: HashMap<String, Batcher>,
    /// Whether a stream to the queue is open (Welcome received): health.
    connected: AtomicBool,
    /// Where every job's answer goes, whichever stream it came on.
    answers_tx: mpsc::UnboundedSender<Answered>,
    /// Read by the one session running; answers of a lost stream's jobs
    /// wait here for the next one.
    answers_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Answered>>,
    /// The readiness of the model servers this node's models run in.
    servers_ready: Vec<watch::Receiver<bool>>,
    /// Jobs in hand, credits and jobs done, under this node's queue.
    gauges: Arc<NodeGauges>,
}

enum SessionEnd {
    /// Drained on shutdown: stop.
    Drained,
    /// The stream was lost: reconnect.
    Lost(String),
    /// A model server went down: the stream was drained and ended, giving
    /// back the jobs that did not run; reconnect once it is ready.
    Paused(String),
}

impl DispatcherNode {
    pub fn new(models: Arc<ModelSet>, opts: NodeOptions, link: Arc<dyn DispatchLink>) -> Self {
        let slots = Arc::new(Semaphore::new(opts.infer_threads.max(1)));
        let codes = JobCodes::from(&opts);
        let batchers = models
            .iter()
            .filter_map(|m| {
                let policy = m.batch_policy()?;
                tracing::info!(model = %m.api_path(), ?policy, "dynamic batching");
                let b = Batcher::start(
                    Arc::clone(m),
                    policy,
                    Arc::clone(&slots),
                    BatchCodes {
                        expired: codes.expired,
                        infer_fail: codes.infer_fail,
                    },
                );
                Some((m.api_path().to_string(), b))
            })
            .collect();
        // Unbounded in type only: every answer in it holds its job's place.
        let (answers_tx, answers_rx) = mpsc::unbounded_channel();
        let servers_ready = models
            .iter()
            .filter_map(|m| m.served().map(|s| s.readiness()))
            .collect();
        DispatcherNode {
            gauges: Arc::new(NodeGauges::new(&opts.queue)),
            servers_ready,
            answers_tx,
            answers_rx: tokio::sync::Mutex::new(answers_rx),
            places: Arc::new(Semaphore::new(opts.max_workers as usize)),
            models,
            codes,
            opts,
            link,
            infer_slots: slots,
            batchers,
            connected: AtomicBool::new(false),
        }
    }

    /// True when every model server the node's models run in is ready.
    fn servers_are_ready(&self) -> bool {
        self.servers_ready.iter().all(|r| *r.borrow())
    }

    /// Returns once every model server is ready.
    async fn servers_ready(&self) {
        loop {
            for r in &self.servers_ready {
                let mut r = r.clone();
                // An error: the server's supervisor is gone; it stays as it is.
                let _ = r.wait_for(|ready| *ready).await;
            }
            if self.servers_are_ready() {
                return;
            }
        }
    }

    /// Returns once some model server is not ready (never when there are none).
    async fn a_server_down(&self) {
        if self.servers_ready.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.servers_ready.iter().map(|r| {
            let mut r = r.clone();
            Box::pin(async move {
                if r.wait_for(|ready| !*ready).await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
        });
        futures::future::select_all(waits).await;
    }

    /// Whether the node has a stream to the queue now (`/healthz`).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The queue this node serves.
    pub fn queue(&self) -> &str {
        &self.opts.queue
    }

    /// Serves until `shutdown` is cancelled and the jobs in hand are answered.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // Jitter spreads the reconnects of many nodes.
        let mut backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).with_jitter();
        // Answers of jobs whose stream was lost, to send on the next one.
        let mut carried = Vec::new();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if !self.servers_are_ready() {
                tracing::info!(queue = %self.opts.queue, "waiting for the model servers to be ready before taking jobs");
                tokio::select! {
                    _ = self.servers_ready() => {}
                    _ = shutdown.cancelled() => return,
                }
                tracing::info!(queue = %self.opts.queue, "model servers ready");
            }
            let started = Instant::now();
            let ended = self.session(&shutdown, &mut carried).await;
            self.connected.store(false, Ordering::Relaxed);
            let why = match ended {
                Ok(SessionEnd::Drained) => return,
                Ok(SessionEnd::Lost(why)) => why,
                Ok(SessionEnd::Paused(why)) => format!("paused: {why}"),
                Err(status) => status.message().to_string(),
            };
            if started.elapsed() > Duration::from_secs(5) {
                backoff.reset();
            }
            let wait = backoff.next_delay();
            tracing::warn!(queue_service = %self.link.describe(), reason = %why, retry_in_ms = wait.as_millis() as u64, "no queue stream; reconnecting");
            if !Backoff::sleep(wait, &shutdown).await {
                return;
            }
        }
    }

    async fn session(
        &self,
        shutdown: &CancellationToken,
        carried: &mut Vec<JobResult>,
    ) -> Result<SessionEnd, tonic::Status> {
        let mut answers = self.answers_rx.lock().await;
        // Jobs of a stream that was lost may still be running; a new stream
        // offers MaxWorkers credits, so wait (up to DrainTimeout) for their
        // places, keeping their answers to send on the new stream. Whatever
        // happens, a job beyond the places ends the stream.
        let all = self.opts.max_workers;
        let give_up = Instant::now() + self.opts.drain_timeout;
        loop {
            tokio::select! {
                biased;
                Some(answered) = answers.recv() => {
                    // A job that did not run was given back with its stream.
                    if let Answer::Result(r) = answered.answer {
                        carried.push(r);
                    }
                }
                places = self.places.acquire_many(all) => {
                    drop(places);
                    break;
                }
                _ = tokio::time::sleep_until(give_up) => break,
            }
        }
        // The lost stream's last MaxWorkers answers, then the answers of the
        // jobs that were running (each from a place): never more than twice
        // MaxWorkers, the newest kept.
        let keep_from = carried.len().saturating_sub(2 * all as usize);
        carried.drain(..keep_from);
        let (tx, rx) = mpsc::channel(self.opts.max_workers as usize + 8);
        let hello = DispatcherMessage {
            kind: Some(dispatcher_message::Kind::Hello(Hello {
                node_id: self.opts.node_id.clone(),
                queue: self.opts.queue.clone(),
                api_paths: self.models.paths(),
                max_workers: self.opts.max_workers,
            })),
        };
        // The channel is empty and has room: this cannot wait.
        let _ = tx.send(hello).await;
        let mut inbound = self.link.open(rx).await?;
        let welcome = match tokio::time::timeout(Duration::from_secs(10), inbound.next()).await {
            Ok(Some(Ok(QueueMessage {
                kind: Some(queue_message::Kind::Welcome(w)),
            }))) => w,
            Ok(Some(Err(s))) => return Err(s),
            _ => return Ok(SessionEnd::Lost("no Welcome from the queue".into())),
        };
        self.gauges.credits_granted(welcome.credits);
        self.connected.store(true, Ordering::Relaxed);
        tracing::info!(session = %welcome.session_id, credits = welcome.credits, queue = %self.opts.queue, "connected to the queue");
        if !carried.is_empty() {
            tracing::info!(
                answers = carried.len(),
                "sending the answers of the lost stream's jobs"
            );
        }
        let mut sent = SentAnswers::new(2 * all as usize);
        let mut resend = std::mem::take(carried).into_iter();
        while let Some(result) = resend.next() {
            sent.sent(&result);
            if tx.send(result_message(result)).await.is_err() {
                // This stream is lost too: the ones sent and the rest go
                // on the next one.
                carried.extend(sent.into_vec());
                carried.extend(resend);
                return Ok(SessionEnd::Lost("queue stream closed".into()));
            }
        }

        // The jobs this stream gave, by request id, until answered.
        let mut in_hand: HashSet<String> = HashSet::new();
        let mut draining = false;
        // Why the stream is being drained to pause (a model server is down).
        let mut pausing: Option<String> = None;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut drain_deadline = far;
        let end = loop {
            tokio::select! {
                biased;
                Some(answered) = answers.recv() => {
                    in_hand.remove(answered.answer.request_id());
                    match answered.answer {
                        Answer::Result(result) => {
                            sent.sent(&result);
                            if tx.send(result_message(result)).await.is_err() {
                                break SessionEnd::Lost("queue stream closed".into());
                            }
                        }
                        // No result: the job goes back to the queue when
                        // this stream ends, so the stream must end.
                        Answer::NotRun { request_id, why } => {
                            tracing::warn!(request_id = %request_id, reason = %why, "a job did not reach its model's server; giving it back to the queue");
                            if pausing.is_none() && !draining {
                                pausing = Some(why);
                                if !self.pause(&tx).await {
                                    break SessionEnd::Lost("queue stream closed".into());
                                }
                            }
                        }
                    }
                    if in_hand.is_empty() {
                        if draining {
                            break SessionEnd::Drained;
                        }
                        if let Some(why) = pausing.take() {
                            break SessionEnd::Paused(why);
                        }
                    }
                }
                _ = self.a_server_down(), if pausing.is_none() && !draining => {
                    let why = "a model server is not ready".to_string();
                    tracing::warn!(in_hand = in_hand.len(), "a model server is not ready: draining the stream until it is");
                    if !self.pause(&tx).await {
                        break SessionEnd::Lost("queue stream closed".into());
                    }
                    if in_hand.is_empty() {
                        break SessionEnd::Paused(why);
                    }
                    pausing = Some(why);
                }
                msg = inbound.next() => match msg {
                    Some(Ok(QueueMessage { kind: Some(queue_message::Kind::Job(job)) })) => {
                        // The credits bound what the queue may send; a queue
                        // that sends more is not trusted with this stream (its
                        // jobs are released when it ends and sent again). So
                        // jobs in hand, and the result and batch channels
                        // they fill, never exceed MaxWorkers.
                        let Ok(place) = Arc::clone(&self.places).try_acquire_owned() else {
                            break SessionEnd::Lost(format!(
                                "the queue sent a job beyond the {} credits",
                                self.opts.max_workers
                            ));
                        };
                        in_hand.insert(job.request_id.clone());
                        let reply =
                            Reply::new(self.answers_tx.clone(), place, Arc::clone(&self.gauges));
                        self.start(job, reply);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(s)) => break SessionEnd::Lost(format!("stream error: {}", s.message())),
                    None => break SessionEnd::Lost("queue closed the stream".into()),
                },
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    tracing::info!(in_hand = in_hand.len(), "shutting down: draining");
                    let drain = DispatcherMessage { kind: Some(dispatcher_message::Kind::Drain(Drain {})) };
                    if tx.send(drain).await.is_err() {
                        break SessionEnd::Lost("queue stream closed".into());
                    }
                    if in_hand.is_empty() {
                        break SessionEnd::Drained;
                    }
                    drain_deadline = Instant::now() + self.opts.drain_timeout;
                }
                _ = tokio::time::sleep_until(drain_deadline), if draining => {
                    tracing::warn!(in_hand = in_hand.len(), "drain timeout: leaving jobs in hand to be redelivered");
                    break SessionEnd::Drained;
                }
            }
        };
        if let SessionEnd::Lost(_) = end {
            // Sent (or about to be), perhaps not stored: they go first on
            // the next stream; the queue ignores the ones it had stored.
            carried.extend(sent.into_vec());
        }
        if let SessionEnd::Drained | SessionEnd::Paused(_) = end {
            // Close our side, then let the queue finish reading our results:
            // it ends its side once it has.
            drop(tx);
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while inbound.next().await.is_some() {}
            })
            .await;
            tracing::info!("drained");
        }
        Ok(end)
    }

    /// Asks the queue for no more jobs on this stream (Drain); false when
    /// the stream is gone.
    async fn pause(&self, tx: &mpsc::Sender<DispatcherMessage>) -> bool {
        let drain = DispatcherMessage {
            kind: Some(dispatcher_message::Kind::Drain(Drain {})),
        };
        tx.send(drain).await.is_ok()
    }

    /// Sends one job to its model's server, on the runtime: the credits
    /// bound how many are in flight.
    fn call_server(&self, model: Arc<dyn crate::model_zoo::Model>, job: Job, done: Reply) {
        let codes = self.codes;
        let span = job.span();
        tokio::spawn(
            async move {
                let id = job.request_id.clone();
                if job.is_expired(unix_ms_now()) {
                    return done.send(JobResult::error(
                        &id,
                        codes.expired,
                        "expired before it ran",
                    ));
                }
                let Some(server) = model.served() else {
                    return done.send(JobResult::error(&id, codes.infer_fail, "no model server"));
                };
                tracing::debug!("job started");
                let started = std::time::Instant::now();
                let call = server.call(&id, job.params_json.into());
                // Nobody waits for an answer after the caller's deadline.
                let left = match job.deadline_unix_ms {
                    0 => None,
                    d => Some(Duration::from_millis(
                        u64::try_from(d.saturating_sub(unix_ms_now())).unwrap_or(0),
                    )),
                };
                let out = match left {
                    None => call.await,
                    Some(left) => match tokio::time::timeout(left, call).await {
                        Ok(out) => out,
                        Err(_) => {
                            return done.send(JobResult::error(
                                &id,
                                codes.expired,
                                "the caller's deadline passed while the model's server ran it",
                            ))
                        }
                    },
                };
                dispatcher_metrics::model_run(&job.api_path, started, 1, 0);
                done.send(served_answer(&id, job.from_payload, out, codes.infer_fail));
            }
            .instrument(span),
        );
    }

    /// An asynchronous item's payload as the model's checked parameters
    /// (`Job.from_payload`); the error answer when they do not pass.
    fn params_from_payload(&self, mut job: Job) -> Result<Job, JobResult> {
        let id = job.request_id.clone();
        let Some(model) = self.models.get(&job.api_path) else {
            return Ok(job);
        };
        let checked = crate::proto::eas::payload_params(&job.params_json)
            .map_err(|e| ModelError::new(e.to_string()))
            .and_then(|p| model.check(p));
        let params = checked.map_err(|e| {
            JobResult::error(
                &id,
                e.code.unwrap_or(self.opts.api_entry_fail_code),
                e.message,
            )
        })?;
        job.params_json = serde_json::to_vec(&params).map_err(|e| {
            JobResult::error(&id, self.codes.infer_fail, format!("parameters: {e}"))
        })?;
        job.from_payload = false;
        Ok(job)
    }

    /// Runs one job off the reactor; its result goes to `done`.
    fn start(&self, job: Job, done: Reply) {
        let served = self
            .models
            .get(&job.api_path)
            .filter(|m| m.served().is_some())
            .cloned();
        if let Some(model) = served {
            // A model server takes a PAI-EAS payload as it is, so the batcher
            // or the call gets the job unchanged.
            if let Some(batcher) = self.batchers.get(&job.api_path) {
                return batcher.submit(job, done);
            }
            return self.call_server(model, job, done);
        }
        let job = if job.from_payload {
            match self.params_from_payload(job) {
                Ok(job) => job,
                Err(refused) => return done.send(refused),
            }
        } else {
            job
        };
        if let Some(batcher) = self.batchers.get(&job.api_path) {
            batcher.submit(job, done);
            return;
        }
        let model = self.models.get(&job.api_path).cloned();
        let slots = Arc::clone(&self.infer_slots);
        let codes = self.codes;
        let span = job.span();
        tokio::spawn(
            async move {
                let id = job.request_id.clone();
                let result: Answer = if job.is_expired(unix_ms_now()) {
                    JobResult::error(&id, codes.expired, "expired before it ran").into()
                } else {
                    match model {
                        None => JobResult::error(
                            &id,
                            codes.unknown_api,
                            format!("this dispatcher has no model at {}", job.api_path),
                        )
                        .into(),
                        Some(model) => match serde_json::from_slice::<Params>(&job.params_json) {
                            Err(e) => JobResult::error(
                                &id,
                                codes.infer_fail,
                                format!("parameters are not a JSON object: {e}"),
                            )
                            .into(),
                            Ok(params) => {
                                let out = run_model(model, &id, params, slots).await;
                                model_answer(&id, out, codes.infer_fail)
                            }
                        },
                    }
                };
                done.send(result);
            }
            .instrument(span),
        );
    }
}

fn result_message(result: JobResult) -> DispatcherMessage {
    DispatcherMessage {
        kind: Some(dispatcher_message::Kind::Result(result)),
    }
}
