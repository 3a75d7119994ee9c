//! Operating inferq on Redis, with real processes: the three split
//! subcommands started with one settings file, a queue service that starts
//! before Redis does, and dead letters listed and re-queued from the CLI.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Proc, RedisServer, TestDir};
use serde_json::json;

/// Split-deployment settings in `dir`: the queue over TLS with the internal
/// token (certificates made there).
fn settings(dir: &TestDir, redis_addr: &str, queue_addr: &str, extra: &str) -> String {
    // No Backend key: a go-infer file has none, and the split subcommands
    // then use Redis.
    let yaml = common::settings_yaml(
        "",
        &format!(
            "  RedisServer: \"{redis_addr}\"\n  QueueListen: \"{queue_addr}\"\n  QueueEndpoints: [\"https://{queue_addr}\"]\n  ReclaimIdle: 1\n{extra}"
        ),
    )
    .replace("  Backend: memory\n", "")
    .replace("  QueueListen: \"127.0.0.1:0\"\n", "");
    common::with_internal_security(&yaml, &common::TestCerts::make(dir), false)
}

fn start(dir: &TestDir, yaml: &str, name: &str, args: &[&str], roles: &[&str]) -> Proc {
    let mut all = args.to_vec();
    all.extend(["--yaml", yaml]);
    Proc::start(name, dir.path(), &all, roles)
}

