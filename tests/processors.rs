//! Models in any language: the HTTP processor in front of a Python server
//! from the standard library (tests/python/model_server.py), PMML files
//! written by sklearn2pmml and checked against scikit-learn and
//! jpmml-evaluator, and PAI-EAS service files run as the document writes
//! them, driven by the eas-prediction SDK.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use inferq::proto::predict_client::PredictClient;
use serde_json::{json, Value};

const TOKEN: &str = "processor-test-token";

fn python3() -> String {
    // The user's server needs only the standard library.
    "python3".to_string()
}

fn model_server() -> PathBuf {
    repo_root().join("tests/python/model_server.py")
}

/// Settings with an `http` model at /api/py whose server inferq runs, and a
/// PAI-EAS service `pysvc` on it.
fn http_settings(port: u16, log: &Path, model_extra: &str) -> String {
    format!(
        r#"{}
Models:
  py:
    Kind: http
    ApiPath: /api/py
    Url: http://127.0.0.1:{port}/data/model
    Command: exec {} {} {port} {}
{model_extra}
AsyncServices:
  pysvc:
    model: /api/py
    token: {TOKEN}
    rpc: {{worker_threads: 4}}
"#,
        settings_yaml("", "  MaxDeliveries: 3\n"),
        python3(),
        model_server().display(),
        log.display(),
    )
}

/// A standalone inferq serving the Python server as `/api/py` (settings
/// from [`http_settings`] with `model_extra`); its folder, the server's log
/// and the process.
fn start_http(model_extra: &str) -> (TestDir, PathBuf, Proc) {
    let dir = TestDir::new();
    let log = dir.path().join("server.log");
    let p = standalone(&dir, &http_settings(free_port(), &log, model_extra));
    (dir, log, p)
}

