//! The public gRPC API (inferq.v1.Predict) of a real standalone inferq.

mod common;

use common::*;
use inferq::gateway::signature::{sha256_sign, signed_string, Canonical};
use inferq::proto::predict_client::PredictClient;
use inferq::proto::predict_request::Params;
use inferq::proto::PredictRequest;
use serde_json::{json, Map, Value};

fn request(api_path: &str, data: Value, as_struct: bool, secret: &str) -> PredictRequest {
    let ts = now();
    let mut fields = Map::new();
    fields.insert("appId".into(), json!(APP_ID));
    fields.insert("version".into(), json!("1"));
    fields.insert("signType".into(), json!("SHA256"));
    fields.insert("timestamp".into(), json!(ts));
    fields.insert("data".into(), data.clone());
    let sig = sha256_sign(&signed_string(&fields, secret, Canonical::Python));
    let params = if as_struct {
        Params::Data(inferq::gateway::grpc::json_to_struct(
            data.as_object().cloned().unwrap(),
        ))
    } else {
        Params::DataJson(data.to_string())
    };
    PredictRequest {
        api_path: api_path.into(),
        app_id: APP_ID.into(),
        version: "1".into(),
        sign_type: "SHA256".into(),
        sign_data: sig,
        enc_type: String::new(),
        timestamp: ts,
        params: Some(params),
    }
}

#[tokio::test]
async fn predict_over_grpc_with_json_and_struct_parameters() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("", ""));
    let mut client = PredictClient::connect(format!("http://{}", p.addr("gateway-grpc")))
        .await
        .unwrap();

    let data = json!({"text": "grpc 你好", "n": 3, "nested": {"b": [1, 2]}});
    let reply = client
        .predict(request("/api/echo", data.clone(), false, SECRET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.code, 0);
    assert_eq!(reply.request_id.len(), 32);
    let out: Value = serde_json::from_str(&reply.result_json).unwrap();
    assert_eq!(out["text"], data["text"]);
    assert_eq!(out["nested"], data["nested"]);

    let reply = client
        .predict(request("/api/echo", data.clone(), true, SECRET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.code, 0);
    assert!(reply.result.unwrap().fields.contains_key("nested"));

    let err = client
        .predict(request("/api/echo", data.clone(), false, PLAIN_SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert_eq!(err.metadata().get("inferq-code").unwrap(), "9800");

    let err = client
        .predict(request("/api/nope", data.clone(), false, SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.metadata().get("inferq-code").unwrap(), "9709");

    let err = client
        .predict(request("/api/echo", json!({"sleep_ms": -1}), false, SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.metadata().get("inferq-code").unwrap(), "9701");
}