/// A dispatcher on queue 0 that logs each job it starts.
fn dispatcher(dir: &TestDir, yaml: &str, name: &str) -> Proc {
    Proc::start_cmd(
        name,
        dir.path(),
        Command::new(common::bin())
            .args([
                "dispatcher",
                "0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--yaml",
                yaml,
            ])
            .env("INFERQ_LOG", "info,inferq::dispatcher=debug"),
        &["dispatcher-metrics"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_waits_for_redis_and_serves_once_it_is_up() {
    let dir = TestDir::new();
    let redis_port = common::free_port();
    let queue_addr = format!("127.0.0.1:{}", common::free_port());
    let yaml = dir.write(
        "settings.yaml",
        &settings(&dir, &format!("127.0.0.1:{redis_port}"), &queue_addr, ""),
    );
    let yaml = yaml.to_str().unwrap();
    let q = start(&dir, yaml, "queue", &["queue"], &["queue-grpc"]);
    let _d = start(
        &dir,
        yaml,
        "dispatcher",
        &["dispatcher", "0", "--metrics-listen", "127.0.0.1:0"],
        &["dispatcher-metrics"],
    );
    let gw = start(&dir, yaml, "gateway", &["gateway"], &["gateway-http"]);
    let url = gw.url("gateway-http", "/api/echo");

    let (_, v) = common::post(&url, &common::signed(json!({"x": 1}))).await;
    assert_eq!(common::code(&v), 9702, "no Redis yet: a defined code, {v}");
    assert!(
        q.log_text().contains("redis unreachable"),
        "a clear log line"
    );

    let rdir = TestDir::new();
    let _redis = RedisServer::start_on(rdir.path(), redis_port);
    let ok = common::wait_until(Duration::from_secs(30), || async {
        let (_, v) = common::post(&url, &common::signed(json!({"x": 2}))).await;
        common::code(&v) == 0
    })
    .await;
    assert!(
        ok,
        "service resumed without a restart; queue log:\n{}",
        q.log_text()
    );
    // The line comes from the result subscription's reconnect (backoff up
    // to 1 s); a caller in this instance is woken without it, so the first
    // answer may come first.
    assert!(
        common::wait_until(Duration::from_secs(5), || async {
            q.log_text().contains("redis reachable")
        })
        .await,
        "no 'redis reachable' line; queue log:\n{}",
        q.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_requeued_from_the_cli() {
    let dir = TestDir::new();
    let rdir = TestDir::new();
    let redis = RedisServer::start(rdir.path());
    let queue_addr = format!("127.0.0.1:{}", common::free_port());
    let yaml_path = dir.write(
        "settings.yaml",
        &settings(&dir, &redis.addr(), &queue_addr, "  MaxDeliveries: 1\n"),
    );
    let yaml = yaml_path.to_str().unwrap();
    let _q = start(&dir, yaml, "queue", &["queue"], &["queue-grpc"]);
    let mut d1 = dispatcher(&dir, yaml, "d1");
    let gw = start(&dir, yaml, "gateway", &["gateway"], &["gateway-http"]);
    let url = gw.url("gateway-http", "/api/echo");

    // The only dispatcher dies holding the job: with MaxDeliveries 1 the job
    // is not handed out again but dead-lettered, and its caller told so.
    let call = tokio::spawn({
        let url = url.clone();
        async move { common::post(&url, &common::signed(json!({"sleep_ms": 3000}))).await }
    });
    let held = common::wait_until(Duration::from_secs(10), || async {
        d1.log_text().contains("job started")
    })
    .await;
    assert!(held, "the dispatcher took the job");
    d1.kill9();
    let d2 = dispatcher(&dir, yaml, "d2");
    let (_, v) = call.await.unwrap();
    assert_eq!(common::code(&v), 9998, "InferFail with the reason: {v}");
    assert!(
        v["data"]["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("deliveries"),
        "{v}"
    );

    let cli = |args: &[&str]| {
        let out = Command::new(common::bin())
            .args(args)
            .args(["--yaml", yaml])
            .output()
            .expect("run inferq dead-letters");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let listed = cli(&["dead-letters", "list"]);
    assert!(listed.contains("# 1 dead letters in testq0"), "{listed}");
    let line = listed
        .lines()
        .find(|l| !l.starts_with('#'))
        .expect("one dead letter");
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[2], "/api/echo");
    assert!(fields[4].contains("deliveries"), "{line}");
    let request_id = fields[1].to_string();

    let requeued = cli(&["dead-letters", "requeue", "--all"]);
    assert!(requeued.contains("re-queued 1"), "{requeued}");
    assert!(cli(&["dead-letters", "list"]).contains("# 0 dead letters"));
    // The surviving dispatcher runs it again; the result is stored by id.
    let ran = common::wait_until(Duration::from_secs(15), || async {
        d2.log_text().contains(&request_id)
    })
    .await;
    assert!(ran, "re-queued job ran: {}", d2.log_text());
}

/// go-infer's `RedisPasswd` (requirepass) as it is, a `redis://user:pass@`
/// URL with an ACL user, and a wrong password (a defined code and a clear log
/// line, not a hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passwords_and_acl_users() {
    let rdir = TestDir::new();
    let redis = RedisServer::start_with(
        rdir.path(),
        &[
            "--requirepass",
            "go-infer-pass",
            "--user",
            "inferq",
            "on",
            ">acl-pass",
            "~*",
            "&*",
            "+@all",
        ],
    );
    for (name, server, passwd, works) in [
        ("requirepass", redis.addr(), "go-infer-pass", true),
        (
            "acl-url",
            format!("redis://inferq:acl-pass@{}", redis.addr()),
            "",
            true,
        ),
        ("wrong", redis.addr(), "not-the-password", false),
    ] {
        let dir = TestDir::new();
        let queue_addr = format!("127.0.0.1:{}", common::free_port());
        let yaml = dir.write(
            "settings.yaml",
            &settings(
                &dir,
                &server,
                &queue_addr,
                &format!("  RedisPasswd: \"{passwd}\"\n"),
            ),
        );
        let yaml = yaml.to_str().unwrap();
        let q = start(&dir, yaml, "queue", &["queue"], &["queue-grpc"]);
        let _d = dispatcher(&dir, yaml, "d");
        let gw = start(&dir, yaml, "gateway", &["gateway"], &["gateway-http"]);
        let url = gw.url("gateway-http", "/api/echo");
        if works {
            let ok = common::wait_until(Duration::from_secs(15), || async {
                let (_, v) = common::post(&url, &common::signed(json!({"x": 1}))).await;
                common::code(&v) == 0
            })
            .await;
            assert!(ok, "{name}: queue log:\n{}", q.log_text());
        } else {
            let (_, v) = common::post(&url, &common::signed(json!({"x": 1}))).await;
            assert_eq!(common::code(&v), 9702, "{name}: {v}");
            let log = q.log_text();
            assert!(log.contains("redis unreachable"), "{name}: {log}");
            assert!(
                !log.contains("not-the-password"),
                "the password is not logged"
            );
        }
    }
}

/// `standalone` keeps memory unless its settings ask for Redis; then its jobs
/// are in Redis like the split deployment's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_on_redis_when_asked() {
    let rdir = TestDir::new();
    let redis = RedisServer::start(rdir.path());
    let dir = TestDir::new();
    let yaml = common::settings_yaml("", &format!("  RedisServer: \"{}\"", redis.addr()))
        .replace("Backend: memory", "Backend: redis");
    let p = common::standalone(&dir, &yaml);
    let (_, v) = common::post(
        &p.url("gateway-http", "/api/echo"),
        &common::signed(json!({"x": 7})),
    )
    .await;
    assert_eq!(common::code(&v), 0, "{v}");
    assert!(p.log_text().contains("using the Redis Streams backend"));
    // The job went through Redis: its result is stored there under its id.
    let id = v["data"]["requestId"].as_str().unwrap();
    let exists = redis.command(&["EXISTS", &format!("inferq:result:{id}")]);
    assert_eq!(exists, ":1", "result stored in Redis");
}
