//! A hostile client against the real binary: bounded versions of the attacks
//! in issue 11 (floods of large bodies, silent and stalled connections,
//! replays, probing, rate abuse). Each asserts what the attack must not do:
//! a normal signed call is still answered within a bound, the server's RSS
//! stays under a cap, and the attacker gets its defined code.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The RSS cap of issue 11 (bytes).
const RSS_CAP: u64 = 512 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Median latency of `n` normal signed echo calls, one after another; each
/// must succeed.
async fn normal_p50(url: &str, n: usize) -> Duration {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let (status, v) = post(url, &signed(json!({"i": i}))).await;
        took.push(t.elapsed());
        assert_eq!((status, code(&v)), (200, 0), "a normal call failed: {v}");
    }
    took.sort();
    took[n / 2]
}

#[tokio::test]
async fn a_flood_of_large_bodies_keeps_memory_under_the_cap_and_normal_calls_fast() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("", ""));
    let url = p.url("gateway-http", "/api/echo");
    let pid = p.pid();
    // ~1 MB signed echo requests (the largest body allowed), 16 at a time.
    let big = signed(json!({"blob": "x".repeat((1 << 20) - 400)}));
    let big = serde_json::to_vec(&big).unwrap();
    let stop = Instant::now() + Duration::from_secs(8);
    let mut attackers = Vec::new();
    for _ in 0..16 {
        let (url, big) = (url.clone(), big.clone());
        attackers.push(tokio::spawn(async move {
            let c = client();
            let mut answered = 0u32;
            while Instant::now() < stop {
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(big.clone())
                    .send()
                    .await;
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                    answered += 1;
                }
            }
            answered
        }));
    }
    let mut peak = 0u64;
    let mut p50s = Vec::new();
    while Instant::now() < stop {
        p50s.push(normal_p50(&url, 20).await);
        peak = peak.max(rss_bytes(pid));
    }
    let mut answered = 0;
    for a in attackers {
        answered += a.await.unwrap();
    }
    p50s.sort();
    let p50 = p50s[p50s.len() / 2];
    println!(
        "large bodies answered: {answered}; peak RSS {} MB; normal p50 {p50:?}",
        peak >> 20
    );
    assert!(answered > 16, "the flood ran ({answered})");
    assert!(peak < RSS_CAP, "peak RSS {} MB", peak >> 20);
    // Every normal call was answered, and fast: large requests are let on
    // a few at a time (half the cores), so a small one neither waits behind
    // them in the model queue nor for a core (0.4 ms measured on two cores;
    // 22-26 ms with two at a time, 31-37 ms before the limit).
    assert!(
        p50 < Duration::from_millis(10),
        "normal p50 {p50:?} under the flood"
    );
}

#[tokio::test]
async fn bodies_over_the_in_flight_budget_are_refused_at_once_with_server_busy() {
    let dir = TestDir::new();
    // Room for two 300 KB bodies at once.
    let p = standalone(&dir, &settings_yaml("  MaxInFlightBytes: 700000", ""));
    let url = p.url("gateway-http", "/api/echo");
    let body = signed(json!({"blob": "x".repeat(300_000), "sleep_ms": 1500}));
    let mut calls = Vec::new();
    for _ in 0..6 {
        let (url, body) = (url.clone(), body.clone());
        calls.push(tokio::spawn(async move { post(&url, &body).await }));
    }
    let mut codes = Vec::new();
    for c in calls {
        let (status, v) = c.await.unwrap();
        codes.push((status, code(&v)));
    }
    codes.sort();
    println!("{codes:?}");
    assert!(
        codes.iter().filter(|c| **c == (200, 0)).count() >= 2,
        "{codes:?}"
    );
    assert!(codes.contains(&(429, 9812)), "{codes:?}");
    // Small calls were never refused, and the budget came back.
    assert!(normal_p50(&url, 5).await < Duration::from_secs(1));

    // gRPC requests are charged to the same budget.
    let grpc = format!("http://{}", p.addr("gateway-grpc"));
    let mut calls = Vec::new();
    for _ in 0..6 {
        let (grpc, body) = (grpc.clone(), body.clone());
        calls.push(tokio::spawn(
            async move { grpc_predict(&grpc, &body).await },
        ));
    }
    let mut answers = Vec::new();
    for c in calls {
        answers.push(match c.await.unwrap() {
            Ok(reply) => format!("ok {}", reply.code),
            Err(s) => format!(
                "{:?} {}",
                s.code(),
                s.metadata()
                    .get("inferq-code")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
            ),
        });
    }
    answers.sort();
    println!("{answers:?}");
    assert!(
        answers.iter().filter(|a| *a == "ok 0").count() >= 2,
        "{answers:?}"
    );
    assert!(
        answers.contains(&"ResourceExhausted 9812".to_string()),
        "{answers:?}"
    );
}

