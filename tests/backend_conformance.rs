//! One conformance suite for both queue backends: the in-memory one and the
//! Redis Streams one (against a real redis-server this test starts). Every
//! case runs on each backend with the same expectations; the Redis-only cases
//! at the end cover what only a shared store has (several instances, a
//! consumer that vanishes without releasing).

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inferq::proto::{job_result, Job, JobResult};
use inferq::queue::{
    Enqueued, JobStore, JobStoreOptions, MemoryJobStore, RedisJobStore, RedisOptions,
    ResultWaiters, StoreError,
};
use redis::Value;
use tokio_util::sync::CancellationToken;

const NO_WAIT: Duration = Duration::from_millis(5);

fn job(id: &str, queue: &str, priority: u32, reply_to: &str) -> Job {
    Job {
        request_id: id.into(),
        queue: queue.into(),
        api_path: "/api/echo".into(),
        params_json: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        deadline_unix_ms: 0,
        deliveries: 0,
        priority,
        reply_to: reply_to.into(),
        from_payload: false,
        join_only: false,
        ..Job::default()
    }
}

fn ids(leases: &[inferq::queue::Lease]) -> Vec<String> {
    leases.iter().map(|l| l.job.request_id.clone()).collect()
}

/// One backend under test, with its waiters and instance id.
struct Subject {
    backend: Arc<dyn JobStore>,
    waiters: Arc<ResultWaiters>,
    instance: String,
    _stop: Option<tokio_util::sync::DropGuard>,
}

type Make = Box<dyn Fn(JobStoreOptions) -> Pin<Box<dyn Future<Output = Subject>>>>;

fn opts(instance: &str, max_len: usize, max_deliveries: u32) -> JobStoreOptions {
    JobStoreOptions {
        instance_id: instance.into(),
        max_queue_length: max_len,
        max_deliveries,
        ..JobStoreOptions::default()
    }
}

fn memory() -> Make {
    Box::new(|o: JobStoreOptions| {
        Box::pin(async move {
            let waiters = ResultWaiters::new();
            Subject {
                instance: o.instance_id.clone(),
                backend: Arc::new(MemoryJobStore::new(o, Arc::clone(&waiters))),
                waiters,
                _stop: None,
            }
        })
    })
}

fn redis_options(addr: &str, prefix: &str) -> RedisOptions {
    RedisOptions {
        server: addr.to_string(),
        password: String::new(),
        pool_size: 8,
        reclaim_idle: Duration::from_millis(400),
        key_prefix: prefix.to_string(),
    }
}

/// Each case gets its own key prefix, so one redis-server serves them all.
fn redis(addr: String) -> Make {
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Box::new(move |o: JobStoreOptions| {
        let addr = addr.clone();
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            let waiters = ResultWaiters::new();
            let stop = CancellationToken::new();
            let instance = o.instance_id.clone();
            let backend = RedisJobStore::start(
                redis_options(&addr, &format!("t{n}:")),
                o,
                Arc::clone(&waiters),
                stop.clone(),
            )
            .expect("redis backend");
            // Results reach waiters over pub/sub: be subscribed before use.
            assert!(backend.wait_until_reachable(&stop).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Subject {
                backend,
                waiters,
                instance,
                _stop: Some(stop.drop_guard()),
            }
        })
    })
}

async fn enqueue_lease_complete(make: &Make) {
    let s = make(opts("i1", 10, 3)).await;
    let b = &s.backend;
    let mut waiter = s.waiters.register("a");
    b.enqueue(&job("a", "q", 0, &s.instance)).await.unwrap();
    b.enqueue(&job("b", "q", 0, &s.instance)).await.unwrap();
    let first = b.lease("q", "c1", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&first), ["a"], "lease respects max and order");
    assert_eq!(first[0].job.deliveries, 1);
    assert_eq!(first[0].job.params_json, br#"{"id":"a"}"#, "job intact");
    let d = b.depth(Some("q")).await.unwrap();
    assert_eq!((d[0].ready, d[0].leased), (1, 1), "depth while leased");
    assert!(b.result("a").await.unwrap().is_none(), "no result yet");
    b.complete(&first[0], JobResult::output("a", b"{\"ok\":1}".to_vec()))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter.recv())
        .await
        .expect("caller woken")
        .expect("result");
    assert_eq!(got.request_id, "a");
    let stored = b.result("a").await.unwrap().expect("kept for lookup by id");
    assert_eq!(
        stored.outcome,
        Some(job_result::Outcome::OutputJson(b"{\"ok\":1}".to_vec()))
    );
    let d = b.depth(Some("q")).await.unwrap();
    assert_eq!(
        (d[0].ready, d[0].leased),
        (1, 0),
        "acknowledged job is gone"
    );
    let rest = b.lease("q", "c1", 5, NO_WAIT).await.unwrap();
    assert_eq!(ids(&rest), ["b"], "completed job is not handed out again");
}