/// Request ids the server received, one per line.
fn received(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn server_pids(log: &Path) -> Vec<u32> {
    std::fs::read_to_string(format!("{}.pid", log.display()))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Stops inferq as an operator does (SIGTERM): it drains, then stops the
/// model server it started.
async fn stop(mut p: Proc, log: &Path) {
    p.signal("TERM");
    // Polled on the test's runtime, so that its clients can close their
    // connections (the gateway waits for them), at most 30 s.
    let mut exited = false;
    for _ in 0..600 {
        if p.wait_exit(Duration::from_millis(1)).is_some() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited, "inferq did not stop:\n{}", p.log_text());
    for pid in server_pids(log) {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z "),
            "model server {pid} outlived inferq"
        );
    }
}

async fn eas_put(gateway: &str, body: &[u8]) -> String {
    let r = client()
        .post(format!("http://{gateway}/api/predict/pysvc"))
        .header("Authorization", TOKEN)
        .body(body.to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    r.headers()["x-eas-queueservice-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The sink's items as (request id, data).
async fn sink_items(gateway: &str) -> Vec<(String, Vec<u8>)> {
    let r = client()
        .get(format!(
            "http://{gateway}/api/predict/pysvc/sink?_length_=100"
        ))
        .header("Authorization", TOKEN)
        .header("Accept", "application/json")
        .send()
        .await
        .expect("get");
    let items: Vec<Value> = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or_default();
    items
        .iter()
        .map(|i| {
            let rid = i["tags"]["requestId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let data = i["data"].as_str().unwrap_or_default();
            let bytes = if i["encoding"] == "base64" {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .expect("base64")
            } else {
                data.as_bytes().to_vec()
            };
            (rid, bytes)
        })
        .collect()
}

#[tokio::test]
async fn a_python_server_answers_goinfer_grpc_and_async_requests() {
    let (_dir, log, p) = start_http("");
    let gateway = p.addr("gateway-http").to_string();

    // go-infer's signed envelope.
    let (status, v) = post(&p.url("gateway-http", "/api/py"), &signed(json!({"x": 1}))).await;
    assert_eq!((status, code(&v)), (200, 0), "{v}");
    assert_eq!(v["data"]["echo"], json!({"x": 1}));
    let rid = v["data"]["rid"].as_str().unwrap_or_default();
    assert_eq!(rid.len(), 32, "the server got the request id: {v}");

    // gRPC.
    let mut grpc = PredictClient::connect(format!("http://{}", p.addr("gateway-grpc")))
        .await
        .unwrap();
    let env = signed(json!({"y": "grpc"}));
    let reply = grpc
        .predict(predict_request("/api/py", &env))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.code, 0, "{}", reply.msg);
    let out: Value = serde_json::from_str(&reply.result_json).unwrap();
    assert_eq!(out["echo"], json!({"y": "grpc"}));

    // The PAI-EAS asynchronous API: bytes in, the server's bytes in the sink
    // as they are; an empty answer writes nothing.
    let bytes_id = eas_put(&gateway, b"\x00raw bytes\xff").await;
    let empty_id = eas_put(&gateway, br#"{"empty": true}"#).await;
    let json_id = eas_put(&gateway, br#"{"z": 2}"#).await;
    // Bounded: 10 s for three items.
    let mut items = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        items = sink_items(&gateway).await;
        if items.len() >= 2 && received(&log).len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found = items.len() >= 2;
    assert!(found, "sink: {items:?}");
    let by_id: HashMap<String, Vec<u8>> = items.into_iter().collect();
    assert_eq!(by_id[&bytes_id], b"bytes:\x00raw bytes\xff".to_vec());
    let answer: Value = serde_json::from_slice(&by_id[&json_id]).unwrap();
    assert_eq!(answer["echo"], json!({"z": 2}));
    assert!(received(&log).contains(&empty_id), "the server ran it");
    assert!(
        !by_id.contains_key(&empty_id),
        "an empty answer writes nothing"
    );
    assert_eq!(by_id.len(), 2);
    drop(grpc);
    stop(p, &log).await;
}

#[tokio::test]
async fn a_server_killed_mid_job_loses_no_job_and_is_restarted() {
    let (_dir, log, p) = start_http("");
    let url = p.url("gateway-http", "/api/py");
    // The server is up before the jobs are sent.
    let (_, v) = post(&url, &signed(json!({"warm": 1}))).await;
    assert_eq!(code(&v), 0, "{v}");
    let first = server_pids(&log);
    assert_eq!(first.len(), 1);

    let calls: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &signed(json!({"sleep_ms": 800, "i": i}))).await })
        })
        .collect();
    // Kill the server while it holds the jobs.
    let ran = wait_until(Duration::from_secs(5), || async {
        received(&log).len() >= 7
    })
    .await;
    assert!(ran, "the jobs reached the server");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &first[0].to_string()])
        .status();
    let started = Instant::now();
    for (i, call) in calls.into_iter().enumerate() {
        let (status, v) = call.await.unwrap();
        assert_eq!((status, code(&v)), (200, 0), "job {i}: {v}");
        assert_eq!(v["data"]["echo"]["i"], i, "job {i} got its own answer");
    }
    let pids = server_pids(&log);
    assert_eq!(pids.len(), 2, "restarted once: {pids:?}");
    eprintln!(
        "jobs answered {:?} after the kill; server restarted as {}",
        started.elapsed(),
        pids[1]
    );
    let text = p.log_text();
    assert!(text.contains("model server exited"), "{text}");
    assert!(text.contains("giving it back to the queue"), "{text}");
    stop(p, &log).await;
}

