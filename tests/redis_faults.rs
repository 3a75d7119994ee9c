//! Fault tests on the Redis backend, with real processes: a redis-server
//! started here (appendonly, fsync always), `inferq queue` instances,
//! dispatchers and a gateway. Each test runs a steady signed load (2,000
//! echo requests at concurrency 32, 3 ms of work each), breaks something a
//! quarter of the way in, and counts what the clients got: every request must
//! be answered, with a result or a defined error code, and each answer must
//! belong to its request.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Proc, RedisServer, TestDir};
use parking_lot::Mutex;
use serde_json::{json, Value};

const TOTAL: usize = 2000;
const CONCURRENCY: usize = 32;
const WORK_MS: u64 = 3;

/// What one request got.
#[derive(Debug, Clone)]
struct Answer {
    /// `None`: no answer at all (connection error or client timeout).
    code: Option<i64>,
    request_id: String,
    at: Instant,
}

#[derive(Debug, Default)]
struct Counts {
    sent: usize,
    results: usize,
    errors: BTreeMap<i64, usize>,
    unanswered: usize,
    mismatched: usize,
}

struct Load {
    answers: Arc<Mutex<Vec<Option<Answer>>>>,
    mismatched: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the load in the background: CONCURRENCY clients share TOTAL
/// requests. A client told 9702 (queue unavailable) waits 50 ms before its
/// next request, as a client should.
fn start_load(url: String) -> Load {
    let answers = Arc::new(Mutex::new(vec![None; TOTAL]));
    let mismatched = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (answers, mismatched, done, next, client, url) = (
            Arc::clone(&answers),
            Arc::clone(&mismatched),
            Arc::clone(&done),
            Arc::clone(&next),
            client.clone(),
            url.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TOTAL {
                    return;
                }
                let body = common::signed(json!({"i": i, "sleep_ms": WORK_MS}));
                let r = client.post(&url).json(&body).send().await;
                let answer = match r {
                    Err(_) => Answer {
                        code: None,
                        request_id: String::new(),
                        at: Instant::now(),
                    },
                    Ok(resp) => match resp.json::<Value>().await {
                        Err(_) => Answer {
                            code: None,
                            request_id: String::new(),
                            at: Instant::now(),
                        },
                        Ok(v) => {
                            let code = v["code"].as_i64();
                            if code == Some(0) && v["data"]["i"].as_u64() != Some(i as u64) {
                                mismatched.fetch_add(1, Ordering::Relaxed);
                            }
                            Answer {
                                code,
                                request_id: v["data"]["requestId"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                                at: Instant::now(),
                            }
                        }
                    },
                };
                let backoff = answer.code == Some(9702);
                answers.lock()[i] = Some(answer);
                done.fetch_add(1, Ordering::Relaxed);
                if backoff {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let task = tokio::spawn(async move {
        for w in workers {
            let _ = w.await;
        }
    });
    Load {
        answers,
        mismatched,
        done,
        task,
    }
}

impl Load {
    async fn wait_done_at_least(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.done.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "load stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> (Counts, Vec<Option<Answer>>) {
        tokio::time::timeout(Duration::from_secs(180), self.task)
            .await
            .expect("load finished")
            .expect("load task");
        let answers = self.answers.lock().clone();
        let mut c = Counts {
            sent: TOTAL,
            mismatched: self.mismatched.load(Ordering::Relaxed),
            ..Counts::default()
        };
        for a in &answers {
            match a.as_ref().and_then(|a| a.code) {
                None => c.unanswered += 1,
                Some(0) => c.results += 1,
                Some(code) => *c.errors.entry(code).or_default() += 1,
            }
        }
        (c, answers)
    }
}

/// Settings for a Redis deployment: short reclaim idle so a dead queue
/// instance's jobs come back within the test.
fn redis_settings(redis: &RedisServer) -> String {
    common::settings_yaml(
        "",
        &format!(
            "  RedisServer: \"{}\"\n  ReclaimIdle: 1\n  MaxDeliveries: 5\n  MaxQueueLength: 100000",
            redis.addr()
        ),
    )
    .replace("Backend: memory", "Backend: redis")
}

struct Cluster {
    dir: TestDir,
    yaml: PathBuf,
    queue_addrs: Vec<String>,
}

impl Cluster {
    /// Queues over TLS with the internal token, as deployed.
    fn new(settings: &str, queues: usize) -> Cluster {
        let dir = TestDir::new();
        let certs = common::TestCerts::make(&dir);
        let yaml = dir.write(
            "settings.yaml",
            &common::with_internal_security(settings, &certs, false),
        );
        Cluster {
            dir,
            yaml,
            queue_addrs: (0..queues)
                .map(|_| format!("127.0.0.1:{}", common::free_port()))
                .collect(),
        }
    }

    fn queue(&self, n: usize, name: &str) -> Proc {
        Proc::start(
            name,
            self.dir.path(),
            &[
                "queue",
                "--yaml",
                self.yaml.to_str().unwrap(),
                "--listen",
                &self.queue_addrs[n],
            ],
            &["queue-grpc"],
        )
    }

    fn endpoint_args(&self, first: usize) -> Vec<String> {
        let n = self.queue_addrs.len();
        (0..n)
            .flat_map(|i| {
                [
                    "--queue-endpoint".to_string(),
                    format!("https://{}", self.queue_addrs[(first + i) % n]),
                ]
            })
            .collect()
    }

    /// A dispatcher that tries queue instance `first` first; logs each job it
    /// starts (debug) so runs can be counted.
    fn dispatcher(&self, name: &str, first: usize) -> Proc {
        let mut args: Vec<String> = [
            "dispatcher",
            "0",
            "--yaml",
            self.yaml.to_str().unwrap(),
            "--max-workers",
            "8",
            "--metrics-listen",
            "127.0.0.1:0",
            "--node-id",
            name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.endpoint_args(first));
        Proc::start_cmd(
            name,
            self.dir.path(),
            std::process::Command::new(common::bin())
                .args(&args)
                .env("INFERQ_LOG", "info,inferq::dispatcher=debug"),
            &["dispatcher-metrics"],
        )
    }

    fn gateway(&self) -> Proc {
        let mut args: Vec<String> = ["gateway", "--yaml", self.yaml.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(self.endpoint_args(0));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start("gateway", self.dir.path(), &args, &["gateway-http"])
    }
}

/// How many times each request id was started, over dispatcher logs.
fn runs_per_request(logs: &[String]) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for text in logs {
        for line in text.lines().filter(|l| l.contains("job started")) {
            if let Some(rest) = line.split("request_id=").nth(1) {
                let id: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                *runs.entry(id).or_insert(0) += 1;
            }
        }
    }
    runs
}

fn report(name: &str, c: &Counts) {
    println!(
        "FAULT {name}: sent {} results {} errors {:?} unanswered {} mismatched {}",
        c.sent, c.results, c.errors, c.unanswered, c.mismatched
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_one_of_two_dispatchers_mid_load() {
    let rdir = TestDir::new();
    let redis = RedisServer::start(rdir.path());
    let cl = Cluster::new(&redis_settings(&redis), 1);
    let _q = cl.queue(0, "queue");
    let mut d1 = cl.dispatcher("d1", 0);
    let d2 = cl.dispatcher("d2", 0);
    let gw = cl.gateway();
    let load = start_load(gw.url("gateway-http", "/api/echo"));
    load.wait_done_at_least(TOTAL / 4).await;
    d1.kill9();
    load.wait_done_at_least(TOTAL / 2).await;
    let d1b = cl.dispatcher("d1-restarted", 0);
    let (c, _) = load.finish().await;
    report("kill -9 dispatcher", &c);
    assert_eq!(c.unanswered, 0, "{c:?}");
    assert_eq!(c.mismatched, 0, "{c:?}");
    assert_eq!(
        c.results, TOTAL,
        "a dispatcher's death costs no request: {c:?}"
    );
    let ran_after = runs_per_request(&[d1b.log_text()]).len();
    assert!(ran_after > 0, "the restarted dispatcher took work");
    assert!(
        d2.log_text().contains("job started"),
        "the surviving dispatcher worked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_one_of_two_queue_instances_mid_load() {
    let rdir = TestDir::new();
    let redis = RedisServer::start(rdir.path());
    let cl = Cluster::new(&redis_settings(&redis), 2);
    let mut q1 = cl.queue(0, "queue1");
    let q2 = cl.queue(1, "queue2");
    let _d1 = cl.dispatcher("d1", 0);
    let _d2 = cl.dispatcher("d2", 1);
    let gw = cl.gateway();
    let load = start_load(gw.url("gateway-http", "/api/echo"));
    load.wait_done_at_least(TOTAL / 4).await;
    q1.kill9();
    let (c, _) = load.finish().await;
    report("kill -9 queue instance", &c);
    if c.results != TOTAL {
        for (name, text) in [("gateway", gw.log_text()), ("queue2", q2.log_text())] {
            for l in text
                .lines()
                .filter(|l| !l.contains("trying the next"))
                .take(60)
            {
                println!("{name}: {l}");
            }
        }
    }
    assert_eq!(c.unanswered, 0, "{c:?}");
    assert_eq!(c.mismatched, 0, "{c:?}");
    assert_eq!(
        c.results, TOTAL,
        "calls on the dead instance are retried on the other: {c:?}"
    );
    let q2_log = q2.log_text();
    assert!(
        q2_log.contains("dispatcher connected"),
        "dispatchers moved to the surviving instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_redis_mid_load() {
    let rdir = TestDir::new();
    let mut redis = RedisServer::start(rdir.path());
    let port = redis.port;
    let cl = Cluster::new(&redis_settings(&redis), 1);
    let q = cl.queue(0, "queue");
    let d1 = cl.dispatcher("d1", 0);
    let d2 = cl.dispatcher("d2", 0);
    let gw = cl.gateway();
    let load = start_load(gw.url("gateway-http", "/api/echo"));
    load.wait_done_at_least(TOTAL / 4).await;
    let killed_at = Instant::now();
    redis.kill9();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let _redis2 = RedisServer::start_on(rdir.path(), port);
    let (c, answers) = load.finish().await;
    report("restart redis-server", &c);
    assert_eq!(c.unanswered, 0, "{c:?}");
    assert_eq!(c.mismatched, 0, "{c:?}");
    for code in c.errors.keys() {
        assert!(
            [9702, 9997].contains(code),
            "only 'queue unavailable' or a timeout while Redis was away: {c:?}"
        );
    }
    assert!(
        c.results > TOTAL / 2,
        "service resumed after the restart: {c:?}"
    );
    // A job acknowledged before the kill (its caller had its result) is not
    // run again after the restart.
    let runs = runs_per_request(&[d1.log_text(), d2.log_text()]);
    let mut acked_before = 0;
    for a in answers.iter().flatten() {
        if a.code == Some(0) && a.at < killed_at {
            acked_before += 1;
            assert_eq!(
                runs.get(&a.request_id).copied(),
                Some(1),
                "request {} answered before the restart ran again",
                a.request_id
            );
        }
    }
    let reruns: usize = runs.values().filter(|&&n| n > 1).count();
    println!(
        "FAULT restart redis-server: {acked_before} answered before the kill, none run again; {reruns} jobs in flight at the kill ran twice"
    );
    assert!(acked_before >= TOTAL / 4 - CONCURRENCY);
    assert!(q.log_text().contains("redis"), "queue logged the outage");
}
