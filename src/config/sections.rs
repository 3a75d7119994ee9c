//! The sections of settings.yaml besides the services and models: `API`
//! (the gateway), `Server` (queues and dispatchers), `OnnxRuntime`, `OpenAI`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Where the ONNX Runtime shared library is (loaded at run time).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OnnxRuntimeSettings {
    /// Path of `libonnxruntime.so` (relative to this file); empty: the
    /// `ORT_DYLIB_PATH` environment variable, else `.cache/models/libonnxruntime.so`
    /// under the working directory (where `scripts/fetch-models.sh` puts it).
    #[serde(rename = "Library")]
    pub library: String,
}

/// The OpenAI-style API (`POST /v1/embeddings`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OpenAiSettings {
    /// Bearer tokens accepted; empty: the API is off.
    #[serde(rename = "ApiKeys")]
    pub api_keys: Vec<String>,
}

/// The `API` section: the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Addr")]
    pub addr: String,
    /// go-infer's shared SM2 key: base64 of the 32-byte private scalar. The
    /// gateway derives the verifying public key from it.
    #[serde(rename = "SM2PrivateKey")]
    pub sm2_private_key: Option<String>,
    #[serde(rename = "AppIdSecret")]
    pub app_id_secret: BTreeMap<String, String>,
    /// Seconds; a request whose timestamp is further than this from now is refused.
    #[serde(rename = "RequestTimestampDiff")]
    pub request_timestamp_diff: f64,
    /// appIds allowed to send `signType: plain`.
    #[serde(rename = "AllowSignPlain")]
    pub allow_sign_plain: Vec<String>,

    // ---- inferq's own keys ----
    /// Per-appId SM2 public keys (hex or base64 of the SEC1 point `04‖x‖y`), so
    /// the server need not hold a client's private key. Checked before `SM2PrivateKey`.
    #[serde(rename = "SM2PublicKeys")]
    pub sm2_public_keys: BTreeMap<String, String>,
    /// Port of the public gRPC API (`inferq.v1.Predict`); 0 picks a free port. Addr as `Addr`.
    #[serde(rename = "GrpcPort")]
    pub grpc_port: Option<u16>,
    /// Largest request body accepted, in bytes.
    #[serde(rename = "MaxBodyBytes")]
    pub max_body_bytes: usize,
    /// Requests handled at once by one gateway; more wait.
    #[serde(rename = "MaxConcurrentRequests")]
    pub max_concurrent_requests: usize,
    /// Bytes of request bodies held at once by one gateway; a request that
    /// would go over is answered at once with `ServerBusy` (HTTP 503).
    #[serde(rename = "MaxInFlightBytes")]
    pub max_in_flight_bytes: usize,
    /// A request whose body is over this many bytes is large: see
    /// `MaxLargeRequests`.
    #[serde(rename = "LargeBodyBytes")]
    pub large_body_bytes: usize,
    /// Large requests let on to the signature check and the model queue at
    /// once; the others wait (within the request timeout) holding their
    /// bytes, so small requests are not queued behind a flood of large ones.
    /// 0: half the cores (at least one), which leaves the other half to
    /// small requests.
    #[serde(rename = "MaxLargeRequests")]
    pub max_large_requests: usize,
    /// Seconds a request body may take to arrive.
    #[serde(rename = "BodyReadTimeout")]
    pub body_read_timeout: f64,
    /// Connections served at once on each listener (kept under the open-file
    /// limit, which is raised to its hard limit at start).
    #[serde(rename = "MaxConnections")]
    pub max_connections: usize,
    /// Seconds a new connection has to send its first request's headers.
    #[serde(rename = "HeaderReadTimeout")]
    pub header_read_timeout: f64,
    /// Seconds a connection with no request in flight stays open.
    #[serde(rename = "IdleTimeout")]
    pub idle_timeout: f64,
    /// HTTP/2 (gRPC) streams open at once on one connection.
    #[serde(rename = "Http2MaxStreams")]
    pub http2_max_streams: u32,
    /// Seconds between HTTP/2 keep-alive pings; a peer that does not answer
    /// within as long again is dropped.
    #[serde(rename = "KeepAliveInterval")]
    pub keep_alive_interval: f64,
    /// Where `/metrics` and the health routes are served (host:port);
    /// empty: health on the REST port, `/metrics` there only with
    /// `AdminToken`.
    #[serde(rename = "AdminListen")]
    pub admin_listen: String,
    /// Bearer token `/metrics` asks for on the REST port when there is no
    /// `AdminListen`; empty: `/metrics` is not served there.
    #[serde(rename = "AdminToken")]
    pub admin_token: String,
    /// Which signatures are refused when seen again within the timestamp window.
    #[serde(rename = "RefuseReplays")]
    pub refuse_replays: ReplaySettings,
    /// Requests per second per appId, PAI-EAS token and OpenAI key.
    #[serde(rename = "RateLimit")]
    pub rate_limit: RateLimitSettings,
}

