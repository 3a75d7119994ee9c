//! Gateways and dispatchers outlive the queue service: while it is down calls
//! get 9702 (never hang), and when it is back both reconnect without a restart.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn answered(url: &str) -> bool {
    code(&post(url, &signed(json!({"text": "ping"}))).await.1) == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_dispatcher_reconnect_when_the_queue_comes_back() {
    let port = free_port();
    let dir = TestDir::new();
    let certs = common::TestCerts::make(&dir);
    let server = format!("  QueueEndpoints: [\"https://127.0.0.1:{port}\"]");
    let yaml = settings_yaml("", &server)
        .replace("MessageTimeout: 10", "MessageTimeout: 3")
        .replace(
            "QueueListen: \"127.0.0.1:0\"",
            &format!("QueueListen: \"127.0.0.1:{port}\""),
        );
    let yaml = common::with_internal_security(&yaml, &certs, false);
    let path = dir.write("settings.yaml", &yaml);
    let y = path.to_str().unwrap();

    // Dispatcher and gateway first, no queue service yet.
    let _d = Proc::start(
        "dispatcher",
        dir.path(),
        &[
            "dispatcher",
            "0",
            "--yaml",
            y,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &["dispatcher-metrics"],
    );
    let gw = Proc::start(
        "gateway",
        dir.path(),
        &["gateway", "--yaml", y],
        &["gateway-http"],
    );
    let url = gw.url("gateway-http", "/api/echo");
    let (_, v) = post(&url, &signed(json!({"text": "nobody home"}))).await;
    assert_eq!(code(&v), 9702, "queue down: cannot be queued: {v}");

    // The queue service starts: both find it.
    let mut q = Proc::start(
        "queue",
        dir.path(),
        &["queue", "--yaml", y],
        &["queue-grpc"],
    );
    assert!(
        wait_until(Duration::from_secs(20), || answered(&url)).await,
        "served once the queue is up"
    );

    // It dies and comes back on the same port: service resumes.
    q.kill9();
    let (_, v) = post(&url, &signed(json!({"text": "queue gone"}))).await;
    assert_eq!(code(&v), 9702, "{v}");
    let _q2 = Proc::start(
        "queue2",
        dir.path(),
        &["queue", "--yaml", y],
        &["queue-grpc"],
    );
    assert!(
        wait_until(Duration::from_secs(20), || answered(&url)).await,
        "served again after the queue restarted"
    );
}
