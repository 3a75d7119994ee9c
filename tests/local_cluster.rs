//! `deploy/local-cluster` as a user runs it: go-infer's documented layout
//! (nginx, two gateways, two queue instances, Redis, four dispatchers on two
//! queues), each machine in its own network namespace; then real network
//! faults on it: a link taken down while the process lives on. For each:
//! every request is answered once, and the stall a client saw is printed.
//!
//! One test function: the namespaces and the bridge have fixed names.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// MaxWorkers of each dispatcher (the guide says cores; fixed here so the
/// bounds below do not depend on the machine).
const WORKERS: u64 = 4;

struct Cluster {
    dir: TestDir,
    /// Each host's address, asked of the script once after `up`.
    ips: std::collections::HashMap<&'static str, String>,
}

impl Cluster {
    fn command(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(repo_root().join("deploy/local-cluster"))
            .args(args)
            .env("INFERQ_BIN", bin())
            .env("INFERQ_CLUSTER_DIR", self.dir.path())
            .env("INFERQ_CLUSTER_WORKERS", WORKERS.to_string())
            .output()
            .expect("run deploy/local-cluster");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn run(&self, args: &[&str]) -> String {
        let (ok, text) = self.command(args);
        assert!(
            ok,
            "deploy/local-cluster {args:?} failed:\n{text}\n{}",
            self.logs()
        );
        text
    }

    /// Starts the cluster; what `up` printed.
    fn up(&mut self) -> String {
        let up = self.run(&["up"]);
        for host in ["lb", "d1", "d2", "d3", "d4"] {
            let ip = self.run(&["addr", host]).trim().to_string();
            self.ips.insert(host, ip);
        }
        up
    }

    fn ip(&self, host: &str) -> &str {
        &self.ips[host]
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("logs")) {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                all += &format!("--- {}\n", e.path().display());
                for l in tail.into_iter().rev() {
                    all += l;
                    all.push('\n');
                }
            }
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Also after a failed assertion: no namespace or process stays.
        let _ = self.command(&["restore", "d1"]);
        let _ = self.command(&["down"]);
    }
}

/// What a client saw of one request.
struct Outcome {
    status: u16,
    code: i64,
    own: bool,
    latency: Duration,
}

/// `clients` loops of echo requests sleeping `sleep_ms` until `stop`.
fn start_load(
    url: &str,
    clients: u64,
    sleep_ms: u64,
    base: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    (0..clients)
        .map(|c| {
            let (url, stop) = (url.to_string(), Arc::clone(stop));
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .expect("client");
                let mut out = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let i = base + c * 1_000_000 + n;
                    n += 1;
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .json(&signed(json!({"i": i, "sleep_ms": sleep_ms})))
                        .send()
                        .await;
                    let (status, v) = match r {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            (s, r.json::<serde_json::Value>().await.unwrap_or_default())
                        }
                        Err(_) => (0, serde_json::Value::Null),
                    };
                    out.push(Outcome {
                        status,
                        code: v["code"].as_i64().unwrap_or(-1),
                        own: v["data"]["i"].as_u64() == Some(i),
                        latency: t.elapsed(),
                    });
                }
                out
            })
        })
        .collect()
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>) -> Vec<Outcome> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    all
}

/// Jobs run by every dispatcher (read while all links are up).
async fn jobs_done(cluster: &Cluster) -> i64 {
    let mut sum = 0;
    for d in ["d1", "d2", "d3", "d4"] {
        let url = format!("http://{}:15201/metrics", cluster.ip(d));
        sum += metric(&url, "inferq_dispatcher_jobs_done_total").await;
    }
    sum
}

