//! TLS and the internal token, with real processes and certificates made at
//! run time: the queue of a split deployment serves TLS and refuses any
//! caller without the internal token; gateways and dispatchers that cannot
//! prove themselves get nothing; the public listeners serve TLS to rustls
//! (reqwest), tonic and Python's OpenSSL clients alike.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use inferq::proto::client::QueueConnector;
use inferq::proto::PingRequest;
use serde_json::{json, Value};

fn settings() -> String {
    settings_yaml("", "").replace("MessageTimeout: 10", "MessageTimeout: 3")
}

/// Pings the queue at `url` as a client with `ca` and `token` would.
async fn ping(url: &str, ca: Option<&std::path::Path>, token: &str) -> Result<(), String> {
    let connector = QueueConnector::new(ca, token).map_err(|e| e.to_string())?;
    let endpoint = connector
        .endpoint(url, Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = connector.client(channel);
    tokio::time::timeout(Duration::from_secs(10), client.ping(PingRequest {}))
        .await
        .map_err(|_| "ping timed out".to_string())?
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_refuses_callers_that_cannot_prove_themselves() {
    let split = Split::start(&settings());
    let url = split.queue_url.clone();
    let ca = split.certs.ca.clone();
    let addr = split.queue.addr("queue-grpc").to_string();

    ping(&url, Some(&ca), INTERNAL_TOKEN)
        .await
        .expect("TLS with the token is served");
    let no_token = ping(&url, Some(&ca), "").await.unwrap_err();
    assert!(no_token.starts_with("Unauthenticated"), "{no_token}");
    let wrong = ping(&url, Some(&ca), "not-the-token").await.unwrap_err();
    assert!(wrong.starts_with("Unauthenticated"), "{wrong}");
    assert!(
        ping(&format!("http://{addr}"), None, INTERNAL_TOKEN)
            .await
            .is_err(),
        "plain text to the TLS listener is not served"
    );
    assert!(
        ping(&url, None, INTERNAL_TOKEN).await.is_err(),
        "a certificate the client does not trust is refused by the client"
    );

    // A gateway and a dispatcher with the wrong token.
    let wrong_yaml = split.dir.write(
        "wrong-token.yaml",
        &std::fs::read_to_string(&split.yaml)
            .unwrap()
            .replace(INTERNAL_TOKEN, "not-the-token"),
    );
    let wrong_yaml = wrong_yaml.to_str().unwrap();
    let bad_gateway = Proc::start(
        "bad-gateway",
        split.dir.path(),
        &["gateway", "--yaml", wrong_yaml, "--queue-endpoint", &url],
        &["gateway-http"],
    );
    let (_, v) = post(
        &bad_gateway.url("gateway-http", "/api/echo"),
        &signed(json!({"text": "let me in"})),
    )
    .await;
    assert_eq!(code(&v), 9702, "the queue refused the gateway: {v}");
    assert!(
        bad_gateway.log_text().contains("refused by the queue"),
        "{}",
        bad_gateway.log_text()
    );

    let bad_dispatcher = Proc::start(
        "bad-dispatcher",
        split.dir.path(),
        &[
            "dispatcher",
            "0",
            "--yaml",
            wrong_yaml,
            "--queue-endpoint",
            &url,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &["dispatcher-metrics"],
    );
    let gw = split.gateway();
    let echo = gw.url("gateway-http", "/api/echo");
    let (_, v) = post(&echo, &signed(json!({"text": "for the bad dispatcher"}))).await;
    assert_ne!(
        code(&v),
        0,
        "no job reaches a dispatcher without the token: {v}"
    );
    assert!(
        bad_dispatcher.log_text().contains("internal token"),
        "{}",
        bad_dispatcher.log_text()
    );
    // A dispatcher is ready while its stream to the queue is up.
    let health = |p: &Proc| p.url("dispatcher-metrics", "/readyz");
    let r = common::client()
        .get(health(&bad_dispatcher))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "a dispatcher the queue refuses is not healthy"
    );
    assert!(r.text().await.unwrap().contains("testq0"));
    let good = split.dispatcher("good", 2);
    let (_, v) = post(&echo, &signed(json!({"text": "for the good one"}))).await;
    assert_eq!(code(&v), 0, "{v}");
    let r = common::client().get(health(&good)).send().await.unwrap();
    assert_eq!(r.status(), 200, "connected: healthy");
    assert!(split
        .queue
        .log_text()
        .contains("internal call without the internal token refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_listeners_serve_tls_to_independent_clients() {
    let split = Split::start_public_tls(&settings());
    let dispatcher = split.dispatcher("d1", 4);
    let gw = split.gateway();
    let https = |role: &str, path: &str| format!("https://{}{path}", gw.addr(role));
    let client = split.certs.client();

    // REST over rustls (reqwest).
    let r = client
        .post(https("gateway-http", "/api/echo"))
        .json(&signed(json!({"text": "over TLS"})))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["data"]["text"], "over TLS");

    // Plain HTTP to the TLS port gets no answer, and the port still serves.
    assert!(common::client()
        .post(gw.url("gateway-http", "/api/echo"))
        .json(&signed(json!({"text": "plain"})))
        .send()
        .await
        .is_err());

    // Python's own TLS (OpenSSL) with go-infer's envelope.
    let out = Command::new(python())
        .arg(repo_root().join("tests/python/goinfer_client.py"))
        .args([
            &https("gateway-http", "/api/echo"),
            "SM2",
            r#"{"text": "OpenSSL"}"#,
            "--cafile",
            split.certs.ca.to_str().unwrap(),
        ])
        .output()
        .expect("python client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(code(&v), 0, "{v}");

    // gRPC over TLS (tonic, ALPN h2).
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(split.certs.ca_pem.as_bytes()),
    );
    let channel = tonic::transport::Endpoint::from_shared(https("gateway-grpc", ""))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("gRPC over TLS");
    let v = signed(json!({"g": "tls"}));
    let reply = inferq::proto::predict_client::PredictClient::new(channel)
        .predict(predict_request("/api/echo", &v))
        .await
        .expect("predict")
        .into_inner();
    assert_eq!(reply.code, 0, "{reply:?}");

    // Admin and a dispatcher's metrics are public listeners too.
    let r = client
        .get(https("gateway-admin", "/metrics"))
        .send()
        .await
        .expect("admin over TLS");
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!(
            "https://{}/healthz",
            dispatcher.addr("dispatcher-metrics")
        ))
        .send()
        .await
        .expect("dispatcher metrics over TLS");
    assert_eq!(r.status(), 200);
}
