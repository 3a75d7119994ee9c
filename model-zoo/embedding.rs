//! `embedding`: sentence embeddings from a BERT-style ONNX model and its
//! Hugging Face `tokenizer.json` (default: all-MiniLM-L6-v2, int8).
//!
//! Request `data`: `{"text": "..."}` gives `{"embeddings": [f32; dim]}`,
//! `{"texts": ["...", ...]}` one vector per text (`{"embeddings": [[...], ...]}`);
//! both add `"tokens"` (the token count, for usage accounting).
//!
//! Texts are tokenized without the tokenizer file's fixed padding and padded
//! only to the longest text of a batch; texts are sorted by length and split so
//! that a batch's padded size (longest × texts) stays within the token budget.
//! Pooling (mean over the attention mask, or the CLS vector) and L2
//! normalisation follow the settings. Over-long texts are truncated at
//! `MaxLength`, or refused with ApiEntry when `Truncate: false`.
//!
//! Settings (an entry of `Models`, all optional):
//! ```yaml
//! Models:
//!   all-MiniLM-L6-v2:
//!     Kind: embedding
//!     ApiPath: /api/embedding
//!     Model: ../.cache/models/all-minilm-l6-v2/model.onnx   # relative to the settings file
//!     Tokenizer: ../.cache/models/all-minilm-l6-v2/tokenizer.json
//!     MaxLength: 256
//!     Truncate: true
//!     Pooling: mean        # or cls
//!     Normalize: true
//!     IntraThreads: 0      # ONNX Runtime threads per run; 0: one per core
//!     MaxTextsPerRequest: 256
//!     Batch: {MaxBatchSize: 32, MaxQueueDelayUs: 2000, MaxBatchTokens: 8192}
//! ```

use std::borrow::Cow;
use std::time::Duration;

use crate::config::models::{BatchSettings, EmbeddingSettings, Pooling};
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokenizers::{Tokenizer, TruncationParams};

use super::model::{BatchCost, BatchPolicy, InitContext, Model, ModelError, Params};
use super::onnx_runtime;
use crate::codes::{CodeTable, ErrorKind};

/// Default file locations, relative to the working directory (where
/// `scripts/fetch-models.sh` puts them).
pub const DEFAULT_MODEL: &str = ".cache/models/all-minilm-l6-v2/model.onnx";
pub const DEFAULT_TOKENIZER: &str = ".cache/models/all-minilm-l6-v2/tokenizer.json";

impl BatchSettings {
    pub fn policy(&self) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: self.max_batch_size.max(1),
            max_queue_delay: Duration::from_micros(self.max_queue_delay_us),
            max_batch_tokens: self.max_batch_tokens.max(1),
        }
    }
}

/// What `init` loads.
struct Loaded {
    tokenizer: Tokenizer,
    /// One or more sessions on the same model; a batch takes a free one.
    sessions: Vec<Mutex<Session>>,
    /// Whether the model takes `token_type_ids` (BERT does; some exports do not).
    wants_token_types: bool,
    api_entry_code: i32,
}

pub struct Embedding {
    name: String,
    settings: EmbeddingSettings,
    loaded: Option<Loaded>,
}

/// One text of a batch, tokenized.
struct Tokens {
    job: usize,
    ids: Vec<i64>,
    mask: Vec<i64>,
    types: Vec<i64>,
}

impl Embedding {
    pub fn new(name: &str, settings: EmbeddingSettings) -> Result<Self, ModelError> {
        if settings.max_length < 2 {
            return Err(ModelError::new(format!(
                "Models.{name}.MaxLength must be at least 2"
            )));
        }
        if settings.max_texts_per_request == 0 {
            return Err(ModelError::new(format!(
                "Models.{name}.MaxTextsPerRequest must be at least 1"
            )));
        }
        Ok(Embedding {
            name: name.to_string(),
            settings,
            loaded: None,
        })
    }