#[tokio::test]
async fn a_job_that_kills_its_server_every_time_is_given_up_after_max_deliveries() {
    let (_dir, log, p) = start_http("");
    let url = p.url("gateway-http", "/api/py");
    let (_, v) = post(&url, &signed(json!({"warm": 1}))).await;
    assert_eq!(code(&v), 0, "{v}");
    // Each delivery kills the server; it is given back, the server
    // restarted, and after MaxDeliveries (3) the caller gets 9998.
    let (_, v) = post(&url, &signed(json!({"crash": true}))).await;
    assert_eq!(code(&v), 9998, "{v}");
    let msg = v["data"]["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("3 deliveries"), "{v}");
    // Every delivery reached a server, which died of it.
    let runs = received(&log).len() - 1;
    assert_eq!(runs, 3, "deliveries that reached the server");
    // The server is back, and the dispatcher takes jobs again.
    let (_, v) = post(&url, &signed(json!({"after": 1}))).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(server_pids(&log).len(), 4);
    stop(p, &log).await;
}

#[tokio::test]
async fn a_slow_server_times_out_and_a_failing_one_is_an_inference_failure() {
    let (_dir, log, p) = start_http("    TimeoutMs: 300\n");
    let url = p.url("gateway-http", "/api/py");
    let t0 = Instant::now();
    let (_, v) = post(&url, &signed(json!({"sleep_ms": 3000}))).await;
    assert_eq!(code(&v), 9998, "{v}");
    assert!(
        v["data"]["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("did not answer within 300 ms"),
        "{v}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let (_, v) = post(&url, &signed(json!({"status": 500}))).await;
    assert_eq!(code(&v), 9998, "{v}");
    let (_, v) = post(&url, &signed(json!({"status": 422}))).await;
    assert_eq!(code(&v), 9701, "a 4xx is the input refused: {v}");
    stop(p, &log).await;
}

#[tokio::test]
async fn a_batching_server_gets_lists_and_answers_by_position() {
    let (_dir, log, p) = start_http("    Batch: {MaxBatchSize: 8, MaxQueueDelayUs: 20000}\n");
    let url = p.url("gateway-http", "/api/py");
    let (_, v) = post(&url, &signed(json!({"warm": 1}))).await;
    assert_eq!(code(&v), 0, "{v}");
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &signed(json!({"i": i}))).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let (_, v) = call.await.unwrap();
        assert_eq!(code(&v), 0, "{v}");
        assert_eq!(v["data"]["echo"]["i"], i, "{v}");
    }
    // Fewer POSTs than jobs: some went together (one id line per batch).
    let posts = received(&log).len();
    assert!(posts < 9, "{posts} POSTs for 9 jobs");
    stop(p, &log).await;
}

/// The PMML files and the reference predictions (made once per run).
fn pmml_reference() -> &'static (PathBuf, Value) {
    static REF: OnceLock<(PathBuf, Value)> = OnceLock::new();
    REF.get_or_init(|| {
        // Under cargo's per-target temporary folder, made again each run:
        // nothing is left behind in /tmp (a static is never dropped).
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pmml-reference");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pmml reference folder");
        let python = repo_root().join(".cache/venv-pmml/bin/python");
        assert!(
            python.exists(),
            "{} missing: run scripts/test.sh",
            python.display()
        );
        let out = std::process::Command::new(python)
            .arg(repo_root().join("tests/python/pmml_reference.py"))
            .arg(&dir)
            .output()
            .expect("run pmml_reference.py");
        assert!(
            out.status.success(),
            "pmml_reference.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        (dir, serde_json::from_str(&text).expect("JSON"))
    })
}

fn close(got: &Value, want: f64, what: &str) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {got} is not a number"));
    assert!(
        (g - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: inferq {g} vs {want}"
    );
}

#[tokio::test]
async fn pmml_models_from_scikit_learn_score_as_scikit_learn_and_jpmml_do() {
    let (files, reference) = pmml_reference();
    let dir = TestDir::new();
    let mut models = String::from("Models:\n");
    let names: Vec<&String> = reference.as_object().unwrap().keys().collect();
    for name in &names {
        models.push_str(&format!(
            "  {name}:\n    Kind: pmml\n    ApiPath: /api/{name}\n    Model: {}\n",
            files.join(format!("{name}.pmml")).display()
        ));
    }
    let p = standalone(&dir, &format!("{}{models}", settings_yaml("", "")));
    for name in names {
        let r = &reference[name.as_str()];
        let url = p.url("gateway-http", &format!("/api/{name}"));
        let check = |out: &Value, want: &Value, rows: usize, who: &str| {
            let preds = out["data"]["predictions"]
                .as_array()
                .unwrap_or_else(|| panic!("{out}"));
            assert_eq!(preds.len(), rows, "{name}");
            for (i, (pred, want)) in preds.iter().zip(want.as_array().unwrap()).enumerate() {
                match r["classes"].as_array() {
                    Some(classes) => {
                        for (c, w) in classes.iter().zip(want.as_array().unwrap()) {
                            let got = &pred[format!("p_{c}")];
                            match w.as_f64() {
                                Some(w) => close(got, w, &format!("{name} row {i} p_{c} ({who})")),
                                None => {
                                    assert!(got.is_null(), "{name} row {i}: {got} ({who} has none)")
                                }
                            }
                        }
                    }
                    None => {
                        let w = want.as_array().map_or(want, |a| &a[0]);
                        match w.as_f64() {
                            Some(w) => close(&pred["y"], w, &format!("{name} row {i} ({who})")),
                            None => assert!(pred["y"].is_null(), "{name} row {i}: {pred}"),
                        }
                    }
                }
            }
        };
        let rows = r["rows"].as_array().unwrap().len();
        let (_, out) = post(&url, &signed(json!({"instances": r["rows"]}))).await;
        assert_eq!(code(&out), 0, "{name}: {out}");
        check(&out, &r["sklearn"], rows, "scikit-learn");
        check(&out, &r["jpmml"], rows, "jpmml-evaluator");
        let (_, out) = post(&url, &signed(json!({"instances": r["missing_rows"]}))).await;
        assert_eq!(code(&out), 0, "{name}: {out}");
        check(
            &out,
            &r["jpmml_missing"],
            10,
            "jpmml-evaluator, fields missing",
        );
    }
}

