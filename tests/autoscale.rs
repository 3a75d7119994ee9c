//! `inferq autoscale` against the real queue, gateway and dispatcher
//! processes: the queue's desired count (Server.Autoscale) rises with a
//! sleep-heavy echo load, falls after the scale-down window, reaches zero
//! and is woken again by one request; every request sent is answered with
//! its own result while dispatchers start and drain, and none is handed to a
//! second dispatcher (drains are graceful).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const POLICY: &str = "-Dmin=0 -Dmax=3 -Dstrategies.queue[avgbacklog]=8 \
                      -Dbehavior.scaleDown.stabilizationWindowSeconds=4";

/// (desired, dispatchers connected) of queue `testq0`, from `Stats`.
async fn scale(client: &mut inferq::proto::client::QueueClient) -> (Option<u32>, u32) {
    queue_stats(client, "testq0")
        .await
        .iter()
        .find(|q| q.queue == "testq0")
        .map_or((None, 0), |q| (q.desired_dispatchers, q.dispatchers))
}

/// `clients` loops of echo requests sleeping `sleep_ms`, for `secs`; the
/// number sent. Panics on any answer that is not its own request's.
async fn load(url: &str, clients: usize, sleep_ms: u64, secs: u64, base: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients as u64 {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < until {
                let i = base + c * 1_000_000 + sent;
                let (status, v) = post(&url, &signed(json!({"i": i, "sleep_ms": sleep_ms}))).await;
                assert_eq!((status, code(&v)), (200, 0), "request {i}: {v}");
                assert_eq!(v["data"]["i"].as_u64(), Some(i), "request {i} got {v}");
                sent += 1;
            }
            sent
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.expect("client");
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_follow_the_backlog_to_zero_and_back_and_no_request_is_lost() {
    let server = format!(
        "  Autoscale: \"{POLICY}\"\n  DrainTimeout: 20\n  QueueMetricsListen: \"127.0.0.1:0\"\n"
    );
    let split = Split::start(&settings_yaml("", &server));
    let gw = split.gateway();
    let url = gw.url("gateway-http", "/api/echo");
    let queue_metrics = split.queue.url("queue-metrics", "/metrics");
    let mut supervisor = Proc::start(
        "autoscale",
        split.dir.path(),
        &[
            "autoscale",
            "0",
            "--yaml",
            split.yaml.to_str().unwrap(),
            "--queue-endpoint",
            &split.queue_url,
            "--poll-ms",
            "200",
        ],
        &[],
    );
    let mut client = split.queue_client().await;

    // Idle: the queue wants none and none run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(scale(&mut client).await, (Some(0), 0), "idle at min 0");

    // One request wakes the queue from zero.
    let t = Instant::now();
    let (status, v) = post(&url, &signed(json!({"i": 1, "sleep_ms": 0}))).await;
    assert_eq!((status, code(&v)), (200, 0), "{v}");
    println!("woken from zero: answered in {:?}", t.elapsed());

    // 48 clients of 100 ms jobs: backlog 48 wants 6, capped at max 3.
    let peak = Arc::new(Mutex::new((0u32, 0u32)));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        let mut client = split.queue_client().await;
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                let (desired, connected) = scale(&mut client).await;
                {
                    let mut p = peak.lock().unwrap();
                    p.0 = p.0.max(desired.unwrap_or(0));
                    p.1 = p.1.max(connected);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let heavy = load(&url, 48, 100, 8, 10_000_000).await;
    sampling.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");
    let (peak_desired, peak_connected) = *peak.lock().unwrap();
    println!("heavy load: {heavy} requests; peak desired {peak_desired}, peak connected {peak_connected}");
    assert_eq!(peak_desired, 3, "the count rose to max");
    assert_eq!(peak_connected, 3, "the supervisor followed it");

    // A light load for longer than the window: the count falls to 1 while
    // requests are in flight, so two dispatchers drain under load.
    let light = load(&url, 2, 100, 8, 900_000_000).await;
    let (desired, connected) = scale(&mut client).await;
    println!("light load: {light} requests; then desired {desired:?}, connected {connected}");
    assert_eq!(desired, Some(1), "fell after the window");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let mut c = client.clone();
            async move { scale(&mut c).await.1 == 1 }
        })
        .await,
        "drained to one dispatcher"
    );

    // Idle again: back to zero after the window.
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let mut c = client.clone();
            async move { scale(&mut c).await == (Some(0), 0) }
        })
        .await,
        "scaled to zero"
    );
    println!("to zero {:?} after the load", t.elapsed());
    assert_eq!(
        metric(&queue_metrics, "inferq_queue_desired_dispatchers").await,
        0
    );
    let done = metric(&queue_metrics, "inferq_queue_jobs_completed_total").await;
    assert_eq!(
        done as u64,
        1 + heavy + light,
        "every request's job completed once"
    );
    assert_eq!(
        metric(&queue_metrics, "inferq_queue_jobs_redelivered_total").await,
        0,
        "drained dispatchers gave back no job"
    );

    // And woken once more; then SIGTERM drains the supervisor's children.
    let (status, v) = post(&url, &signed(json!({"i": 2, "sleep_ms": 0}))).await;
    assert_eq!((status, code(&v)), (200, 0), "{v}");
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let mut c = client.clone();
            async move { scale(&mut c).await.1 == 0 }
        })
        .await,
        "no dispatcher outlives the supervisor"
    );
    let log = supervisor.log_text();
    assert!(log.contains("autoscale: dispatcher started"), "{log}");
    assert!(log.contains("autoscale: dispatcher drained"), "{log}");
}
