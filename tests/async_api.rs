//! The asynchronous API (PAI-EAS queue service protocol) against the real
//! binaries: the eas-prediction SDK's own test module on both backends, the
//! EAS documentation's subscription example, backpressure, priority, search,
//! negative commits, bad input, a dispatcher killed with items in hand, and
//! the public gRPC API.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

const TOKEN: &str = "test-async-token";
const SVC: &str = "pmmlasync";
const HDR_RID: &str = "x-eas-queueservice-request-id";

const COEF_AGE: f64 = 0.021;
const COEF_INCOME: f64 = -0.00011;
const INTERCEPT: f64 = -0.1;

/// Settings with the lr model and one asynchronous service `pmmlasync`
/// whose model is `model`; `queue` is the service's `queue:` block.
fn settings(backend: &str, redis: &str, model: &str, queue: &str, workers: u32) -> String {
    let base = settings_yaml(
        "",
        &format!("  RedisServer: \"{redis}\"\n  ReclaimIdle: 1\n"),
    )
    .replace("Backend: memory", &format!("Backend: {backend}"));
    format!(
        r#"{base}
Models:
  lr:
    Kind: lr
    ApiPath: /api/lr
    Coefficients: {{age: {COEF_AGE}, income: {COEF_INCOME}}}
    Intercept: {INTERCEPT}
AsyncServices:
  {SVC}:
    model: {model}
    token: "{TOKEN}"
    queue:
{queue}
    rpc:
      worker_threads: {workers}
"#
    )
}

const DEFAULT_QUEUE: &str = "      sink: {max_length: 20000}\n      source: {max_length: 20000}";

/// HTTP client of one service's queues.
struct Eas {
    base: String,
    http: reqwest::Client,
}

impl Eas {
    fn new(gateway_http: &str) -> Eas {
        Eas {
            base: format!("http://{gateway_http}/api/predict/{SVC}"),
            http: client(),
        }
    }

