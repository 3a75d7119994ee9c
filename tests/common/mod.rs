//! Test harness: starts the real `inferq` binary on loopback ephemeral ports,
//! reads the `listening on` lines it prints, and stops every process when the
//! handle drops, also when a test fails.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub const APP_ID: &str = "3EA25569454745D01219080B779F021F";
pub const SECRET: &str = "41DF0E6AE27B5282C07EF5124642A352";
pub const PLAIN_APP: &str = "PLAINAPP00000000000000000000000A";
pub const PLAIN_SECRET: &str = "00000000000000000000000000000000";
pub const SM2_KEY: &str = "JShsBOJL0RgPAoPttEB1hgtPAvCikOl0V1oTOYL7k5U=";

/// The `inferq` binary under test: this build's, or `INFERQ_TEST_BIN` (a
/// benchmark measuring an earlier build against the same checks).
pub fn bin() -> String {
    std::env::var("INFERQ_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_inferq").to_string())
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv python with the independent client tools (scripts/setup-test-env.sh).
pub fn python() -> PathBuf {
    let p = std::env::var("INFERQ_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".cache/venv/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run scripts/test.sh (it sets up the test venv)",
        p.display()
    );
    p
}

/// A settings file for tests: loopback, ephemeral ports, the example keys.
pub fn settings_yaml(extra_api: &str, extra_server: &str) -> String {
    format!(
        r#"
API:
  Port: 0
  Addr: 127.0.0.1
  GrpcPort: 0
  SM2PrivateKey: "{SM2_KEY}"
  AppIdSecret:
    "{APP_ID}": "{SECRET}"
    "{PLAIN_APP}": "{PLAIN_SECRET}"
  AllowSignPlain: ["{PLAIN_APP}"]
  RequestTimestampDiff: 300
  AdminListen: "127.0.0.1:0"
{extra_api}
Server:
  QueueName: "testq"
  MessageTimeout: 10
  MaxWorkers: 8
  Backend: memory
  QueueListen: "127.0.0.1:0"
  DispatcherMetricsListen: ""
{extra_server}
"#
    )
}

pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        TestDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

/// A running inferq process; killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    /// role -> address, from the `inferq: <role> listening on <addr>` lines.
    pub addrs: HashMap<String, String>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `inferq ARGS` and waits until every role in `roles` listens.
    pub fn start(name: &str, dir: &Path, args: &[&str], roles: &[&str]) -> Proc {
        Proc::start_cmd(name, dir, Command::new(bin()).args(args), roles)
    }

    pub fn start_cmd(name: &str, dir: &Path, cmd: &mut Command, roles: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        if !cmd.get_envs().any(|(k, _)| k == "INFERQ_LOG") {
            cmd.env("INFERQ_LOG", "info");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn inferq");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut proc = Proc {
            name: name.into(),
            child,
            addrs: HashMap::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while roles.iter().any(|r| !proc.addrs.contains_key(*r)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("inferq: ") {
                        if let Some((role, addr)) = rest.split_once(" listening on ") {
                            proc.addrs.insert(role.to_string(), addr.trim().to_string());
                        }
                    }
                }
                Err(_) => panic!(
                    "{name} did not start (waiting for {roles:?}); log:\n{}",
                    proc.log_text()
                ),
            }
        }
        proc
    }

    pub fn addr(&self, role: &str) -> &str {
        &self.addrs[role]
    }

    pub fn url(&self, role: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(role), path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status();
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Waits for exit up to `timeout`; the exit code, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A standalone inferq with `settings`.
pub fn standalone(dir: &TestDir, settings: &str) -> Proc {
    let yaml = dir.write("settings.yaml", settings);
    Proc::start(
        "standalone",
        dir.path(),
        &["standalone", "--yaml", yaml.to_str().unwrap()],
        &["gateway-http", "gateway-grpc"],
    )
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A SHA256-signed envelope for `data` (Python canonical form).
pub fn signed(data: Value) -> Value {
    signed_with(data, Map::new(), "SHA256", APP_ID, SECRET, now())
}

pub fn signed_with(
    data: Value,
    extra: Map<String, Value>,
    sign_type: &str,
    app: &str,
    secret: &str,
    ts: i64,
) -> Value {
    use inferq::gateway::signature::{self, Canonical};
    let mut fields = Map::new();
    fields.insert("appId".into(), json!(app));
    fields.insert("version".into(), json!("1"));
    fields.insert("signType".into(), json!(sign_type));
    fields.insert("encType".into(), json!("plain"));
    fields.insert("timestamp".into(), json!(ts));
    fields.insert("data".into(), data);
    fields.extend(extra);
    let s = signature::signed_string(&fields, secret, Canonical::Python);
    let sig = match sign_type {
        "SHA256" => signature::sha256_sign(&s),
        "SM2" => signature::sm2_sign(&signature::sm2_signing_key(SM2_KEY).unwrap(), &s),
        _ => String::new(),
    };
    fields.insert("signData".into(), json!(sig));
    Value::Object(fields)
}

/// A gRPC `Predict` request carrying a SHA256-signed envelope's fields
/// (from [`signed`]).
pub fn predict_request(api_path: &str, v: &Value) -> inferq::proto::PredictRequest {
    inferq::proto::PredictRequest {
        api_path: api_path.into(),
        app_id: v["appId"].as_str().unwrap().into(),
        version: "1".into(),
        sign_type: v["signType"].as_str().unwrap().into(),
        sign_data: v["signData"].as_str().unwrap().into(),
        enc_type: "plain".into(),
        timestamp: v["timestamp"].as_i64().unwrap(),
        params: Some(inferq::proto::predict_request::Params::DataJson(
            v["data"].to_string(),
        )),
    }
}

/// A plain-HTTP client. It loads no root certificates: with them, each
/// client built would read the system's store (milliseconds per request).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
}

/// POSTs `body` and returns (HTTP status, envelope).
pub async fn post(url: &str, body: &Value) -> (u16, Value) {
    post_raw(url, serde_json::to_vec(body).unwrap()).await
}

pub async fn post_raw(url: &str, body: Vec<u8>) -> (u16, Value) {
    let r = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text:?}"));
    (status, v)
}