/// Runs a load, applies `fault` after 2 s, keeps the load `after` longer;
/// returns the outcomes and how many more jobs ran than were answered.
async fn under_fault(
    cluster: &Cluster,
    name: &str,
    base: u64,
    fault: impl std::future::Future<Output = ()>,
    after: Duration,
) -> (Vec<Outcome>, i64) {
    let url = format!("http://{}:18080/api/echo", cluster.ip("lb"));
    let before = jobs_done(cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&url, 12, 100, base, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    fault.await;
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::SeqCst);
    let outcomes = finish(load).await;
    let stall = outcomes.iter().map(|o| o.latency).max().unwrap_or_default();
    // Links are back: wait until every dispatcher is ready again.
    for d in ["d1", "d2", "d3", "d4"] {
        let ready = format!("http://{}:15201/readyz", cluster.ip(d));
        assert!(
            wait_until(Duration::from_secs(40), || async {
                client()
                    .get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await,
            "{name}: dispatcher {d} ready again\n{}",
            cluster.logs()
        );
    }
    let extra = jobs_done(cluster).await - before - outcomes.len() as i64;
    let ok = outcomes
        .iter()
        .filter(|o| o.status == 200 && o.code == 0 && o.own)
        .count();
    println!(
        "{name}: {} requests, {ok} answered with their own result, longest wait {:.1?} \
         (fault {:.1?} long), jobs run beyond the requests: {extra}",
        outcomes.len(),
        stall,
        t.elapsed()
    );
    (outcomes, extra)
}

fn assert_all_answered<'a>(name: &str, outcomes: impl IntoIterator<Item = &'a Outcome>) {
    for o in outcomes {
        assert!(
            o.status == 200 && o.code == 0 && o.own,
            "{name}: a request got status {} code {} (own result: {}) after {:?}",
            o.status,
            o.code,
            o.own,
            o.latency
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_layout_serves_through_nginx_and_survives_network_faults() {
    let mut cluster = Cluster {
        dir: TestDir::new(),
        ips: Default::default(),
    };
    let up = cluster.up();
    assert!(
        up.contains("up (netns)"),
        "namespaces are made on the test machine: {up}"
    );
    let test = cluster.run(&["test"]);
    println!("{test}");
    assert!(test.contains("test passed"), "{test}");
    let status = cluster.run(&["status"]);
    assert_eq!(status.matches(": running").count(), 10, "{status}");

    // 1. A dispatcher's link goes down while it holds jobs; the process
    // lives on. The queue drops its stream when its HTTP/2 pings go
    // unanswered (5 s interval + 5 s timeout) and hands its jobs on.
    let (outcomes, extra) = under_fault(
        &cluster,
        "dispatcher d1 cut 12 s",
        1_000_000_000,
        async {
            cluster.run(&["cut", "d1"]);
            tokio::time::sleep(Duration::from_secs(12)).await;
            cluster.run(&["restore", "d1"]);
        },
        Duration::from_secs(3),
    )
    .await;
    assert_all_answered("dispatcher cut", &outcomes);
    assert!(
        extra <= WORKERS as i64,
        "only d1's jobs in hand ran again: {extra}"
    );
    let stall = outcomes.iter().map(|o| o.latency).max().unwrap_or_default();
    assert!(
        stall < Duration::from_secs(15),
        "d1's jobs moved within the bound: {stall:?}"
    );

    // 2. Redis off the network for 5 s: calls wait for it (WaitForStore),
    // then everything resumes.
    let (outcomes, _) = under_fault(
        &cluster,
        "Redis cut 5 s",
        2_000_000_000,
        async {
            cluster.run(&["cut", "redis"]);
            tokio::time::sleep(Duration::from_secs(5)).await;
            cluster.run(&["restore", "redis"]);
        },
        Duration::from_secs(5),
    )
    .await;
    assert_all_answered("Redis cut", &outcomes);

    // 3. Machine b (gateway B and queue instance B) off the network for 8 s:
    // nginx sends new requests to gateway A once a connect to B times out
    // (proxy_connect_timeout 2 s, then `proxy_next_upstream timeout`);
    // gateway A's calls and the dispatchers go to queue instance A.
    let (outcomes, _) = under_fault(
        &cluster,
        "machine b (gateway + queue instance) cut 8 s",
        3_000_000_000,
        async {
            cluster.run(&["cut", "b"]);
            tokio::time::sleep(Duration::from_secs(8)).await;
            cluster.run(&["restore", "b"]);
        },
        Duration::from_secs(4),
    )
    .await;
    // Those B had taken when its link went: nginx does not resend them (it
    // cannot know whether B ran them) and answers 502 or 504, once each;
    // at most one per client was in flight. Every other request has its
    // own result.
    let (gateway_lost, answered): (Vec<&Outcome>, Vec<&Outcome>) = outcomes
        .iter()
        .partition(|o| o.status == 502 || o.status == 504);
    println!(
        "machine b cut: {} requests in flight at gateway B answered 502/504 by nginx",
        gateway_lost.len()
    );
    assert!(
        gateway_lost.len() <= 12,
        "{} lost to the cut gateway",
        gateway_lost.len()
    );
    assert_all_answered("machine b cut", answered);

    cluster.run(&["down"]);
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("iqc-"),
        "down removes the namespaces"
    );
    assert!(
        !Path::new("/sys/class/net/iqc-br").exists(),
        "down removes the bridge"
    );
}
