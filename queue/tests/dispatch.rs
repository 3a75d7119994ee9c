//! Dispatcher sessions: credits and their return, leases released when a
//! stream ends, expiry, Hello and Drain.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use crate::proto::{
    dispatcher_message, job_result, queue_message, unix_ms_now, DispatcherMessage, Drain, Hello,
    Job, JobResult, QueueMessage,
};
use crate::queue::jobs::{JobStore, JobStoreOptions, MemoryJobStore, ResultWaiters};
use crate::queue::service::{QueueService, ServiceOptions};
use crate::queue::session::SessionOptions;

const QUEUE: &str = "q0";
const EXPIRED: i32 = 9997;

struct Harness {
    service: Arc<QueueService>,
    store: Arc<MemoryJobStore>,
    waiters: Arc<ResultWaiters>,
}

fn harness() -> Harness {
    let waiters = ResultWaiters::new();
    let store = Arc::new(MemoryJobStore::new(
        JobStoreOptions::default(),
        Arc::clone(&waiters),
    ));
    let opts = ServiceOptions {
        session: SessionOptions {
            lease_wait: Duration::from_millis(200),
            expired_code: EXPIRED,
            hello_timeout: Duration::from_secs(1),
            ..SessionOptions::default()
        },
        ..ServiceOptions::default()
    };
    let jobs: Arc<dyn JobStore> = store.clone();
    Harness {
        service: QueueService::new(
            jobs,
            Arc::new(crate::queue::seen::MemorySeenKeys::new(1000)),
            Arc::clone(&waiters),
            opts,
            None,
        ),
        store,
        waiters,
    }
}

fn job(id: &str, deadline_unix_ms: i64) -> Job {
    Job {
        request_id: id.into(),
        queue: QUEUE.into(),
        api_path: "/api/echo".into(),
        params_json: b"{}".to_vec(),
        deadline_unix_ms,
        // The instance whose caller waits: this one (ServiceOptions' default id).
        reply_to: ServiceOptions::default().instance_id,
        ..Default::default()
    }
}

/// The caller's answer, within a (virtual) minute.
async fn answered(waiter: &mut crate::queue::jobs::waiters::Waiter) -> JobResult {
    tokio::time::timeout(Duration::from_secs(60), waiter.recv())
        .await
        .expect("answered in time")
        .expect("answered, not replaced")
}

/// A dispatcher's end of one Dispatch stream.
struct Dispatcher {
    tx: Option<mpsc::Sender<Result<DispatcherMessage, Status>>>,
    rx: mpsc::Receiver<Result<QueueMessage, Status>>,
}

impl Dispatcher {
    /// Opens a stream; sends Hello with `max_workers` unless it is 0.
    async fn open(h: &Harness, max_workers: u32) -> Dispatcher {
        let (tx, inbound) = mpsc::channel(64);
        let rx = h.service.dispatch(ReceiverStream::new(inbound).boxed());
        let mut d = Dispatcher { tx: Some(tx), rx };
        if max_workers > 0 {
            d.send(dispatcher_message::Kind::Hello(Hello {
                node_id: "node".into(),
                queue: QUEUE.into(),
                api_paths: vec!["/api/echo".into()],
                max_workers,
            }))
            .await;
            match d.next().await {
                Some(queue_message::Kind::Welcome(w)) => assert_eq!(w.credits, max_workers),
                other => panic!("expected Welcome, got {other:?}"),
            }
        }
        d
    }

    async fn send(&self, kind: dispatcher_message::Kind) {
        let tx = self.tx.as_ref().expect("stream open");
        tx.send(Ok(DispatcherMessage { kind: Some(kind) }))
            .await
            .expect("session gone");
    }

    async fn answer(&self, id: &str) {
        self.send(dispatcher_message::Kind::Result(JobResult::output(
            id,
            br#"{"ok":true}"#.to_vec(),
        )))
        .await;
    }

    /// The next message within a (virtual) second.
    async fn next(&mut self) -> Option<queue_message::Kind> {
        match tokio::time::timeout(Duration::from_secs(1), self.rx.recv()).await {
            Ok(Some(Ok(m))) => m.kind,
            Ok(Some(Err(status))) => panic!("stream failed: {status}"),
            Ok(None) | Err(_) => None,
        }
    }

    async fn next_job(&mut self) -> Option<Job> {
        match self.next().await {
            Some(queue_message::Kind::Job(j)) => Some(j),
            None => None,
            other => panic!("expected a job, got {other:?}"),
        }
    }

    /// Ends the stream as a dispatcher that died would.
    fn close(&mut self) {
        self.tx = None;
    }
}