    /// The texts of a checked request.
    fn texts(params: &Params) -> Vec<&str> {
        match (params.get("text"), params.get("texts")) {
            (Some(Value::String(t)), _) => vec![t.as_str()],
            (_, Some(Value::Array(list))) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    fn loaded(&self) -> Result<&Loaded, ModelError> {
        self.loaded
            .as_ref()
            .ok_or_else(|| ModelError::new(format!("model {} is not initialised", self.name)))
    }

    fn tokenize(&self, l: &Loaded, job: usize, text: &str) -> Result<Tokens, ModelError> {
        let enc = l
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::new(format!("tokenizer: {e}")))?;
        if !self.settings.truncate && enc.get_ids().len() > self.settings.max_length {
            return Err(ModelError::with_code(
                l.api_entry_code,
                format!(
                    "text has {} tokens, more than MaxLength {} (truncation is off)",
                    enc.get_ids().len(),
                    self.settings.max_length
                ),
            ));
        }
        let to_i64 = |v: &[u32]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        Ok(Tokens {
            job,
            ids: to_i64(enc.get_ids()),
            mask: to_i64(enc.get_attention_mask()),
            types: to_i64(enc.get_type_ids()),
        })
    }

    /// Runs one padded batch; one vector per text, in order.
    fn run(&self, l: &Loaded, batch: &[&Tokens]) -> Result<Vec<Vec<f32>>, ModelError> {
        let n = batch.len();
        let len = batch.iter().map(|t| t.ids.len()).max().unwrap_or(0);
        let mut ids = vec![0i64; n * len];
        let mut mask = vec![0i64; n * len];
        let mut types = vec![0i64; n * len];
        for (row, t) in batch.iter().enumerate() {
            let at = row * len;
            ids[at..at + t.ids.len()].copy_from_slice(&t.ids);
            mask[at..at + t.mask.len()].copy_from_slice(&t.mask);
            types[at..at + t.types.len()].copy_from_slice(&t.types);
        }
        let fail = |e: ort::Error| ModelError::new(format!("inference: {e}"));
        let shape = [n, len];
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                "input_ids".into(),
                Tensor::from_array((shape, ids)).map_err(fail)?.into(),
            ),
            (
                "attention_mask".into(),
                Tensor::from_array((shape, mask.clone()))
                    .map_err(fail)?
                    .into(),
            ),
        ];
        if l.wants_token_types {
            inputs.push((
                "token_type_ids".into(),
                Tensor::from_array((shape, types)).map_err(fail)?.into(),
            ));
        }
        let mut session = l
            .sessions
            .iter()
            .find_map(|s| s.try_lock())
            .unwrap_or_else(|| l.sessions[0].lock());
        let outputs = session.run(inputs).map_err(fail)?;
        let value = outputs.get(self.settings.output.as_str()).ok_or_else(|| {
            ModelError::new(format!("the model has no output {}", self.settings.output))
        })?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(fail)?;
        if out_shape.len() != 3 || out_shape[0] as usize != n || out_shape[1] as usize != len {
            return Err(ModelError::new(format!(
                "output {} has shape {:?}, expected [{n}, {len}, dim]",
                self.settings.output, out_shape
            )));
        }
        let dim = out_shape[2] as usize;
        let mut vectors = Vec::with_capacity(n);
        for row in 0..n {
            let tokens = &data[row * len * dim..(row + 1) * len * dim];
            let mut v = vec![0f32; dim];
            match self.settings.pooling {
                Pooling::Cls => v.copy_from_slice(&tokens[..dim]),
                Pooling::Mean => {
                    let mut count = 0f32;
                    for pos in 0..len {
                        if mask[row * len + pos] == 0 {
                            continue;
                        }
                        count += 1.0;
                        for (acc, x) in v.iter_mut().zip(&tokens[pos * dim..(pos + 1) * dim]) {
                            *acc += x;
                        }
                    }
                    let count = count.max(1e-9);
                    v.iter_mut().for_each(|x| *x /= count);
                }
            }
            if self.settings.normalize {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
            vectors.push(v);
        }
        Ok(vectors)
    }
}

fn entry_error(message: impl Into<String>) -> ModelError {
    // No code: the gateway answers ApiEntry with its table's code.
    ModelError::new(message)
}

