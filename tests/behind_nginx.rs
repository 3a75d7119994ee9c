//! deploy/nginx-least-conn.conf as written (only its ports changed to free
//! ones) in front of two gateways of a split deployment on Redis: the
//! eas-prediction SDK's test module passes through nginx (puts, gets, and
//! WebSocket watches with commits sent to whichever gateway nginx picks), and
//! both gateways serve requests.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn sdk_test_module_passes_through_nginx_in_front_of_two_gateways() {
    let settings = format!(
        "{}\nModels:\n  lr: {{Kind: lr, ApiPath: /api/lr, Coefficients: {{age: 0.02}}, Intercept: 0.1}}\n\
         AsyncServices:\n  pmmlasync:\n    model: /api/lr\n    token: \"t0k\"\n    rpc: {{worker_threads: 8}}\n",
        settings_yaml("", "  RedisServer: \"REDIS\"\n")
    )
    .replace("Backend: memory", "Backend: redis");
    let dir = TestDir::new();
    let redis = RedisServer::start(dir.path());
    let split = Split::start(&settings.replace("REDIS", &redis.addr()));
    let _d = split.dispatcher("d1", 8);
    let gw1 = split.gateway();
    let gw2 = split.gateway();

    let conf = std::fs::read_to_string(repo_root().join("deploy/nginx-least-conn.conf"))
        .expect("deploy/nginx-least-conn.conf");
    let (http_port, grpc_port) = (free_port(), free_port());
    let conf = conf
        .replace("127.0.0.1:5000", gw1.addr("gateway-http"))
        .replace("127.0.0.1:5010", gw2.addr("gateway-http"))
        .replace("127.0.0.1:5001", gw1.addr("gateway-grpc"))
        .replace("127.0.0.1:5011", gw2.addr("gateway-grpc"))
        .replace("listen 8080;", &format!("listen 127.0.0.1:{http_port};"))
        .replace(
            "listen 8081 http2;",
            &format!("listen 127.0.0.1:{grpc_port} http2;"),
        );
    let _nginx = Nginx::start(&dir, &conf, http_port);

    let endpoint = format!("127.0.0.1:{http_port}");
    let (ok, text) = eas_sdk(
        &["suite", &endpoint, "pmmlasync", "t0k"],
        Duration::from_secs(180),
    )
    .await;
    println!("{text}");
    assert!(ok, "{text}");
    assert!(text.contains("ran 9 failures 0 errors 0"), "{text}");
    let mut served = Vec::new();
    for gw in [&gw1, &gw2] {
        let url = gw.url("gateway-admin", "/metrics");
        served.push(metric(&url, "inferq_gateway_requests_total").await);
    }
    println!("requests served by the two gateways: {served:?}");
    assert!(
        served.iter().all(|n| *n > 0),
        "nginx spreads requests over both gateways: {served:?}"
    );
}
