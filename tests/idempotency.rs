//! Client idempotency keys against a real `inferq standalone`: a request
//! repeated with the same `Idempotency-Key` (REST header, gRPC metadata) is
//! answered with the first one's result and runs once, also when the repeat
//! arrives while the first still runs; a key used again with other
//! parameters gets 9813; a malformed key 9801; a replayed signature may join
//! the job its key names but never start one. Runs are counted by the
//! process's `inferq_dispatcher_jobs_done_total`.

mod common;

use std::time::Duration;

use common::*;
use inferq::proto::predict_client::PredictClient;
use serde_json::{json, Map, Value};

async fn post_keyed(url: &str, body: &Value, key: &str) -> Value {
    client()
        .post(url)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("envelope")
}

async fn runs(p: &Proc) -> i64 {
    metric(
        &p.url("gateway-admin", "/metrics"),
        "inferq_dispatcher_jobs_done_total",
    )
    .await
}

#[tokio::test]
async fn a_repeated_key_gets_the_first_result_and_runs_once() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("", ""));
    let url = p.url("gateway-http", "/api/echo");
    let before = runs(&p).await;

    // Two requests with one key, signed apart (new timestamps would sign
    // them apart too): one run, one result.
    let first = post_keyed(&url, &signed(json!({"n": 1})), "order-1").await;
    assert_eq!(code(&first), 0, "{first}");
    let again = post_keyed(&url, &signed(json!({"n": 1})), "order-1").await;
    assert_eq!(code(&again), 0, "{again}");
    assert_eq!(again["data"]["n"], 1);
    assert_eq!(runs(&p).await - before, 1, "the repeat did not run");

    // Two at once, while the first runs: both answered, one run.
    let body = signed(json!({"n": 2, "sleep_ms": 300}));
    let (a, b) = tokio::join!(
        post_keyed(&url, &body, "order-2"),
        post_keyed(&url, &body, "order-2")
    );
    assert_eq!((code(&a), code(&b)), (0, 0), "{a} {b}");
    assert_eq!(runs(&p).await - before, 2, "joined, not run twice");

    // Without a key, or with another key: runs again.
    assert_eq!(code(&post(&url, &signed(json!({"n": 1}))).await.1), 0);
    assert_eq!(
        code(&post_keyed(&url, &signed(json!({"n": 1})), "order-3").await),
        0
    );
    assert_eq!(runs(&p).await - before, 4);

    // The key with other parameters: refused, not run.
    let other = post_keyed(&url, &signed(json!({"n": 99})), "order-1").await;
    assert_eq!(code(&other), 9813, "{other}");
    assert_eq!(runs(&p).await - before, 4);

    // Malformed keys: 9801, not run.
    for bad in ["has space", &"k".repeat(129)] {
        let v = post_keyed(&url, &signed(json!({"n": 1})), bad).await;
        assert_eq!(code(&v), 9801, "{bad:?}: {v}");
    }
    assert_eq!(runs(&p).await - before, 4);
}

/// Keys are per caller: another appId's request with the same key is its
/// own job.
#[tokio::test]
async fn a_key_belongs_to_its_caller() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("", ""));
    let url = p.url("gateway-http", "/api/echo");
    let before = runs(&p).await;
    let mine = post_keyed(&url, &signed(json!({"who": "me"})), "shared").await;
    let theirs = signed_with(
        json!({"who": "them"}),
        Map::new(),
        "plain",
        PLAIN_APP,
        PLAIN_SECRET,
        now(),
    );
    let theirs = post_keyed(&url, &theirs, "shared").await;
    assert_eq!((code(&mine), code(&theirs)), (0, 0), "{mine} {theirs}");
    assert_eq!(
        theirs["data"]["who"], "them",
        "not the other caller's result"
    );
    assert_eq!(runs(&p).await - before, 2);
}

/// With replays refused, a replayed request that carries the key of the
/// first one (nginx passing it to the next gateway) joins its job and gets
/// its result; a replay without a key, or with a key that names nothing,
/// is refused (9807) and runs nothing.
#[tokio::test]
async fn a_replay_may_join_the_job_its_key_names_but_not_start_one() {
    let dir = TestDir::new();
    let extra = "  RefuseReplays:\n    SHA256: true";
    let p = standalone(&dir, &settings_yaml(extra, ""));
    let url = p.url("gateway-http", "/api/echo");
    let before = runs(&p).await;
    let body = signed(json!({"n": 5}));
    assert_eq!(code(&post_keyed(&url, &body, "k-5").await), 0);
    let joined = post_keyed(&url, &body, "k-5").await;
    assert_eq!(code(&joined), 0, "{joined}");
    assert_eq!(joined["data"]["n"], 5);
    assert_eq!(code(&post(&url, &body).await.1), 9807);
    assert_eq!(code(&post_keyed(&url, &body, "k-new").await), 9807);
    assert_eq!(runs(&p).await - before, 1);
}

#[tokio::test]
async fn grpc_metadata_carries_the_key() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("", ""));
    let mut grpc = PredictClient::connect(format!("http://{}", p.addr("gateway-grpc")))
        .await
        .expect("gRPC");
    let before = runs(&p).await;
    for _ in 0..2 {
        let mut req = tonic::Request::new(predict_request(
            "/api/echo",
            &signed(json!({"g": 1, "sleep_ms": 50})),
        ));
        req.metadata_mut()
            .insert("idempotency-key", "grpc-1".parse().expect("ascii"));
        req.set_timeout(Duration::from_secs(10));
        let reply = grpc.predict(req).await.expect("answered").into_inner();
        assert_eq!(reply.code, 0);
    }
    assert_eq!(runs(&p).await - before, 1);
    let mut bad = tonic::Request::new(predict_request("/api/echo", &signed(json!({"g": 2}))));
    bad.metadata_mut()
        .insert("idempotency-key", "a b".parse().expect("ascii"));
    let status = grpc.predict(bad).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status
            .metadata()
            .get("inferq-code")
            .map(|v| v.to_str().unwrap_or("")),
        Some("9801")
    );
}