pub fn code(v: &Value) -> i64 {
    v["code"].as_i64().expect("envelope has a code")
}

/// Reads a metric from a Prometheus text page.
pub async fn metric(url: &str, name: &str) -> i64 {
    let text = client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_in(&text, name).unwrap_or_else(|| panic!("metric {name} not in {url}"))
}

/// The sum of every series of `name` (whatever its labels) in a page of
/// the Prometheus text format; None when there is none.
pub fn metric_in(text: &str, name: &str) -> Option<i64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let family = series.split('{').next()?;
            (family == name)
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as i64)
}

/// A certificate authority and a server certificate for `localhost` and
/// `127.0.0.1` signed by it, made at run time, as PEM files in a test dir.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: String,
}

impl TestCerts {
    pub fn make(dir: &TestDir) -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "inferq test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        TestCerts {
            ca: dir.write("ca.pem", &ca_cert.pem()),
            cert: dir.write("cert.pem", &cert.pem()),
            key: dir.write("key.pem", &key.serialize_pem()),
            ca_pem: ca_cert.pem(),
        }
    }

    /// A `TLS` section serving these certificates; `public`: also on the
    /// public listeners (else only on the queue's).
    pub fn section(&self, public: bool) -> String {
        format!(
            "TLS:\n  CertFile: \"{}\"\n  KeyFile: \"{}\"\n  CaFile: \"{}\"\n  Public: {public}\n",
            self.cert.display(),
            self.key.display(),
            self.ca.display()
        )
    }

    /// An HTTPS client that trusts this CA (and nothing else).
    pub fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA");
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .unwrap()
    }
}

/// The internal token of the split-deployment tests.
pub const INTERNAL_TOKEN: &str = "split-test-internal-token-5f0c";

/// `settings` with `Server.InternalToken` and a `TLS` section.
pub fn with_internal_security(settings: &str, certs: &TestCerts, public_tls: bool) -> String {
    assert!(
        settings.contains("\nServer:\n"),
        "settings without a Server section"
    );
    let with_token = settings.replacen(
        "\nServer:\n",
        &format!("\nServer:\n  InternalToken: \"{INTERNAL_TOKEN}\"\n"),
        1,
    );
    format!("{with_token}\n{}", certs.section(public_tls))
}

/// A split deployment: `inferq queue`, dispatchers and a gateway as separate
/// processes, the way the README deploys them: the queue serves TLS and
/// requires the internal token, which gateways and dispatchers send over
/// `https://`. The public listeners serve plain HTTP (TLS at nginx) unless
/// started with [`Split::start_public_tls`].
pub struct Split {
    pub dir: TestDir,
    pub yaml: PathBuf,
    pub queue: Proc,
    pub queue_url: String,
    pub certs: TestCerts,
}