/// Predict over gRPC with a signed envelope's fields.
async fn grpc_predict(url: &str, v: &Value) -> Result<inferq::proto::PredictReply, tonic::Status> {
    let mut client = inferq::proto::predict_client::PredictClient::connect(url.to_string())
        .await
        .expect("gRPC connect");
    client
        .predict(predict_request("/api/echo", v))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn silent_connections_are_closed_and_capped_below_the_file_limit() {
    let dir = TestDir::new();
    let p = standalone(
        &dir,
        &settings_yaml("  HeaderReadTimeout: 1\n  MaxConnections: 100", ""),
    );
    let addr = p.addr("gateway-http").to_string();
    let url = p.url("gateway-http", "/api/echo");
    let files_before = open_files(p.pid());
    // 300 connections that never send a byte, and 50 that send half a header.
    let mut silent = Vec::new();
    for i in 0..350 {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        if i >= 300 {
            s.write_all(b"POST /api/echo HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        silent.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = open_files(p.pid()).saturating_sub(files_before);
    assert!(held <= 105, "{held} connections held; the cap is 100");
    // The server closes them after the header timeout: every read ends.
    let t = Instant::now();
    let mut closed = 0;
    for s in silent.iter_mut() {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => closed += 1, // an answer (408) then close
            Err(_) => {}
        }
    }
    println!("{closed} of 350 closed in {:?}", t.elapsed());
    assert_eq!(
        closed, 350,
        "every silent connection is closed by the server"
    );
    drop(silent);
    assert!(normal_p50(&url, 10).await < Duration::from_millis(10));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("  IdleTimeout: 1", ""));
    let addr = p.addr("gateway-http").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let body = serde_json::to_vec(&signed(json!({"i": 1}))).unwrap();
    let head = format!(
        "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not kept: {end:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_stalled_body_times_out_and_does_not_hold_the_server() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("  BodyReadTimeout: 1", ""));
    let addr = p.addr("gateway-http").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("answered within the body timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn http2_streams_per_connection_are_capped_on_the_grpc_port() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("  Http2MaxStreams: 50", ""));
    let addr = p.addr("gateway-grpc").to_string();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    // One whole request, so that the server's SETTINGS have been applied.
    let req = http::Request::post(format!("http://{addr}/inferq.v1.Predict/Predict"))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).expect("send");
    let _ = tokio::time::timeout(Duration::from_secs(5), response).await;
    assert_eq!(client.current_max_send_streams(), 50);
}

#[tokio::test]
async fn a_replayed_sm2_request_is_refused_and_sha256_follows_the_setting() {
    let dir = TestDir::new();
    let extra = "  RefuseReplays:\n    AppIds:\n      \"PLAINAPP00000000000000000000000A\": true";
    let p = standalone(&dir, &settings_yaml(extra, ""));
    let url = p.url("gateway-http", "/api/echo");
    let sm2 = signed_with(json!({"x": 1}), Map::new(), "SM2", APP_ID, SECRET, now());
    let (_, first) = post(&url, &sm2).await;
    assert_eq!(code(&first), 0, "{first}");
    for _ in 0..5 {
        let (_, again) = post(&url, &sm2).await;
        assert_eq!(code(&again), 9807, "a replay: {again}");
    }
    // SHA256 is deterministic: an identical request is let through by default...
    let sha = signed(json!({"x": 2}));
    assert_eq!(code(&post(&url, &sha).await.1), 0);
    assert_eq!(code(&post(&url, &sha).await.1), 0);
    // ...and refused for an appId that turns the check on.
    let sha = signed_with(
        json!({"x": 3}),
        Map::new(),
        "SHA256",
        PLAIN_APP,
        PLAIN_SECRET,
        now(),
    );
    assert_eq!(code(&post(&url, &sha).await.1), 0);
    assert_eq!(code(&post(&url, &sha).await.1), 9807);
}

#[tokio::test]
async fn a_replay_sent_to_another_gateway_is_refused_too() {
    let split = Split::start(&settings_yaml("", ""));
    let _d = split.dispatcher("d1", 4);
    let gw1 = split.gateway();
    let gw2 = split.gateway();
    let sm2 = signed_with(json!({"x": 1}), Map::new(), "SM2", APP_ID, SECRET, now());
    let (_, first) = post(&gw1.url("gateway-http", "/api/echo"), &sm2).await;
    assert_eq!(code(&first), 0, "{first}");
    let (_, again) = post(&gw2.url("gateway-http", "/api/echo"), &sm2).await;
    assert_eq!(code(&again), 9807, "{again}");
}

#[tokio::test]
async fn an_app_over_its_rate_gets_9811_and_others_keep_theirs() {
    let dir = TestDir::new();
    let extra = "  RateLimit: {PerSecond: 5, Burst: 5}";
    let p = standalone(&dir, &settings_yaml(extra, ""));
    let url = p.url("gateway-http", "/api/echo");
    let mut codes = Vec::new();
    for i in 0..20 {
        codes.push(code(&post(&url, &signed(json!({"i": i}))).await.1));
    }
    let limited = codes.iter().filter(|c| **c == 9811).count();
    assert!(limited >= 10, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 0).count() + limited,
        20,
        "{codes:?}"
    );
    let other = signed_with(
        json!({}),
        Map::new(),
        "plain",
        PLAIN_APP,
        PLAIN_SECRET,
        now(),
    );
    assert_eq!(
        code(&post(&url, &other).await.1),
        0,
        "another appId has its own bucket"
    );
    // gRPC: the same bucket, RESOURCE_EXHAUSTED.
    let mut grpc = inferq::proto::predict_client::PredictClient::connect(format!(
        "http://{}",
        p.addr("gateway-grpc")
    ))
    .await
    .unwrap();
    let v = signed(json!({"g": 1}));
    let req = predict_request("/api/echo", &v);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(match grpc.predict(req.clone()).await {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        });
    }
    assert!(
        statuses.contains(&tonic::Code::ResourceExhausted),
        "{statuses:?}"
    );
}

const EAS: &str = r#"
AsyncServices:
  svc:
    model: /api/echo
    token: "t0k"
    queue: {source: {max_length: 100}, sink: {max_length: 100}}
"#;

#[tokio::test]
async fn the_eas_api_answers_401_before_revealing_a_service_and_429_over_the_rate() {
    let dir = TestDir::new();
    let yaml = settings_yaml("  RateLimit: {PerSecond: 3, Burst: 3}", "") + EAS;
    let p = standalone(&dir, &yaml);
    let c = client();
    for (path, token) in [
        ("/api/predict/nosuch/sink", "t0k"),
        ("/api/predict/nosuch", ""),
        ("/api/predict/svc/sink", "wrong"),
    ] {
        let r = c
            .get(p.url("gateway-http", path))
            .header("Authorization", token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} with {token:?}");
    }
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..10 {
        let r = c
            .get(p.url("gateway-http", "/api/predict/svc/sink?_attrs_=true"))
            .header("Authorization", "t0k")
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 429 {
            retry_after = r.headers().get("retry-after").cloned();
        }
        statuses.push(r.status().as_u16());
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
    assert_eq!(retry_after.expect("Retry-After").to_str().unwrap(), "1");
}

#[tokio::test]
async fn waiting_gets_with_a_tag_filter_cost_little_per_put() {
    let dir = TestDir::new();
    let yaml = settings_yaml("", "")
        + r#"
AsyncServices:
  svc:
    model: /api/echo
    token: "t0k"
    queue: {source: {max_length: 100}, sink: {max_length: 5000}}
"#;
    let p = standalone(&dir, &yaml);
    let pid = p.pid();
    let c = client();
    let sink = p.url("gateway-http", "/api/predict/svc/sink");
    // 300 gets waiting for a tag no item has.
    let mut waiting = Vec::new();
    for _ in 0..300 {
        let (c, url) = (c.clone(), format!("{sink}?_timeout_=20s&never=1"));
        waiting.push(tokio::spawn(async move {
            c.get(url)
                .header("Authorization", "t0k")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = cpu_seconds(pid);
    for i in 0..2000 {
        let r = c
            .post(format!("{sink}?other={i}"))
            .header("Authorization", "t0k")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let p50 = normal_p50(&p.url("gateway-http", "/api/echo"), 20).await;
    println!("server CPU for 2000 puts with 300 waiting gets: {cpu:.2}s; normal p50 {p50:?}");
    // Before: every put made every waiter rescan the sink (300 × 2000² / 2 tag checks).
    assert!(cpu < 4.0, "{cpu:.2}s of server CPU");
    assert!(p50 < Duration::from_millis(10), "{p50:?}");
    for w in waiting {
        w.abort();
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; here (after pid and comm) 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::test]
async fn metrics_are_on_the_admin_listener_not_the_public_port_and_health_is_true() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("", ""));
    let (status, v) = post_raw(&p.url("gateway-http", "/metrics"), vec![]).await;
    assert_eq!((status, code(&v)), (200, 9709), "{v}");
    let r = client()
        .get(p.url("gateway-http", "/metrics"))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains("inferq_gateway_requests_total"), "{text}");
    let admin = client()
        .get(p.url("gateway-admin", "/metrics"))
        .send()
        .await
        .unwrap();
    assert!(admin
        .text()
        .await
        .unwrap()
        .contains("inferq_gateway_requests_total"));
    let h = client()
        .get(p.url("gateway-http", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status().as_u16(), 200);
}

#[tokio::test]
async fn a_gateway_whose_queue_is_gone_is_not_ready_but_alive() {
    let mut split = Split::start(&settings_yaml("", ""));
    let gw = split.gateway();
    let health = gw.url("gateway-admin", "/readyz");
    assert_eq!(
        client()
            .get(&health)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    split.queue.kill9();
    let unhealthy = wait_until(Duration::from_secs(10), || {
        let health = health.clone();
        async move {
            client()
                .get(&health)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
                == Some(503)
        }
    })
    .await;
    assert!(unhealthy, "/readyz answers 503 without a queue service");
    let alive = client()
        .get(gw.url("gateway-admin", "/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(alive, 200, "/healthz: the process answers");
}

#[tokio::test]
async fn a_huge_client_string_is_cut_short_in_the_answer_and_the_log() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("", ""));
    let app = "A".repeat(500_000);
    let body = json!({"appId": app, "signType": "SHA256", "version": "1", "timestamp": now(),
                      "signData": "x", "data": {}});
    let (_, v) = post(&p.url("gateway-http", "/api/echo"), &body).await;
    assert_eq!(code(&v), 9805);
    let msg = v["msg"].as_str().unwrap_or_default();
    assert!(msg.len() < 1000, "message of {} bytes", msg.len());
    assert!(
        p.log_text().len() < 100_000,
        "log of {} bytes",
        p.log_text().len()
    );
}
