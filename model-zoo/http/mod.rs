//! `http`, the HTTP processor: a model served by the user's own HTTP server,
//! in any language (PAI-EAS's image deployment). inferq keeps the queues,
//! credits, redelivery, signatures and APIs; the server only answers POSTs.
//!
//! ```yaml
//! Models:
//!   mymodel:
//!     Kind: http
//!     ApiPath: /api/mymodel
//!     Url: http://127.0.0.1:8000/data/model     # rpc.proxy_path included
//!     Command: /data/eas/ENV/bin/python /data/eas/app.py   # optional
//!     TimeoutMs: 60000
//! ```
//!
//! Each job is one POST to `Url` with the header `X-Request-Id`:
//! - a PAI-EAS item's payload, bytes as the client put them
//!   (`application/octet-stream`); the response body is written to the sink
//!   as it is, and an empty body writes nothing;
//! - a go-infer, gRPC or OpenAI job's checked parameters as a JSON object
//!   (`ContentType`); the response must be JSON, and is the answer's data.
//!
//! How a call ends ([`HttpModel::call`]):
//!
//! | the server | the job |
//! |---|---|
//! | 2xx | answered with the body |
//! | refused the connection, or closed it before answering; 503 | not run: given back to the queue, delivered again up to `MaxDeliveries` |
//! | 4xx (but 408) | ApiEntryFail (9701): the server refused the input |
//! | 408, 504, or no answer within `TimeoutMs` | InferFail (9998) |
//! | other 5xx | InferFail (9998), with the start of the body |
//!
//! Calls in flight are bounded by the dispatcher's credits (MaxWorkers, or
//! `rpc.worker_threads` for a PAI-EAS service): the dispatcher awaits them
//! rather than holding a thread each. Connections are pooled and reused.
//!
//! With `Command`, the dispatcher runs the server itself ([`process`]): it
//! waits for the port, restarts the server with backoff when it dies, and
//! stops it on drain. While the server is not ready, whoever started it, the
//! dispatcher offers no credits.
//!
//! With `Batch`, jobs waiting together are POSTed as one JSON list (each job's
//! body an element, so PAI-EAS payloads must be JSON); the server answers a
//! list of the same length, matched by position (a `null` element writes
//! nothing to a sink).

pub mod process;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::clip::clip;
use crate::codes::{CodeTable, ErrorKind};
use crate::config::models::HttpSettings;
use crate::config::Settings;

use super::{BatchPolicy, InitContext, Model, ModelError, Params, ServedModel};

/// The header that carries a job's request id to the server.
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";

/// How long a connection to the server may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct HttpModel {
    name: String,
    api_path: String,
    url: reqwest::Url,
    timeout: Duration,
    max_response_bytes: usize,
    content_type: String,
    batch: Option<BatchPolicy>,
    /// ApiEntryFail's code: a 4xx from the server.
    refused_code: i32,
    /// Built by `init` (dispatchers only).
    client: Option<reqwest::Client>,
    /// The server's process, when the dispatcher runs it.
    process: Option<process::ProcessSpec>,
    start_timeout: Duration,
    ready: watch::Sender<bool>,
    /// Poked by a call that could not reach the server.
    unreachable: Notify,
}

impl HttpModel {
    pub fn new(name: &str, s: HttpSettings, settings: &Settings) -> Result<Self, ModelError> {
        let key = |k: &str, m: &str| ModelError::new(format!("Models.{name}.{k}: {m}"));
        if !s.api_path.starts_with('/') {
            return Err(key("ApiPath", "must start with '/'"));
        }
        let url = reqwest::Url::parse(&s.url).map_err(|e| key("Url", &e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(key("Url", "must be an http:// or https:// URL with a host"));
        }
        if s.timeout_ms == 0 {
            return Err(key("TimeoutMs", "must be at least 1"));
        }
        if s.max_response_bytes == 0 {
            return Err(key("MaxResponseBytes", "must be at least 1"));
        }
        let batch = match &s.batch {
            None => None,
            Some(b) if b.max_batch_size == 0 => {
                return Err(key("Batch.MaxBatchSize", "must be at least 1"))
            }
            Some(b) => Some(BatchPolicy {
                max_batch_size: b.max_batch_size,
                max_queue_delay: Duration::from_micros(b.max_queue_delay_us),
                max_batch_tokens: usize::MAX,
            }),
        };
        let process = match s.command.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(key("Command", "is empty")),
            Some(command) => Some(process::ProcessSpec {
                model: name.to_string(),
                command: command.to_string(),
                work_dir: s.work_dir.clone().map(Into::into),
                env: s.env.clone(),
            }),
        };
        Ok(HttpModel {
            name: name.to_string(),
            api_path: s.api_path,
            url,
            timeout: Duration::from_millis(s.timeout_ms),
            max_response_bytes: s.max_response_bytes,
            content_type: s.content_type,
            batch,
            refused_code: CodeTable::new(&settings.err_code).code(ErrorKind::ApiEntryFail),
            client: None,
            process,
            start_timeout: Duration::from_secs(s.start_timeout_s.max(1)),
            ready: watch::Sender::new(false),
            unreachable: Notify::new(),
        })
    }

