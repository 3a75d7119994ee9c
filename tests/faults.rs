//! The fault suite: go-infer's documented layout as operators run it, with
//! one component killed mid-load and brought back.
//!
//! Layout (all real processes on loopback): redis-server from
//! `deploy/redis.conf` as shipped (AOF); two `inferq queue` instances on it;
//! two gateways (queues `svc-a-0` and `svc-b-0`) behind nginx with
//! `deploy/nginx-least-conn.conf` as shipped; four dispatchers with
//! MaxWorkers 8, two per queue, spread over the two queue instances; TLS and
//! the internal token between them. The load: signed echo requests with
//! `sleep_ms` 20 at concurrency 64 through nginx, each with an
//! `Idempotency-Key`, as a client that wants no request run twice sends them.
//! At 3 s one component is killed with SIGKILL; 3 s later it is started
//! again.
//!
//! Checked for each fault: every request is answered, with its own result
//! (code 0, the right `i`); a job runs again only if it was in flight on the
//! broken path, so executions ≤ requests + what could be in flight there
//! ([`Layout::in_flight_bound`]: the credits of the dispatchers behind a
//! queue instance, one dispatcher's, all credits while Redis is away, the
//! client's concurrency through a gateway); no job is left in Redis at the
//! end. The jobs dispatchers held just before the kill are printed beside
//! it. Throughput around the fault and the time to recover are printed
//! (`bench/faults.sh` runs the full 20,000 requests and writes the table),
//! never asserted.
//!
//! `INFERQ_FAULTS` (comma-separated: queue, dispatcher, redis, gateway),
//! `INFERQ_FAULT_REQUESTS` (default 20,000) and `INFERQ_FAULT_LOAD_SECS`
//! (issue no new request after this; default 9) tune a run.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Nginx, Proc, RedisServer, TestDir};
use parking_lot::Mutex;
use serde_json::{json, Value};

