//! SM2 signatures made by an independent implementation (Python `gmssl`),
//! through go-infer's own way of building the signed string.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn python_client(url: &str, sign: &str, data: &str, extra: &[&str]) -> (Value, String) {
    let out = Command::new(python())
        .arg(repo_root().join("tests/python/goinfer_client.py"))
        .args([url, sign, data])
        .args(extra)
        .output()
        .expect("run python client");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "python client failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    (v, stderr)
}

#[test]
fn gmssl_signatures_verify_with_the_shared_key() {
    let dir = TestDir::new();
    let p = standalone(&dir, &settings_yaml("", ""));
    let url = p.url("gateway-http", "/api/echo");
    let data = r#"{"text": "国密签名 SM2 ✓", "nested": {"z": 1, "a": ["x", {"k": "v"}]}}"#;
    let (v, _) = python_client(&url, "SM2", data, &["--extra", r#"{"client": "gmssl"}"#]);
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["data"]["text"], "国密签名 SM2 ✓");
    // The same client's SHA256 path, for comparison.
    let (v, _) = python_client(&url, "SHA256", data, &[]);
    assert_eq!(v["code"], 0, "{v}");
}

#[test]
fn per_app_public_key_verifies_without_the_private_key() {
    // A client key the server never sees: only its public key is configured.
    let client_key = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="; // 32 bytes of '1'
    let dir = TestDir::new();
    // Learn the public key from gmssl itself (independent of inferq's SM2 code).
    let probe = standalone(&dir, &settings_yaml("", ""));
    let (_, public) = python_client(
        &probe.url("gateway-http", "/api/echo"),
        "SM2",
        "{}",
        &["--key", client_key, "--print-public-key"],
    );
    drop(probe);
    let public = public.trim().lines().last().unwrap().to_string();
    let extra_api = format!("  SM2PublicKeys:\n    \"{APP_ID}\": \"{public}\"");
    let yaml = settings_yaml(&extra_api, "").replace(&format!("SM2PrivateKey: \"{SM2_KEY}\""), "");
    let dir2 = TestDir::new();
    let p = standalone(&dir2, &yaml);
    let url = p.url("gateway-http", "/api/echo");
    let (v, _) = python_client(
        &url,
        "SM2",
        r#"{"text": "own key"}"#,
        &["--key", client_key],
    );
    assert_eq!(v["code"], 0, "{v}");
    // Signed with another key (go-infer's shared example key): refused.
    let (v, _) = python_client(&url, "SM2", r#"{"text": "own key"}"#, &[]);
    assert_eq!(v["code"], 9800, "{v}");
}
