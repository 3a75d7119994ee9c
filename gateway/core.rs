//! [`Gateway`]: one request's way through the gateway, whatever the protocol.
//!
//! authenticate the envelope → find the model by path → the model's parameter
//! check → a job on one of the gateway's queues, with the deadline
//! `MessageTimeout` → the result, or a [`Failure`] carrying the client code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::auth::Authenticator;
use super::budget::{InFlightBytes, LargeRequests};
use super::envelope::Envelope;
use super::idempotency::{IdempotencyKey, KeyedJob};
use super::rate::{Identity, RateLimits, RetryAfter};
use super::replay::{remember_for, signature_key, ReplayPolicy};
use super::request::BodyLimits;
use crate::clip::clip;
use crate::codes::{CodeTable, ErrorKind};
use crate::config::{KeyError, Settings};
use crate::metrics::gateway::{sign_label, Refusal};
use crate::model_zoo::{ModelSet, Params};
use crate::proto::{job_result, unix_ms_now, Job};
use crate::proto::{CallError, QueueLink};

/// A request that gets an error answer: the code and message the client sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The kind, when the code is one of the table's (a model may use its own).
    pub kind: Option<ErrorKind>,
    pub code: i32,
    pub msg: String,
    /// Set when the request was refused for load (a full queue, a spent
    /// rate): when to try again. Outside go-infer's envelope it is HTTP 429
    /// with `Retry-After`, RESOURCE_EXHAUSTED on gRPC.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// Why the request was refused for load or abuse, if it was (metrics).
    pub fn refusal(&self) -> Option<Refusal> {
        match self.kind? {
            ErrorKind::RateLimited => Some(Refusal::Rate),
            ErrorKind::ServerBusy => Some(Refusal::Limit),
            ErrorKind::SignReplay => Some(Refusal::Replay),
            ErrorKind::BodyTooLarge => Some(Refusal::BodySize),
            ErrorKind::SendMsgFail if self.retry_after.is_some() => Some(Refusal::QueueFull),
            _ => None,
        }
    }

    fn retry_in(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

/// What a go-infer request came to: its appId and sign type (as the
/// metrics label them), and the model's output or the failure.
pub struct Handled {
    pub app_id: String,
    pub sign: &'static str,
    pub outcome: Result<Params, Failure>,
}

/// Whether a model can be served now (KServe's model ready).
#[derive(Debug, Clone, PartialEq)]
pub enum ModelReadiness {
    Ready,
    NotReady(String),
    /// This gateway does not serve it.
    Unknown,
}

/// How long a client refused for a full queue is asked to wait.
const QUEUE_FULL_RETRY: Duration = Duration::from_secs(1);

pub struct Gateway {
    codes: CodeTable,
    auth: Authenticator,
    replays: ReplayPolicy,
    window_secs: f64,
    rates: RateLimits,
    body_limits: BodyLimits,
    models: ModelSet,
    link: Arc<dyn QueueLink>,
    queues: Vec<String>,
    next_queue: AtomicUsize,
    message_timeout: Duration,
    /// The `api` label of each model path (and of any other path).
    api_labels: HashMap<String, Arc<str>>,
    unknown_api: Arc<str>,
}

impl Gateway {
    pub fn new(
        settings: &Settings,
        models: ModelSet,
        link: Arc<dyn QueueLink>,
    ) -> Result<Self, KeyError> {
        let queues = (0..settings.server.request_queue_amount)
            .map(|n| settings.server.queue(n))
            .collect();
        Ok(Gateway {
            codes: CodeTable::new(&settings.err_code),
            auth: Authenticator::new(&settings.api)?,
            replays: ReplayPolicy::new(&settings.api.refuse_replays),
            window_secs: settings.api.request_timestamp_diff,
            rates: RateLimits::from_settings(settings),
            body_limits: BodyLimits {
                timeout: settings.api.body_read_timeout(),
                budget: InFlightBytes::new(settings.api.max_in_flight_bytes),
                large: LargeRequests::new(
                    settings.api.large_body_bytes,
                    settings.api.max_large_requests(),
                ),
            },
            api_labels: models
                .paths()
                .into_iter()
                .map(|p| (p.clone(), Arc::from(p)))
                .collect(),
            unknown_api: Arc::from("unknown"),
            models,
            link,
            queues,
            next_queue: AtomicUsize::new(0),
            message_timeout: settings.server.message_timeout(),
        })
    }

    pub fn codes(&self) -> &CodeTable {
        &self.codes
    }

    /// What bounds reading a request body on any route.
    pub fn body_limits(&self) -> &BodyLimits {
        &self.body_limits
    }

    /// Whether a queue service answers now.
    pub async fn queue_ready(&self) -> Result<(), CallError> {
        self.link.ping().await
    }

    /// Whether the model named `name` (at `/api/{name}`, or at the path
    /// `name`) can be served now: a queue answers and a dispatcher is
    /// connected for one of this gateway's queues.
    pub async fn model_ready(&self, name: &str) -> ModelReadiness {
        let known = self.models.paths().iter().any(|p| {
            let p = p.trim_start_matches('/');
            p == name || p.strip_prefix("api/") == Some(name)
        });
        if !known {
            return ModelReadiness::Unknown;
        }
        match self.link.stats().await {
            Err(e) => ModelReadiness::NotReady(format!("queue service: {e}")),
            Ok(stats) => {
                let serving = stats
                    .iter()
                    .filter(|s| self.queues.contains(&s.queue))
                    .any(|s| s.dispatchers > 0);
                if serving {
                    ModelReadiness::Ready
                } else {
                    ModelReadiness::NotReady(format!(
                        "no dispatcher is connected for {}",
                        self.queues.join(", ")
                    ))
                }
            }
        }
    }

    /// Takes one request from `id`'s rate.
    pub fn check_rate(&self, id: Identity<'_>) -> Result<(), RetryAfter> {
        self.rates.check(id)
    }

    pub fn message_timeout(&self) -> Duration {
        self.message_timeout
    }

    /// Runs the parameter check of the model at `api_path`; None when no
    /// model serves it.
    pub fn check_params(
        &self,
        api_path: &str,
        params: Params,
    ) -> Option<Result<Params, crate::model_zoo::ModelError>> {
        self.models.get(api_path).map(|m| m.check(params))
    }

    /// Whether the model at `api_path` runs in a server of its own, which
    /// takes PAI-EAS payloads as bytes (None: no such model).
    pub fn takes_payload_bytes(&self, api_path: &str) -> Option<bool> {
        self.models.get(api_path).map(|m| m.served().is_some())
    }

    /// The metrics' `api` label of a request to `path`: the path of a
    /// model served, else `unknown` (a client cannot add label values).
    pub fn api_label(&self, path: &str) -> Arc<str> {
        self.api_labels
            .get(path)
            .cloned()
            .unwrap_or_else(|| Arc::clone(&self.unknown_api))
    }

    /// The API paths served.
    pub fn paths(&self) -> Vec<String> {
        self.models.paths()
    }

    /// A failure of `kind`, with the table's message and a detail.
    pub fn fail(&self, kind: ErrorKind, detail: &str) -> Failure {
        let base = self.codes.msg(kind);
        let msg = if detail.is_empty() {
            base.to_string()
        } else {
            format!("{base}: {}", clip(detail))
        };
        Failure {
            kind: Some(kind),
            code: self.codes.code(kind),
            msg,
            retry_after: None,
        }
    }

    /// Handles a REST body for `api_path`, with the client's idempotency
    /// key if it sent one. Returns the appId (empty if it could not be read)
    /// and the model output or the failure.
    pub async fn handle_body(
        &self,
        request_id: &str,
        api_path: &str,
        body: &[u8],
        key: Option<&IdempotencyKey>,
    ) -> Handled {
        match Envelope::from_body(body) {
            Ok(env) => self.handle_envelope(request_id, api_path, env, key).await,
            Err((kind, detail)) => Handled {
                app_id: String::new(),
                sign: sign_label(""),
                outcome: Err(self.fail(kind, &detail)),
            },
        }
    }

    /// Handles already-parsed envelope fields (the gRPC API builds them).
    pub async fn handle_fields(
        &self,
        request_id: &str,
        api_path: &str,
        fields: Map<String, Value>,
        key: Option<&IdempotencyKey>,
    ) -> Handled {
        let app_id = match fields.get("appId") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let sign = match fields.get("signType") {
            Some(Value::String(s)) => sign_label(s),
            _ => sign_label(""),
        };
        match Envelope::from_fields(fields) {
            Ok(env) => self.handle_envelope(request_id, api_path, env, key).await,
            Err((kind, detail)) => Handled {
                app_id,
                sign,
                outcome: Err(self.fail(kind, &detail)),
            },
        }
    }

    async fn handle_envelope(
        &self,
        request_id: &str,
        api_path: &str,
        env: Envelope,
        key: Option<&IdempotencyKey>,
    ) -> Handled {
        let sign = sign_label(&env.sign_type);
        let (app_id, outcome) = self.handle_signed(request_id, api_path, env, key).await;
        Handled {
            app_id,
            sign,
            outcome,
        }
    }

    async fn handle_signed(
        &self,
        request_id: &str,
        api_path: &str,
        mut env: Envelope,
        key: Option<&IdempotencyKey>,
    ) -> (String, Result<Params, Failure>) {
        let app_id = env.app_id.clone();
        let now = unix_ms_now() / 1000;
        if let Err((kind, detail)) = self.auth.verify(&env, now) {
            tracing::info!(code = self.codes.code(kind), detail = %clip(&detail), "request refused");
            return (app_id, Err(self.fail(kind, &detail)));
        }
        if let Err(retry) = self.rates.check(Identity::AppId(&env.app_id)) {
            let f = self.fail(ErrorKind::RateLimited, &retry.to_string());
            return (app_id, Err(f.retry_in(retry.0)));
        }
        let replayed = match self.is_replay(&env, now).await {
            Ok(replayed) => replayed,
            Err(f) => return (app_id, Err(f)),
        };
        // A replay may only join the job its idempotency key names (the
        // first request's, when it came through): it never starts one.
        let keyed = key.map(|k| KeyedJob {
            job_id: k.job_id(&env.app_id, api_path),
            join_only: replayed,
        });
        if replayed && keyed.is_none() {
            tracing::warn!(app_id = %clip(&env.app_id), "replayed signature refused");
            return (app_id, Err(self.fail(ErrorKind::SignReplay, "")));
        }
        let data = env.take_data();
        (
            app_id,
            self.run_model(request_id, api_path, data, keyed).await,
        )
    }

    /// Remembers the envelope's signature across the deployment when the
    /// policy checks its sign type; true when it was seen before (a replay).
    async fn is_replay(&self, env: &Envelope, now: i64) -> Result<bool, Failure> {
        if !self.replays.applies(&env.sign_type, &env.app_id) {
            return Ok(false);
        }
        let ttl = remember_for(env.timestamp, now, self.window_secs);
        match self.link.mark_seen(signature_key(env), ttl).await {
            Ok(first) => Ok(!first),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the signature against replays");
                Err(self.fail(ErrorKind::SendMsgFail, &e.to_string()))
            }
        }
    }

    /// The model's check, then the queue (for a request already
    /// authenticated, e.g. by the OpenAI-style API's bearer token). The job
    /// is `request_id`, or the one the client's idempotency key names.
    pub async fn run_model(
        &self,
        request_id: &str,
        api_path: &str,
        data: Params,
        keyed: Option<KeyedJob>,
    ) -> Result<Params, Failure> {
        let Some(model) = self.models.get(api_path) else {
            return Err(self.fail(ErrorKind::UnknownApiPath, api_path));
        };
        let params = model.check(data).map_err(|e| match e.code {
            Some(code) => Failure {
                kind: self.codes.kind_of(code),
                code,
                msg: e.message,
                retry_after: None,
            },
            None => self.fail(ErrorKind::ApiEntryFail, &e.message),
        })?;
        let params_json = serde_json::to_vec(&params)
            .map_err(|e| self.fail(ErrorKind::ApiEntryFail, &e.to_string()))?;
        let queue = self.pick_queue();
        let (job_id, join_only) = match keyed {
            Some(k) => {
                tracing::info!(job_id = %k.job_id, join_only = k.join_only, "idempotency key");
                (k.job_id, k.join_only)
            }
            None => (request_id.to_string(), false),
        };
        let job = Job {
            request_id: job_id,
            queue,
            api_path: api_path.to_string(),
            params_json,
            deadline_unix_ms: unix_ms_now() + self.message_timeout.as_millis() as i64,
            deliveries: 0,
            priority: 0,
            reply_to: String::new(),
            from_payload: false,
            join_only,
            enqueued_unix_ms: 0,
            trace_request_id: request_id.to_string(),
            // This span's context when spans are exported (the queue's and
            // dispatcher's spans become its children), else the client's.
            traceparent: crate::telemetry::current_traceparent()
                .or_else(|| super::request::traceparent().map(|t| t.to_string()))
                .unwrap_or_default(),
        };
        let result = self.link.call(job).await.map_err(|e| {
            let kind = match &e {
                CallError::QueueFull(_) | CallError::Unavailable(_) | CallError::Invalid(_) => {
                    ErrorKind::SendMsgFail
                }
                CallError::ResultLost(_) => ErrorKind::RecvMsgFail,
                CallError::DeadlineExceeded => ErrorKind::QueueTimeout,
                CallError::Conflict(_) => ErrorKind::IdempotencyConflict,
                // Only a replay joins only; it found no job to join.
                CallError::NothingToJoin(_) => ErrorKind::SignReplay,
            };
            tracing::warn!(error = %e, "queue call failed");
            let f = self.fail(kind, &e.to_string());
            match e {
                CallError::QueueFull(_) => f.retry_in(QUEUE_FULL_RETRY),
                _ => f,
            }
        })?;
        match result.outcome {
            Some(
                job_result::Outcome::OutputJson(bytes) | job_result::Outcome::OutputBytes(bytes),
            ) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(other) => {
                    let mut m = Params::new();
                    m.insert("result".into(), other);
                    Ok(m)
                }
                Err(e) => Err(self.fail(ErrorKind::RecvMsgFail, &e.to_string())),
            },
            Some(job_result::Outcome::Error(e)) => Err(Failure {
                kind: self.codes.kind_of(e.code),
                code: e.code,
                msg: e.message,
                retry_after: None,
            }),
            None => Err(self.fail(ErrorKind::RecvMsgFail, "empty result")),
        }
    }

    fn pick_queue(&self) -> String {
        let n = self.next_queue.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        self.queues[n].clone()
    }
}
