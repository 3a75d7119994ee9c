//! `inferq bench`: a load generator that behaves like real clients.
//!
//! Each of `--concurrency` workers holds one keep-alive HTTP/1.1 connection and
//! sends signed go-infer requests back to back (SHA256, SM2 or plain; signed
//! per request with a fresh timestamp, or once with `--presign` as a fixed-body
//! tool like wrk does). After `--warmup` seconds it records every latency for
//! `--duration` seconds and prints req/s, p50/p90/p99/max and error counts
//! (transport errors, non-200 answers, envelopes with a non-zero code).
//! `--write-body FILE` writes one signed body for an independent tool
//! (`bench/wrk-post.lua`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use sm2::dsa::SigningKey;

use inferq::gateway::signature::{self, Canonical};

pub mod async_load;
pub mod model;

/// go-infer's example appId and secret (in config/settings.yaml).
pub const EXAMPLE_APP_ID: &str = "3EA25569454745D01219080B779F021F";
pub const EXAMPLE_SECRET: &str = "41DF0E6AE27B5282C07EF5124642A352";
/// go-infer's example SM2 private key.
pub const EXAMPLE_SM2_KEY: &str = "JShsBOJL0RgPAoPttEB1hgtPAvCikOl0V1oTOYL7k5U=";

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The model URL.
    #[arg(long, default_value = "http://127.0.0.1:5000/api/echo")]
    pub url: String,
    /// Connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// SHA256, SM2 or plain.
    #[arg(long, default_value = "SHA256")]
    pub sign: String,
    #[arg(long, default_value = EXAMPLE_APP_ID)]
    pub app_id: String,
    #[arg(long, default_value = EXAMPLE_SECRET)]
    pub secret: String,
    /// SM2 private key (base64 scalar) for --sign SM2.
    #[arg(long, default_value = EXAMPLE_SM2_KEY)]
    pub sm2_key: String,
    /// The model parameters (`data`), a JSON object.
    #[arg(long, default_value = r#"{"text":"hello inferq"}"#)]
    pub data: String,
    /// Sign one body up front and send it every time.
    #[arg(long)]
    pub presign: bool,
    /// Print the summary as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Write one signed body to FILE and exit (for wrk and the like).
    #[arg(long, value_name = "FILE")]
    pub write_body: Option<PathBuf>,
}

/// Signs go-infer request bodies.
pub struct BodySigner {
    app_id: String,
    secret: String,
    sign: String,
    sm2: Option<SigningKey>,
    data: Map<String, Value>,
}

impl BodySigner {
    pub fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        let data = match serde_json::from_str::<Value>(&args.data).context("--data")? {
            Value::Object(m) => m,
            _ => anyhow::bail!("--data must be a JSON object"),
        };
        let sm2 = if args.sign == "SM2" {
            Some(signature::sm2_signing_key(&args.sm2_key).map_err(anyhow::Error::msg)?)
        } else {
            None
        };
        if !matches!(args.sign.as_str(), "SHA256" | "SM2" | "plain") {
            anyhow::bail!("--sign must be SHA256, SM2 or plain");
        }
        Ok(BodySigner {
            app_id: args.app_id.clone(),
            secret: args.secret.clone(),
            sign: args.sign.clone(),
            sm2,
            data,
        })
    }

    /// A signed body with the current time.
    pub fn body(&self) -> Vec<u8> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut fields = Map::new();
        fields.insert("appId".into(), json!(self.app_id));
        fields.insert("version".into(), json!("1"));
        fields.insert("signType".into(), json!(self.sign));
        fields.insert("encType".into(), json!("plain"));
        fields.insert("timestamp".into(), json!(ts));
        fields.insert("data".into(), Value::Object(self.data.clone()));
        let s = signature::signed_string(&fields, &self.secret, Canonical::Python);
        let sig = match (&self.sm2, self.sign.as_str()) {
            (Some(k), _) => signature::sm2_sign(k, &s),
            (None, "SHA256") => signature::sha256_sign(&s),
            _ => String::new(),
        };
        fields.insert("signData".into(), json!(sig));
        serde_json::to_vec(&Value::Object(fields)).unwrap_or_default()
    }
}

