//! The embedding model end to end, with the real files (fetched and checked by
//! scripts/fetch-models.sh) and the real ONNX Runtime library, against a
//! reference computed independently in Python (onnxruntime + tokenizers from
//! PyPI, one text at a time, mean pooling, normalised): tests/python/embed_reference.py.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

const KEY: &str = "sk-test-embedding-key";

fn models_dir() -> std::path::PathBuf {
    let d = repo_root().join(".cache/models");
    assert!(
        d.join("all-minilm-l6-v2/model.onnx").is_file() && d.join("libonnxruntime.so").is_file(),
        "model files missing in {}: run scripts/test.sh (scripts/fetch-models.sh fetches them)",
        d.display()
    );
    d
}

fn settings() -> String {
    let d = models_dir();
    let m = d.join("all-minilm-l6-v2");
    let model = m.join("model.onnx");
    let tok = m.join("tokenizer.json");
    format!(
        "{}\nModels:\n  minilm:\n    Kind: embedding\n    ApiPath: /api/embedding\n    Model: \"{model}\"\n    Tokenizer: \"{tok}\"\n    MaxLength: 256\n    Batch: {{MaxBatchSize: 16, MaxQueueDelayUs: 20000, MaxBatchTokens: 4096}}\n  minilm-strict:\n    Kind: embedding\n    ApiPath: /api/embedding-strict\n    Model: \"{model}\"\n    Tokenizer: \"{tok}\"\n    MaxLength: 256\n    Truncate: false\nOnnxRuntime:\n  Library: \"{lib}\"\nOpenAI:\n  ApiKeys: [\"{KEY}\"]\n",
        settings_yaml("", "  InferThreads: 1").replace("MaxWorkers: 8", "MaxWorkers: 32"),
        model = model.display(),
        tok = tok.display(),
        lib = d.join("libonnxruntime.so").display(),
    )
}

fn start(dir: &TestDir) -> Proc {
    let yaml = dir.write("settings.yaml", &settings());
    Proc::start_cmd(
        "standalone",
        dir.path(),
        Command::new(bin())
            .args(["standalone", "--yaml", yaml.to_str().unwrap()])
            .env("INFERQ_LOG", "info,inferq::dispatcher=debug"),
        &["gateway-http"],
    )
}

