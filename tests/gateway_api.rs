//! The go-infer REST API of a real `inferq standalone`: signatures, every
//! error code, body limits, unknown paths, and content that trips canonical forms.

mod common;

use common::*;
use serde_json::{json, Map, Value};

fn start(extra_api: &str) -> (TestDir, Proc) {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml(extra_api, ""));
    (dir, p)
}

#[tokio::test]
async fn sha256_signed_request_is_answered_in_go_infer_envelope() {
    let (_d, p) = start("");
    let url = p.url("gateway-http", "/api/echo");
    let (status, v) = post(&url, &signed(json!({"text": "test text", "image": ""}))).await;
    assert_eq!(status, 200);
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["appId"], APP_ID);
    assert_eq!(v["signType"], "plain");
    assert_eq!(v["encType"], "plain");
    assert!(v["timestamp"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(v["data"]["msg"], "success");
    assert_eq!(v["data"]["text"], "test text");
    assert_eq!(v["data"]["requestId"].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn every_refusal_gets_its_code() {
    let (_d, p) = start("  MaxBodyBytes: 4096");
    let url = p.url("gateway-http", "/api/echo");
    let data = json!({"text": "x"});

    // plain: allowed for PLAIN_APP only.
    let plain_ok = signed_with(
        data.clone(),
        Map::new(),
        "plain",
        PLAIN_APP,
        PLAIN_SECRET,
        now(),
    );
    assert_eq!(code(&post(&url, &plain_ok).await.1), 0);
    let plain_refused = signed_with(data.clone(), Map::new(), "plain", APP_ID, SECRET, now());
    assert_eq!(code(&post(&url, &plain_refused).await.1), 9803);

    // Timestamp window, both directions.
    let stale = signed_with(
        data.clone(),
        Map::new(),
        "SHA256",
        APP_ID,
        SECRET,
        now() - 301,
    );
    assert_eq!(code(&post(&url, &stale).await.1), 9802);
    let future = signed_with(
        data.clone(),
        Map::new(),
        "SHA256",
        APP_ID,
        SECRET,
        now() + 301,
    );
    assert_eq!(code(&post(&url, &future).await.1), 9802);

    // Unknown appId.
    let unknown = signed_with(
        data.clone(),
        Map::new(),
        "SHA256",
        "NOSUCHAPP",
        SECRET,
        now(),
    );
    assert_eq!(code(&post(&url, &unknown).await.1), 9805);

    // Wrong version (signed correctly with it).
    let mut extra = Map::new();
    extra.insert("version".into(), json!("2"));
    let v2 = signed_with(data.clone(), extra, "SHA256", APP_ID, SECRET, now());
    assert_eq!(code(&post(&url, &v2).await.1), 9806);

    // Bad signature: data changed after signing; and signed with another secret.
    let mut tampered = signed(data.clone());
    tampered["data"]["text"] = json!("y");
    assert_eq!(code(&post(&url, &tampered).await.1), 9800);
    let wrong_secret = signed_with(
        data.clone(),
        Map::new(),
        "SHA256",
        APP_ID,
        PLAIN_SECRET,
        now(),
    );
    assert_eq!(code(&post(&url, &wrong_secret).await.1), 9800);

    // Unknown signType.
    let mut md5 = signed(data.clone());
    md5["signType"] = json!("MD5");
    assert_eq!(code(&post(&url, &md5).await.1), 9803);

    // Missing or mistyped fields; not JSON; not an object.
    for field in ["appId", "signType", "signData", "timestamp", "data"] {
        let mut b = signed(data.clone());
        b.as_object_mut().unwrap().remove(field);
        let (_, v) = post(&url, &b).await;
        assert_eq!(code(&v), 9801, "without {field}: {v}");
        assert!(v["data"]["msg"].as_str().unwrap().contains(field));
    }
    let mut ts_str = signed(data.clone());
    ts_str["timestamp"] = json!(now().to_string());
    assert_eq!(code(&post(&url, &ts_str).await.1), 9801);
    let mut data_list = signed(data.clone());
    data_list["data"] = json!([1, 2]);
    assert_eq!(code(&post(&url, &data_list).await.1), 9801);
    assert_eq!(code(&post_raw(&url, b"{not json".to_vec()).await.1), 9801);
    assert_eq!(code(&post_raw(&url, b"[1,2,3]".to_vec()).await.1), 9801);
    assert_eq!(code(&post_raw(&url, Vec::new()).await.1), 9801);

    // The model's parameter check.
    let bad_param = signed(json!({"sleep_ms": "soon"}));
    let (_, v) = post(&url, &bad_param).await;
    assert_eq!(code(&v), 9701);
    assert!(v["data"]["msg"].as_str().unwrap().contains("sleep_ms"));

    // Oversized body: a clear 413 with its code, not a dropped connection.
    let big = signed(json!({"text": "x".repeat(20_000)}));
    let (status, v) = post(&url, &big).await;
    assert_eq!(status, 413);
    assert_eq!(code(&v), 9810);

    // Unknown path, and GET on a model path.
    let (status, v) = post(&p.url("gateway-http", "/api/nope"), &signed(data.clone())).await;
    assert_eq!((status, code(&v)), (200, 9709));
    let r = client().get(&url).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), 9709);

    // The server is still fine.
    assert_eq!(code(&post(&url, &signed(data)).await.1), 0);
}

#[tokio::test]
async fn chinese_nested_objects_and_extra_fields_round_trip() {
    let (_d, p) = start("");
    let url = p.url("gateway-http", "/api/echo");
    let data = json!({
        "text": "你好，世界 🌍 \"quoted\" \\ back\nslash",
        "nested": {"z": [1, 2.5, {"b": null, "a": true}], "a": {"深": "层"}},
        "empty": {},
    });
    let mut extra = Map::new();
    extra.insert("client".into(), json!("rust-test"));
    extra.insert("meta".into(), json!({"k": "v", "a": 1}));
    let body = signed_with(data.clone(), extra, "SHA256", APP_ID, SECRET, now());
    let (_, v) = post(&url, &body).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["data"]["text"], data["text"]);
    assert_eq!(v["data"]["nested"], data["nested"]);
}