impl Split {
    pub fn start(settings: &str) -> Split {
        Split::start_with(settings, false)
    }

    /// Also TLS on the gateways' REST and gRPC listeners.
    pub fn start_public_tls(settings: &str) -> Split {
        Split::start_with(settings, true)
    }

    fn start_with(settings: &str, public_tls: bool) -> Split {
        let dir = TestDir::new();
        let certs = TestCerts::make(&dir);
        let yaml = dir.write(
            "settings.yaml",
            &with_internal_security(settings, &certs, public_tls),
        );
        let queue = Proc::start(
            "queue",
            dir.path(),
            &["queue", "--yaml", yaml.to_str().unwrap()],
            &["queue-grpc"],
        );
        let queue_url = format!("https://{}", queue.addr("queue-grpc"));
        Split {
            dir,
            yaml,
            queue,
            queue_url,
            certs,
        }
    }

    /// A client of the queue service, over TLS with the internal token.
    pub async fn queue_client(&self) -> inferq::proto::client::QueueClient {
        let connector =
            inferq::proto::client::QueueConnector::new(Some(&self.certs.ca), INTERNAL_TOKEN)
                .expect("connector");
        let channel = connector
            .endpoint(&self.queue_url, Duration::from_secs(3))
            .expect("endpoint")
            .connect()
            .await
            .expect("queue gRPC over TLS");
        connector.client(channel)
    }

    /// A dispatcher on queue 0 with `max_workers`, serving metrics on an ephemeral port.
    pub fn dispatcher(&self, name: &str, max_workers: u32) -> Proc {
        let mw = max_workers.to_string();
        Proc::start(
            name,
            self.dir.path(),
            &[
                "dispatcher",
                "0",
                "--yaml",
                self.yaml.to_str().unwrap(),
                "--queue-endpoint",
                &self.queue_url,
                "--max-workers",
                &mw,
                "--metrics-listen",
                "127.0.0.1:0",
                "--node-id",
                name,
            ],
            &["dispatcher-metrics"],
        )
    }

    pub fn gateway(&self) -> Proc {
        Proc::start(
            "gateway",
            self.dir.path(),
            &[
                "gateway",
                "--yaml",
                self.yaml.to_str().unwrap(),
                "--queue-endpoint",
                &self.queue_url,
            ],
            &["gateway-http", "gateway-grpc"],
        )
    }
}

/// The queue service's `Stats` rows (of every queue when `queue` is empty).
pub async fn queue_stats(
    client: &mut inferq::proto::client::QueueClient,
    queue: &str,
) -> Vec<inferq::proto::QueueStats> {
    client
        .stats(inferq::proto::StatsRequest {
            queue: queue.into(),
        })
        .await
        .expect("Stats")
        .into_inner()
        .queues
}