const CONCURRENCY: usize = 64;
const SLEEP_MS: u64 = 20;
const MAX_WORKERS: u32 = 8;
const FAULT_AT: Duration = Duration::from_secs(3);
const BACK_AFTER: Duration = Duration::from_secs(3);
const REDIS_PASSWORD: &str = "change-me";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    QueueInstance,
    Dispatcher,
    Redis,
    Gateway,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::QueueInstance => "kill -9 queue instance",
            Fault::Dispatcher => "kill -9 dispatcher",
            Fault::Redis => "kill -9 redis-server",
            Fault::Gateway => "kill -9 gateway",
        }
    }

    fn from_word(w: &str) -> Option<Fault> {
        match w.trim() {
            "queue" => Some(Fault::QueueInstance),
            "dispatcher" => Some(Fault::Dispatcher),
            "redis" => Some(Fault::Redis),
            "gateway" => Some(Fault::Gateway),
            _ => None,
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One side of go-infer's layout: a gateway's settings and its queue.
struct Side {
    yaml: PathBuf,
    http_port: u16,
    grpc_port: u16,
}

struct Layout {
    dir: TestDir,
    redis: RedisServer,
    queue_addrs: [String; 2],
    queues: [Option<Proc>; 2],
    sides: [Side; 2],
    gateways: [Option<Proc>; 2],
    /// (process, side, first queue instance)
    dispatchers: Vec<(Option<Proc>, usize, usize)>,
    restarted: usize,
    _nginx: Nginx,
    url: String,
}

impl Layout {
    fn start() -> Layout {
        let dir = TestDir::new();
        let certs = common::TestCerts::make(&dir);
        let redis =
            RedisServer::start_conf(dir.path(), &common::repo_root().join("deploy/redis.conf"));
        let queue_addrs = [0, 1].map(|_| format!("127.0.0.1:{}", common::free_port()));
        let sides = ["a", "b"].map(|side| {
            let settings = common::settings_yaml(
                "",
                &format!(
                    "  RedisServer: \"{}\"\n  RedisPasswd: \"{REDIS_PASSWORD}\"\n  RequestQueueAmount: 1\n  \
                     ReclaimIdle: 2\n  MaxQueueLength: 100000\n  MaxDeliveries: 3",
                    redis.addr()
                ),
            )
            .replace("Backend: memory", "Backend: redis")
            .replace("QueueName: \"testq\"", &format!("QueueName: \"svc-{side}-\""));
            Side {
                yaml: dir.write(
                    &format!("gw-{side}.yaml"),
                    &common::with_internal_security(&settings, &certs, false),
                ),
                http_port: common::free_port(),
                grpc_port: common::free_port(),
            }
        });
        let mut layout_queues = [None, None];
        for (n, q) in layout_queues.iter_mut().enumerate() {
            *q = Some(start_queue(
                &dir,
                &sides[0].yaml,
                &queue_addrs[n],
                &format!("queue{n}"),
            ));
        }
        let mut dispatchers = Vec::new();
        for side in 0..2 {
            for first in 0..2 {
                dispatchers.push((None, side, first));
            }
        }
        let site =
            std::fs::read_to_string(common::repo_root().join("deploy/nginx-least-conn.conf"))
                .expect("deploy/nginx-least-conn.conf");
        let (http, grpc) = (common::free_port(), common::free_port());
        let site = site
            .replace(
                "127.0.0.1:5000",
                &format!("127.0.0.1:{}", sides[0].http_port),
            )
            .replace(
                "127.0.0.1:5010",
                &format!("127.0.0.1:{}", sides[1].http_port),
            )
            .replace(
                "127.0.0.1:5001",
                &format!("127.0.0.1:{}", sides[0].grpc_port),
            )
            .replace(
                "127.0.0.1:5011",
                &format!("127.0.0.1:{}", sides[1].grpc_port),
            )
            .replace("listen 8080;", &format!("listen 127.0.0.1:{http};"))
            .replace(
                "listen 8081 http2;",
                &format!("listen 127.0.0.1:{grpc} http2;"),
            );
        let mut layout = Layout {
            redis,
            queue_addrs,
            queues: layout_queues,
            sides,
            gateways: [None, None],
            dispatchers,
            restarted: 0,
            _nginx: Nginx::start(&dir, &site, http),
            url: format!("http://127.0.0.1:{http}/api/echo"),
            dir,
        };
        for n in 0..layout.dispatchers.len() {
            layout.start_dispatcher(n);
        }
        for side in 0..2 {
            layout.start_gateway(side);
        }
        layout
    }

    /// Both queue instances, `first` first.
    fn endpoint_args(&self, first: usize) -> Vec<String> {
        [first, 1 - first]
            .iter()
            .flat_map(|&n| {
                [
                    "--queue-endpoint".to_string(),
                    format!("https://{}", self.queue_addrs[n]),
                ]
            })
            .collect()
    }

    fn start_dispatcher(&mut self, n: usize) {
        let (_, side, first) = self.dispatchers[n];
        let name = format!("d{n}-{}", self.restarted);
        self.restarted += 1;
        let mut args: Vec<String> = [
            "dispatcher",
            "0",
            "--yaml",
            self.sides[side].yaml.to_str().expect("utf-8"),
            "--max-workers",
            &MAX_WORKERS.to_string(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--node-id",
            &name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.endpoint_args(first));
        let proc = Proc::start_cmd(
            &name,
            self.dir.path(),
            std::process::Command::new(common::bin())
                .args(&args)
                .env("INFERQ_LOG", "info,inferq::dispatcher=debug"),
            &["dispatcher-metrics"],
        );
        self.dispatchers[n].0 = Some(proc);
    }

    fn start_gateway(&mut self, side: usize) {
        let s = &self.sides[side];
        let mut args: Vec<String> = [
            "gateway".to_string(),
            "--yaml".into(),
            s.yaml.to_str().expect("utf-8").into(),
            "--port".into(),
            s.http_port.to_string(),
            "--grpc-port".into(),
            s.grpc_port.to_string(),
        ]
        .to_vec();
        args.extend(self.endpoint_args(side));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let name = format!("gateway-{side}-{}", self.restarted);
        self.restarted += 1;
        self.gateways[side] = Some(Proc::start(
            &name,
            self.dir.path(),
            &args,
            &["gateway-http"],
        ));
    }

    /// The most jobs that can be in flight on the path `fault` breaks, the
    /// only ones that may run twice: a queue instance holds at most the
    /// credits of the dispatchers on it (it gives one back only once an
    /// answer is stored); a dispatcher its MaxWorkers; Redis every credit; a
    /// gateway the client's requests through it.
    fn in_flight_bound(&self, fault: Fault) -> i64 {
        let credits = |n: usize| n as i64 * MAX_WORKERS as i64;
        match fault {
            // The dispatchers whose first instance is the one killed.
            Fault::QueueInstance => credits(
                self.dispatchers
                    .iter()
                    .filter(|(_, _, first)| *first == 0)
                    .count(),
            ),
            Fault::Dispatcher => credits(1),
            Fault::Redis => credits(self.dispatchers.len()),
            Fault::Gateway => CONCURRENCY as i64,
        }
    }

    /// The jobs all dispatchers hold now.
    async fn jobs_in_hand(&self) -> i64 {
        let mut n = 0;
        for (d, _, _) in &self.dispatchers {
            if let Some(d) = d {
                let url = d.url("dispatcher-metrics", "/metrics");
                n += common::metric(&url, "inferq_dispatcher_jobs_in_hand").await;
            }
        }
        n
    }

    fn kill(&mut self, fault: Fault) {
        match fault {
            Fault::QueueInstance => self.queues[0].as_mut().expect("queue0").kill9(),
            Fault::Dispatcher => self.dispatchers[0].0.as_mut().expect("d0").kill9(),
            Fault::Redis => self.redis.kill9(),
            Fault::Gateway => self.gateways[0].as_mut().expect("gateway 0").kill9(),
        }
    }

    fn bring_back(&mut self, fault: Fault) {
        match fault {
            Fault::QueueInstance => {
                let name = format!("queue0-{}", self.restarted);
                self.restarted += 1;
                self.queues[0] = Some(start_queue(
                    &self.dir,
                    &self.sides[0].yaml,
                    &self.queue_addrs[0],
                    &name,
                ));
            }
            Fault::Dispatcher => self.start_dispatcher(0),
            Fault::Redis => self.redis.restart(),
            Fault::Gateway => self.start_gateway(0),
        }
    }

    /// Jobs still stored in Redis (any lane of any queue).
    async fn jobs_stored(&self) -> i64 {
        let url = format!("redis://:{REDIS_PASSWORD}@{}/", self.redis.addr());
        let client = redis::Client::open(url).expect("redis url");
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return -1;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("inferq:q:*")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        let mut n = 0;
        for k in keys {
            n += redis::cmd("XLEN")
                .arg(&k)
                .query_async::<i64>(&mut c)
                .await
                .unwrap_or(0);
        }
        n
    }

    /// The jobs started more than once (their request ids, from the "job
    /// started" lines' spans) and the queue instances' takeover lines: what
    /// a failed bound is read from.
    fn reruns(&self) -> Vec<String> {
        let mut started: BTreeMap<String, usize> = BTreeMap::new();
        let mut takeovers = Vec::new();
        for entry in std::fs::read_dir(self.dir.path())
            .expect("test dir")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if name.starts_with('d') && name.ends_with(".log") {
                for l in text.lines().filter(|l| l.contains("job started")) {
                    if let Some(id) = l.split("request_id=").nth(1) {
                        let id = id.split([' ', '}', ':']).next().unwrap_or_default();
                        *started.entry(id.to_string()).or_default() += 1;
                    }
                }
            } else if name.starts_with("queue") {
                takeovers.extend(
                    text.lines()
                        .filter(|l| l.contains("took over"))
                        .map(|l| format!("{name}: {l}")),
                );
            }
        }
        started
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, n)| format!("{id} started {n} times"))
            .chain(takeovers)
            .collect()
    }

    /// Every dispatcher log's "job started" lines: executions.
    fn executions(&self) -> usize {
        let mut n = 0;
        for entry in std::fs::read_dir(self.dir.path())
            .expect("test dir")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('d') && name.ends_with(".log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                n += text.lines().filter(|l| l.contains("job started")).count();
            }
        }
        n
    }

    fn logs_tail(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path())
            .expect("test dir")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".log") && !name.starts_with('d') {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().filter(|l| !l.contains("DEBUG")).collect();
                let from = lines.len().saturating_sub(25);
                out.push_str(&format!("--- {name}\n{}\n", lines[from..].join("\n")));
            }
        }
        out
    }
}