    /// The server's address, for the port probe.
    fn authority(&self) -> String {
        // An IPv6 host comes in brackets already.
        let host = self.url.host_str().unwrap_or("127.0.0.1");
        let port = self.url.port_or_known_default().unwrap_or(80);
        format!("{host}:{port}")
    }

    /// POSTs `body`; the response body, or the error its status or
    /// transport failure maps to.
    async fn post(
        &self,
        request_id: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Bytes, ModelError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| ModelError::new("the model's HTTP client was not initialised"))?;
        let mut request = client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(self.timeout)
            .body(body);
        // A request id that is not a valid header value (a PAI-EAS client
        // may name its own) is not sent, rather than fail the call.
        if let Ok(id) = reqwest::header::HeaderValue::from_str(request_id) {
            request = request.header(REQUEST_ID_HEADER, id);
        }
        let sent = request.send().await;
        let response = sent.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let body = read_capped(response, self.max_response_bytes)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => ModelError::new(format!(
                    "the model's server answered more than MaxResponseBytes ({})",
                    self.max_response_bytes
                )),
                BodyError::Transport(e) => self.transport_error(e),
            })?;
        if status.is_success() {
            return Ok(body);
        }
        let text = String::from_utf8_lossy(&body);
        let message = format!(
            "the model's server answered {status}: {}",
            clip(text.trim())
        );
        Err(match status.as_u16() {
            503 => {
                self.unreachable.notify_one();
                ModelError::not_run(message)
            }
            408 | 504 => ModelError::new(message),
            400..=499 => ModelError::with_code(self.refused_code, message),
            _ => ModelError::new(message),
        })
    }

    /// A transport failure: a timeout is InferFail (the job may have run);
    /// anything else (refused, reset, closed before the answer) means the
    /// server is not there, and the job is given back.
    fn transport_error(&self, e: reqwest::Error) -> ModelError {
        if e.is_timeout() {
            return ModelError::new(format!(
                "the model's server did not answer within {} ms",
                self.timeout.as_millis()
            ));
        }
        // A request that could not be made (never the server's fault): sent
        // again it would fail again.
        if e.is_builder() {
            return ModelError::new(format!("cannot make the request: {e}"));
        }
        self.unreachable.notify_one();
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        ModelError::not_run(format!(
            "cannot reach the model's server at {}: {why}",
            self.url
        ))
    }
}