/// `API.RefuseReplays`: per sign type, with per-appId exceptions. SM2
/// signatures are randomised, so a repeat is a replay: refused by default.
/// SHA256 signatures are deterministic (fields, timestamp in seconds,
/// secret): two identical requests within one second sign alike, so they
/// are let through unless turned on here.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReplaySettings {
    #[serde(rename = "SM2")]
    pub sm2: bool,
    #[serde(rename = "SHA256")]
    pub sha256: bool,
    /// appId → its own choice for both sign types.
    #[serde(rename = "AppIds")]
    pub app_ids: BTreeMap<String, bool>,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        ReplaySettings {
            sm2: true,
            sha256: false,
            app_ids: BTreeMap::new(),
        }
    }
}

/// `API.RateLimit`: a token bucket per client identity (appId, PAI-EAS
/// token, OpenAI key), checked after it has authenticated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RateLimitSettings {
    /// Requests per second; 0: no limit.
    #[serde(rename = "PerSecond")]
    pub per_second: u32,
    /// Requests allowed at once above the rate; 0: one second's worth.
    #[serde(rename = "Burst")]
    pub burst: u32,
    /// identity → its own requests per second (0: no limit).
    #[serde(rename = "PerKey")]
    pub per_key: BTreeMap<String, u32>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            port: 5000,
            addr: "0.0.0.0".into(),
            sm2_private_key: None,
            app_id_secret: BTreeMap::new(),
            request_timestamp_diff: 300.0,
            allow_sign_plain: Vec::new(),
            sm2_public_keys: BTreeMap::new(),
            grpc_port: Some(5001),
            max_body_bytes: 1 << 20,
            max_concurrent_requests: 10_000,
            max_in_flight_bytes: 64 << 20,
            large_body_bytes: 64 << 10,
            max_large_requests: 0,
            body_read_timeout: 30.0,
            max_connections: 4096,
            header_read_timeout: 10.0,
            idle_timeout: 120.0,
            http2_max_streams: 256,
            keep_alive_interval: 20.0,
            admin_listen: String::new(),
            admin_token: String::new(),
            refuse_replays: ReplaySettings::default(),
            rate_limit: RateLimitSettings::default(),
        }
    }
}

/// Which store holds the queues (`Server.Backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// `standalone` uses memory, the split subcommands use Redis.
    #[default]
    Auto,
    Memory,
    Redis,
}

/// The store a process uses, once `auto` is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

impl BackendChoice {
    /// The one place `auto` is decided: memory for `standalone` (one
    /// process, nothing to share), Redis for a queue instance of a split
    /// deployment (durable, shared by several instances).
    pub fn store(self, standalone: bool) -> StoreKind {
        match self {
            BackendChoice::Memory => StoreKind::Memory,
            BackendChoice::Redis => StoreKind::Redis,
            BackendChoice::Auto if standalone => StoreKind::Memory,
            BackendChoice::Auto => StoreKind::Redis,
        }
    }
}