#[tokio::test(start_paused = true)]
async fn credits_bound_the_jobs_in_hand_and_come_back_with_results() {
    let h = harness();
    for i in 0..5 {
        h.store.enqueue(&job(&format!("j{i}"), 0)).await.unwrap();
    }
    let mut d = Dispatcher::open(&h, 2).await;
    let first = d.next_job().await.expect("a job");
    let second = d.next_job().await.expect("a second job");
    assert_eq!(
        (first.request_id.as_str(), second.request_id.as_str()),
        ("j0", "j1")
    );
    assert!(d.next_job().await.is_none(), "two credits, two jobs");

    // A result for a job this session does not hold gives no credit back.
    d.answer("not-mine").await;
    assert!(d.next_job().await.is_none());

    let mut waiter = h.waiters.register("j0");
    d.answer("j0").await;
    let third = d.next_job().await.expect("a credit came back");
    assert_eq!(third.request_id, "j2");
    assert!(d.next_job().await.is_none(), "one result, one credit");
    let result = answered(&mut waiter).await;
    assert!(matches!(
        result.outcome,
        Some(job_result::Outcome::OutputJson(_))
    ));

    // A second result for the same job gives nothing back either.
    d.answer("j0").await;
    assert!(d.next_job().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_ends_returns_its_jobs_to_the_next_dispatcher() {
    let h = harness();
    for i in 0..3 {
        h.store.enqueue(&job(&format!("j{i}"), 0)).await.unwrap();
    }
    let mut a = Dispatcher::open(&h, 3).await;
    for _ in 0..3 {
        assert_eq!(a.next_job().await.expect("a job").deliveries, 1);
    }
    a.close();
    let mut b = Dispatcher::open(&h, 3).await;
    let mut again = Vec::new();
    while let Some(j) = b.next_job().await {
        assert_eq!(j.deliveries, 2, "{} is a redelivery", j.request_id);
        again.push(j.request_id);
    }
    again.sort();
    assert_eq!(again, ["j0", "j1", "j2"]);
    let depth = h.store.depth(Some(QUEUE)).await.unwrap();
    assert_eq!((depth[0].ready, depth[0].leased), (0, 3));
}

#[tokio::test(start_paused = true)]
async fn an_expired_job_is_answered_and_not_sent() {
    let h = harness();
    let mut waiter = h.waiters.register("late");
    h.store
        .enqueue(&job("late", unix_ms_now() - 1))
        .await
        .unwrap();
    h.store.enqueue(&job("fresh", 0)).await.unwrap();
    let mut d = Dispatcher::open(&h, 4).await;
    assert_eq!(
        d.next_job().await.expect("the fresh job").request_id,
        "fresh"
    );
    assert!(d.next_job().await.is_none());
    match answered(&mut waiter).await.outcome {
        Some(job_result::Outcome::Error(e)) => assert_eq!(e.code, EXPIRED),
        other => panic!("expected the expiry code, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_must_open_with_hello() {
    let h = harness();
    let mut d = Dispatcher::open(&h, 0).await;
    d.answer("j0").await;
    match d.rx.recv().await {
        Some(Err(status)) => assert_eq!(status.code(), Code::InvalidArgument),
        other => panic!("expected an error, got {other:?}"),
    }
    // Silence past the Hello timeout ends the stream too.
    let mut quiet = Dispatcher::open(&h, 0).await;
    match quiet.rx.recv().await {
        Some(Err(status)) => assert_eq!(status.code(), Code::InvalidArgument),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn after_drain_no_new_job_is_sent_and_results_still_count() {
    let h = harness();
    h.store.enqueue(&job("j0", 0)).await.unwrap();
    let mut d = Dispatcher::open(&h, 4).await;
    assert!(d.next_job().await.is_some());
    d.send(dispatcher_message::Kind::Drain(Drain {})).await;
    h.store.enqueue(&job("j1", 0)).await.unwrap();
    assert!(d.next_job().await.is_none(), "draining: nothing new");
    let mut waiter = h.waiters.register("j0");
    d.answer("j0").await;
    answered(&mut waiter).await;
    let depth = h.store.depth(Some(QUEUE)).await.unwrap();
    assert_eq!((depth[0].ready, depth[0].leased), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_request_id_stored_twice_runs_once_and_returns_both_credits() {
    // A gateway's failover resend can store the same request id twice.
    let h = harness();
    h.store.enqueue(&job("dup", 0)).await.unwrap();
    h.store.enqueue(&job("dup", 0)).await.unwrap();
    h.store.enqueue(&job("other", 0)).await.unwrap();
    let mut d = Dispatcher::open(&h, 3).await;
    let mut sent = Vec::new();
    while let Some(j) = d.next_job().await {
        sent.push(j.request_id);
    }
    assert_eq!(sent, ["dup", "other"], "the duplicate is not sent again");
    let mut waiter = h.waiters.register("dup");
    d.answer("dup").await;
    answered(&mut waiter).await;
    // Both leases of "dup" are done: two credits back, one still out ("other").
    for id in ["a", "b", "c"] {
        h.store.enqueue(&job(id, 0)).await.unwrap();
    }
    let mut more = Vec::new();
    while let Some(j) = d.next_job().await {
        more.push(j.request_id);
    }
    assert_eq!(more, ["a", "b"]);
}
