//! Operations with the real tools: Prometheus (Debian's) scrapes a split
//! deployment on Redis and its query API reads back what the load did;
//! promtool checks the shipped alert rules; readiness flips with real faults
//! (Redis killed, the queue killed) and comes back; a Python gRPC client that
//! never compiled inferq's protos lists its services through reflection; one
//! request's id is in the JSON log lines of all three components.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, code, free_port, signed, wait_until, Proc, RedisServer, TestDir};
use serde_json::{json, Value};

const QUEUE: &str = "testq0";

/// redis-server, a queue instance on a fixed port (so it can come back on
/// it), a gateway and a dispatcher, each logging JSON at debug level.
struct Deployment {
    /// Where every process sends its spans (OTLP/gRPC), if anywhere.
    otlp: Option<String>,
    dir: TestDir,
    yaml: PathBuf,
    redis: RedisServer,
    queue_port: u16,
    queue: Proc,
    gateway: Proc,
    dispatcher: Proc,
}

impl Deployment {
    fn start() -> Deployment {
        Deployment::start_exporting(None)
    }

    fn start_exporting(otlp: Option<String>) -> Deployment {
        let dir = TestDir::new();
        let redis = RedisServer::start(dir.path());
        let settings = common::settings_yaml("", "")
            .replace("Backend: memory", "Backend: redis")
            .replace(
                "  MaxWorkers: 8",
                &format!(
                    "  MaxWorkers: 8\n  RedisServer: \"127.0.0.1:{}\"\n  RequestQueueAmount: 1",
                    redis.port
                ),
            );
        let yaml = dir.write("settings.yaml", &settings);
        let queue_port = free_port();
        let queue = start_queue(dir.path(), &yaml, queue_port, otlp.as_deref());
        let dispatcher = start_dispatcher(dir.path(), &yaml, queue_port, otlp.as_deref());
        let gateway = Proc::start_cmd(
            "gateway",
            dir.path(),
            inferq("gateway", otlp.as_deref()).args([
                "gateway",
                "--yaml",
                yaml.to_str().unwrap(),
                "--queue-endpoint",
                &format!("http://127.0.0.1:{queue_port}"),
            ]),
            &["gateway-http", "gateway-grpc", "gateway-admin"],
        );
        Deployment {
            otlp,
            dir,
            yaml,
            redis,
            queue_port,
            queue,
            gateway,
            dispatcher,
        }
    }

    fn echo_url(&self) -> String {
        self.gateway.url("gateway-http", "/api/echo")
    }
}

/// `inferq` logging JSON at debug level, exporting its spans as
/// `inferq-<role>` to `otlp` if given.
fn inferq(role: &str, otlp: Option<&str>) -> Command {
    let mut cmd = Command::new(common::bin());
    cmd.env("INFERQ_LOG_FORMAT", "json")
        .env("INFERQ_LOG", "info,inferq=debug");
    if let Some(endpoint) = otlp {
        cmd.env("INFERQ_OTLP_ENDPOINT", endpoint)
            .env("OTEL_SERVICE_NAME", format!("inferq-{role}"));
    }
    cmd
}

fn start_queue(dir: &Path, yaml: &Path, port: u16, otlp: Option<&str>) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "queue",
        "--yaml",
        yaml.to_str().unwrap(),
        "--listen",
        &listen,
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    // The port may still be in TIME_WAIT after a kill: a few tries.
    for _ in 0..20 {
        let mut cmd = inferq("queue", otlp);
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Proc::start_cmd(
                "queue",
                dir,
                cmd.args(args),
                &["queue-grpc", "queue-metrics"],
            )
        }));
        if let Ok(p) = started {
            return p;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the queue did not start on {listen}");
}