async fn fifo_with_priority(make: &Make) {
    let s = make(opts("i1", 10, 3)).await;
    let b = &s.backend;
    for (id, p) in [("a", 0), ("b", 0), ("c", 1), ("d", 0), ("e", 1)] {
        b.enqueue(&job(id, "q", p, &s.instance)).await.unwrap();
    }
    let got = b.lease("q", "c1", 10, NO_WAIT).await.unwrap();
    assert_eq!(ids(&got), ["c", "e", "a", "b", "d"]);
}

async fn bounded(make: &Make) {
    let s = make(opts("i1", 3, 3)).await;
    let b = &s.backend;
    for id in ["a", "b", "c"] {
        b.enqueue(&job(id, "q", 0, &s.instance)).await.unwrap();
    }
    let full = b.enqueue(&job("d", "q", 1, &s.instance)).await.unwrap_err();
    assert!(
        matches!(full, StoreError::QueueFull { limit: 3, .. }),
        "{full:?}"
    );
    let l = b.lease("q", "c1", 1, NO_WAIT).await.unwrap();
    assert!(
        b.enqueue(&job("d", "q", 0, &s.instance)).await.is_err(),
        "a leased job still counts against the limit"
    );
    b.complete(&l[0], JobResult::output("a", b"{}".to_vec()))
        .await
        .unwrap();
    b.enqueue(&job("d", "q", 0, &s.instance))
        .await
        .expect("room after a completion");
    // Another queue has its own limit.
    b.enqueue(&job("x", "other", 0, &s.instance)).await.unwrap();
}

async fn redelivery_after_release(make: &Make) {
    let s = make(opts("i1", 10, 3)).await;
    let b = &s.backend;
    b.enqueue(&job("a", "q", 0, &s.instance)).await.unwrap();
    b.enqueue(&job("b", "q", 0, &s.instance)).await.unwrap();
    let l = b.lease("q", "c1", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["a"]);
    assert_eq!(b.release("q", "c1").await.unwrap(), 1);
    assert_eq!(
        b.release("q", "c1").await.unwrap(),
        0,
        "nothing left to release"
    );
    let d = b.depth(Some("q")).await.unwrap();
    assert_eq!(d[0].ready + d[0].leased, 2, "the released job is stored");
    let l = b.lease("q", "c2", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["a"], "released job comes back first");
    assert_eq!(l[0].job.deliveries, 2, "second delivery counted");
    let l2 = b.lease("q", "c2", 5, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l2), ["b"]);
}

async fn dead_letter_and_requeue(make: &Make) {
    let s = make(opts("i1", 10, 2)).await;
    let b = &s.backend;
    let mut waiter = s.waiters.register("a");
    b.enqueue(&job("a", "q", 0, &s.instance)).await.unwrap();
    b.enqueue(&job("b", "q", 0, &s.instance)).await.unwrap();
    for consumer in ["c1", "c2"] {
        let l = b.lease("q", consumer, 1, NO_WAIT).await.unwrap();
        assert_eq!(ids(&l), ["a"]);
        assert_eq!(b.release("q", consumer).await.unwrap(), 1);
    }
    // A third delivery would pass max_deliveries = 2.
    let l = b.lease("q", "c3", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["b"], "the dead job is skipped");
    let r = tokio::time::timeout(Duration::from_secs(5), waiter.recv())
        .await
        .expect("caller answered")
        .expect("result");
    match r.outcome {
        Some(job_result::Outcome::Error(e)) => {
            assert_eq!(e.code, 9998);
            assert!(e.message.contains("2 deliveries"), "{}", e.message);
        }
        other => panic!("expected InferFail, got {other:?}"),
    }
    let dead = b.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.request_id, "a");
    assert!(dead[0].reason.contains("deliveries"));
    assert!(dead[0].at_unix_ms > 0);
    assert_eq!(b.requeue_dead("q", &["nope".into()]).await.unwrap(), 0);
    assert_eq!(b.requeue_dead("q", &[]).await.unwrap(), 1);
    assert!(b.dead_letters("q", 10).await.unwrap().is_empty());
    let l = b.lease("q", "c4", 5, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["a"], "re-queued");
    assert_eq!(l[0].job.deliveries, 1, "delivery count starts again");
    assert_eq!(l[0].job.deadline_unix_ms, 0, "deadline cleared");
}