    fn url(&self, sink: bool, query: &str) -> String {
        let q = if sink { "/sink" } else { "" };
        format!("{}{q}?{query}", self.base)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let r = self
            .http
            .request(method, url)
            .header("Authorization", TOKEN)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.bytes().await.expect("body").to_vec())
    }

    /// Puts; (index, request id).
    async fn put(&self, sink: bool, body: &str) -> (u64, String) {
        let (s, h, b) = self
            .send(
                reqwest::Method::POST,
                &self.url(sink, ""),
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(s, 200, "put: {}", String::from_utf8_lossy(&b));
        let index = String::from_utf8_lossy(&b).trim().parse().expect("index");
        let rid = h[HDR_RID].to_str().expect("request id").to_string();
        (index, rid)
    }

    async fn attrs(&self, sink: bool) -> HashMap<String, String> {
        let (s, _, b) = self
            .send(
                reqwest::Method::GET,
                &self.url(sink, "_attrs_=true"),
                vec![],
            )
            .await;
        assert_eq!(s, 200);
        serde_json::from_slice(&b).expect("attributes JSON")
    }

    async fn length(&self, sink: bool) -> u64 {
        self.attrs(sink).await["stream.length"]
            .parse()
            .expect("length")
    }

    /// GET as JSON; the status and the items.
    async fn get_json(&self, sink: bool, query: &str) -> (u16, Vec<Value>) {
        let r = self
            .http
            .get(self.url(sink, query))
            .header("Authorization", TOKEN)
            .header("Accept", "application/json")
            .send()
            .await
            .expect("get");
        let s = r.status().as_u16();
        let b = r.bytes().await.expect("body");
        (s, serde_json::from_slice(&b).unwrap_or_default())
    }

    async fn status(&self, method: reqwest::Method, sink: bool, query: &str) -> u16 {
        self.send(method, &self.url(sink, query), vec![]).await.0
    }

    /// A WebSocket watch of the sink as consumer `uid`.
    async fn watch(
        &self,
        uid: &str,
        query: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::Error,
    > {
        let url = self
            .url(true, &format!("_watch_=true&{query}"))
            .replacen("http://", "ws://", 1);
        let mut req = url.into_client_request().expect("ws request");
        req.headers_mut()
            .insert("Authorization", TOKEN.parse().unwrap());
        req.headers_mut()
            .insert("X-EAS-QueueService-Redis-Uid", uid.parse().unwrap());
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }
}

/// One DataFrameProto frame: (index, tags, data).
fn frame(bytes: &[u8]) -> (u64, HashMap<String, String>, Vec<u8>) {
    use prost::Message as _;
    let item = inferq::proto::AsyncItem::decode(bytes).expect("DataFrameProto");
    (item.index, item.tags, item.data)
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// inferq serving the test service: standalone on memory, or queue,
/// dispatcher and gateway processes on a redis-server of its own.
struct Deployment {
    _redis: Option<RedisServer>,
    _split: Option<Split>,
    procs: Vec<Proc>,
    _dir: TestDir,
}

impl Deployment {
    fn start(backend: &str, model: &str, queue: &str, workers: u32) -> Deployment {
        let dir = TestDir::new();
        if backend == "memory" {
            let sa = standalone(&dir, &settings("memory", "", model, queue, workers));
            return Deployment {
                _redis: None,
                _split: None,
                procs: vec![sa],
                _dir: dir,
            };
        }
        let redis = RedisServer::start(dir.path());
        let split = Split::start(&settings("redis", &redis.addr(), model, queue, workers));
        let d = split.dispatcher("d1", 8);
        let gw = split.gateway();
        Deployment {
            _redis: Some(redis),
            _split: Some(split),
            procs: vec![d, gw],
            _dir: dir,
        }
    }

    fn gateway_http(&self) -> &str {
        self.procs[self.procs.len() - 1].addr("gateway-http")
    }

    fn gateway_grpc(&self) -> &str {
        self.procs[self.procs.len() - 1].addr("gateway-grpc")
    }

    /// A client of the queue service (split deployments).
    async fn queue_client(&self) -> Option<inferq::proto::client::QueueClient> {
        match &self._split {
            Some(s) => Some(s.queue_client().await),
            None => None,
        }
    }
}

async fn sdk_suite(gateway_http: &str) {
    let (ok, text) = eas_sdk(
        &["suite", gateway_http, SVC, TOKEN],
        Duration::from_secs(180),
    )
    .await;
    println!("{text}");
    assert!(ok, "the SDK's test module failed:\n{text}");
    assert!(text.contains("ran 9 failures 0 errors 0"), "{text}");
}

#[tokio::test]
async fn sdk_test_module_passes_on_the_memory_backend() {
    let d = Deployment::start("memory", "/api/lr", DEFAULT_QUEUE, 5);
    sdk_suite(d.gateway_http()).await;
}

#[tokio::test]
async fn sdk_test_module_passes_on_the_redis_backend() {
    let d = Deployment::start("redis", "/api/lr", DEFAULT_QUEUE, 5);
    sdk_suite(d.gateway_http()).await;
}

#[tokio::test]
async fn subscription_example_from_the_eas_documentation_works() {
    let sa = Deployment::start("memory", "/api/lr", DEFAULT_QUEUE, 5);
    let eas = Eas::new(sa.gateway_http());
    let mut expected = HashMap::new();
    for i in 0..10 {
        let (age, income) = (20.0 + i as f64, 1000.0 * i as f64);
        let (_, rid) = eas
            .put(false, &format!(r#"[{{"age": {age}, "income": {income}}}]"#))
            .await;
        expected.insert(
            rid,
            sigmoid(INTERCEPT + COEF_AGE * age + COEF_INCOME * income),
        );
    }
    let (ok, text) = eas_sdk(
        &["subscribe", sa.gateway_http(), SVC, TOKEN],
        Duration::from_secs(60),
    )
    .await;
    assert!(ok, "{text}");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 10, "{text}");
    for l in &lines {
        let rid = l["requestId"].as_str().unwrap();
        let p1 = expected
            .remove(rid)
            .unwrap_or_else(|| panic!("unexpected or repeated {rid}"));
        let data: Value = serde_json::from_str(l["data"].as_str().unwrap()).unwrap();
        let got = data[0]["p_1"].as_f64().unwrap();
        assert!((got - p1).abs() < 1e-12, "p_1 {got} vs {p1}");
        assert!((data[0]["p_0"].as_f64().unwrap() - (1.0 - p1)).abs() < 1e-12);
    }
    assert!(expected.is_empty());
    // Every item was committed.
    assert_eq!(eas.length(true).await, 0);
}

#[tokio::test]
async fn http_api_answers_bad_input_with_4xx_and_stores_nothing() {
    let queue = "      sink: {max_payload_size: 1}\n      source: {max_length: 100}";
    let sa = Deployment::start("memory", "/api/lr", queue, 5);
    let eas = Eas::new(sa.gateway_http());
    use reqwest::Method;
    let (_, rid) = eas.put(true, "abc").await;
    assert_eq!(eas.length(true).await, 1);

    assert_eq!(eas.status(Method::GET, true, "_index_=abc").await, 400);
    assert_eq!(eas.status(Method::GET, true, "_length_=x").await, 400);
    assert_eq!(eas.status(Method::GET, true, "_timeout_=soon").await, 400);
    assert_eq!(eas.status(Method::PUT, true, "_indexes_=1,x").await, 400);
    assert_eq!(eas.status(Method::DELETE, true, "_trunc_=true").await, 400);
    // Over max_payload_size (1 KB): 413, and nothing stored.
    let (s, _, _) = eas
        .send(Method::POST, &eas.url(true, ""), vec![b'x'; 1025])
        .await;
    assert_eq!(s, 413);
    assert_eq!(eas.length(true).await, 1);
    // The model's check refuses the input before it is stored.
    for bad in [
        "not json",
        r#"[{"age": "old"}]"#,
        "[]",
        r#"{"instances": 3}"#,
    ] {
        let (s, _, b) = eas
            .send(Method::POST, &eas.url(false, ""), bad.into())
            .await;
        assert_eq!(s, 400, "{bad}: {}", String::from_utf8_lossy(&b));
    }
    assert_eq!(eas.length(false).await, 0);
    // Token.
    let r = client()
        .get(eas.url(true, "_attrs_=true"))
        .header("Authorization", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .get(eas.url(true, "_attrs_=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Unknown service: answered as a wrong token is, so names cannot be probed.
    let url = format!(
        "http://{}/api/predict/nosuch/sink?_attrs_=true",
        sa.gateway_http()
    );
    let r = client()
        .get(url)
        .header("Authorization", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // An Accept the API cannot answer with.
    let r = client()
        .get(eas.url(true, "_index_=0"))
        .header("Authorization", TOKEN)
        .header("Accept", "application/x-flatbuffers")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Still there, readable raw and by request id.
    let r = client()
        .get(eas.url(true, &format!("requestId={rid}")))
        .header("Authorization", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"abc");
}

#[tokio::test]
async fn get_newest_blocking_get_negative_commit_and_second_watcher() {
    let sa = Deployment::start("memory", "/api/lr", DEFAULT_QUEUE, 5);
    let eas = Eas::new(sa.gateway_http());
    use reqwest::Method;
    let mut idx = Vec::new();
    for d in ["a", "b", "c"] {
        idx.push(eas.put(true, d).await.0);
    }
    let (s, items) = eas.get_json(true, "_index_=-1").await;
    assert_eq!(s, 200);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["data"], "c");
    assert_eq!(items[0]["index"], idx[2]);
    let (_, items) = eas
        .get_json(true, &format!("_index_={}&_length_=5", idx[1]))
        .await;
    assert_eq!(
        items.iter().map(|i| i["data"].clone()).collect::<Vec<_>>(),
        ["b", "c"]
    );

    // A blocking get returns as soon as an item arrives.
    let from = idx[2] + 1;
    let waiting = {
        let url = eas.url(
            true,
            &format!("_index_={from}&_timeout_=10s&_auto_delete_=true"),
        );
        tokio::spawn(async move {
            let r = client()
                .get(url)
                .header("Authorization", TOKEN)
                .header("Accept", "application/json")
                .send()
                .await
                .unwrap();
            r.json::<Vec<Value>>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    eas.put(true, "late").await;
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["data"], "late");
    assert_eq!(eas.length(true).await, 3, "auto delete removed it");

    // A negative commit removes the item and is kept for search and attributes.
    let q = format!(
        "_indexes_={}&_negative_=true&_code_=422&_reason_=unreadable",
        idx[0]
    );
    assert_eq!(eas.status(Method::PUT, true, &q).await, 200);
    let (s, _, b) = eas
        .send(
            Method::GET,
            &eas.url(true, &format!("_search_=true&_index_={}", idx[0])),
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    let found: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(found["Negative"]["code"], 422);
    assert_eq!(found["Negative"]["reason"], "unreadable");
    let attrs = eas.attrs(true).await;
    assert_eq!(attrs["stream.negativeCount"], "1");
    assert_eq!(attrs["stream.length"], "2");

    // Watch without auto commit: the window holds; the second watch of the
    // same consumer is refused; search shows the item pending.
    let mut ws = eas
        .watch("consumer-1", "_index_=0&_window_=1")
        .await
        .expect("watch");
    let first = match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => frame(&b),
        other => panic!("{other:?}"),
    };
    assert_eq!(first.0, idx[1]);
    let second = eas.watch("consumer-1", "_index_=0&_window_=1").await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 409),
        other => panic!(
            "a second watch must be refused with 409, got {:?}",
            other.map(|_| ())
        ),
    }
    let (_, _, b) = eas
        .send(
            Method::GET,
            &eas.url(true, &format!("_search_=true&_index_={}", idx[1])),
            vec![],
        )
        .await;
    let found: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(found["IsPending"], true);
    // Window 1: nothing more until the commit.
    assert!(tokio::time::timeout(Duration::from_millis(300), ws.next())
        .await
        .is_err());
    assert_eq!(
        eas.status(Method::PUT, true, &format!("_indexes_={}", idx[1]))
            .await,
        200
    );
    let next = match tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Message::Binary(b) => frame(&b),
        other => panic!("{other:?}"),
    };
    assert_eq!(next.2, b"c");
    // The watcher goes without committing: the item is sent again on the next watch.
    ws.close(None).await.unwrap();
    drop(ws);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = eas.watch("consumer-1", "_index_=0&_window_=1").await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = again.expect("the consumer can watch again after its watch ended");
    let resent = match tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Message::Binary(b) => frame(&b),
        other => panic!("{other:?}"),
    };
    assert_eq!(resent.0, next.0, "uncommitted item sent again");
}

/// Backpressure: sink max_length 10, no watcher, 50 puts; then a watcher
/// that commits gets all 50, each once.
async fn backpressure(gateway_http: &str, queue: Option<inferq::proto::client::QueueClient>) {
    let eas = Eas::new(gateway_http);
    let mut sent = BTreeSet::new();
    for i in 0..50 {
        let (_, rid) = eas.put(false, &format!(r#"[{{"age": {i}}}]"#)).await;
        sent.insert(rid);
    }
    assert!(
        wait_until(Duration::from_secs(20), || async {
            eas.length(true).await == 10
        })
        .await,
        "the sink should fill to its max_length"
    );
    // Give the dispatcher time to overrun the bound, if it would.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        eas.length(true).await,
        10,
        "no more results than the sink holds"
    );
    assert_eq!(
        eas.length(false).await,
        40,
        "the rest wait in the input queue"
    );
    if let Some(mut q) = queue {
        // Operators and autoscalers see the backlog in the queue's Stats.
        let stats = q
            .stats(inferq::proto::StatsRequest {
                queue: format!("async:{SVC}"),
            })
            .await
            .expect("stats")
            .into_inner()
            .queues;
        assert_eq!(stats.len(), 1, "{stats:?}");
        assert_eq!(
            (stats[0].ready, stats[0].leased, stats[0].dispatchers),
            (40, 0, 1)
        );
    }

    let mut ws = eas
        .watch("drainer", "_index_=0&_window_=5")
        .await
        .expect("watch");
    let mut got = Vec::new();
    while got.len() < 50 {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("an item within 20 s")
            .expect("open")
            .expect("frame");
        if let Message::Binary(b) = msg {
            let (index, tags, _) = frame(&b);
            got.push(tags["requestId"].clone());
            let s = eas
                .status(reqwest::Method::PUT, true, &format!("_indexes_={index}"))
                .await;
            assert_eq!(s, 200);
        }
    }
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(unique.len(), 50, "no result twice");
    assert_eq!(unique, sent, "every request answered");
    assert_eq!(eas.length(false).await, 0);
}

const BOUNDED_SINK: &str = "      sink: {max_length: 10}\n      source: {max_length: 1000}";

#[tokio::test]
async fn full_sink_pauses_dispatch_on_the_memory_backend() {
    let d = Deployment::start("memory", "/api/lr", BOUNDED_SINK, 5);
    backpressure(d.gateway_http(), d.queue_client().await).await;
}

#[tokio::test]
async fn full_sink_pauses_dispatch_on_the_redis_backend() {
    let d = Deployment::start("redis", "/api/lr", BOUNDED_SINK, 5);
    backpressure(d.gateway_http(), d.queue_client().await).await;
}

#[tokio::test]
async fn high_priority_items_go_first() {
    let queue = "      sink: {max_length: 1}\n      source: {max_length: 100}";
    let sa = Deployment::start("memory", "/api/lr", queue, 5);
    let eas = Eas::new(sa.gateway_http());
    // A full sink holds the input back.
    let (blocker, _) = eas.put(true, "blocker").await;
    let mut normal = Vec::new();
    for _ in 0..3 {
        normal.push(eas.put(false, "[{}]").await);
    }
    let r = client()
        .post(eas.url(false, ""))
        .header("Authorization", TOKEN)
        .header("X-EAS-QueueService-Priority", "1")
        .body("[{}]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let high_rid = r.headers()[HDR_RID].to_str().unwrap().to_string();
    let high_index: u64 = r.text().await.unwrap().trim().parse().unwrap();
    let search = |i: u64| {
        let url = eas.url(false, &format!("_search_=true&_index_={i}"));
        async move {
            client()
                .get(url)
                .header("Authorization", TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(search(high_index).await["WaitCount"], 0);
    assert_eq!(search(normal[2].0).await["WaitCount"], 3);
    assert_eq!(search(normal[0].0).await["WaitCount"], 1);
    // Room for one result: the high-priority item's.
    assert_eq!(
        eas.status(
            reqwest::Method::DELETE,
            true,
            &format!("_indexes_={blocker}")
        )
        .await,
        200
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            eas.length(true).await == 1
        })
        .await
    );
    let (_, items) = eas.get_json(true, "_index_=0").await;
    assert_eq!(items[0]["tags"]["requestId"], high_rid.as_str());
}

#[tokio::test]
async fn items_in_hand_of_a_killed_dispatcher_are_still_answered() {
    let dir = TestDir::new();
    let redis = RedisServer::start(dir.path());
    let split = Split::start(&settings(
        "redis",
        &redis.addr(),
        "/api/echo",
        DEFAULT_QUEUE,
        4,
    ));
    let mut d1 = split.dispatcher("d1", 8);
    let gw = split.gateway();
    let eas = Eas::new(gw.addr("gateway-http"));
    let mut sent = BTreeSet::new();
    for i in 0..40 {
        let (_, rid) = eas
            .put(false, &format!(r#"{{"i": {i}, "sleep_ms": 150}}"#))
            .await;
        sent.insert(rid);
    }
    assert!(
        wait_until(Duration::from_secs(20), || async {
            eas.length(true).await >= 4
        })
        .await
    );
    let held: u64 = eas.attrs(false).await["stream.pending"].parse().unwrap();
    assert!(held >= 1, "the dispatcher holds items when it is killed");
    d1.kill9();
    println!("killed the dispatcher holding {held} items");
    let _d2 = split.dispatcher("d2", 8);
    assert!(
        wait_until(Duration::from_secs(60), || async {
            eas.length(true).await >= 40
        })
        .await,
        "every item answered after the kill"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, items) = eas.get_json(true, "_index_=0&_length_=100").await;
    let rids: Vec<String> = items
        .iter()
        .map(|i| i["tags"]["requestId"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<String> = rids.iter().cloned().collect();
    assert_eq!(rids.len(), 40, "one result per request");
    assert_eq!(unique, sent);
    for i in &items {
        let out: Value = serde_json::from_str(i["data"].as_str().unwrap()).unwrap();
        assert_eq!(out["sleep_ms"], 150, "{out}");
    }
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", token.parse().expect("ascii token"));
    r
}

#[tokio::test]
async fn grpc_clients_submit_watch_and_commit() {
    use inferq::proto::async_queue_client::AsyncQueueClient;
    use inferq::proto::{
        async_commit_request::Kind, AsyncCommitRequest, AsyncPutRequest, AsyncQueueRef,
        AsyncWatchRequest,
    };
    let sa = Deployment::start("memory", "/api/lr", DEFAULT_QUEUE, 5);
    let mut c = AsyncQueueClient::connect(format!("http://{}", sa.gateway_grpc()))
        .await
        .expect("connect");
    let input = Some(AsyncQueueRef {
        service: SVC.into(),
        sink: false,
    });
    let sink = Some(AsyncQueueRef {
        service: SVC.into(),
        sink: true,
    });
    let put = |data: &str| AsyncPutRequest {
        queue: input.clone(),
        data: data.as_bytes().to_vec(),
        ..Default::default()
    };
    let err = c
        .submit(with_token(put("[{}]"), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = c
        .submit(with_token(put("[{\"age\": []}]"), TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut rids = BTreeSet::new();
    for i in 0..5 {
        let r = c
            .submit(with_token(put(&format!(r#"[{{"age": {i}}}]"#)), TOKEN))
            .await
            .expect("submit")
            .into_inner();
        rids.insert(r.request_id);
    }
    let mut stream = c
        .watch(with_token(
            AsyncWatchRequest {
                queue: sink.clone(),
                consumer: "grpc-consumer".into(),
                window: 2,
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .expect("watch")
        .into_inner();
    let mut got = BTreeSet::new();
    while got.len() < 5 {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("item in time")
            .expect("open")
            .expect("item");
        let out: Value = serde_json::from_slice(&item.data).unwrap();
        assert_eq!(out[0].as_object().unwrap().len(), 2);
        got.insert(item.tags["requestId"].clone());
        c.commit(with_token(
            AsyncCommitRequest {
                queue: sink.clone(),
                indexes: vec![item.index],
                kind: Kind::Commit as i32,
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .expect("commit");
    }
    assert_eq!(got, rids);
}

#[tokio::test]
async fn the_example_file_serves_pmmlasync_as_written() {
    let dir = TestDir::new();
    let yaml = repo_root().join("config/eas-example.yaml");
    let sa = Proc::start(
        "standalone",
        dir.path(),
        &[
            "standalone",
            "--yaml",
            yaml.to_str().unwrap(),
            "--port",
            "0",
            "--grpc-port",
            "0",
        ],
        &["gateway-http", "gateway-grpc"],
    );
    let base = format!("http://{}/api/predict/pmmlasync", sa.addr("gateway-http"));
    let token = "pmmlasync-example-token";
    let r = client()
        .post(&base)
        .header("Authorization", token)
        .body(r#"[{"age": 30, "income": 5200, "clicks": 2, "tenure": 3}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let rid = r.headers()[HDR_RID].to_str().unwrap().to_string();
    let r = client()
        .get(format!(
            "{base}/sink?requestId={rid}&_timeout_=10s&_auto_delete_=true"
        ))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let out: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    // The file's coefficients: 0.021 age - 0.00011 income + 0.35 clicks - 0.08 tenure - 0.1.
    let p1 = sigmoid(0.021 * 30.0 - 0.00011 * 5200.0 + 0.35 * 2.0 - 0.08 * 3.0 - 0.1);
    assert!(
        (out[0]["p_1"].as_f64().unwrap() - p1).abs() < 1e-12,
        "{out}"
    );
}

/// An auto-commit watcher that stops reading loses only what reached its
/// socket: the items the queue had handed to the watch but not yet written
/// are committed only once written, so when the watch ends (a frame not
/// sent within 10 s) they are ready for the next watch. Before, the queue
/// removed them as it handed them out, and they were lost with the watch
/// (the SDK's own module tripped on that once: an item put just after a
/// watcher closed went to the closing watch).
#[tokio::test]
async fn an_auto_commit_watch_that_ends_loses_none_of_the_items_it_had_not_sent() {
    use futures::StreamExt;
    let queue = "      sink: {max_payload_size: 1024}\n      source: {max_length: 100}";
    let sa = Deployment::start("memory", "/api/lr", queue, 5);
    let eas = Eas::new(sa.gateway_http());
    const N: usize = 40;
    let big = "x".repeat(512 << 10);
    let mut all = std::collections::BTreeSet::new();
    for _ in 0..N {
        all.insert(eas.put(true, &big).await.0);
    }
    // 20 MB for a client that reads nothing: the socket fills, a frame
    // waits past the send timeout, the watch ends.
    let mut slow = eas
        .watch("slow", "_window_=5&_auto_commit_=true")
        .await
        .expect("watch");
    tokio::time::sleep(Duration::from_secs(13)).await;
    let mut got = std::collections::BTreeSet::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(2), slow.next()).await {
        if let Message::Binary(b) = msg {
            got.insert(frame(&b).0);
        }
    }
    assert!(got.len() < N, "the watch ended early: {} frames", got.len());
    let mut next = eas
        .watch("slow", "_window_=5&_auto_commit_=true")
        .await
        .expect("the next watch");
    while got.len() < N {
        match tokio::time::timeout(Duration::from_secs(5), next.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                got.insert(frame(&b).0);
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    assert_eq!(got, all, "every item reached a watcher");
    assert_eq!(
        eas.length(true).await,
        0,
        "and each was committed once sent"
    );
}
