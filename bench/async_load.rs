//! `inferq bench-async`: load on an asynchronous service, as its clients
//! make it. `--concurrency` workers put items into the input queue back to
//! back over keep-alive HTTP/1.1 connections while one watcher takes results
//! from the sink over a WebSocket (auto commit). After `--warmup` seconds it
//! counts for `--duration` seconds: puts per second, results per second, the
//! put latency and the put-to-result latency (by request id).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use inferq::proto::AsyncItem;

#[derive(Debug, Clone, Args)]
pub struct BenchAsyncArgs {
    /// The service's input queue URL.
    #[arg(long, default_value = "http://127.0.0.1:5000/api/predict/pmmlasync")]
    pub url: String,
    /// The service token (Authorization).
    #[arg(long, default_value = "pmmlasync-example-token")]
    pub token: String,
    /// Put workers, each with one put in flight.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// The payload of each put.
    #[arg(long, default_value = r#"[{"age": 30, "income": 5200, "clicks": 3}]"#)]
    pub data: String,
    /// The watcher's window.
    #[arg(long, default_value_t = 64)]
    pub window: u32,
    /// Put only, without the watcher (to compare puts with another tool).
    #[arg(long)]
    pub no_watch: bool,
    #[arg(long)]
    pub json: bool,
}

/// When each request id was put (only those put while measuring). A result
/// can arrive before its put's answer, so arrivals are matched at the end.
type PutTimes = Arc<Mutex<Vec<(String, Instant)>>>;

struct PutReport {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
}

pub async fn run(args: BenchAsyncArgs) -> anyhow::Result<()> {
    let uri: hyper::Uri = args.url.parse().context("--url")?;
    let host = uri.host().context("--url needs a host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path().to_string();
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = warmup_end + Duration::from_secs_f64(args.duration);
    let put_times: PutTimes = Arc::default();

    let sink_url = format!(
        "{}/sink?_watch_=true&_index_=0&_window_={}&_auto_commit_=true",
        args.url, args.window
    )
    .replacen("http://", "ws://", 1);
    let mut ws_req = sink_url.into_client_request().context("sink URL")?;
    ws_req
        .headers_mut()
        .insert("Authorization", args.token.parse()?);
    ws_req.headers_mut().insert(
        "X-EAS-QueueService-Redis-Uid",
        format!("bench-{}", uuid::Uuid::now_v7().simple()).parse()?,
    );
    let mut ws = if args.no_watch {
        None
    } else {
        Some(
            tokio_tungstenite::connect_async(ws_req)
                .await
                .context("watch the sink")?
                .0,
        )
    };
    // Results are watched until a little after the end, for the puts of the
    // last moments.
    let watcher = tokio::spawn(async move {
        let mut arrivals: HashMap<String, Instant> = HashMap::new();
        let mut results = 0u64;
        let stop = end + Duration::from_secs(2);
        while let Some(ws) = ws.as_mut() {
            let msg = match tokio::time::timeout_at(stop.into(), ws.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(other) => {
                    eprintln!("bench-async: the watch ended: {other:?}");
                    break;
                }
                Err(_) => break,
            };
            let Message::Binary(b) = msg else { continue };
            let now = Instant::now();
            if now >= warmup_end && now < end {
                results += 1;
            }
            if let Ok(mut item) = AsyncItem::decode(b.as_ref()) {
                if let Some(rid) = item.tags.remove("requestId") {
                    arrivals.insert(rid, now);
                }
            }
        }
        (results, arrivals)
    });

    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (host, path, token, data, times) = (
            host.clone(),
            path.clone(),
            args.token.clone(),
            Bytes::from(args.data.clone()),
            Arc::clone(&put_times),
        );
        workers.push(tokio::spawn(async move {
            put_worker(host, port, path, token, data, times, warmup_end, end).await
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut ok, mut errors) = (0, 0);
    for w in workers {
        let r = w.await?;
        hist.add(&r.hist)?;
        ok += r.ok;
        errors += r.errors;
    }
    let (results, arrivals) = watcher.await?;
    let mut e2e = Histogram::<u64>::new(3)?;
    let (mut measured, mut not_seen) = (0u64, 0u64);
    for (rid, t0) in put_times.lock().iter() {
        match arrivals.get(rid) {
            Some(t) => {
                measured += 1;
                e2e.record(t.saturating_duration_since(*t0).as_micros().max(1) as u64)?;
            }
            None if !args.no_watch => not_seen += 1,
            None => {}
        }
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let put_s = ok as f64 / args.duration;
    let result_s = results as f64 / args.duration;
    if args.json {
        println!(
            "{}",
            json!({"url": args.url, "concurrency": args.concurrency, "duration_s": args.duration,
                   "puts": ok, "put_per_s": put_s, "results_per_s": result_s, "put_errors": errors,
                   "put_p50_ms": q(&hist, 0.5), "put_p99_ms": q(&hist, 0.99),
                   "e2e_measured": measured, "e2e_p50_ms": q(&e2e, 0.5), "e2e_p99_ms": q(&e2e, 0.99),
                   "not_seen_within_2s_after_end": not_seen})
        );
    } else {
        println!(
            "{} c={} {}s: {:.0} put/s, {:.0} result/s; put ms p50 {:.3} p99 {:.3}; put-to-result ms p50 {:.3} p99 {:.3} ({} measured); put errors {}; puts whose result was not seen within 2 s after the end {}",
            args.url, args.concurrency, args.duration, put_s, result_s,
            q(&hist, 0.5), q(&hist, 0.99), q(&e2e, 0.5), q(&e2e, 0.99), measured, errors, not_seen
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn put_worker(
    host: String,
    port: u16,
    path: String,
    token: String,
    data: Bytes,
    times: PutTimes,
    warmup_end: Instant,
    end: Instant,
) -> PutReport {
    let mut rep = PutReport {
        hist: Histogram::new(3).expect("histogram"),
        ok: 0,
        errors: 0,
    };
    let authority = format!("{host}:{port}");
    'connect: while Instant::now() < end {
        let Some(mut sender) = super::connect(&host, port).await else {
            rep.errors += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while Instant::now() < end {
            let Ok(req) = Request::post(path.as_str())
                .header(hyper::header::HOST, authority.as_str())
                .header(hyper::header::AUTHORIZATION, token.as_str())
                .body(Full::new(data.clone()))
            else {
                return rep;
            };
            let t0 = Instant::now();
            let Ok(resp) = sender.send_request(req).await else {
                rep.errors += 1;
                continue 'connect;
            };
            let status = resp.status();
            let rid = resp
                .headers()
                .get("x-eas-queueservice-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if resp.into_body().collect().await.is_err() {
                rep.errors += 1;
                continue 'connect;
            }
            let measuring = t0 >= warmup_end;
            match (status.is_success(), rid) {
                (true, Some(rid)) => {
                    if measuring {
                        times.lock().push((rid, t0));
                        rep.ok += 1;
                        let _ = rep.hist.record(t0.elapsed().as_micros().max(1) as u64);
                    }
                }
                _ => rep.errors += 1,
            }
        }
    }
    rep
}