/// Sends `n` concurrent echo requests sleeping `sleep_ms`; returns the envelopes.
pub async fn concurrent_sleeps(url: &str, n: usize, sleep_ms: u64) -> Vec<Value> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            post(&url, &signed(json!({"i": i, "sleep_ms": sleep_ms})))
                .await
                .1
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// Polls `cond` every 20 ms for at most `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A redis-server of the test's own: loopback, a free port, its own data
/// directory, `appendonly yes` with `appendfsync always` (an acknowledged
/// write survives kill -9). Killed on drop. Never the system's Redis.
pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    /// The configuration file it was started with, if any (a restart uses it again).
    conf: Option<PathBuf>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port in `dir`.
    pub fn start(dir: &Path) -> RedisServer {
        RedisServer::start_with(dir, &[])
    }

    /// Starts one on a free port in `dir` with extra redis-server arguments
    /// (e.g. `--requirepass`).
    pub fn start_with(dir: &Path, extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            if let Some(r) = RedisServer::try_start(dir, port, extra) {
                return r;
            }
        }
        panic!("redis-server did not start; log:\n{}", redis_log(dir));
    }

    /// Starts one on `port` in `dir` (a restart reads the same AOF).
    pub fn start_on(dir: &Path, port: u16) -> RedisServer {
        for _ in 0..50 {
            if let Some(r) = RedisServer::try_start(dir, port, &[]) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "redis-server did not restart on {port}; log:\n{}",
            redis_log(dir)
        );
    }

    /// Starts one from the configuration file `conf` (e.g. deploy/redis.conf
    /// as shipped), overriding only where it listens, its directory and its
    /// log: a free port on loopback, `dir`.
    pub fn start_conf(dir: &Path, conf: &Path) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            if let Some(r) = RedisServer::try_start_conf(dir, port, conf) {
                return r;
            }
        }
        panic!(
            "redis-server {} did not start; log:\n{}",
            conf.display(),
            redis_log(dir)
        );
    }

    /// kill -9 if running, then starts again on the same port, directory and
    /// configuration (so it reads the same AOF).
    pub fn restart(&mut self) {
        self.kill9();
        for _ in 0..50 {
            let again = match &self.conf {
                Some(conf) => RedisServer::try_start_conf(&self.dir, self.port, conf),
                None => RedisServer::try_start(&self.dir, self.port, &[]),
            };
            if let Some(mut r) = again {
                self.child = r.child.take();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "redis-server did not restart on {}; log:\n{}",
            self.port,
            redis_log(&self.dir)
        );
    }

    fn try_start_conf(dir: &Path, port: u16, conf: &Path) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .arg(conf)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", dir.to_str().expect("utf-8 dir")])
            .args(["--daemonize", "no", "--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not installed (scripts/setup-test-env.sh installs it)");
        let mut r = RedisServer::wait_up(child, dir, port)?;
        r.conf = Some(conf.to_path_buf());
        Some(r)
    }

    /// The server in `child` once it answers on `port` (None if it exits or
    /// does not answer within 10 s).
    fn wait_up(mut child: Child, dir: &Path, port: u16) -> Option<RedisServer> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None; // port taken, most likely
            }
            if redis_ping(port) {
                return Some(RedisServer {
                    port,
                    dir: dir.to_path_buf(),
                    conf: None,
                    child: Some(child),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn try_start(dir: &Path, port: u16, extra: &[&str]) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                dir.to_str().expect("utf-8 dir"),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                "redis.log",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not installed (scripts/setup-test-env.sh installs it)");
        RedisServer::wait_up(child, dir, port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// kill -9, then wait for the process to go.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends one raw command and returns the first reply line.
    pub fn command(&self, args: &[&str]) -> String {
        redis_command(self.port, args).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn redis_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Up: answers PING, or refuses it for want of a password.
fn redis_ping(port: u16) -> bool {
    redis_command(port, &["PING"]).is_some_and(|r| r == "+PONG" || r.starts_with("-NOAUTH"))
}

/// One RESP command over a fresh connection; the first reply line.
pub fn redis_command(port: u16, args: &[&str]) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    Some(text.lines().next().unwrap_or_default().to_string())
}

/// Runs `tests/python/eas_sdk.py ARGS` with the eas-prediction venv's python
/// (scripts/setup-test-env.sh makes it), for at most `limit`; whether it
/// exited 0, and its stdout and stderr.
pub async fn eas_sdk(args: &[&str], limit: Duration) -> (bool, String) {
    let python = repo_root().join(".cache/venv-eas/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/test.sh (it sets up the eas-prediction venv)",
        python.display()
    );
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new(python)
            .arg(repo_root().join("tests/python/eas_sdk.py"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("SDK run timed out")
    .expect("run python");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// nginx with a site configuration of the test's (a `server` block or
/// more), its pid, logs and temp files in the test's directory; stopped on
/// drop: SIGTERM to the master (it stops the workers and exits), SIGKILL
/// to whatever is left after 5 s.
pub struct Nginx {
    child: Child,
    pub dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with `site` and waits (at most 10 s) until `port` accepts.
    pub fn start(dir: &TestDir, site: &str, port: u16) -> Nginx {
        let d = dir.path().display();
        let main = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\n\
             http {{\n  access_log {d}/nginx-access.log;\n  client_body_temp_path {d}/nb;\n  proxy_temp_path {d}/np;\n\
               include {d}/site.conf;\n}}\n"
        );
        dir.write("site.conf", site);
        let main_path = dir.write("nginx.conf", &main);
        let child = Command::new(nginx_bin())
            .args([
                "-c",
                main_path.to_str().expect("utf-8 path"),
                "-g",
                "daemon off;",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx not installed (scripts/setup-test-env.sh installs it)");
        let nginx = Nginx {
            child,
            dir: dir.path().to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nginx-error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}
