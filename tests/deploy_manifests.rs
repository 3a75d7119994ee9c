//! The deployment files, checked offline (no cluster, no Docker daemon):
//! - `deploy/kubernetes`: rendered by kustomize (kubectl's own), validated
//!   against the Kubernetes API's schemas, and cross-checked by
//!   `tests/python/check_deploy.py` (ports, probe paths, selectors, Secrets,
//!   KEDA's stream names); the checker's failures on broken copies are
//!   checked too;
//! - the Dockerfile: hadolint, and the same checker (stages, user, library);
//! - `deploy/compose.yaml`: Compose's own parser, and the checker;
//! - the streams the ScaledObjects watch, against a real queue on Redis run
//!   with the manifests' own settings file: their lag and pending counts are
//!   the queue's waiting and held jobs, and the lag stays defined after
//!   entries are deleted (KEDA's lag trigger needs it).
//!
//! The tools come from scripts/setup-test-env.sh: kubectl and hadolint in
//! .cache/tools (scripts/fetch-deploy-tools.sh), kubernetes-validate in
//! .cache/venv-k8s, Compose from Debian.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use redis::AsyncCommands;
use serde_json::{json, Value};

fn tool(rel: &str) -> PathBuf {
    let p = repo_root().join(rel);
    assert!(
        p.exists(),
        "{} missing: run scripts/setup-test-env.sh",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> Output {
    cmd.current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl kustomize deploy/kubernetes`, written to `dir`.
fn render(dir: &TestDir) -> (PathBuf, String) {
    let out =
        run(Command::new(tool(".cache/tools/kubectl")).args(["kustomize", "deploy/kubernetes"]));
    let text = ok(&out, "kubectl kustomize");
    (dir.write("rendered.yaml", &text), text)
}

fn check(args: &[&Path]) -> Output {
    run(Command::new(tool(".cache/venv-k8s/bin/python"))
        .arg("tests/python/check_deploy.py")
        .args(args))
}

#[test]
fn kubernetes_dockerfile_and_compose_pass_their_checks() {
    let dir = TestDir::new();
    let (rendered, text) = render(&dir);
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    for kind in [
        "Namespace",
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let streams = ok(
        &check(&[Path::new("kubernetes"), &rendered]),
        "the Kubernetes checks",
    );
    println!("KEDA watches: {streams}");

    // The checker fails a copy with one thing broken, and says what.
    for (from, to, says) in [
        ("path: /readyz", "path: /ready", "path /ready"),
        (
            "containerPort: 5201",
            "containerPort: 5200",
            "container ports",
        ),
        (
            "inferq:q:svc-1:lo",
            "inferq:q:svc1:lo",
            "is not a lane of svc-1",
        ),
        (
            "consumerGroup: inferq",
            "consumerGroup: jobs",
            "consumerGroup",
        ),
        (
            "readinessProbe:",
            "readinesProbe:",
            "'readinesProbe' was unexpected",
        ),
        (
            "name: inferq-redis\n  namespace",
            "name: inferq-redis-auth\n  namespace",
            "TriggerAuthentication",
        ),
    ] {
        assert!(
            text.contains(from),
            "{from:?} not in the rendered manifests"
        );
        let broken = dir.write("broken.yaml", &text.replacen(from, to, 1));
        let out = check(&[Path::new("kubernetes"), &broken]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{from:?} -> {to:?} should fail with {says:?}; got: {err}"
        );
    }

    let out = run(Command::new(tool(".cache/tools/hadolint")).arg("Dockerfile"));
    ok(&out, "hadolint Dockerfile");
    ok(
        &check(&[Path::new("dockerfile"), Path::new("Dockerfile"), &rendered]),
        "the Dockerfile checks",
    );

    let compose = if run(Command::new("docker").args(["compose", "version"]))
        .status
        .success()
    {
        run(Command::new("docker").args(["compose", "-f", "deploy/compose.yaml", "config", "-q"]))
    } else {
        run(Command::new("docker-compose").args(["-f", "deploy/compose.yaml", "config", "-q"]))
    };
    ok(&compose, "compose config");
    ok(
        &check(&[
            Path::new("compose"),
            Path::new("deploy/compose.yaml"),
            Path::new("deploy/nginx-least-conn.conf"),
        ]),
        "the compose checks",
    );
}

/// The manifests' settings file with every address on loopback.
fn local_settings(redis: &str) -> (String, String) {
    let path = repo_root().join("deploy/kubernetes/settings.yaml");
    let mut s: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("settings")).expect("yaml");
    s["API"]["Port"] = 0.into();
    s["API"]["GrpcPort"] = 0.into();
    s["API"]["Addr"] = "127.0.0.1".into();
    s["API"]["AdminListen"] = "".into();
    s["Server"]["RedisServer"] = redis.into();
    s["Server"]["QueueListen"] = "127.0.0.1:0".into();
    s["Server"]["QueueMetricsListen"] = "".into();
    s["Server"]["DispatcherMetricsListen"] = "".into();
    let password = s["Server"]["RedisPasswd"]
        .as_str()
        .expect("RedisPasswd")
        .to_string();
    (serde_yaml::to_string(&s).expect("yaml"), password)
}

type Backlog = HashMap<String, (usize, usize)>;

/// Per queue, (lag summed over the watched lanes, pending of the `lo` lane)
/// as KEDA reads them (XINFO GROUPS); None while a watched stream or its
/// group does not exist (KEDA's trigger fails on those).
async fn keda_view(
    redis: &mut redis::aio::MultiplexedConnection,
    streams: &[(String, String, String)],
) -> Option<Backlog> {
    let mut view = Backlog::new();
    let mut seen = std::collections::HashSet::new();
    for (queue, stream, group) in streams {
        if !seen.insert(stream.clone()) {
            continue;
        }
        let info: redis::streams::StreamInfoGroupsReply = match redis.xinfo_groups(stream).await {
            Ok(info) => info,
            Err(e) if e.to_string().contains("no such key") => return None,
            Err(e) => panic!("XINFO GROUPS {stream}: {e}"),
        };
        let g = info.groups.iter().find(|g| &g.name == group)?;
        let lag = g.lag.unwrap_or_else(|| panic!("{stream}: lag undefined"));
        let e = view.entry(queue.clone()).or_default();
        e.0 += lag;
        if stream.ends_with(":lo") {
            e.1 += g.pending;
        }
    }
    Some(view)
}

/// Per queue, (ready, leased) from the queue's own `Stats`.
async fn stats_view(client: &mut inferq::proto::client::QueueClient, of: &Backlog) -> Backlog {
    queue_stats(client, "")
        .await
        .iter()
        .filter(|q| of.contains_key(&q.queue))
        .map(|q| (q.queue.clone(), (q.ready as usize, q.leased as usize)))
        .collect()
}

/// Samples [`keda_view`] every 50 ms until it is `want` (at most 10 s).
/// Reads Redis only: asking the queue (`Stats`, a metrics scrape) must not
/// be what makes the streams visible to KEDA.
async fn sample_until(
    redis: &mut redis::aio::MultiplexedConnection,
    streams: &[(String, String, String)],
    want: &Backlog,
) {
    let mut last = None;
    for _ in 0..200 {
        last = keda_view(redis, streams).await;
        if last.as_ref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("KEDA's view never reached {want:?}; last: {last:?} (None: a stream or group missing)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_keda_watches_carry_the_queues_backlog() {
    let dir = TestDir::new();
    let (rendered, _) = render(&dir);
    let out = ok(
        &check(&[Path::new("kubernetes"), &rendered]),
        "the Kubernetes checks",
    );
    let watched: Value = serde_json::from_str(&out).expect("checker's JSON");
    let streams: Vec<(String, String, String)> = watched["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().expect("field").to_string();
            (f("queue"), f("stream"), f("group"))
        })
        .collect();

    let probe = TestDir::new();
    let (_, password) = local_settings("");
    let redis_server = RedisServer::start_with(probe.path(), &["--requirepass", &password]);
    let (settings, _) = local_settings(&redis_server.addr());
    let yaml = dir.write("settings.yaml", &settings);
    let yaml = yaml.to_str().expect("path");
    let queue = Proc::start(
        "queue",
        dir.path(),
        &["queue", "--yaml", yaml],
        &["queue-grpc"],
    );
    let queue_url = format!("http://{}", queue.addr("queue-grpc"));
    let gw = Proc::start(
        "gateway",
        dir.path(),
        &["gateway", "--yaml", yaml, "--queue-endpoint", &queue_url],
        &["gateway-http"],
    );
    let token = {
        let s: serde_yaml::Value = serde_yaml::from_str(&settings).expect("yaml");
        s["Server"]["InternalToken"]
            .as_str()
            .expect("token")
            .to_string()
    };
    let connector = inferq::proto::client::QueueConnector::new(None, &token).expect("connector");
    let channel = connector
        .endpoint(&queue_url, Duration::from_secs(3))
        .expect("endpoint")
        .connect()
        .await
        .expect("queue");
    let mut client = connector.client(channel);
    let mut redis = redis::Client::open(format!("redis://:{password}@{}", redis_server.addr()))
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");

    // 8 requests of 3 s jobs, no dispatcher yet: all of them lag.
    const N: usize = 8;
    let url = gw.url("gateway-http", "/api/echo");
    let requests: Vec<_> = (0..N)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(
                async move { post(&url, &signed(json!({"i": i, "sleep_ms": 3000}))).await },
            )
        })
        .collect();
    // The gateway spreads them round robin: 4 per queue.
    let per_queue = N / 2;
    let want = |lag, pending| {
        HashMap::from([
            ("svc-0".to_string(), (lag, pending)),
            ("svc-1".to_string(), (lag, pending)),
        ])
    };
    sample_until(&mut redis, &streams, &want(per_queue, 0)).await;
    let own = stats_view(&mut client, &want(0, 0)).await;
    assert_eq!(own, want(per_queue, 0), "Stats' (ready, leased)");

    // A dispatcher per queue takes MaxWorkers (2) jobs: those turn pending.
    let _dispatchers: Vec<Proc> = ["0", "1"]
        .iter()
        .map(|n| {
            Proc::start(
                &format!("dispatcher-{n}"),
                dir.path(),
                &[
                    "dispatcher",
                    n,
                    "--yaml",
                    yaml,
                    "--queue-endpoint",
                    &queue_url,
                ],
                &[],
            )
        })
        .collect();
    sample_until(&mut redis, &streams, &want(per_queue - 2, 2)).await;
    let own = stats_view(&mut client, &want(0, 0)).await;
    println!("with dispatchers, per queue: KEDA's (lag, pending) = Stats' (ready, leased) {own:?}");
    assert_eq!(own, want(per_queue - 2, 2), "Stats' (ready, leased)");

    for (i, r) in requests.into_iter().enumerate() {
        let (status, v) = r.await.expect("request");
        assert_eq!((status, code(&v)), (200, 0), "{v}");
        assert_eq!(v["data"]["i"].as_u64(), Some(i as u64), "{v}");
    }
    // Done: entries deleted, the lag still defined (0) and nothing pending.
    sample_until(&mut redis, &streams, &want(0, 0)).await;
}