fn start_queue(dir: &TestDir, yaml: &std::path::Path, listen: &str, name: &str) -> Proc {
    Proc::start(
        name,
        dir.path(),
        &[
            "queue",
            "--yaml",
            yaml.to_str().expect("utf-8"),
            "--listen",
            listen,
        ],
        &["queue-grpc"],
    )
}

/// What one request got.
#[derive(Debug, Clone, Copy)]
struct Answer {
    /// The envelope's code; HTTP status as a negative number when there was
    /// no envelope (nginx's 502); -1: no answer at all.
    code: i64,
    /// Since the load started.
    at: Duration,
    latency: Duration,
}

struct Run {
    answers: Vec<Answer>,
    mismatched: usize,
}

/// CONCURRENCY clients send up to `total` requests, none issued after `for_`.
async fn load(url: String, total: usize, for_: Duration, run: String, start: Instant) -> Run {
    let answers = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let mismatched = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (answers, mismatched, next, client, url) = (
            Arc::clone(&answers),
            Arc::clone(&mismatched),
            Arc::clone(&next),
            client.clone(),
            url.clone(),
        );
        let run = run.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || start.elapsed() >= for_ {
                    return;
                }
                let sent = Instant::now();
                let body = common::signed(json!({"i": i, "sleep_ms": SLEEP_MS}));
                let r = client
                    .post(&url)
                    .header("Idempotency-Key", format!("{run}-{i}"))
                    .json(&body)
                    .send()
                    .await;
                let code = match r {
                    Err(_) => -1,
                    Ok(resp) => {
                        let status = resp.status().as_u16() as i64;
                        match resp.json::<Value>().await {
                            Ok(v) => match v["code"].as_i64() {
                                Some(0) => {
                                    if v["data"]["i"].as_u64() != Some(i as u64) {
                                        mismatched.fetch_add(1, Ordering::Relaxed);
                                    }
                                    0
                                }
                                Some(code) => code,
                                None => -status,
                            },
                            Err(_) => -status,
                        }
                    }
                };
                answers.lock().push(Answer {
                    code,
                    at: start.elapsed(),
                    latency: sent.elapsed(),
                });
            }
        }));
    }
    for w in workers {
        w.await.expect("load worker");
    }
    let answers = std::mem::take(&mut *answers.lock());
    Run {
        answers,
        mismatched: mismatched.load(Ordering::Relaxed),
    }
}