#[tokio::test]
async fn a_pmml_file_with_an_unsupported_element_stops_start_up_naming_it() {
    let dir = TestDir::new();
    let file = dir.write(
        "nn.pmml",
        "<PMML version=\"4.4\">\n<DataDictionary/>\n<NeuralNetwork functionName=\"regression\"/>\n</PMML>\n",
    );
    let yaml = dir.write(
        "settings.yaml",
        &format!(
            "{}Models:\n  nn:\n    Kind: pmml\n    ApiPath: /api/nn\n    Model: {}\n",
            settings_yaml("", ""),
            file.display()
        ),
    );
    let out = std::process::Command::new(bin())
        .args(["standalone", "--yaml", yaml.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NeuralNetwork (line 3) is not supported"),
        "{err}"
    );
}

/// Runs `inferq standalone --eas-service FILE` and waits for its gateway.
fn from_service_file(dir: &TestDir, file: &Path) -> Proc {
    Proc::start(
        "standalone",
        dir.path(),
        &[
            "standalone",
            "--eas-service",
            file.to_str().unwrap(),
            "--yaml",
            dir.path().join("absent.yaml").to_str().unwrap(),
            "--port",
            "0",
            "--grpc-port",
            "0",
        ],
        &["gateway-http"],
    )
}

/// The SDK's subscription example's items: (request id, data).
async fn subscribe(gateway: &str, service: &str) -> Vec<(String, String)> {
    let (ok, text) = eas_sdk(
        &["subscribe", gateway, service, TOKEN],
        Duration::from_secs(60),
    )
    .await;
    assert!(ok, "{text}");
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            (
                v["requestId"].as_str().unwrap().to_string(),
                v["data"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_documents_image_example_runs_from_its_service_json() {
    let dir = TestDir::new();
    let port = free_port();
    let log = dir.path().join("server.log");
    // The document's example, with the command and port of this machine.
    let file = dir.write(
        "service.json",
        &format!(
            r#"{{ "name": "imageasync",
  "containers": [ {{ "image": "registry-vpc.cn-shanghai.aliyuncs.com/eas/eas-container-deploy-test:202010091755",
                    "command": "exec {} {} {port} {}",
                    "port": {port} }} ],
  "metadata": {{ "type": "Async", "rpc.proxy_path": "/data/model",
                "rpc.worker_threads": 4, "instance": 1 }},
  "token": "{TOKEN}" }}"#,
            python3(),
            model_server().display(),
            log.display()
        ),
    );
    let p = from_service_file(&dir, &file);
    let gateway = p.addr("gateway-http").to_string();
    let (ok, text) = eas_sdk(
        &[
            "put",
            &gateway,
            "imageasync",
            TOKEN,
            "10",
            r#"{"hello": "image"}"#,
        ],
        Duration::from_secs(60),
    )
    .await;
    assert!(ok, "{text}");
    let ids: Vec<&str> = text
        .lines()
        .filter(|l| l.len() >= 16 && !l.contains(' '))
        .collect();
    assert_eq!(ids.len(), 10, "{text}");
    let items = subscribe(&gateway, "imageasync").await;
    assert_eq!(items.len(), 10);
    for (rid, data) in &items {
        assert!(ids.contains(&rid.as_str()), "{rid}");
        let v: Value = serde_json::from_str(data).expect("the server's JSON");
        assert_eq!(v["echo"], json!({"hello": "image"}));
        assert_eq!(&v["rid"], rid, "the server saw the item's request id");
    }
    let text = p.log_text();
    for key in ["containers[].image", "metadata.instance"] {
        assert!(text.contains(key), "{key} reported as ignored:\n{text}");
    }
    stop(p, &log).await;
}

#[tokio::test]
async fn the_documents_pmmlasync_example_runs_from_its_service_json_and_a_real_lr_pmml() {
    let (files, reference) = pmml_reference();
    let dir = TestDir::new();
    std::fs::copy(files.join("lr_imputed.pmml"), dir.path().join("lr.pmml")).expect("copy");
    // The document's example with the model file beside it.
    let file = dir.write(
        "service.json",
        &format!(
            r#"{{ "name": "pmmlasync", "processor": "pmml",
  "model_path": "lr.pmml",
  "metadata": {{ "type": "Async", "cpu": 4, "instance": 1 }},
  "token": "{TOKEN}" }}"#
        ),
    );
    let p = from_service_file(&dir, &file);
    let gateway = p.addr("gateway-http").to_string();
    // The document's request body, [{}].
    let (ok, text) = eas_sdk(
        &["put", &gateway, "pmmlasync", TOKEN, "10", "[{}]"],
        Duration::from_secs(60),
    )
    .await;
    assert!(ok, "{text}");
    let want = reference["lr_imputed"]["empty_row"].as_array().unwrap();
    let items = subscribe(&gateway, "pmmlasync").await;
    assert_eq!(items.len(), 10);
    for (_, data) in items {
        let v: Value = serde_json::from_str(&data).unwrap();
        let row = v.as_array().expect("one object per input row");
        assert_eq!(row.len(), 1);
        assert_eq!(row[0].as_object().unwrap().len(), 2, "{data}");
        close(&row[0]["p_0"], want[0].as_f64().unwrap(), "p_0");
        close(&row[0]["p_1"], want[1].as_f64().unwrap(), "p_1");
    }
    let text = p.log_text();
    assert!(text.contains("metadata.cpu"), "{text}");
}

