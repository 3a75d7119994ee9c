//! The `onnx` model kind: a model declared in settings.yaml only. The model
//! is made by the test with the Python `onnx` package
//! (tests/python/make_tiny_onnx.py: scores = x·W + B, doubled = 2n).

mod common;

use std::process::Command;

use base64::Engine;
use common::*;
use serde_json::json;

/// Writes tiny.onnx into `dir` with the Python `onnx` package.
fn make_tiny_model(dir: &TestDir) {
    let out = Command::new(python())
        .arg(repo_root().join("tests/python/make_tiny_onnx.py"))
        .arg(dir.path().join("tiny.onnx"))
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(dir: &TestDir, inputs: &str) -> Proc {
    make_tiny_model(dir);
    let lib = repo_root().join(".cache/models/libonnxruntime.so");
    assert!(
        lib.is_file(),
        "run scripts/test.sh: it fetches the ONNX Runtime library"
    );
    let settings = format!(
        "{}\nModels:\n  tiny:\n    Kind: onnx\n    ApiPath: /api/tiny\n    Model: tiny.onnx\n    IntraThreads: 1\n    Inputs:\n{inputs}\n    Outputs: [scores, doubled]\nOnnxRuntime:\n  Library: \"{}\"\n",
        settings_yaml("", ""),
        lib.display()
    );
    standalone(dir, &settings)
}

const INPUTS: &str = "      - {Name: x, Dtype: float32, Shape: [-1, 3]}\n      - {Name: n, Dtype: int64, Shape: [-1, 1]}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_model_from_yaml_runs_and_checks_its_inputs() {
    let dir = TestDir::new();
    let p = start(&dir, INPUTS);
    let url = p.url("gateway-http", "/api/tiny");

    let (_, v) = post(
        &url,
        &signed(json!({"x": [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], "n": [[4], [-7]]})),
    )
    .await;
    assert_eq!(code(&v), 0, "{v}");
    // [1,2,3]·W = [1+3, 2+3] = [4, 5]; + B = [4.5, 4.5]. Zeros → B.
    assert_eq!(v["data"]["scores"], json!([[4.5, 4.5], [0.5, -0.5]]));
    assert_eq!(v["data"]["doubled"], json!([[8], [-14]]));

    // The same input as little-endian base64 with a shape.
    let xs: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let ns: Vec<u8> = 4i64.to_le_bytes().to_vec();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (_, v) = post(
        &url,
        &signed(json!({
            "x": {"base64": b64(&xs), "shape": [1, 3]},
            "n": {"base64": b64(&ns), "shape": [1, 1]},
        })),
    )
    .await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["data"]["scores"], json!([[4.5, 4.5]]));
    assert_eq!(v["data"]["doubled"], json!([[8]]));

    // Mismatches: an ApiEntry error naming the input, before anything runs.
    let cases = [
        (json!({"x": [[1, 2, 3]]}), "`n`: missing"),
        (json!({"x": [[1, 2]], "n": [[1]]}), "`x`: dimension 1 is 2"),
        (json!({"x": [1, 2, 3], "n": [[1]]}), "`x`: has 1 dimensions"),
        (
            json!({"x": [[1, 2, 3]], "n": [[1.5]]}),
            "`n`: 1.5 is not an integer",
        ),
        (
            json!({"x": [[1, 2, 3], [1, 2]], "n": [[1], [2]]}),
            "`x`: not rectangular",
        ),
        (
            json!({"x": [["a", 2, 3]], "n": [[1]]}),
            "`x`: expected a number",
        ),
        (
            json!({"x": [[1, 2, 3]], "n": [[1]], "z": 1}),
            "`z`: unknown",
        ),
        (
            json!({"x": {"base64": b64(&xs), "shape": [2, 3]}, "n": [[1], [2]]}),
            "`x`: 12 bytes",
        ),
        (
            json!({"x": "text", "n": [[1]]}),
            "`x`: expected nested arrays",
        ),
    ];
    for (data, needle) in cases {
        let (_, v) = post(&url, &signed(data.clone())).await;
        assert_eq!(code(&v), 9701, "{data}: {v}");
        let msg = v["data"]["msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{data}: {msg}");
    }
}

#[test]
fn a_declaration_that_does_not_match_the_model_stops_the_dispatcher() {
    let dir = TestDir::new();
    make_tiny_model(&dir);
    let settings = format!(
        "{}\nModels:\n  tiny:\n    Kind: onnx\n    ApiPath: /api/tiny\n    Model: tiny.onnx\n    Inputs:\n      - {{Name: x, Dtype: int32, Shape: [-1, 3]}}\n      - {{Name: n, Dtype: int64, Shape: [-1, 1]}}\nOnnxRuntime:\n  Library: \"{}\"\n",
        settings_yaml("", ""),
        repo_root().join(".cache/models/libonnxruntime.so").display()
    );
    let yaml = dir.write("settings.yaml", &settings);
    let out = Command::new(bin())
        .args(["standalone", "--yaml", yaml.to_str().unwrap()])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("input x is Float32 in the model, Int32 in the settings"),
        "{err}"
    );
}
