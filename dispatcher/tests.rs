//! Unit tests of the dispatcher node's state machine, against a queue played
//! by the test through an in-process [`DispatchLink`]: Hello, jobs answered
//! with their result or code, drain on shutdown, reconnect when the stream
//! is lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::node::{DispatcherNode, NodeOptions};
use crate::model_zoo::{Echo, ModelSet};
use crate::proto::{
    dispatcher_message, job_result, queue_message, unix_ms_now, DispatchLink, DispatcherMessage,
    Hello, Inbound, Job, JobResult, QueueMessage, Welcome,
};

/// One stream the node opened: what it sends, and how the test answers.
struct Stream {
    from_node: mpsc::Receiver<DispatcherMessage>,
    to_node: mpsc::Sender<Result<QueueMessage, Status>>,
}

/// Hands every stream the node opens to the test.
struct TestLink(mpsc::UnboundedSender<Stream>);

#[async_trait]
impl DispatchLink for TestLink {
    async fn open(&self, outbound: mpsc::Receiver<DispatcherMessage>) -> Result<Inbound, Status> {
        let (to_node, inbound) = mpsc::channel(64);
        self.0
            .send(Stream {
                from_node: outbound,
                to_node,
            })
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(ReceiverStream::new(inbound).boxed())
    }

    fn describe(&self) -> String {
        "test queue".into()
    }
}

const UNKNOWN_API: i32 = 9709;
const EXPIRED: i32 = 9997;

fn options(max_workers: u32) -> NodeOptions {
    NodeOptions {
        node_id: "n1".into(),
        queue: "q0".into(),
        max_workers,
        infer_threads: max_workers as usize,
        drain_timeout: Duration::from_secs(5),
        unknown_api_code: UNKNOWN_API,
        infer_fail_code: 9998,
        api_entry_fail_code: 9701,
        expired_code: EXPIRED,
    }
}

/// A node on a test link, running until `stop`.
fn start(
    max_workers: u32,
) -> (
    mpsc::UnboundedReceiver<Stream>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let models = ModelSet::new(vec![Box::new(Echo)]).expect("models");
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let node = Arc::new(DispatcherNode::new(
        Arc::new(models),
        options(max_workers),
        Arc::new(TestLink(streams_tx)),
    ));
    let stop = CancellationToken::new();
    let run = tokio::spawn(node.run(stop.clone()));
    (streams, stop, run)
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = Option<T>>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 10 s"))
}

