//! deploy/nginx-least-conn.conf as written (only its ports changed to free
//! ones) in front of two gateways of a split deployment on Redis: the
//! eas-prediction SDK's test module passes through nginx (puts, gets, and
//! WebSocket watches with commits sent to whichever gateway nginx picks), and
//! both gateways serve requests.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Nginx(Child);

/// Stops nginx and its workers: SIGTERM to the master (it stops the
/// workers and exits), SIGKILL to whatever is left after 5 s.
impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

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
    let d = dir.path().display();
    let main = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\n\
         http {{\n  access_log {d}/nginx-access.log;\n  client_body_temp_path {d}/nb;\n  proxy_temp_path {d}/np;\n\
           include {d}/site.conf;\n}}\n"
    );
    dir.write("site.conf", &conf);
    let main_path = dir.write("nginx.conf", &main);
    let child = Command::new(nginx_bin())
        .args(["-c", main_path.to_str().unwrap(), "-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx not installed (scripts/setup-test-env.sh installs it)");
    let _nginx = Nginx(child);
    let up = wait_until(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", http_port))
            .await
            .is_ok()
    })
    .await;
    assert!(
        up,
        "nginx did not start: {}",
        std::fs::read_to_string(dir.path().join("nginx-error.log")).unwrap_or_default()
    );

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