#[tokio::test]
async fn go_client_rendering_is_accepted() {
    // A Go client signs what encoding/json produces: <>& escaped, 1.0 as 1.
    use inferq::gateway::signature::{sha256_sign, signed_string, Canonical};
    let (_d, p) = start("");
    let url = p.url("gateway-http", "/api/echo");
    let mut fields = Map::new();
    fields.insert("appId".into(), json!(APP_ID));
    fields.insert("version".into(), json!("1"));
    fields.insert("signType".into(), json!("SHA256"));
    fields.insert("encType".into(), json!("plain"));
    fields.insert("timestamp".into(), json!(now()));
    fields.insert("data".into(), json!({"html": "<b>&</b>", "ratio": 1.0}));
    let go = signed_string(&fields, SECRET, Canonical::Go);
    assert!(go.contains("\\u003cb\\u003e"));
    fields.insert("signData".into(), json!(sha256_sign(&go)));
    let (_, v) = post(&url, &Value::Object(fields)).await;
    assert_eq!(code(&v), 0, "{v}");
}

#[tokio::test]
async fn sm2_signed_by_the_shared_key_is_accepted() {
    let (_d, p) = start("");
    let url = p.url("gateway-http", "/api/echo");
    let body = signed_with(
        json!({"text": "sm2"}),
        Map::new(),
        "SM2",
        APP_ID,
        SECRET,
        now(),
    );
    assert_eq!(code(&post(&url, &body).await.1), 0);
    let mut bad = body.clone();
    bad["data"]["text"] = json!("changed");
    assert_eq!(code(&post(&url, &bad).await.1), 9800);
    let mut garbage = body;
    garbage["signData"] = json!("!!notbase64");
    assert_eq!(code(&post(&url, &garbage).await.1), 9800);
}

#[tokio::test]
async fn request_ids_are_unique_and_metrics_are_served() {
    let (_d, p) = start("");
    let url = p.url("gateway-http", "/api/echo");
    let mut seen = std::collections::HashSet::new();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            post(&url, &signed(json!({"i": i}))).await.1
        }));
    }
    for t in tasks {
        let v = t.await.unwrap();
        assert_eq!(code(&v), 0);
        assert!(seen.insert(v["data"]["requestId"].as_str().unwrap().to_string()));
    }
    assert_eq!(seen.len(), 200);
    let served = metric(
        &p.url("gateway-admin", "/metrics"),
        "inferq_gateway_requests_total",
    )
    .await;
    assert!(served >= 200, "{served}");
}

#[tokio::test]
async fn a_result_later_than_message_timeout_is_answered_9997_and_the_server_goes_on() {
    let dir = TestDir::new();
    let yaml = settings_yaml("", "").replace("MessageTimeout: 10", "MessageTimeout: 1");
    let p = standalone(&dir, &yaml);
    let url = p.url("gateway-http", "/api/echo");
    let (status, v) = post(&url, &signed(json!({"sleep_ms": 2500}))).await;
    assert_eq!((status, code(&v)), (200, 9997), "{v}");
    assert_eq!(
        code(&post(&url, &signed(json!({"text": "next"}))).await.1),
        0
    );
}