/// Accepts a stream: checks Hello, sends Welcome.
async fn accept(streams: &mut mpsc::UnboundedReceiver<Stream>, max_workers: u32) -> Stream {
    let mut s = within("stream", streams.recv()).await.expect("a stream");
    match within("hello", s.from_node.recv()).await {
        Some(DispatcherMessage {
            kind:
                Some(dispatcher_message::Kind::Hello(Hello {
                    node_id,
                    queue,
                    api_paths,
                    max_workers: m,
                })),
        }) => {
            assert_eq!(
                (node_id.as_str(), queue.as_str(), m),
                ("n1", "q0", max_workers)
            );
            assert_eq!(api_paths, ["/api/echo"]);
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    s.send(queue_message::Kind::Welcome(Welcome {
        session_id: "s1".into(),
        credits: max_workers,
    }))
    .await;
    s
}

impl Stream {
    /// Shutdown as the queue sees it: Drain, the end of the node's side;
    /// then the queue ends its side.
    async fn drained(mut self) {
        assert!(matches!(
            self.next().await,
            Some(dispatcher_message::Kind::Drain(_))
        ));
        assert!(self.next().await.is_none(), "the node ends its side");
    }

    async fn send(&self, kind: queue_message::Kind) {
        self.to_node
            .send(Ok(QueueMessage { kind: Some(kind) }))
            .await
            .expect("node gone");
    }

    async fn job(&self, id: &str, api_path: &str, params: &str, deadline_unix_ms: i64) {
        self.send(queue_message::Kind::Job(Job {
            request_id: id.into(),
            queue: "q0".into(),
            api_path: api_path.into(),
            params_json: params.as_bytes().to_vec(),
            deadline_unix_ms,
            deliveries: 1,
            ..Default::default()
        }))
        .await;
    }

    async fn next(&mut self) -> Option<dispatcher_message::Kind> {
        within("message", self.from_node.recv())
            .await
            .and_then(|m| m.kind)
    }

    async fn result(&mut self) -> JobResult {
        match self.next().await {
            Some(dispatcher_message::Kind::Result(r)) => r,
            other => panic!("expected a result, got {other:?}"),
        }
    }
}

fn code(r: &JobResult) -> Option<i32> {
    match &r.outcome {
        Some(job_result::Outcome::Error(e)) => Some(e.code),
        _ => None,
    }
}

#[tokio::test]
async fn every_job_is_answered_with_its_output_or_its_code() {
    let (mut streams, stop, run) = start(4);
    let mut s = accept(&mut streams, 4).await;
    s.job("ok", "/api/echo", r#"{"text":"hi"}"#, 0).await;
    s.job("nobody", "/api/none", "{}", 0).await;
    s.job("late", "/api/echo", "{}", unix_ms_now() - 1).await;
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(s.result().await);
    }
    results.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    assert_eq!(results[0].request_id, "late");
    assert_eq!(
        code(&results[0]),
        Some(EXPIRED),
        "expired: answered, not run"
    );
    assert_eq!(code(&results[1]), Some(UNKNOWN_API));
    match &results[2].outcome {
        Some(job_result::Outcome::OutputJson(out)) => {
            let v: serde_json::Value = serde_json::from_slice(out).unwrap();
            assert_eq!(v["text"], "hi");
        }
        other => panic!("{other:?}"),
    }
    stop.cancel();
    s.drained().await;
    within("end", async { run.await.ok() }).await;
}

#[tokio::test]
async fn shutdown_drains_the_jobs_in_hand_then_ends_the_stream() {
    let (mut streams, stop, run) = start(2);
    let mut s = accept(&mut streams, 2).await;
    s.job("slow", "/api/echo", r#"{"sleep_ms":300}"#, 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    assert!(
        matches!(s.next().await, Some(dispatcher_message::Kind::Drain(_))),
        "Drain first: no more jobs"
    );
    assert_eq!(s.result().await.request_id, "slow", "then the job in hand");
    assert!(s.next().await.is_none(), "then the stream ends");
    drop(s);
    within("end", async { run.await.ok() }).await;
}

#[tokio::test]
async fn a_lost_stream_is_opened_again_with_a_new_hello() {
    let (mut streams, stop, run) = start(3);
    let s = accept(&mut streams, 3).await;
    drop(s); // the queue went away
    let mut again = accept(&mut streams, 3).await;
    again.job("after", "/api/echo", "{}", 0).await;
    assert_eq!(again.result().await.request_id, "after");
    stop.cancel();
    again.drained().await;
    within("end", async { run.await.ok() }).await;
}

#[tokio::test]
async fn a_queue_that_sends_beyond_the_credits_loses_the_stream() {
    let (mut streams, stop, run) = start(1);
    let mut s = accept(&mut streams, 1).await;
    s.job("first", "/api/echo", r#"{"sleep_ms":200}"#, 0).await;
    s.job("second", "/api/echo", "{}", 0).await;
    // The node ends the stream without running the job beyond its credit.
    let mut results = Vec::new();
    while let Some(kind) = s.next().await {
        if let dispatcher_message::Kind::Result(r) = kind {
            results.push(r.request_id);
        }
    }
    assert!(!results.contains(&"second".to_string()), "{results:?}");
    drop(s);
    // ... and opens a new one, where the credits hold again; the answer of
    // the job it was running comes first, sent again.
    let mut again = accept(&mut streams, 1).await;
    assert_eq!(again.result().await.request_id, "first");
    again.job("third", "/api/echo", "{}", 0).await;
    assert_eq!(again.result().await.request_id, "third");
    stop.cancel();
    again.drained().await;
    within("end", async { run.await.ok() }).await;
}

#[tokio::test]
async fn a_new_stream_waits_for_the_jobs_of_a_lost_one_and_sends_their_answers_first() {
    let (mut streams, stop, run) = start(1);
    let s = accept(&mut streams, 1).await;
    let sent = tokio::time::Instant::now();
    s.job("slow", "/api/echo", r#"{"sleep_ms":600}"#, 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The stream is lost while the job runs.
    drop(s);
    // The next stream (whose Hello offers MaxWorkers credits) opens only
    // once that job has given its place back.
    let mut again = accept(&mut streams, 1).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(550),
        "a new stream after {:?}, while the lost stream's job still ran",
        sent.elapsed()
    );
    // Its answer was kept and comes first on the new stream: the queue
    // stores it, and the job does not run again.
    assert_eq!(again.result().await.request_id, "slow");
    again.job("next", "/api/echo", "{}", 0).await;
    assert_eq!(again.result().await.request_id, "next");
    stop.cancel();
    again.drained().await;
    within("end", async { run.await.ok() }).await;
}

#[tokio::test]
async fn answers_sent_just_before_the_stream_was_lost_are_sent_again_on_the_next() {
    let (mut streams, stop, run) = start(2);
    let mut s = accept(&mut streams, 2).await;
    s.job("a", "/api/echo", "{}", 0).await;
    s.job("b", "/api/echo", "{}", 0).await;
    let mut got = vec![s.result().await.request_id, s.result().await.request_id];
    // The queue instance read both answers and died before storing them.
    drop(s);
    let mut again = accept(&mut streams, 2).await;
    let mut resent = vec![
        again.result().await.request_id,
        again.result().await.request_id,
    ];
    got.sort();
    resent.sort();
    assert_eq!(
        resent, got,
        "both go again: the queue stores or ignores them"
    );
    again.job("c", "/api/echo", "{}", 0).await;
    assert_eq!(again.result().await.request_id, "c");
    stop.cancel();
    again.drained().await;
    within("end", async { run.await.ok() }).await;
}