fn start_dispatcher(dir: &Path, yaml: &Path, queue_port: u16, otlp: Option<&str>) -> Proc {
    Proc::start_cmd(
        "dispatcher",
        dir,
        inferq("dispatcher", otlp).args([
            "dispatcher",
            "0",
            "--yaml",
            yaml.to_str().unwrap(),
            "--queue-endpoint",
            &format!("http://127.0.0.1:{queue_port}"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--node-id",
            "d1",
        ]),
        &["dispatcher-metrics"],
    )
}

/// Debian's Prometheus on a loopback port with its own data folder,
/// scraping `targets` (job name, host:port) every second, with the shipped
/// alert rules loaded. Stopped on drop.
struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[(&str, &str)]) -> Prometheus {
        let rules = common::repo_root().join("deploy/prometheus/alerts.yml");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n",
            rules.display()
        );
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{addr}\"]\n"
            ));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus not installed (scripts/setup-test-env.sh installs it)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The value of an instant query's first sample; None when empty.
    async fn value(&self, query: &str) -> Option<f64> {
        let r = client()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits up to `limit` for `query` to give `want`; the last value.
    async fn wait_for(&self, query: &str, want: f64, limit: Duration) -> Option<f64> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.value(query).await;
            if got == Some(want) || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn status(url: &str) -> Option<u16> {
    client()
        .get(url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn becomes(url: &str, want: u16, limit: Duration) -> bool {
    wait_until(limit, || async { status(url).await == Some(want) }).await
}

#[tokio::test]
async fn prometheus_reads_back_the_load_a_split_deployment_served() {
    let mut d = Deployment::start();
    let prom = Prometheus::start(
        d.dir.path(),
        &[
            ("gateway", d.gateway.addr("gateway-admin")),
            ("queue", d.queue.addr("queue-metrics")),
            ("dispatcher", d.dispatcher.addr("dispatcher-metrics")),
        ],
    );
    let promtool = Command::new("promtool")
        .args(["check", "rules"])
        .arg(common::repo_root().join("deploy/prometheus/alerts.yml"))
        .output()
        .expect("promtool");
    assert!(promtool.status.success(), "{promtool:?}");

    // Every target scraped once before the load, so rates see it start.
    let up = prom.wait_for("sum(up)", 3.0, Duration::from_secs(30)).await;
    assert_eq!(up, Some(3.0), "targets up");
    // 100 requests of 100 ms, 5 at a time (2 s: several scrapes see the
    // counters move), and one carrying a traceparent.
    let url = d.echo_url();
    let mut tasks = Vec::new();
    for worker in 0..5 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..20 {
                let body = signed(json!({"sleep_ms": 100, "w": worker, "i": i}));
                ok += i32::from(code(&common::post(&url, &body).await.1) == 0);
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, 100);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = client()
        .post(&url)
        .header("traceparent", traceparent)
        .json(&signed(json!({"sleep_ms": 20, "traced": true})))
        .send()
        .await
        .unwrap();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(code(&r.json::<Value>().await.unwrap()), 0);

    // What Prometheus scraped matches what was sent.
    let limit = Duration::from_secs(30);
    let q = |s: &str| s.replace("QUEUE", QUEUE);
    for (query, want) in [
        (
            r#"sum(inferq_gateway_requests_total{api="/api/echo",code="0",sign="sha256"})"#,
            101.0,
        ),
        ("sum(inferq_gateway_request_duration_seconds_count)", 101.0),
        (
            &q(r#"inferq_queue_jobs_enqueued_total{queue="QUEUE"}"#),
            101.0,
        ),
        (
            &q(r#"inferq_queue_wait_duration_seconds_count{queue="QUEUE"}"#),
            101.0,
        ),
        (
            &q(r#"inferq_dispatcher_jobs_done_total{queue="QUEUE"}"#),
            101.0,
        ),
        (
            r#"inferq_dispatcher_inference_duration_seconds_count{model="/api/echo"}"#,
            101.0,
        ),
        (&q(r#"inferq_queue_dispatchers{queue="QUEUE"}"#), 1.0),
        ("inferq_gateway_requests_in_flight", 0.0),
    ] {
        let got = prom.wait_for(query, want, limit).await;
        assert_eq!(got, Some(want), "{query}");
    }
    // A rate over the run, and a quantile from the histogram: 100 ms jobs.
    let rate = prom
        .value(r#"sum(rate(inferq_gateway_requests_total{code="0"}[1m]))"#)
        .await
        .unwrap_or(0.0);
    assert!(rate > 0.0, "request rate {rate}");
    let p50 = prom
        .value("histogram_quantile(0.5, sum by (le) (inferq_dispatcher_inference_duration_seconds_bucket))")
        .await
        .unwrap_or(0.0);
    assert!(
        (0.1..=0.25).contains(&p50),
        "inference p50 {p50}s for 100 ms jobs"
    );
    let e2e = prom
        .value(
            "histogram_quantile(0.5, sum by (le) (inferq_gateway_request_duration_seconds_bucket))",
        )
        .await
        .unwrap_or(0.0);
    assert!((0.1..=0.5).contains(&e2e), "end-to-end p50 {e2e}s");
    for job in ["gateway", "queue", "dispatcher"] {
        let rss = prom
            .value(&format!(r#"process_resident_memory_bytes{{job="{job}"}}"#))
            .await
            .unwrap_or(0.0);
        assert!(rss > 1e6, "{job} RSS {rss}");
        let fds = prom
            .value(&format!(r#"process_open_fds{{job="{job}"}}"#))
            .await
            .unwrap_or(0.0);
        assert!(fds > 0.0, "{job} fds {fds}");
    }
    let rules: Value = client()
        .get(format!("{}/api/v1/rules", prom.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(loaded, 6, "{rules}");

    // The traced request's id is in JSON log lines of all three components.
    for p in [&d.gateway, &d.queue, &d.dispatcher] {
        let lines: Vec<Value> = p
            .log_text()
            .lines()
            .filter(|l| l.contains(&request_id))
            .map(|l| serde_json::from_str(l).expect("a JSON log line"))
            .collect();
        assert!(!lines.is_empty(), "{}: no line with {request_id}", p.name);
        let carried = lines.iter().any(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == request_id.as_str()))
        });
        assert!(carried, "{}: {lines:?}", p.name);
        if p.name != "gateway" {
            assert!(
                lines.iter().any(|l| l.to_string().contains(traceparent)),
                "{}: the traceparent did not travel: {lines:?}",
                p.name
            );
        }
    }

    // Dispatchers stopped: the queue grows, and no dispatcher is connected.
    d.dispatcher.signal("TERM");
    assert!(d.dispatcher.wait_exit(Duration::from_secs(15)).is_some());
    let mut waiting = Vec::new();
    for i in 0..5 {
        let url = url.clone();
        waiting.push(tokio::spawn(async move {
            common::post(&url, &signed(json!({"late": i}))).await.1
        }));
    }
    let length = prom
        .wait_for(&q(r#"inferq_queue_length{queue="QUEUE"}"#), 5.0, limit)
        .await;
    assert_eq!(length, Some(5.0));
    let none = prom
        .wait_for(
            &q(r#"sum(inferq_queue_dispatchers{queue="QUEUE"})"#),
            0.0,
            limit,
        )
        .await;
    assert_eq!(none, Some(0.0));
    let alert = prom
        .wait_for(
            r#"count(ALERTS{alertname="InferqNoDispatcher"})"#,
            1.0,
            limit,
        )
        .await;
    assert_eq!(alert, Some(1.0), "the no-dispatcher alert is pending");
    let age = prom
        .value(&q(r#"inferq_queue_oldest_job_age_seconds{queue="QUEUE"}"#))
        .await;
    assert!(age.is_some_and(|a| (0.0..=30.0).contains(&a)), "{age:?}");
    d.dispatcher = start_dispatcher(d.dir.path(), &d.yaml, d.queue_port, None);
    for w in waiting {
        assert_eq!(code(&w.await.unwrap()), 0);
    }
    let drained = prom
        .wait_for(&q(r#"inferq_queue_length{queue="QUEUE"}"#), 0.0, limit)
        .await;
    assert_eq!(drained, Some(0.0));
}

#[tokio::test]
async fn readiness_follows_redis_and_the_queue_and_comes_back() {
    let mut d = Deployment::start();
    let gw = |path: &str| d.gateway.url("gateway-http", path);
    let (live, ready, v2_live, v2_ready, model) = (
        gw("/healthz"),
        gw("/readyz"),
        gw("/v2/health/live"),
        gw("/v2/health/ready"),
        gw("/v2/models/echo/ready"),
    );
    let queue_ready = d.queue.url("queue-metrics", "/readyz");
    let dispatcher_ready = d.dispatcher.url("dispatcher-metrics", "/readyz");
    let grpc = format!("http://{}", d.gateway.addr("gateway-grpc"));
    let t = Duration::from_secs(15);
    for url in [
        &live,
        &ready,
        &v2_live,
        &v2_ready,
        &model,
        &queue_ready,
        &dispatcher_ready,
    ] {
        assert!(becomes(url, 200, t).await, "{url}");
    }
    assert_eq!(status(&gw("/v2/models/nothing/ready")).await, Some(404));
    assert_eq!(grpc_health(&grpc).await, Some(1), "SERVING");

    // Redis down: the queue cannot serve, so neither can the gateway.
    let cut = Instant::now();
    d.redis.kill9();
    assert!(becomes(&queue_ready, 503, t).await);
    assert!(becomes(&ready, 503, t).await);
    assert!(becomes(&v2_ready, 400, t).await);
    println!("not ready {:?} after Redis went", cut.elapsed());
    assert!(
        wait_until(t, || async { grpc_health(&grpc).await == Some(2) }).await,
        "NOT_SERVING"
    );
    assert_eq!(status(&live).await, Some(200), "still alive");
    assert_eq!(status(&v2_live).await, Some(200));
    let back = Instant::now();
    d.redis.restart();
    for url in [&queue_ready, &ready, &v2_ready, &model] {
        assert!(becomes(url, 200, t).await, "{url}");
    }
    println!("ready {:?} after Redis came back", back.elapsed());
    assert!(wait_until(t, || async { grpc_health(&grpc).await == Some(1) }).await);

    // The queue down: the gateway is not ready, nor is the dispatcher.
    d.queue.kill9();
    assert!(becomes(&ready, 503, t).await);
    assert!(becomes(&model, 400, t).await);
    assert!(becomes(&dispatcher_ready, 503, t).await);
    d.queue = start_queue(d.dir.path(), &d.yaml, d.queue_port, None);
    for url in [&ready, &model, &dispatcher_ready] {
        assert!(becomes(url, 200, Duration::from_secs(20)).await, "{url}");
    }

    // The queue's gRPC services, listed by a client without the protos.
    let services = reflect(d.queue.addr("queue-grpc")).await;
    assert!(services["services"]
        .as_array()
        .unwrap()
        .contains(&json!("inferq.v1.QueueService")));
    let methods = &services["methods"]["inferq.v1.QueueService"];
    for m in ["Call", "Dispatch", "Stats", "Ping"] {
        assert!(
            methods.as_array().unwrap().contains(&json!(m)),
            "{services}"
        );
    }
}

/// The gateway's `grpc.health.v1` status of the whole server: 1 SERVING,
/// 2 NOT_SERVING.
async fn grpc_health(url: &str) -> Option<i32> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let mut c = HealthClient::new(channel);
    let r = c
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

/// Services and methods listed through reflection by Python's grpcio.
async fn reflect(addr: &str) -> Value {
    let python = common::repo_root().join(".cache/venv-grpc/bin/python");
    let script = common::repo_root().join("tests/python/grpc_reflect.py");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(python)
            .arg(script)
            .arg(addr)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("reflection client in time")
    .expect("venv-grpc (scripts/setup-test-env.sh makes it)");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[tokio::test]
async fn grpc_reflection_lists_the_gateway_services_to_a_client_without_protos() {
    let dir = TestDir::new();
    let p = common::standalone(&dir, &common::settings_yaml("", ""));
    let v = reflect(p.addr("gateway-grpc")).await;
    let services = v["services"].as_array().unwrap();
    for s in [
        "inferq.v1.Predict",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(&json!(s)), "{v}");
    }
    // Only what the gateway serves: the queue's internal API is not there.
    assert!(!services.contains(&json!("inferq.v1.QueueService")), "{v}");
    assert_eq!(v["methods"]["inferq.v1.Predict"], json!(["Predict"]), "{v}");
}

/// The OpenTelemetry project's protos served by Python's grpcio: the spans
/// it receives, one JSON object per span. Killed on drop.
struct OtlpReceiver {
    child: Child,
    spans: std::sync::mpsc::Receiver<Value>,
    port: u16,
}

impl OtlpReceiver {
    fn start() -> OtlpReceiver {
        use std::io::BufRead;
        let port = free_port();
        let mut child = Command::new(common::repo_root().join(".cache/venv-grpc/bin/python"))
            .arg(common::repo_root().join("tests/python/otlp_receiver.py"))
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("venv-grpc (scripts/setup-test-env.sh makes it)");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(first.starts_with("listening"), "receiver: {first:?}");
        let (tx, spans) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        OtlpReceiver { child, spans, port }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log lines of the three processes that speak of span export (the
/// OpenTelemetry SDK logs its export failures through `tracing`).
fn export_lines(d: &Deployment) -> String {
    let mut out = String::new();
    for p in [&d.gateway, &d.queue, &d.dispatcher] {
        for line in p.log_text().lines().filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("opentelemetry") || l.contains("otlp") || l.contains("export")
        }) {
            out += &format!("{}: {line}\n", p.name);
        }
    }
    out
}

#[tokio::test]
async fn one_requests_spans_form_one_trace_across_the_three_components_over_otlp() {
    let receiver = OtlpReceiver::start();
    let d = Deployment::start_exporting(Some(format!("http://127.0.0.1:{}", receiver.port)));
    assert!(d.otlp.is_some());
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = client()
        .post(d.echo_url())
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&signed(json!({"traced": true})))
        .send()
        .await
        .unwrap();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(code(&r.json::<Value>().await.unwrap()), 0);

    // Batches leave every 5 s: wait for a span of the trace from each.
    let mut spans: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let services = ["inferq-gateway", "inferq-queue", "inferq-dispatcher"];
    while Instant::now() < deadline
        && !services.iter().all(|s| {
            spans
                .iter()
                .any(|v| v["service"] == *s && v["trace_id"] == trace_id)
        })
    {
        match receiver.spans.try_recv() {
            Ok(v) => spans.push(v),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let of = |service: &str| -> Vec<&Value> {
        spans
            .iter()
            .filter(|v| v["service"] == service && v["trace_id"] == trace_id)
            .collect()
    };
    for s in services {
        assert!(
            !of(s).is_empty(),
            "no span of {s} in the trace: {spans:?}\nwhat the processes logged of the export:\n{}",
            export_lines(&d)
        );
    }
    // The gateway's request span is the parent of the queue's and the
    // dispatcher's job spans; all carry the request id.
    let gateway_ids: Vec<&Value> = of("inferq-gateway").iter().map(|v| &v["span_id"]).collect();
    for s in ["inferq-queue", "inferq-dispatcher"] {
        let job = of(s);
        assert!(
            job.iter().any(|v| gateway_ids.contains(&&v["parent_id"])
                && v["attributes"]["request_id"] == request_id.as_str()),
            "{s}: {job:?} (gateway spans {gateway_ids:?})"
        );
    }
    assert!(
        of("inferq-gateway")
            .iter()
            .any(|v| v["attributes"]["request_id"] == request_id.as_str()),
        "{spans:?}"
    );
}