/// Why a response body was not taken.
enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a response body of at most `cap` bytes.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Bytes, BodyError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len().saturating_add(chunk.len()) > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl Model for HttpModel {
    fn api_path(&self) -> &str {
        &self.api_path
    }

    fn init(&mut self, ctx: &InitContext<'_>) -> Result<(), ModelError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ModelError::new(format!("HTTP client: {e}")))?;
        self.client = Some(client);
        if let Some(p) = &mut self.process {
            p.work_dir = Some(match &p.work_dir {
                Some(dir) => ctx.resolve(&dir.to_string_lossy()),
                None => ctx.base_dir.clone(),
            });
        }
        tracing::info!(model = %self.name, url = %self.url, managed = self.process.is_some(), "HTTP processor");
        Ok(())
    }

    fn infer(&self, _request_id: &str, _params: Params) -> Result<Params, ModelError> {
        // The dispatcher calls `served()` for this model; `infer` is the
        // in-process path, which an HTTP model does not have.
        Err(ModelError::new(
            "an HTTP model is called through its server",
        ))
    }

    fn batch_policy(&self) -> Option<BatchPolicy> {
        self.batch
    }

    fn served(&self) -> Option<&dyn ServedModel> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl ServedModel for HttpModel {
    async fn call(&self, request_id: &str, body: Bytes) -> Result<Bytes, ModelError> {
        // PAI-EAS payloads are not known to be JSON; parameters are.
        let content_type = if body.first() == Some(&b'{') {
            self.content_type.as_str()
        } else {
            "application/octet-stream"
        };
        self.post(request_id, content_type, body).await
    }

    async fn call_batch(&self, jobs: Vec<(String, Bytes)>) -> Vec<Result<Bytes, ModelError>> {
        let n = jobs.len();
        // Jobs whose body is not JSON cannot join a list: answered alone.
        let mut answers: Vec<Option<Result<Bytes, ModelError>>> = (0..n).map(|_| None).collect();
        let mut list = Vec::with_capacity(n);
        let mut members = Vec::with_capacity(n);
        let mut body = BytesMut::from(&b"["[..]);
        for (i, (_, job_body)) in jobs.iter().enumerate() {
            match serde_json::from_slice::<serde::de::IgnoredAny>(job_body) {
                Ok(_) => {
                    if !list.is_empty() {
                        body.extend_from_slice(b",");
                    }
                    body.extend_from_slice(job_body);
                    list.push(i);
                    members.push(jobs[i].0.as_str());
                }
                Err(e) => {
                    answers[i] = Some(Err(ModelError::with_code(
                        self.refused_code,
                        format!("a batched model takes JSON bodies: {e}"),
                    )))
                }
            }
        }
        body.extend_from_slice(b"]");
        if !list.is_empty() {
            let id = members.join(",");
            let got = self
                .post(&clip(&id), &self.content_type, body.freeze())
                .await
                .and_then(|body| split_list(&body, list.len()));
            match got {
                Ok(parts) => {
                    for (i, part) in list.iter().zip(parts) {
                        answers[*i] = Some(Ok(part));
                    }
                }
                Err(e) => {
                    for i in &list {
                        answers[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(ModelError::new("no answer"))))
            .collect()
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    async fn supervise(&self, stop: CancellationToken) {
        process::Supervisor {
            model: &self.name,
            authority: self.authority(),
            process: self.process.as_ref(),
            start_timeout: self.start_timeout,
            ready: &self.ready,
            unreachable: &self.unreachable,
        }
        .run(stop)
        .await
    }
}

/// A batch's answer: a JSON list of `n` elements, each one job's answer
/// (`null`: an empty answer).
fn split_list(body: &[u8], n: usize) -> Result<Vec<Bytes>, ModelError> {
    let list: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body).map_err(|e| {
        ModelError::new(format!(
            "a batch's answer must be a JSON list of {n} answers: {e}"
        ))
    })?;
    if list.len() != n {
        return Err(ModelError::new(format!(
            "a batch of {n} was answered with a list of {}",
            list.len()
        )));
    }
    Ok(list
        .into_iter()
        .map(|raw| match raw.get() {
            "null" => Bytes::new(),
            text => Bytes::copy_from_slice(text.as_bytes()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_answer_is_split_by_position() {
        let parts = split_list(br#"[{"a": 1}, null, [1,2]]"#, 3).expect("three");
        assert_eq!(parts[0], Bytes::from_static(br#"{"a": 1}"#));
        assert!(parts[1].is_empty());
        assert_eq!(parts[2], Bytes::from_static(b"[1,2]"));
        assert!(split_list(b"[1]", 2).is_err());
        assert!(split_list(b"{}", 1).is_err());
    }

    fn settings(yaml: &str) -> Result<HttpModel, ModelError> {
        let s: HttpSettings = serde_yaml::from_str(yaml).expect("yaml");
        HttpModel::new("m", s, &Settings::default())
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let e = settings("{ApiPath: /a, Url: 'ftp://x/y'}")
            .err()
            .expect("refused");
        assert!(e.message.contains("Models.m.Url"), "{}", e.message);
        let e = settings("{ApiPath: /a, Url: 'http://x/y', Command: ' '}")
            .err()
            .expect("refused");
        assert!(e.message.contains("Models.m.Command"), "{}", e.message);
        let m = settings("{ApiPath: /a, Url: 'http://127.0.0.1:8000/data/model'}").expect("ok");
        assert_eq!(m.authority(), "127.0.0.1:8000");
        let m = settings("{ApiPath: /a, Url: 'http://[::1]/m'}").expect("ok");
        assert_eq!(m.authority(), "[::1]:80");
    }
}
