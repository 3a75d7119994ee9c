//! Start-up: settings errors are one clear line; a go-infer settings file works.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

fn start_fails(yaml: &str) -> String {
    let dir = TestDir::new();
    let path = dir.write("settings.yaml", yaml);
    let out = Command::new(bin())
        .args(["standalone", "--yaml", path.to_str().unwrap()])
        .env("INFERQ_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn settings_errors_name_the_key() {
    assert!(start_fails("Server:\n  MaxWorkers: lots\n").contains("Server.MaxWorkers"));
    assert!(start_fails("API:\n  Port: 99999\n").contains("API.Port"));
    assert!(start_fails("Server:\n  MessageTimeout: 0\n").contains("Server.MessageTimeout"));
    assert!(start_fails("API:\n  SM2PrivateKey: \"???\"\n").contains("API.SM2PrivateKey"));
    let out = Command::new(bin())
        .args(["standalone", "--yaml", "/nonexistent/settings.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/settings.yaml"));
}

#[tokio::test]
async fn an_unmodified_go_infer_settings_file_serves() {
    // go-infer's example file, with only the port changed to a free one.
    let yaml = r#"
# HTTP 服务端参数
API:
    Port: 0
    Addr: 127.0.0.1
    SM2PrivateKey: "JShsBOJL0RgPAoPttEB1hgtPAvCikOl0V1oTOYL7k5U="
    AppIdSecret: { # 接口调用分配的 appid 和 sevret
        "3EA25569454745D01219080B779F021F" : "41DF0E6AE27B5282C07EF5124642A352",
    }
    RequestTimestampDiff: 300
    AllowSignPlain: []

# 推理服务队列的参数
Server:
    RedisServer: "127.0.0.1:7480"
    RedisPasswd: "e18ffb7484f4d69c2acb40008471a71c"
    QueueName: "goinfer-synchronous-asynchronous-queue"
    RequestQueueAmount: 2 # 请求队列数量，要启动相同数量的server
    MessageTimeout: 10 # 推理计算最大等待时间
    MaxWorkers: 8 # 模型推理最大并发数

ErrCode:
    SignFail: {code: 9800, msg: "签名错误"}
    UnknownApiPath: {code: 4040, msg: "没有这个接口"}

# 自定义参数
Customer: {
    "BertModelPath" : "../../nlp/qa_demo/saved-model",
}
"#;
    let dir = TestDir::new();
    let path = dir.write("settings.yaml", yaml);
    let p = Proc::start(
        "standalone",
        dir.path(),
        &[
            "standalone",
            "--yaml",
            path.to_str().unwrap(),
            "--grpc-port",
            "0",
        ],
        &["gateway-http"],
    );
    let url = p.url("gateway-http", "/api/echo");
    for i in 0..4 {
        let (_, v) = post(&url, &signed(json!({"i": i}))).await;
        assert_eq!(code(&v), 0, "{v}");
    }
    let (_, v) = post(&p.url("gateway-http", "/api/x"), &signed(json!({}))).await;
    assert_eq!(code(&v), 4040, "ErrCode overrides apply");
    assert_eq!(
        v["data"]["msg"].as_str().unwrap().split(':').next(),
        Some("没有这个接口")
    );
}
