//! The PAI-EAS queues: a watch's window, and the sink's backpressure on the
//! input.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Settings;
use crate::proto::JobResult;
use crate::queue::eas::store::{Item, QueueRef};
use crate::queue::eas::{EasError, EasQueues, MemoryEasStore, ResultCodes, WatchSpec};
use crate::queue::source::JobSource;

fn queues(sink: &str) -> Arc<EasQueues> {
    let yaml = format!(
        "AsyncServices:\n  svc:\n    model: /api/echo\n    queue:\n      source: {{max_length: 100}}\n      sink: {sink}\n"
    );
    let settings = Settings::from_yaml(&yaml, Path::new("test.yaml")).expect("settings");
    EasQueues::new(
        Arc::new(MemoryEasStore::new()),
        &settings,
        ResultCodes {
            dead_letter: 9998,
            max_deliveries: 3,
        },
    )
    .expect("queues")
}

async fn put(q: &EasQueues, queue: &QueueRef, data: &str) -> u64 {
    q.put(queue, data.as_bytes().to_vec(), BTreeMap::new(), 0)
        .await
        .expect("put")
        .0
}

/// The next item within a (virtual) second.
async fn next(rx: &mut mpsc::Receiver<Result<Item, EasError>>) -> Option<Item> {
    match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
        Ok(Some(r)) => Some(r.expect("watch failed")),
        Ok(None) | Err(_) => None,
    }
}

fn watch(consumer: &str, window: u32) -> WatchSpec {
    WatchSpec {
        consumer: consumer.into(),
        from: 0,
        window,
        auto_commit: false,
        tags: BTreeMap::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_watch_holds_at_most_its_window_until_it_commits() {
    let q = queues("{max_length: 100}");
    let sink = QueueRef::sink("svc");
    for i in 0..5 {
        put(&q, &sink, &format!("r{i}")).await;
    }
    let mut rx = q.watch(&sink, watch("w", 2)).await.expect("watch");
    let a = next(&mut rx).await.expect("first");
    let b = next(&mut rx).await.expect("second");
    assert!(next(&mut rx).await.is_none(), "window 2: two held");
    assert_eq!(q.commit(&sink, &[a.index]).await.unwrap(), 1);
    let c = next(&mut rx)
        .await
        .expect("a committed item frees the window");
    assert!(next(&mut rx).await.is_none());
    assert_eq!(
        [a.data, b.data, c.data].map(|d| String::from_utf8(d).unwrap()),
        ["r0", "r1", "r2"]
    );

    // One watch per consumer.
    assert!(matches!(
        q.watch(&sink, watch("w", 2)).await,
        Err(EasError::AlreadyWatching(_))
    ));
    // The watch ends with its receiver; what it held goes to the next watch.
    drop(rx);
    let mut again = None;
    for _ in 0..10 {
        match q.watch(&sink, watch("w", 10)).await {
            Ok(rx) => {
                again = Some(rx);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut rx = again.expect("the consumer can watch again");
    let mut seen = Vec::new();
    while let Some(item) = next(&mut rx).await {
        seen.push(String::from_utf8(item.data).unwrap());
    }
    assert_eq!(
        seen,
        ["r1", "r2", "r3", "r4"],
        "uncommitted items come again"
    );
    assert!(matches!(
        q.watch(&sink, watch("zero", 0)).await,
        Err(EasError::Invalid(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_full_sink_holds_the_input_back_and_loses_nothing() {
    let q = queues("{max_length: 2}");
    let (input, sink) = (QueueRef::input("svc"), QueueRef::sink("svc"));
    for i in 0..5 {
        put(&q, &input, &format!("{{\"x\": {i}}}")).await;
    }
    let source = q.input_source("svc").expect("source");
    let wait = Duration::from_millis(100);
    let leases = source.lease("d", 10, wait).await.unwrap();
    assert_eq!(leases.len(), 2, "as many as the sink has room for");
    assert!(
        source.lease("d", 10, wait).await.unwrap().is_empty(),
        "results in flight count against the sink"
    );
    let done: Vec<_> = leases
        .into_iter()
        .map(|l| {
            let r = JobResult::output(&l.job.request_id, br#"{"y": 1}"#.to_vec());
            (l, r)
        })
        .collect();
    source.complete_batch(&done).await.unwrap();
    assert!(
        source.lease("d", 10, wait).await.unwrap().is_empty(),
        "the sink is full"
    );
    let attrs = q.attributes(&input).await.unwrap();
    assert_eq!(attrs.get("stream.length").map(String::as_str), Some("3"));

    // A consumer commits: room for two more.
    let items = q
        .get(
            &sink,
            crate::queue::eas::store::Selector::From(0),
            10,
            &BTreeMap::new(),
            false,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(items.len(), 2);
    let indexes: Vec<u64> = items.iter().map(|i| i.index).collect();
    q.commit(&sink, &indexes).await.unwrap();
    assert_eq!(source.lease("d", 10, wait).await.unwrap().len(), 2);
    // A session that ends gives its items back.
    assert_eq!(source.release("d").await.unwrap(), 2);
    assert_eq!(source.lease("e", 10, wait).await.unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_client_window_beyond_the_server_cap_holds_at_most_the_cap() {
    let q = queues("{max_length: 2000}");
    let sink = QueueRef::sink("svc");
    for i in 0..1_500 {
        put(&q, &sink, &format!("r{i}")).await;
    }
    // A watcher that asks for the largest window and never commits.
    let mut rx = q.watch(&sink, watch("w", u32::MAX)).await.expect("watch");
    let mut held = 0u32;
    while next(&mut rx).await.is_some() {
        held += 1;
    }
    assert_eq!(
        held,
        crate::proto::eas::MAX_WATCH_WINDOW,
        "the server's window"
    );
}