impl Model for Embedding {
    fn api_path(&self) -> &str {
        &self.settings.api_path
    }

    fn check(&self, params: Params) -> Result<Params, ModelError> {
        match (params.get("text"), params.get("texts")) {
            (Some(_), Some(_)) => Err(entry_error("give `text` or `texts`, not both")),
            (Some(Value::String(t)), None) => {
                if t.is_empty() {
                    Err(entry_error("`text` is empty"))
                } else {
                    Ok(params)
                }
            }
            (Some(other), None) => Err(entry_error(format!(
                "`text` must be a string, not {}",
                json_type(other)
            ))),
            (None, Some(Value::Array(list))) => {
                if list.is_empty() {
                    return Err(entry_error("`texts` is empty"));
                }
                if list.len() > self.settings.max_texts_per_request {
                    return Err(entry_error(format!(
                        "`texts` has {} texts, more than {}",
                        list.len(),
                        self.settings.max_texts_per_request
                    )));
                }
                for (i, t) in list.iter().enumerate() {
                    match t {
                        Value::String(s) if !s.is_empty() => {}
                        Value::String(_) => {
                            return Err(entry_error(format!("`texts[{i}]` is empty")))
                        }
                        other => {
                            return Err(entry_error(format!(
                                "`texts[{i}]` must be a string, not {}",
                                json_type(other)
                            )))
                        }
                    }
                }
                Ok(params)
            }
            (None, Some(other)) => Err(entry_error(format!(
                "`texts` must be a list of strings, not {}",
                json_type(other)
            ))),
            (None, None) => Err(entry_error("give `text` (a string) or `texts` (a list)")),
        }
    }