async fn lease_waits_and_wakes(make: &Make) {
    let s = make(opts("i1", 10, 3)).await;
    let b = Arc::clone(&s.backend);
    // Longer than the Redis store's reclaim interval (200 ms here): an empty
    // lease still waits out the whole time it was given.
    let t = Instant::now();
    let none = b
        .lease("q", "c1", 1, Duration::from_millis(700))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(690),
        "waited {:?}",
        t.elapsed()
    );
    let b2 = Arc::clone(&b);
    let waiting =
        tokio::spawn(async move { b2.lease("q", "c1", 4, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = Instant::now();
    b.enqueue(&job("a", "q", 0, &s.instance)).await.unwrap();
    let got = waiting.await.unwrap().unwrap();
    assert_eq!(ids(&got), ["a"]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a waiting lease is woken by the enqueue, not by its timeout"
    );
}

async fn results_by_id_and_queues_apart(make: &Make) {
    let s = make(opts("i1", 10, 3)).await;
    let b = &s.backend;
    assert!(b.result("never").await.unwrap().is_none());
    b.enqueue(&job("q1-a", "q1", 0, &s.instance)).await.unwrap();
    b.enqueue(&job("q2-a", "q2", 0, &s.instance)).await.unwrap();
    let l = b.lease("q1", "c1", 10, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["q1-a"], "queues are separate");
    b.complete(&l[0], JobResult::error("q1-a", 1234, "bad"))
        .await
        .unwrap();
    match b.result("q1-a").await.unwrap().and_then(|r| r.outcome) {
        Some(job_result::Outcome::Error(e)) => {
            assert_eq!((e.code, e.message.as_str()), (1234, "bad"))
        }
        other => panic!("{other:?}"),
    }
    let all = b.depth(None).await.unwrap();
    let names: Vec<_> = all.iter().map(|d| d.queue.as_str()).collect();
    assert_eq!(names, ["q1", "q2"]);
    assert_eq!((all[1].ready, all[1].leased), (1, 0));
}

/// Storing is idempotent by request id: a second store of a stored id
/// stores nothing and joins it (its callers all get the one result); one
/// with other parameters is a conflict; once answered, a store of the id
/// gets the kept result; join-only finds nothing for an unknown id.
async fn enqueue_is_idempotent_by_request_id(make: &Make) {
    let s = make(opts("i1", 10, 3)).await;
    let b = &s.backend;
    let mut first = s.waiters.register("a");
    assert_eq!(
        b.enqueue(&job("a", "q", 0, &s.instance)).await.unwrap(),
        Enqueued::Stored
    );
    let mut second = s.waiters.register("a");
    assert_eq!(
        b.enqueue(&job("a", "q", 0, &s.instance)).await.unwrap(),
        Enqueued::Joined,
        "a resend joins"
    );
    let mut other = job("a", "q", 0, &s.instance);
    other.params_json = b"{\"other\":1}".to_vec();
    assert!(matches!(
        b.enqueue(&other).await,
        Err(StoreError::IdConflict { .. })
    ));
    let d = b.depth(Some("q")).await.unwrap();
    assert_eq!(d[0].ready + d[0].leased, 1, "stored once");
    let l = b.lease("q", "c1", 5, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["a"]);
    b.complete(&l[0], JobResult::output("a", b"{\"y\":1}".to_vec()))
        .await
        .unwrap();
    for w in [&mut first, &mut second] {
        let r = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .expect("both callers answered")
            .unwrap();
        assert_eq!(r.request_id, "a");
    }
    match b.enqueue(&job("a", "q", 0, &s.instance)).await.unwrap() {
        Enqueued::Done(r) => assert_eq!(
            r.outcome,
            Some(job_result::Outcome::OutputJson(b"{\"y\":1}".to_vec()))
        ),
        other => panic!("a repeat after the answer gets it: {other:?}"),
    }
    assert!(
        b.lease("q", "c1", 5, NO_WAIT).await.unwrap().is_empty(),
        "and runs nothing"
    );
    assert!(matches!(
        b.enqueue(&other).await,
        Err(StoreError::IdConflict { .. })
    ));
    let mut join = job("nobody", "q", 0, &s.instance);
    join.join_only = true;
    assert!(matches!(
        b.enqueue(&join).await,
        Err(StoreError::NothingToJoin { .. })
    ));
}

/// A dispatcher's answer to a job that no lease of its covers (sent again
/// after its stream was lost) completes the stored job: the caller gets it,
/// and the job, once handed back, is not run again. An answer for an id that
/// is not stored stores nothing.
async fn an_unleased_answer_completes_the_stored_job(make: &Make) {
    let s = make(opts("i1", 10, 3)).await;
    let b = &s.backend;
    let mut waiter = s.waiters.register("a");
    b.enqueue(&job("a", "q", 0, &s.instance)).await.unwrap();
    b.enqueue(&job("b", "q", 0, &s.instance)).await.unwrap();
    let l = b.lease("q", "lost", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["a"]);
    assert!(b
        .complete_unleased("q", JobResult::output("a", b"{}".to_vec()))
        .await
        .unwrap());
    let r = tokio::time::timeout(Duration::from_secs(5), waiter.recv())
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(r.request_id, "a");
    b.release("q", "lost").await.unwrap();
    let l = b.lease("q", "c2", 5, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["b"], "the answered job is not handed out again");
    assert!(!b
        .complete_unleased("q", JobResult::output("never", b"{}".to_vec()))
        .await
        .unwrap());
    assert!(b.result("never").await.unwrap().is_none());
}

async fn suite(make: Make) {
    enqueue_is_idempotent_by_request_id(&make).await;
    an_unleased_answer_completes_the_stored_job(&make).await;
    enqueue_lease_complete(&make).await;
    fifo_with_priority(&make).await;
    bounded(&make).await;
    redelivery_after_release(&make).await;
    dead_letter_and_requeue(&make).await;
    lease_waits_and_wakes(&make).await;
    results_by_id_and_queues_apart(&make).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_memory() {
    suite(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis() {
    let dir = common::TestDir::new();
    let server = common::RedisServer::start(dir.path());
    suite(redis(server.addr())).await;
}

/// Two queue-service instances on one Redis: a job stored through one is
/// leased and completed through the other, and the caller waiting in the
/// first is woken over pub/sub. A consumer that vanishes without releasing
/// (its instance died) has its job reclaimed after the idle time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_instances_share_queues_and_reclaim() {
    let dir = common::TestDir::new();
    let server = common::RedisServer::start(dir.path());
    // Both on one prefix: the same queues.
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let wa = ResultWaiters::new();
    let wb = ResultWaiters::new();
    let a = RedisJobStore::start(
        redis_options(&server.addr(), "shared:"),
        opts("A", 100, 3),
        Arc::clone(&wa),
        stop_a.clone(),
    )
    .unwrap();
    let b = RedisJobStore::start(
        redis_options(&server.addr(), "shared:"),
        opts("B", 100, 3),
        Arc::clone(&wb),
        stop_b.clone(),
    )
    .unwrap();
    assert!(a.wait_until_reachable(&stop_a).await);
    tokio::time::sleep(Duration::from_millis(150)).await;

    let mut waiter = wa.register("x");
    a.enqueue(&job("x", "q", 0, "A")).await.unwrap();
    let l = b.lease("q", "cb", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["x"]);
    b.complete(&l[0], JobResult::output("x", b"{}".to_vec()))
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), waiter.recv())
        .await
        .expect("woken across instances")
        .unwrap();
    assert_eq!(r.request_id, "x");

    // Instance A leases a job and dies without releasing it.
    a.enqueue(&job("y", "q", 0, "B")).await.unwrap();
    let l = a.lease("q", "ca", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&l), ["y"]);
    stop_a.cancel();
    drop(a);
    assert!(
        b.lease("q", "cb", 1, NO_WAIT).await.unwrap().is_empty(),
        "not reclaimed before the idle time"
    );
    let mut got = Vec::new();
    for _ in 0..40 {
        got = b
            .lease("q", "cb", 1, Duration::from_millis(100))
            .await
            .unwrap();
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(ids(&got), ["y"], "reclaimed from the gone instance");
    assert_eq!(got[0].job.deliveries, 2);
    b.complete(&got[0], JobResult::output("y", b"{}".to_vec()))
        .await
        .unwrap();

    // A held job is renewed and not reclaimed while its holder lives.
    b.enqueue(&job("z", "q", 0, "B")).await.unwrap();
    let held = b.lease("q", "cb", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&held), ["z"]);
    let c = RedisJobStore::start(
        redis_options(&server.addr(), "shared:"),
        opts("C", 100, 3),
        ResultWaiters::new(),
        stop_b.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        c.lease("q", "cc", 5, NO_WAIT).await.unwrap().is_empty(),
        "a job whose holder renews it is not taken away"
    );
    stop_b.cancel();
}

/// An entry in a job stream that is not a job (written by something else,
/// or corrupted) neither fails the lease of the jobs read with it nor comes
/// back: it goes to the dead letters as it is, and `dead-letters list` shows
/// it; re-queueing skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_that_are_not_jobs_are_dead_lettered_alone() {
    let dir = common::TestDir::new();
    let server = common::RedisServer::start(dir.path());
    let stop = CancellationToken::new();
    let store = RedisJobStore::start(
        redis_options(&server.addr(), "poison:"),
        opts("P", 100, 3),
        ResultWaiters::new(),
        stop.clone(),
    )
    .unwrap();
    assert!(store.wait_until_reachable(&stop).await);
    store.enqueue(&job("before", "q", 0, "")).await.unwrap();
    let client = redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    for (field, value) in [("job", &b"\xff\xff not protobuf"[..]), ("other", b"x")] {
        let _: String = redis::cmd("XADD")
            .arg("poison:q:q:lo")
            .arg("*")
            .arg(field)
            .arg(value)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    store.enqueue(&job("after", "q", 0, "")).await.unwrap();

    let leased = store.lease("q", "c1", 10, NO_WAIT).await.expect("lease");
    assert_eq!(ids(&leased), ["before", "after"]);
    let dead = store.dead_letters("q", 10).await.expect("list");
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter().all(|d| d.reason.starts_with("not a job")),
        "{dead:?}"
    );
    let pending: Value = redis::cmd("XPENDING")
        .arg("poison:q:q:lo")
        .arg("inferq")
        .query_async(&mut c)
        .await
        .unwrap();
    let Value::Array(summary) = pending else {
        panic!("{pending:?}")
    };
    assert_eq!(
        summary.first(),
        Some(&Value::Int(2)),
        "only the two jobs are pending"
    );
    assert_eq!(store.requeue_dead("q", &[]).await.unwrap(), 0);
    stop.cancel();
}