/// Completions per second in the window of `width` ending at `end`.
fn rate(answers: &[Answer], end: Duration, width: Duration) -> f64 {
    let from = end.saturating_sub(width);
    let n = answers
        .iter()
        .filter(|a| a.at > from && a.at <= end)
        .count();
    n as f64 / width.as_secs_f64()
}

/// One fault's row of the table.
#[derive(Debug)]
struct Row {
    fault: Fault,
    requests: usize,
    ok: usize,
    codes: BTreeMap<i64, usize>,
    mismatched: usize,
    /// Jobs the dispatchers started for the load (the warm-up left out).
    executions: usize,
    /// [`Layout::in_flight_bound`] of the fault.
    bound: i64,
    in_hand_at_kill: i64,
    stored_at_end: i64,
    baseline: f64,
    /// Completions per second from the kill to the component's return.
    during: f64,
    lowest: f64,
    recovered_ms: Option<u128>,
    /// Answers that took over a second.
    slow: usize,
    max_latency_ms: u128,
    /// Jobs started more than once, and the queues' takeovers.
    reruns: Vec<String>,
}

impl Row {
    fn print_header() {
        println!(
            "| fault | requests | code 0 | other answers | executions − requests | bound | jobs in hand at the kill | jobs left in Redis | baseline req/s | req/s while down | lowest req/s (300 ms) | back to 80 % after | answers over 1 s | slowest answer |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }

    fn print(&self) {
        let others = if self.codes.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", self.codes)
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} ms |",
            self.fault.name(),
            self.requests,
            self.ok,
            others,
            self.executions as i64 - self.requests as i64,
            self.bound,
            self.in_hand_at_kill,
            self.stored_at_end,
            self.baseline,
            self.during,
            self.lowest,
            self.recovered_ms
                .map(|ms| format!("≤ {ms} ms"))
                .unwrap_or_else(|| "not before it came back".into()),
            self.slow,
            self.max_latency_ms,
        );
    }
}