    fn init(&mut self, ctx: &InitContext<'_>) -> Result<(), ModelError> {
        let path = |configured: &str, default: &str| {
            if configured.is_empty() {
                std::path::PathBuf::from(default)
            } else {
                ctx.resolve(configured)
            }
        };
        let model_path = path(&self.settings.model, DEFAULT_MODEL);
        let tokenizer_path = path(&self.settings.tokenizer, DEFAULT_TOKENIZER);
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| {
            ModelError::new(format!(
                "tokenizer {} (scripts/fetch-models.sh fetches the default one): {e}",
                tokenizer_path.display()
            ))
        })?;
        // The file's fixed padding (to 128) would make every text cost 128
        // tokens; batches are padded to their longest text instead.
        tokenizer.with_padding(None);
        let truncation = TruncationParams {
            max_length: self.settings.max_length,
            ..TruncationParams::default()
        };
        tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| ModelError::new(format!("tokenizer truncation: {e}")))?;
        if !self.settings.truncate {
            // Refuse instead: tokenize in full, compare with MaxLength.
            tokenizer
                .with_truncation(None)
                .map_err(|e| ModelError::new(format!("tokenizer truncation: {e}")))?;
        }
        let mut sessions = Vec::new();
        for _ in 0..self.settings.sessions.max(1) {
            sessions.push(onnx_runtime::session(
                ctx,
                &model_path,
                self.settings.intra_threads,
            )?);
        }
        let names: Vec<String> = sessions[0]
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        for needed in ["input_ids", "attention_mask"] {
            if !names.iter().any(|n| n == needed) {
                return Err(ModelError::new(format!(
                    "model {} has no input {needed} (inputs: {names:?})",
                    model_path.display()
                )));
            }
        }
        let wants_token_types = names.iter().any(|n| n == "token_type_ids");
        let codes = CodeTable::new(&ctx.settings.err_code);
        tracing::info!(model = %model_path.display(), tokenizer = %tokenizer_path.display(), inputs = ?names, "embedding model loaded");
        self.loaded = Some(Loaded {
            tokenizer,
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            wants_token_types,
            api_entry_code: codes.code(ErrorKind::ApiEntryFail),
        });
        Ok(())
    }

    fn infer(&self, request_id: &str, params: Params) -> Result<Params, ModelError> {
        self.infer_batch(vec![(request_id.to_string(), params)])
            .pop()
            .unwrap_or_else(|| Err(ModelError::new("no result")))
    }

    fn batch_policy(&self) -> Option<BatchPolicy> {
        Some(self.settings.batch.policy())
    }

    fn batch_cost(&self, params: &Params) -> BatchCost {
        let texts = Self::texts(params);
        let longest = match self.loaded.as_ref() {
            Some(l) => texts
                .iter()
                .filter_map(|t| l.tokenizer.encode(*t, true).ok())
                .map(|e| e.get_ids().len())
                .max()
                .unwrap_or(1),
            None => 1,
        };
        BatchCost {
            items: texts.len().max(1),
            longest: longest.min(self.settings.max_length),
        }
    }

    fn infer_batch(&self, jobs: Vec<(String, Params)>) -> Vec<Result<Params, ModelError>> {
        let l = match self.loaded() {
            Ok(l) => l,
            Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut results: Vec<Option<Result<Params, ModelError>>> = vec![None; jobs.len()];
        // Tokenize every text; a job with a bad text fails alone.
        let mut all: Vec<Tokens> = Vec::new();
        let mut per_job: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
        for (j, (_, params)) in jobs.iter().enumerate() {
            let texts = Self::texts(params);
            if texts.is_empty() {
                results[j] = Some(Err(entry_error("no text")));
                continue;
            }
            let mut mine = Vec::new();
            for t in texts {
                match self.tokenize(l, j, t) {
                    Ok(tok) => {
                        mine.push(all.len());
                        all.push(tok);
                    }
                    Err(e) => {
                        results[j] = Some(Err(e));
                        break;
                    }
                }
            }
            if results[j].is_none() {
                per_job[j] = mine;
            }
        }
        // Short texts with short texts: sort by length, cut by the budget.
        let mut order: Vec<usize> = (0..all.len())
            .filter(|&i| results[all[i].job].is_none())
            .collect();
        order.sort_by_key(|&i| all[i].ids.len());
        let policy = self.settings.batch.policy();
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; all.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() {
                let longest = all[order[end]].ids.len();
                let items = end + 1 - start;
                if items > policy.max_batch_size || longest * items > policy.max_batch_tokens {
                    break;
                }
                end += 1;
            }
            let batch: Vec<&Tokens> = order[start..end].iter().map(|&i| &all[i]).collect();
            match self.run(l, &batch) {
                Ok(vs) => {
                    for (&i, v) in order[start..end].iter().zip(vs) {
                        vectors[i] = Some(v);
                    }
                }
                Err(e) => {
                    for &i in &order[start..end] {
                        let j = all[i].job;
                        if results[j].is_none() {
                            results[j] = Some(Err(e.clone()));
                        }
                    }
                }
            }
            start = end;
        }
        for (j, (_, params)) in jobs.iter().enumerate() {
            if results[j].is_some() {
                continue;
            }
            let mut vs = Vec::with_capacity(per_job[j].len());
            let mut tokens = 0usize;
            for &i in &per_job[j] {
                tokens += all[i].ids.len();
                match vectors[i].take() {
                    Some(v) => vs.push(v),
                    None => {
                        results[j] = Some(Err(ModelError::new("a text was not embedded")));
                        break;
                    }
                }
            }
            if results[j].is_some() {
                continue;
            }
            let embeddings = if params.contains_key("text") {
                f32_json(&vs.pop().unwrap_or_default())
            } else {
                Value::Array(vs.iter().map(|v| f32_json(v)).collect())
            };
            let mut out = Params::new();
            out.insert("embeddings".into(), embeddings);
            out.insert("tokens".into(), json!(tokens));
            results[j] = Some(Ok(out));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ModelError::new("no result"))))
            .collect()
    }
}

/// A vector as JSON numbers with the shortest decimal that reads back as the
/// same f32 (half the digits of the f64 a widened f32 would print, so half the
/// bytes to write, send and parse; no precision lost at f32).
fn f32_json(v: &[f32]) -> Value {
    Value::Array(
        v.iter()
            .map(|x| {
                let short: f64 = x.to_string().parse().unwrap_or(*x as f64);
                serde_json::Number::from_f64(short)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            })
            .collect(),
    )
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