/// A queue instance dies holding many jobs: the next lease of another
/// instance after the idle time takes them all over at once (not a few per
/// reclaim), and they go to free credits ahead of jobs stored later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_takes_over_a_dead_instances_holds_in_full_ahead_of_new_jobs() {
    let dir = common::TestDir::new();
    let server = common::RedisServer::start(dir.path());
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let a = RedisJobStore::start(
        redis_options(&server.addr(), "full:"),
        opts("A", 1000, 3),
        ResultWaiters::new(),
        stop_a.clone(),
    )
    .unwrap();
    let b = RedisJobStore::start(
        redis_options(&server.addr(), "full:"),
        opts("B", 1000, 3),
        ResultWaiters::new(),
        stop_b.clone(),
    )
    .unwrap();
    assert!(a.wait_until_reachable(&stop_a).await);
    for n in 0..40 {
        a.enqueue(&job(&format!("held{n:02}"), "q", 0, "A"))
            .await
            .unwrap();
    }
    // Eight sessions of A hold five jobs each; then A dies.
    for s in 0..8 {
        let l = a.lease("q", &format!("a{s}"), 5, NO_WAIT).await.unwrap();
        assert_eq!(l.len(), 5);
    }
    stop_a.cancel();
    drop(a);
    for n in 0..10 {
        b.enqueue(&job(&format!("new{n:02}"), "q", 0, "B"))
            .await
            .unwrap();
    }
    // Past the idle time (400 ms), B's first lease takes over every hold.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let first = b.lease("q", "b0", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&first).len(), 1);
    assert!(
        first[0].job.request_id.starts_with("held"),
        "{:?}",
        ids(&first)
    );
    let rest = b.lease("q", "b1", 100, NO_WAIT).await.unwrap();
    let got = ids(&rest);
    assert_eq!(got.len(), 49, "all at once: {got:?}");
    assert!(
        got[..39].iter().all(|id| id.starts_with("held")),
        "the dead instance's jobs first: {got:?}"
    );
    assert!(rest[..39].iter().all(|l| l.job.deliveries == 2));
    stop_b.cancel();
}