/// The `Server` section: queues and dispatchers.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    #[serde(rename = "RedisServer")]
    pub redis_server: String,
    #[serde(rename = "RedisPasswd")]
    pub redis_passwd: String,
    /// Base name of the request queues; queue N is `QueueName` + N.
    #[serde(rename = "QueueName")]
    pub queue_name: String,
    /// How many request queues a gateway spreads its requests over.
    #[serde(rename = "RequestQueueAmount")]
    pub request_queue_amount: u32,
    /// Seconds a synchronous call waits for its result.
    #[serde(rename = "MessageTimeout")]
    pub message_timeout: f64,
    /// Jobs one dispatcher holds at once (its credits).
    #[serde(rename = "MaxWorkers")]
    pub max_workers: u32,

    // ---- inferq's own keys ----
    /// `auto`, `memory` or `redis`.
    #[serde(rename = "Backend")]
    pub backend: BackendChoice,
    /// Where `inferq queue` listens (gRPC).
    #[serde(rename = "QueueListen")]
    pub queue_listen: String,
    /// The queue services gateways and dispatchers connect to.
    #[serde(rename = "QueueEndpoints")]
    pub queue_endpoints: Vec<String>,
    /// Where a dispatcher serves `/metrics`, `/healthz` and `/readyz`;
    /// empty: not served.
    #[serde(rename = "DispatcherMetricsListen")]
    pub dispatcher_metrics_listen: String,
    /// Where `inferq queue` serves `/metrics`, `/healthz` and `/readyz`;
    /// empty: not served.
    #[serde(rename = "QueueMetricsListen")]
    pub queue_metrics_listen: String,
    /// The dispatchers each queue wants, as `eascmd autoscale`'s options
    /// (`-Dmin=0 -Dmax=10 -Dstrategies.queue[avgbacklog]=10`, see
    /// [`super::autoscale`]); empty: no autoscaling. The queue exports the
    /// count; `inferq autoscale` follows it.
    #[serde(rename = "Autoscale")]
    pub autoscale: String,
    /// Most jobs waiting in one queue; a put beyond it is refused (9702).
    #[serde(rename = "MaxQueueLength")]
    pub max_queue_length: usize,
    /// A job handed out this many times without a result goes to the dead letters (9998).
    #[serde(rename = "MaxDeliveries")]
    pub max_deliveries: u32,
    /// Seconds a dispatcher waits for its jobs in hand on SIGTERM before it exits anyway.
    #[serde(rename = "DrainTimeout")]
    pub drain_timeout: f64,
    /// Threads that run `Infer` in a dispatcher; 0: MaxWorkers.
    #[serde(rename = "InferThreads")]
    pub infer_threads: usize,
    /// Most pooled Redis connections per queue-service process.
    #[serde(rename = "RedisPoolSize")]
    pub redis_pool_size: usize,
    /// Prefix of every Redis key inferq uses.
    #[serde(rename = "RedisKeyPrefix")]
    pub redis_key_prefix: String,
    /// Seconds a job may stay with a consumer that stopped renewing it (a dead
    /// queue instance) before another takes it over.
    #[serde(rename = "ReclaimIdle")]
    pub reclaim_idle: f64,
    /// Seconds a result is kept for lookup by request id.
    #[serde(rename = "ResultTTL")]
    pub result_ttl: f64,
    /// Bytes of results a memory queue keeps for lookup; the oldest go first.
    #[serde(rename = "MaxResultBytes")]
    pub max_result_bytes: usize,
    /// HTTP/2 streams at once on one connection to `inferq queue` (a
    /// gateway's calls share one connection).
    #[serde(rename = "QueueMaxStreams")]
    pub queue_max_streams: u32,
    /// The shared secret of the internal API: gateways and dispatchers send
    /// it (`authorization: Bearer …`), and a queue refuses a call without it
    /// (UNAUTHENTICATED). Empty: the internal API is open to whoever can
    /// reach `QueueListen`.
    #[serde(rename = "InternalToken")]
    pub internal_token: String,
    /// While the job store (Redis) does not answer, a call waits and retries
    /// it with backoff until its deadline instead of being refused with 9702
    /// at once: an outage shorter than `MessageTimeout` costs latency only.
    #[serde(rename = "WaitForStore")]
    pub wait_for_store: bool,
    /// Most calls of one queue instance waiting for the store at once; a
    /// call beyond them is refused with 9702 at once.
    #[serde(rename = "MaxCallsWaitingForStore")]
    pub max_calls_waiting_for_store: usize,
}

