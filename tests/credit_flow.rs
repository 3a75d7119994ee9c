//! Credit-based flow control between the real queue and dispatcher processes.

mod common;

use common::*;

const IN_HAND_MAX: &str = "inferq_dispatcher_jobs_in_hand_max";
const DONE: &str = "inferq_dispatcher_jobs_done_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_never_holds_more_than_max_workers_and_two_share_the_load() {
    let split = Split::start(&settings_yaml("", ""));
    let a = split.dispatcher("disp-a", 2);
    let gw = split.gateway();
    let url = gw.url("gateway-http", "/api/echo");
    let a_metrics = a.url("dispatcher-metrics", "/metrics");

    // One dispatcher, window 2, ten 300 ms jobs at once.
    let answers = concurrent_sleeps(&url, 10, 300).await;
    assert_eq!(answers.len(), 10);
    for v in &answers {
        assert_eq!(code(v), 0, "{v}");
    }
    assert_eq!(
        metric(&a_metrics, IN_HAND_MAX).await,
        2,
        "window reached, never passed"
    );
    assert_eq!(metric(&a_metrics, DONE).await, 10);

    // A second dispatcher joins: both take jobs, neither passes its window.
    let b = split.dispatcher("disp-b", 2);
    let b_metrics = b.url("dispatcher-metrics", "/metrics");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || async {
            split.queue.log_text().contains("node=disp-b")
        })
        .await,
        "disp-b connected"
    );
    let answers = concurrent_sleeps(&url, 12, 300).await;
    for v in &answers {
        assert_eq!(code(v), 0, "{v}");
    }
    let a_done = metric(&a_metrics, DONE).await - 10;
    let b_done = metric(&b_metrics, DONE).await;
    assert_eq!(a_done + b_done, 12);
    assert!(a_done > 0 && b_done > 0, "shared: a={a_done} b={b_done}");
    assert!(metric(&a_metrics, IN_HAND_MAX).await <= 2);
    assert!(metric(&b_metrics, IN_HAND_MAX).await <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_killed_dispatcher_are_answered_by_another() {
    let split = Split::start(&settings_yaml("", ""));
    let mut a = split.dispatcher("disp-a", 4);
    let a_metrics = a.url("dispatcher-metrics", "/metrics");
    let gw = split.gateway();
    let url = gw.url("gateway-http", "/api/echo");

    // Only A is connected: it takes its window of jobs first.
    let load = tokio::spawn({
        let url = url.clone();
        async move { concurrent_sleeps(&url, 16, 400).await }
    });
    assert!(
        wait_until(std::time::Duration::from_secs(10), || async {
            metric(&a_metrics, "inferq_dispatcher_jobs_in_hand").await > 0
        })
        .await,
        "A holds jobs"
    );
    let b = split.dispatcher("disp-b", 4);
    a.kill9();

    let answers = load.await.unwrap();
    assert_eq!(answers.len(), 16);
    for v in &answers {
        assert_eq!(code(v), 0, "every request answered with a result: {v}");
    }
    let b_done = metric(&b.url("dispatcher-metrics", "/metrics"), DONE).await;
    assert!(b_done >= 1, "B ran the jobs A held");
    assert!(split
        .queue
        .log_text()
        .contains("returned them to the queue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_jobs_in_hand_before_exit() {
    let split = Split::start(&settings_yaml("", ""));
    let mut a = split.dispatcher("disp-a", 3);
    let a_metrics = a.url("dispatcher-metrics", "/metrics");
    let gw = split.gateway();
    let url = gw.url("gateway-http", "/api/echo");

    let load = tokio::spawn({
        let url = url.clone();
        async move { concurrent_sleeps(&url, 3, 700).await }
    });
    assert!(
        wait_until(std::time::Duration::from_secs(10), || async {
            metric(&a_metrics, "inferq_dispatcher_jobs_in_hand").await == 3
        })
        .await
    );
    a.signal("TERM");
    let answers = load.await.unwrap();
    for v in &answers {
        assert_eq!(code(v), 0, "{v}");
    }
    assert_eq!(a.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    assert!(a.log_text().contains("drained"));
}