#[tokio::test]
async fn the_split_roles_take_the_same_service_file() {
    let dir = TestDir::new();
    let certs = TestCerts::make(&dir);
    let yaml = dir.write(
        "settings.yaml",
        &with_internal_security(&settings_yaml("", ""), &certs, false),
    );
    let port = free_port();
    let log = dir.path().join("server.log");
    let file = dir.write(
        "service.json",
        &format!(
            r#"{{ "name": "imageasync",
  "containers": [ {{ "image": "x", "command": "exec {} {} {port} {}", "port": {port} }} ],
  "metadata": {{ "type": "Async", "rpc.proxy_path": "/data/model", "rpc.worker_threads": 2 }},
  "queue.source.max_length": 100,
  "token": "{TOKEN}" }}"#,
            python3(),
            model_server().display(),
            log.display()
        ),
    );
    let (yaml, file) = (yaml.to_str().unwrap(), file.to_str().unwrap());
    let queue = Proc::start(
        "queue",
        dir.path(),
        &["queue", "--yaml", yaml, "--eas-service", file],
        &["queue-grpc"],
    );
    let queue_url = format!("https://{}", queue.addr("queue-grpc"));
    let common = [
        "--yaml",
        yaml,
        "--eas-service",
        file,
        "--queue-endpoint",
        &queue_url,
    ];
    let mut args = vec!["dispatcher", "0", "--metrics-listen", "127.0.0.1:0"];
    args.extend(common);
    let dispatcher = Proc::start("dispatcher", dir.path(), &args, &["dispatcher-metrics"]);
    let mut args = vec!["gateway"];
    args.extend(common);
    let gateway = Proc::start("gateway", dir.path(), &args, &["gateway-http"]);
    let gw = gateway.addr("gateway-http").to_string();
    let (ok, text) = eas_sdk(
        &["put", &gw, "imageasync", TOKEN, "10", r#"{"split": true}"#],
        Duration::from_secs(60),
    )
    .await;
    assert!(ok, "{text}");
    let items = subscribe(&gw, "imageasync").await;
    assert_eq!(items.len(), 10);
    for (_, data) in &items {
        let v: Value = serde_json::from_str(data).expect("JSON");
        assert_eq!(v["echo"], json!({"split": true}));
    }
    drop(gateway);
    stop(dispatcher, &log).await;
    drop(queue);
}