/// Requests sent before the load (each runs one job).
const WARM_UP_REQUESTS: usize = 1;

async fn run_fault(fault: Fault, total: usize, load_for: Duration) -> (Row, String) {
    let mut layout = Layout::start();
    // Warm: every dispatcher connected and answering before the clock starts.
    // Its job is one of the executions the dispatchers log, not of the load.
    let warm = common::post(&layout.url, &common::signed(json!({"i": 0}))).await;
    assert_eq!(common::code(&warm.1), 0, "layout answers: {warm:?}");
    let start = Instant::now();
    let run = format!("{:?}-{}", fault, common::now());
    let load = tokio::spawn(load(layout.url.clone(), total, load_for, run, start));
    tokio::time::sleep(FAULT_AT).await;
    let in_hand = layout.jobs_in_hand().await;
    layout.kill(fault);
    let killed_at = start.elapsed();
    tokio::time::sleep(BACK_AFTER).await;
    layout.bring_back(fault);
    let back_at = start.elapsed();
    let run = tokio::time::timeout(Duration::from_secs(120), load)
        .await
        .expect("load ends")
        .expect("load task");
    // Nothing may stay stored: wait (bounded) for the last takeovers.
    let mut stored = layout.jobs_stored().await;
    let settle = Instant::now();
    while stored != 0 && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stored = layout.jobs_stored().await;
    }
    let a = &run.answers;
    let mut codes = BTreeMap::new();
    for x in a.iter().filter(|x| x.code != 0) {
        *codes.entry(x.code).or_default() += 1;
    }
    // Baseline: before the fault, after the first second (warm-up).
    let baseline = a
        .iter()
        .filter(|x| x.at >= Duration::from_secs(1) && x.at < killed_at)
        .count() as f64
        / (killed_at - Duration::from_secs(1)).as_secs_f64();
    // Recovery: from the kill (from the restart for Redis: nothing can run
    // while the one store is away) to the end of the first 500 ms window,
    // wholly after it, with 80 % of the baseline's completions: 500 ms at
    // best. The lowest 300 ms window is shown beside it.
    let from = if fault == Fault::Redis {
        back_at
    } else {
        killed_at
    };
    let step = Duration::from_millis(50);
    let end = (back_at + BACK_AFTER).min(load_for);
    let mut lowest = f64::MAX;
    let mut t = killed_at + step;
    while t <= end {
        lowest = lowest.min(rate(a, t, Duration::from_millis(300)));
        t += step;
    }
    // Windows wholly after `from`.
    let window = Duration::from_millis(500);
    let mut recovered_ms = None;
    let mut t = from + window;
    while t <= end {
        if rate(a, t, window) >= 0.8 * baseline {
            recovered_ms = Some((t - from).as_millis());
            break;
        }
        t += step;
    }
    if fault != Fault::Redis && recovered_ms.is_some_and(|ms| ms > BACK_AFTER.as_millis()) {
        recovered_ms = None;
    }
    let during = a
        .iter()
        .filter(|x| x.at >= killed_at && x.at < back_at)
        .count() as f64
        / (back_at - killed_at).as_secs_f64();
    let row = Row {
        fault,
        requests: a.len(),
        ok: a.iter().filter(|x| x.code == 0).count(),
        codes,
        mismatched: run.mismatched,
        executions: layout.executions().saturating_sub(WARM_UP_REQUESTS),
        bound: layout.in_flight_bound(fault),
        in_hand_at_kill: in_hand,
        stored_at_end: stored,
        baseline,
        during,
        lowest: if lowest == f64::MAX { 0.0 } else { lowest },
        recovered_ms,
        slow: a
            .iter()
            .filter(|x| x.latency > Duration::from_secs(1))
            .count(),
        max_latency_ms: a.iter().map(|x| x.latency.as_millis()).max().unwrap_or(0),
        reruns: layout.reruns(),
    };
    (row, layout.logs_tail())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_is_answered_through_each_fault() {
    let faults: Vec<Fault> = match std::env::var("INFERQ_FAULTS") {
        Ok(list) => list.split(',').filter_map(Fault::from_word).collect(),
        Err(_) => vec![
            Fault::QueueInstance,
            Fault::Dispatcher,
            Fault::Redis,
            Fault::Gateway,
        ],
    };
    let total = env_or("INFERQ_FAULT_REQUESTS", 20_000usize);
    let load_for = Duration::from_secs(env_or("INFERQ_FAULT_LOAD_SECS", 9u64));
    let mut rows = Vec::new();
    for fault in faults {
        let (row, logs) = run_fault(fault, total, load_for).await;
        Row::print_header();
        row.print();
        let bad = !row.codes.is_empty()
            || row.mismatched > 0
            || row.stored_at_end != 0
            || row.executions as i64 > row.requests as i64 + row.bound;
        if bad {
            println!("{logs}");
        }
        rows.push(row);
    }
    println!("\nFAULT TABLE ({total} requests at most, none issued after {load_for:?}, concurrency {CONCURRENCY}, echo sleep_ms {SLEEP_MS})");
    Row::print_header();
    for row in &rows {
        row.print();
    }
    for row in &rows {
        let name = row.fault.name();
        assert!(row.requests > 0, "{name}: no load ran");
        assert_eq!(
            row.mismatched, 0,
            "{name}: an answer belonged to another request: {row:?}"
        );
        assert!(
            row.codes.is_empty(),
            "{name}: every request gets its result: {row:?}"
        );
        assert_eq!(row.ok, row.requests, "{name}: {row:?}");
        assert!(
            row.executions as i64 <= row.requests as i64 + row.bound,
            "{name}: executions ≤ requests + {} that could be in flight: {row:?}\n\
             started more than once, and the queues' takeovers:\n{}",
            row.bound,
            row.reruns.join("\n")
        );
        assert_eq!(row.stored_at_end, 0, "{name}: no job left pending: {row:?}");
    }
}

/// deploy/redis.conf as shipped starts, and refuses a client without its
/// password (it did not start before: a comment after a value).
#[test]
fn the_shipped_redis_conf_starts() {
    let dir = TestDir::new();
    let redis = RedisServer::start_conf(dir.path(), &common::repo_root().join("deploy/redis.conf"));
    assert!(redis.command(&["PING"]).starts_with("-NOAUTH"));
    let url = format!("redis://:{REDIS_PASSWORD}@{}/", redis.addr());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let aof = rt.block_on(async {
        let mut c = redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("the password of deploy/redis.conf");
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async::<Vec<String>>(&mut c)
            .await
            .expect("CONFIG GET")
    });
    assert_eq!(aof, ["appendonly", "yes"]);
}