/// The `TLS` section: the certificate this process serves on its listeners
/// and the roots it trusts for `https://` queue endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first. Empty: listeners serve plain TCP.
    #[serde(rename = "CertFile")]
    pub cert_file: String,
    /// PEM private key of `CertFile` (PKCS#8, PKCS#1 or SEC1).
    #[serde(rename = "KeyFile")]
    pub key_file: String,
    /// PEM certificates trusted for `https://` queue endpoints, besides the
    /// system's roots (a private CA).
    #[serde(rename = "CaFile")]
    pub ca_file: String,
    /// Whether the public listeners (REST, gRPC, admin, a dispatcher's
    /// metrics) serve TLS when `CertFile` is set: false when nginx or a load
    /// balancer in front terminates it.
    #[serde(rename = "Public")]
    pub public: bool,
    /// Whether `inferq queue` serves TLS when `CertFile` is set.
    #[serde(rename = "Internal")]
    pub internal: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            public: true,
            internal: true,
        }
    }
}

impl ApiSettings {
    /// `MaxLargeRequests`, with 0 decided here.
    pub fn max_large_requests(&self) -> usize {
        match self.max_large_requests {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }

    fn secs(v: f64) -> Duration {
        Duration::from_secs_f64(v.max(0.0))
    }

    pub fn body_read_timeout(&self) -> Duration {
        Self::secs(self.body_read_timeout)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Self::secs(self.header_read_timeout)
    }
    pub fn idle_timeout(&self) -> Duration {
        Self::secs(self.idle_timeout)
    }
    pub fn keep_alive_interval(&self) -> Duration {
        Self::secs(self.keep_alive_interval)
    }

    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }
    pub fn grpc_addr(&self) -> Option<String> {
        self.grpc_port.map(|p| format!("{}:{}", self.addr, p))
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            redis_server: "127.0.0.1:6379".into(),
            redis_passwd: String::new(),
            queue_name: "goinfer-synchronous-asynchronous-queue".into(),
            request_queue_amount: 1,
            message_timeout: 10.0,
            max_workers: 8,
            backend: BackendChoice::Auto,
            queue_listen: "127.0.0.1:5100".into(),
            queue_endpoints: vec!["http://127.0.0.1:5100".into()],
            dispatcher_metrics_listen: String::new(),
            queue_metrics_listen: String::new(),
            autoscale: String::new(),
            max_queue_length: 100_000,
            max_deliveries: 3,
            drain_timeout: 30.0,
            infer_threads: 0,
            redis_pool_size: 32,
            redis_key_prefix: "inferq:".into(),
            reclaim_idle: 2.0,
            result_ttl: 300.0,
            max_result_bytes: 64 << 20,
            queue_max_streams: 20_000,
            internal_token: String::new(),
            wait_for_store: true,
            max_calls_waiting_for_store: 10_000,
        }
    }
}

impl ServerSettings {
    /// The name of request queue `n`.
    pub fn queue(&self, n: u32) -> String {
        format!("{}{}", self.queue_name, n)
    }

    pub fn message_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.message_timeout)
    }

    /// The parsed `Autoscale`, when set (checked at load).
    pub fn autoscale(&self) -> Option<super::autoscale::ScalePolicy> {
        super::autoscale::ScalePolicy::parse(&self.autoscale).ok()
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout)
    }

    pub fn reclaim_idle(&self) -> Duration {
        Duration::from_secs_f64(self.reclaim_idle)
    }

    pub fn result_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.result_ttl)
    }
}