fn texts() -> Vec<String> {
    let long = (0..400)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut v: Vec<String> = [
        "hello world",
        "The quick brown fox jumps over the lazy dog.",
        "Sentence embeddings map text to vectors.",
        "今天天气很好，我们去公园散步吧。",
        "机器学习模型的推理服务需要低延迟和高吞吐。",
        "我爱北京天安门",
        "I love 🍕 and 🎉!",
        "🚀🚀🚀",
        "\u{0301}\u{0301}",
        "   ",
        "Ünïcödé àccents are stripped by the BERT normaliser.",
        "A",
        "What is the capital of France? Paris is the capital of France.",
        "Rust, Go and Python walk into a bar; the bartender asks for a type annotation.",
        "inferq serves models with credit-based flow control over one bidirectional gRPC stream.",
        "Numbers 12345 and symbols #@!$%^&*() in one line.",
        "Mixed 中文 and English text in one sentence.",
        "Ελληνικά γράμματα και κείμενο.",
        "Кириллица тоже работает.",
        "A somewhat longer sentence that goes on for a while, describing how dynamic batching groups requests of similar lengths so that short texts are not padded to long ones.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(long);
    v
}

fn reference(texts: &[String]) -> Vec<Vec<f64>> {
    let m = models_dir().join("all-minilm-l6-v2");
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/python/embed_reference.py"))
        .arg(m.join("model.onnx"))
        .arg(m.join("tokenizer.json"))
        .arg("256")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python reference");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(texts).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reference JSON")
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a vector")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_match_an_independent_reference_batched_or_not() {
    let dir = TestDir::new();
    let p = start(&dir);
    let url = p.url("gateway-http", "/api/embedding");
    let texts = texts();
    let reference = reference(&texts);

    // One request with every text: one job, split into length-sorted batches.
    let (_, v) = post(&url, &signed(json!({ "texts": texts }))).await;
    assert_eq!(code(&v), 0, "{v}");
    let batched: Vec<Vec<f64>> = v["data"]["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(vector)
        .collect();
    assert!(v["data"]["tokens"].as_u64().unwrap() > texts.len() as u64);

    // Each text alone, one after the other: batches of one.
    let mut single = Vec::new();
    for t in &texts {
        let (_, v) = post(&url, &signed(json!({ "text": t }))).await;
        assert_eq!(code(&v), 0, "{t:?}: {v}");
        single.push(vector(&v["data"]["embeddings"]));
    }

    // All texts as separate requests at once: the dispatcher batches them.
    let mut tasks = Vec::new();
    for t in texts.clone() {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            post(&url, &signed(json!({ "text": t }))).await.1
        }));
    }
    let mut concurrent = Vec::new();
    for t in tasks {
        let v = t.await.unwrap();
        assert_eq!(code(&v), 0, "{v}");
        concurrent.push(vector(&v["data"]["embeddings"]));
    }

    for (i, t) in texts.iter().enumerate() {
        assert_eq!(single[i].len(), 384);
        let norm: f64 = single[i].iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
        for (name, got) in [
            ("batched", &batched[i]),
            ("single", &single[i]),
            ("concurrent", &concurrent[i]),
        ] {
            let c = cosine(got, &reference[i]);
            assert!(c >= 0.9999, "{name} {t:?}: cosine {c} with the reference");
        }
        let d = max_diff(&batched[i], &single[i]);
        assert!(d <= 1e-5, "batched vs alone differ by {d} for {t:?}");
        let d = max_diff(&concurrent[i], &single[i]);
        assert!(
            d <= 1e-5,
            "dynamically batched vs alone differ by {d} for {t:?}"
        );
    }
    // The concurrent requests really were batched together.
    let log = p.log_text();
    let biggest = log
        .lines()
        .filter(|l| l.contains("batch started"))
        .filter_map(|l| l.split("items=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    assert!(biggest > 1, "no batch of more than one text in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_texts_get_a_clear_api_entry_error() {
    let dir = TestDir::new();
    let p = start(&dir);
    let url = p.url("gateway-http", "/api/embedding");
    let cases = [
        (json!({"text": ""}), "empty"),
        (json!({"text": 5}), "must be a string"),
        (json!({"texts": []}), "empty"),
        (json!({"texts": ["ok", 3]}), "texts[1]"),
        (json!({"texts": "not a list"}), "list"),
        (json!({"text": "a", "texts": ["b"]}), "not both"),
        (json!({}), "give `text`"),
    ];
    for (data, needle) in cases {
        let (_, v) = post(&url, &signed(data.clone())).await;
        assert_eq!(code(&v), 9701, "{data}: {v}");
        assert!(
            v["data"]["msg"].as_str().unwrap().contains(needle),
            "{data}: {v}"
        );
    }
    // Over the maximum length: truncated by default, refused when asked.
    let long = "word ".repeat(600);
    let (_, v) = post(&url, &signed(json!({ "text": long }))).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["data"]["tokens"], 256, "truncated at MaxLength");
    let strict = p.url("gateway-http", "/api/embedding-strict");
    let (_, v) = post(&strict, &signed(json!({ "text": long }))).await;
    assert_eq!(code(&v), 9701, "{v}");
    assert!(
        v["data"]["msg"].as_str().unwrap().contains("MaxLength"),
        "{v}"
    );
    let (_, v) = post(&strict, &signed(json!({"text": "short is fine"}))).await;
    assert_eq!(code(&v), 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_style_embeddings_api() {
    let dir = TestDir::new();
    let p = start(&dir);
    let url = p.url("gateway-http", "/v1/embeddings");
    let c = client();
    let call = |body: Value, key: Option<&str>| {
        let mut r = c.post(&url).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"model": "minilm", "input": ["hello world", "今天天气很好"]});
    let (s, v) = call(body.clone(), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (s, _) = call(body.clone(), Some("sk-wrong")).await;
    assert_eq!(s, 401);

    let (s, v) = call(body.clone(), Some(KEY)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "minilm");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let first = vector(&data[0]["embedding"]);
    assert_eq!(first.len(), 384);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 4);
    assert_eq!(v["usage"]["prompt_tokens"], v["usage"]["total_tokens"]);
    // Same vector as the go-infer API gives.
    let (_, g) = post(
        &p.url("gateway-http", "/api/embedding"),
        &signed(json!({"text": "hello world"})),
    )
    .await;
    assert!(max_diff(&first, &vector(&g["data"]["embeddings"])) <= 1e-5);

    // A single string, and base64 floats (little-endian f32).
    let (s, v) = call(
        json!({"model": "minilm", "input": "hello world", "encoding_format": "base64"}),
        Some(KEY),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f64> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
        .collect();
    assert!(max_diff(&floats, &first) <= 1e-6);

    for (body, status, needle) in [
        (
            json!({"model": "nope", "input": "x"}),
            404,
            "model_not_found",
        ),
        (json!({"model": "minilm"}), 400, "input"),
        (
            json!({"model": "minilm", "input": [1, 2]}),
            400,
            "token arrays",
        ),
        (json!({"model": "minilm", "input": ""}), 400, "empty"),
        (json!({"input": "x"}), 400, "model"),
    ] {
        let (s, v) = call(body.clone(), Some(KEY)).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(v.to_string().contains(needle), "{body}: {v}");
    }
    let resp = c
        .post(&url)
        .bearer_auth(KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}