/// Redis away for less than a call's deadline costs the call latency, not
/// an error: it waits and stores its job once Redis answers. Calls beyond
/// `max_calls_waiting_for_store` are refused at once (9702 at the edge), and
/// with `wait_for_store` off every call is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_redis_until_its_deadline_within_the_waiting_bound() {
    use inferq::proto::{unix_ms_now, CallError};
    use inferq::queue::seen::MemorySeenKeys;
    use inferq::queue::{QueueService, ServiceOptions};

    let dir = common::TestDir::new();
    let port = common::free_port();
    let stop = CancellationToken::new();
    let waiters = ResultWaiters::new();
    let store = RedisJobStore::start(
        redis_options(&format!("127.0.0.1:{port}"), "outage:"),
        opts("W", 100, 3),
        Arc::clone(&waiters),
        stop.clone(),
    )
    .unwrap();
    let service = |wait_for_store: bool| {
        QueueService::new(
            Arc::clone(&store) as Arc<dyn JobStore>,
            Arc::new(MemorySeenKeys::new(16)),
            Arc::clone(&waiters),
            ServiceOptions {
                instance_id: "W".into(),
                wait_for_store,
                max_calls_waiting_for_store: 1,
                ..ServiceOptions::default()
            },
            None,
        )
    };
    let waiting = service(true);
    let refusing = service(false);
    let with_deadline = |id: &str, ms: i64| {
        let mut j = job(id, "q", 0, "W");
        j.deadline_unix_ms = unix_ms_now() + ms;
        j
    };
    // Nothing listens on the port yet.
    let first = {
        let s = Arc::clone(&waiting);
        let j = with_deadline("waits", 20_000);
        tokio::spawn(async move { s.call(j).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let full = waiting.call(with_deadline("second", 20_000)).await;
    assert!(
        matches!(&full, Err(CallError::Unavailable(m)) if m.contains("already wait")),
        "beyond the bound: refused at once: {full:?}"
    );
    let off = refusing.call(with_deadline("off", 20_000)).await;
    assert!(matches!(off, Err(CallError::Unavailable(_))), "{off:?}");
    let short = Instant::now();
    let late = waiting.call(with_deadline("short", 200)).await;
    assert!(matches!(late, Err(CallError::Unavailable(_))), "{late:?}");
    assert!(short.elapsed() < Duration::from_secs(5));

    // Redis comes up on the port: the waiting call's job is stored.
    let _server = common::RedisServer::start_on(dir.path(), port);
    let mut got = Vec::new();
    for _ in 0..100 {
        got = store
            .lease("q", "c", 5, Duration::from_millis(100))
            .await
            .unwrap_or_default();
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(ids(&got), ["waits"], "stored once Redis answered");
    store
        .complete(&got[0], JobResult::output("waits", b"{}".to_vec()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(answer.map(|r| r.request_id), Ok("waits".to_string()));
    stop.cancel();
}