#[derive(Default)]
struct WorkerReport {
    hist: Option<Histogram<u64>>,
    ok: u64,
    code_errors: BTreeMap<i64, u64>,
    http_errors: u64,
    transport_errors: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let signer = Arc::new(BodySigner::new(&args)?);
    if let Some(path) = &args.write_body {
        std::fs::write(path, signer.body()).with_context(|| format!("{}", path.display()))?;
        return Ok(());
    }
    let uri: hyper::Uri = args.url.parse().context("--url")?;
    let host = uri.host().context("--url needs a host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path().to_string();
    let fixed = args.presign.then(|| Bytes::from(signer.body()));
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = warmup_end + Duration::from_secs_f64(args.duration);
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (host, path, signer, fixed) = (
            host.clone(),
            path.clone(),
            Arc::clone(&signer),
            fixed.clone(),
        );
        workers.push(tokio::spawn(async move {
            worker(host, port, path, signer, fixed, warmup_end, end).await
        }));
    }
    let mut total = WorkerReport {
        hist: Some(Histogram::new(3)?),
        ..Default::default()
    };
    for w in workers {
        let r = w.await?;
        if let (Some(t), Some(h)) = (total.hist.as_mut(), r.hist.as_ref()) {
            t.add(h)?;
        }
        total.ok += r.ok;
        total.http_errors += r.http_errors;
        total.transport_errors += r.transport_errors;
        for (c, n) in r.code_errors {
            *total.code_errors.entry(c).or_default() += n;
        }
    }
    let hist = total.hist.unwrap_or(Histogram::new(3)?);
    let answered = total.ok + total.code_errors.values().sum::<u64>();
    let rps = answered as f64 / args.duration;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            json!({
                "url": args.url, "concurrency": args.concurrency, "duration_s": args.duration,
                "sign": args.sign, "requests": answered, "ok": total.ok, "req_per_s": rps,
                "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": hist.max() as f64 / 1000.0,
                "code_errors": total.code_errors, "http_errors": total.http_errors,
                "transport_errors": total.transport_errors,
            })
        );
    } else {
        println!(
            "{} c={} {}s sign={}: {:.0} req/s, {} answered ({} ok), latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}; code errors {:?}, http errors {}, transport errors {}",
            args.url, args.concurrency, args.duration, args.sign, rps, answered, total.ok,
            q(0.5), q(0.9), q(0.99), hist.max() as f64 / 1000.0,
            total.code_errors, total.http_errors, total.transport_errors
        );
    }
    Ok(())
}

/// One keep-alive HTTP/1.1 connection (TCP_NODELAY), driven in the background.
pub(crate) async fn connect(
    host: &str,
    port: u16,
) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

#[derive(serde::Deserialize)]
struct EnvelopeCode {
    code: i64,
}

async fn worker(
    host: String,
    port: u16,
    path: String,
    signer: Arc<BodySigner>,
    fixed: Option<Bytes>,
    warmup_end: Instant,
    end: Instant,
) -> WorkerReport {
    let mut rep = WorkerReport {
        hist: Histogram::new(3).ok(),
        ..Default::default()
    };
    let authority = format!("{host}:{port}");
    'connect: while Instant::now() < end {
        let Some(mut sender) = connect(&host, port).await else {
            rep.transport_errors += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while Instant::now() < end {
            let body = fixed.clone().unwrap_or_else(|| Bytes::from(signer.body()));
            let req = match Request::post(path.as_str())
                .header(hyper::header::HOST, authority.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
            {
                Ok(r) => r,
                Err(_) => return rep,
            };
            let t0 = Instant::now();
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    rep.transport_errors += 1;
                    continue 'connect;
                }
            };
            let status = resp.status();
            let bytes = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    rep.transport_errors += 1;
                    continue 'connect;
                }
            };
            let elapsed = t0.elapsed();
            if t0 < warmup_end {
                continue;
            }
            if !status.is_success() {
                rep.http_errors += 1;
                continue;
            }
            match serde_json::from_slice::<EnvelopeCode>(&bytes) {
                Ok(EnvelopeCode { code: 0 }) => rep.ok += 1,
                Ok(EnvelopeCode { code }) => *rep.code_errors.entry(code).or_default() += 1,
                Err(_) => rep.http_errors += 1,
            }
            if let Some(h) = rep.hist.as_mut() {
                let _ = h.record(elapsed.as_micros().max(1) as u64);
            }
        }
    }
    rep
}
