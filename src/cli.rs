//! The command line: `inferq gateway | queue | dispatcher | standalone | bench`.
//!
//! [`run`] is also the entry point of a user's own binary: pass a function that
//! builds the models from the settings and get the same subcommands (go-infer's
//! `ModelList` + CLI commands). See `examples/custom_model.rs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::codes::{CodeTable, ErrorKind};
use crate::config::{BackendChoice, Settings};
use crate::dispatcher::{DispatcherNode, LocalDispatchLink, NodeOptions, RemoteDispatchLink};
use crate::gateway::async_link::{AsyncLink, LocalAsyncLink};
use crate::gateway::eas::EasApi;
use crate::gateway::http::HttpLimits;
use crate::gateway::{Gateway, LocalQueueLink, QueueLink, RemoteQueueLink};
use crate::model_zoo::{InitContext, Model, ModelError, ModelSet};
use crate::queue::async_memory::MemoryAsyncStore;
use crate::queue::async_redis::RedisAsyncStore;
use crate::queue::async_service::{AsyncQueues, ResultCodes};
use crate::queue::async_store::AsyncStore;
use crate::queue::service::ServiceOptions;
use crate::queue::{
    BackendOptions, MemoryBackend, QueueBackend, QueueService, RedisBackend, RedisOptions,
    ResultWaiters,
};
use crate::serve;

#[derive(Debug, Parser)]
#[command(
    name = "inferq",
    version,
    about = "Model-inference serving: gateway, queue, dispatchers"
)]
pub struct Cli {
    /// The settings file (go-infer's settings.yaml works as it is).
    #[arg(long, global = true, default_value = "config/settings.yaml")]
    pub yaml: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The REST and gRPC gateway (go-infer's `http`).
    #[command(alias = "http")]
    Gateway(GatewayArgs),
    /// The queue service that stores jobs for dispatchers.
    Queue(QueueArgs),
    /// A dispatcher node serving one queue (go-infer's `server N`).
    #[command(alias = "server")]
    Dispatcher(DispatcherArgs),
    /// Gateway, in-memory queue and a dispatcher in one process.
    Standalone(StandaloneArgs),
    /// Load generator: signed requests at a fixed concurrency.
    Bench(crate::bench::BenchArgs),
    /// List or re-queue the jobs given up on (Redis backend).
    DeadLetters(DeadLettersArgs),
    /// The bare model's speed, in process (no gateway, queue or dispatcher).
    BenchModel(crate::bench::model::BenchModelArgs),
    /// Load on an asynchronous service: puts from several clients, results
    /// watched from the sink; put/s, result/s, latencies.
    BenchAsync(crate::bench::async_load::BenchAsyncArgs),
}

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    pub action: DeadLetterAction,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterAction {
    /// Print dead letters, oldest first: id, request id, API path, when, why.
    List {
        /// Queue number N (`QueueName` + N).
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// Most to print.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Put dead letters back in their queue (deadline and delivery count
    /// cleared; the result is kept for lookup by request id).
    Requeue {
        /// Queue number N (`QueueName` + N).
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// Every dead letter of the queue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Dead-letter ids, as `list` prints them.
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// REST port (overrides API.Port; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Public gRPC port (overrides API.GrpcPort; 0 picks a free one).
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// Queue service URL (repeatable; overrides Server.QueueEndpoints).
    #[arg(long = "queue-endpoint")]
    pub queue_endpoints: Vec<String>,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// host:port to listen on (overrides Server.QueueListen).
    #[arg(long)]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct DispatcherArgs {
    /// Queue number N (serves `QueueName` + N), as go-infer's `server N`.
    #[arg(value_name = "N")]
    pub queue_no: Option<u32>,
    /// Queue number N (same as the positional N).
    #[arg(long = "queue", value_name = "N")]
    pub queue: Option<u32>,
    /// Jobs held at once (overrides Server.MaxWorkers).
    #[arg(long)]
    pub max_workers: Option<u32>,
    /// Where to serve /metrics and /healthz (overrides Server.DispatcherMetricsListen).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Node name reported to the queue (default: hostname-pid).
    #[arg(long)]
    pub node_id: Option<String>,
    /// Queue service URL (repeatable; overrides Server.QueueEndpoints).
    #[arg(long = "queue-endpoint")]
    pub queue_endpoints: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// REST port (overrides API.Port; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Public gRPC port (overrides API.GrpcPort; 0 picks a free one).
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// Jobs the dispatcher holds at once (overrides Server.MaxWorkers).
    #[arg(long)]
    pub max_workers: Option<u32>,
}

/// Runs the command line with the models `factory` builds.
pub fn run<F>(factory: F) -> ExitCode
where
    F: Fn(&Settings) -> Result<Vec<Box<dyn Model>>, ModelError> + Send + Sync + 'static,
{
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("inferq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let factory: Arc<crate::model_zoo::ModelFactory> = Arc::new(Arc::new(factory));
    match runtime.block_on(dispatch(cli, factory)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inferq: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INFERQ_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

async fn dispatch(cli: Cli, factory: Arc<crate::model_zoo::ModelFactory>) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => return crate::bench::run(args).await,
        Command::BenchAsync(args) => return crate::bench::async_load::run(args).await,
        _ => {}
    }
    let settings = Settings::load(&cli.yaml)?;
    match cli.command {
        Command::Gateway(a) => run_gateway(settings, &factory, a).await,
        Command::Queue(a) => run_queue(settings, a).await,
        Command::Dispatcher(a) => run_dispatcher(settings, &factory, a).await,
        Command::Standalone(a) => run_standalone(settings, &factory, a).await,
        Command::DeadLetters(a) => run_dead_letters(settings, a).await,
        Command::BenchModel(a) => {
            tokio::task::block_in_place(|| crate::bench::model::run(&settings, a))
        }
        Command::Bench(_) | Command::BenchAsync(_) => Ok(()),
    }
}

fn build_models(
    factory: &crate::model_zoo::ModelFactory,
    settings: &Settings,
    init: bool,
) -> anyhow::Result<ModelSet> {
    let models = factory(settings).map_err(|e| anyhow::anyhow!("models: {e}"))?;
    let set = if init {
        ModelSet::initialised(models, &InitContext::for_settings(settings))
    } else {
        ModelSet::new(models)
    };
    let set = set.map_err(|e| anyhow::anyhow!("models: {e}"))?;
    if set.is_empty() {
        anyhow::bail!("no models are registered");
    }
    Ok(set)
}

fn backend_options(settings: &Settings, instance_id: &str) -> BackendOptions {
    let codes = CodeTable::new(&settings.err_code);
    BackendOptions {
        instance_id: instance_id.to_string(),
        max_queue_length: settings.server.max_queue_length,
        max_deliveries: settings.server.max_deliveries,
        dead_letter_code: codes.code(ErrorKind::InferFail),
        result_ttl: settings.server.result_ttl(),
        ..BackendOptions::default()
    }
}

fn redis_options(settings: &Settings, instance_id: &str) -> RedisOptions {
    RedisOptions {
        server: settings.server.redis_server.clone(),
        password: settings.server.redis_passwd.clone(),
        pool_size: settings.server.redis_pool_size,
        reclaim_idle: settings.server.reclaim_idle(),
        key_prefix: settings.server.redis_key_prefix.clone(),
        backend: backend_options(settings, instance_id),
    }
}

/// Which store a queue service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Redis,
}

fn queue_service(
    settings: &Settings,
    instance_id: String,
    store: Store,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<QueueService>> {
    let codes = CodeTable::new(&settings.err_code);
    let waiters = ResultWaiters::new();
    let backend: Arc<dyn QueueBackend> = match store {
        Store::Memory => Arc::new(MemoryBackend::new(
            backend_options(settings, &instance_id),
            Arc::clone(&waiters),
        )),
        Store::Redis => {
            let opts = redis_options(settings, &instance_id);
            tracing::info!(redis = %opts.display_addr(), pool = opts.pool_size, "using the Redis Streams backend");
            RedisBackend::start(opts, Arc::clone(&waiters), stop.clone())
                .map_err(|e| anyhow::anyhow!("Server.RedisServer: {e}"))?
        }
    };
    let opts = ServiceOptions {
        instance_id: instance_id.clone(),
        expired_code: codes.code(ErrorKind::QueueTimeout),
        ..ServiceOptions::default()
    };
    if settings.async_services.is_empty() {
        return Ok(QueueService::new(backend, waiters, opts, None));
    }
    let store: Arc<dyn AsyncStore> = match store {
        Store::Memory => Arc::new(MemoryAsyncStore::new()),
        Store::Redis => {
            RedisAsyncStore::start(&redis_options(settings, &instance_id), stop.clone())
                .map_err(|e| anyhow::anyhow!("Server.RedisServer: {e}"))?
        }
    };
    let async_queues = AsyncQueues::new(
        store,
        settings,
        ResultCodes {
            dead_letter: codes.code(ErrorKind::InferFail),
            max_deliveries: settings.server.max_deliveries,
        },
    )
    .map_err(anyhow::Error::msg)?;
    tracing::info!(services = ?settings.async_services.keys().collect::<Vec<_>>(), "asynchronous services");
    Ok(QueueService::new(
        backend,
        waiters,
        opts,
        Some(async_queues),
    ))
}

/// The dispatcher nodes for the asynchronous services whose model is in
/// `models`: one Dispatch stream each, with the service's worker_threads as
/// its credits.
fn async_nodes(
    settings: &Settings,
    models: &Arc<ModelSet>,
    node_id: &str,
    link: impl Fn() -> Arc<dyn crate::dispatcher::link::DispatchLink>,
) -> Vec<Arc<DispatcherNode>> {
    let mut nodes = Vec::new();
    for (name, svc) in &settings.async_services {
        if models.get(&svc.model).is_none() {
            tracing::warn!(service = %name, model = %svc.model, "this dispatcher has no model for the asynchronous service; not serving it");
            continue;
        }
        let mut opts = node_options(
            settings,
            0,
            format!("{node_id}-{name}"),
            svc.rpc.worker_threads,
        );
        opts.queue = crate::queue::async_service::input_queue_name(name);
        nodes.push(Arc::new(DispatcherNode::new(
            Arc::clone(models),
            opts,
            link(),
        )));
    }
    nodes
}

/// The asynchronous API of a gateway, when services are declared.
fn eas_api(
    settings: &Settings,
    gateway: &Arc<Gateway>,
    link: Option<Arc<dyn AsyncLink>>,
) -> anyhow::Result<Option<EasApi>> {
    match link {
        Some(link) if !settings.async_services.is_empty() => Ok(Some(
            EasApi::new(settings, Arc::clone(gateway), link).map_err(anyhow::Error::msg)?,
        )),
        _ => Ok(None),
    }
}

fn node_options(
    settings: &Settings,
    queue_no: u32,
    node_id: String,
    max_workers: u32,
) -> NodeOptions {
    let codes = CodeTable::new(&settings.err_code);
    NodeOptions {
        node_id,
        queue: settings.server.queue(queue_no),
        max_workers,
        infer_threads: match settings.server.infer_threads {
            0 => max_workers as usize,
            n => n,
        },
        drain_timeout: settings.server.drain_timeout(),
        unknown_api_code: codes.code(ErrorKind::UnknownApi),
        infer_fail_code: codes.code(ErrorKind::InferFail),
        api_entry_fail_code: codes.code(ErrorKind::ApiEntryFail),
        expired_code: codes.code(ErrorKind::QueueTimeout),
    }
}

fn http_limits(settings: &Settings) -> HttpLimits {
    HttpLimits {
        max_body_bytes: settings.api.max_body_bytes,
        max_concurrent_requests: settings.api.max_concurrent_requests,
        request_timeout: settings.server.message_timeout() + Duration::from_secs(2),
    }
}

/// Serves the REST and gRPC APIs of `gateway` until `stop` is cancelled and
/// the requests in flight are answered.
async fn serve_gateway(
    gateway: Arc<Gateway>,
    eas: Option<EasApi>,
    settings: &Settings,
    port: Option<u16>,
    grpc_port: Option<u16>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let http_addr = format!(
        "{}:{}",
        settings.api.addr,
        port.unwrap_or(settings.api.port)
    );
    let listener = serve::bind("gateway-http", &http_addr).await?;
    let openai =
        (!settings.openai.api_keys.is_empty()).then(|| crate::gateway::openai::OpenAiApi {
            api_keys: settings.openai.api_keys.clone(),
            models: crate::model_zoo::embedding_models(settings),
        });
    let app = crate::gateway::http::router(
        Arc::clone(&gateway),
        http_limits(settings),
        openai,
        eas.clone(),
    );
    let s = stop.clone();
    let http = tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await
    });
    let grpc = match grpc_port.or(settings.api.grpc_port) {
        Some(p) => {
            let addr = format!("{}:{}", settings.api.addr, p);
            let listener = serve::bind("gateway-grpc", &addr).await?;
            let s = stop.clone();
            let gw = Arc::clone(&gateway);
            Some(tokio::spawn(async move {
                crate::gateway::grpc::serve(gw, eas, listener, async move { s.cancelled().await })
                    .await
            }))
        }
        None => None,
    };
    http.await?.context("REST server")?;
    if let Some(g) = grpc {
        g.await?.context("gRPC server")?;
    }
    Ok(())
}

async fn run_gateway(
    settings: Settings,
    factory: &crate::model_zoo::ModelFactory,
    args: GatewayArgs,
) -> anyhow::Result<()> {
    let models = build_models(factory, &settings, false)?;
    let endpoints = if args.queue_endpoints.is_empty() {
        settings.server.queue_endpoints.clone()
    } else {
        args.queue_endpoints.clone()
    };
    let remote = Arc::new(RemoteQueueLink::new(&endpoints).map_err(anyhow::Error::msg)?);
    let link: Arc<dyn QueueLink> = remote.clone();
    let gateway = Arc::new(Gateway::new(&settings, models, link).map_err(anyhow::Error::msg)?);
    let eas = eas_api(&settings, &gateway, Some(remote as Arc<dyn AsyncLink>))?;
    tracing::info!(queues = ?endpoints, models = ?gateway.paths(), "gateway starting");
    let stop = serve::shutdown_token();
    serve_gateway(gateway, eas, &settings, args.port, args.grpc_port, stop).await
}

async fn run_queue(settings: Settings, args: QueueArgs) -> anyhow::Result<()> {
    let store = match settings.server.backend {
        BackendChoice::Auto | BackendChoice::Redis => Store::Redis,
        BackendChoice::Memory => {
            tracing::warn!("Server.Backend is memory: jobs do not survive a restart of this process, and only this one queue instance can serve them");
            Store::Memory
        }
    };
    let instance_id = format!("queue-{}", uuid::Uuid::now_v7().simple());
    let stop = serve::shutdown_token();
    let service = queue_service(&settings, instance_id, store, &stop)?;
    let addr = args
        .listen
        .unwrap_or_else(|| settings.server.queue_listen.clone());
    let listener = serve::bind("queue-grpc", &addr).await?;
    let s = stop.clone();
    let server = tokio::spawn(crate::queue::grpc::serve(service, listener, async move {
        s.cancelled().await
    }));
    stop.cancelled().await;
    // Dispatch streams stay open until their dispatchers go; do not wait forever.
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(r) => r?.context("queue server")?,
        Err(_) => tracing::warn!("streams still open after 5s; exiting"),
    }
    Ok(())
}

async fn run_dispatcher(
    settings: Settings,
    factory: &crate::model_zoo::ModelFactory,
    args: DispatcherArgs,
) -> anyhow::Result<()> {
    let queue_no = args.queue.or(args.queue_no).unwrap_or(0);
    let max_workers = args.max_workers.unwrap_or(settings.server.max_workers);
    if max_workers == 0 {
        anyhow::bail!("--max-workers must be at least 1");
    }
    let models = Arc::new(build_models(factory, &settings, true)?);
    let endpoints = if args.queue_endpoints.is_empty() {
        settings.server.queue_endpoints.clone()
    } else {
        args.queue_endpoints.clone()
    };
    let metrics_addr = args
        .metrics_listen
        .clone()
        .unwrap_or_else(|| settings.server.dispatcher_metrics_listen.clone());
    let stop = serve::shutdown_token();
    if !metrics_addr.is_empty() {
        let listener = serve::bind("dispatcher-metrics", &metrics_addr).await?;
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(|| async { crate::metrics::render() }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok" }));
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
    }
    let node_id = args.node_id.unwrap_or_else(serve::default_node_id);
    let opts = node_options(&settings, queue_no, node_id.clone(), max_workers);
    tracing::info!(queue = %opts.queue, max_workers, queue_service = ?endpoints, "dispatcher starting");
    let node = Arc::new(DispatcherNode::new(
        Arc::clone(&models),
        opts,
        Arc::new(RemoteDispatchLink::new(endpoints.clone())),
    ));
    let mut runs = vec![tokio::spawn(node.run(stop.clone()))];
    for n in async_nodes(&settings, &models, &node_id, || {
        Arc::new(RemoteDispatchLink::new(endpoints.clone()))
    }) {
        runs.push(tokio::spawn(n.run(stop.clone())));
    }
    for r in runs {
        let _ = r.await;
    }
    Ok(())
}

async fn run_standalone(
    settings: Settings,
    factory: &crate::model_zoo::ModelFactory,
    args: StandaloneArgs,
) -> anyhow::Result<()> {
    let store = match settings.server.backend {
        BackendChoice::Redis => Store::Redis,
        BackendChoice::Auto | BackendChoice::Memory => Store::Memory,
    };
    let backend_stop = CancellationToken::new();
    let instance_id = format!("standalone-{}", uuid::Uuid::now_v7().simple());
    let service = queue_service(&settings, instance_id, store, &backend_stop)?;
    let gateway_models = build_models(factory, &settings, false)?;
    let node_models = Arc::new(build_models(factory, &settings, true)?);
    let link: Arc<dyn QueueLink> = Arc::new(LocalQueueLink(Arc::clone(&service)));
    let gateway =
        Arc::new(Gateway::new(&settings, gateway_models, link).map_err(anyhow::Error::msg)?);
    let async_link = service
        .async_queues()
        .map(|aq| Arc::new(LocalAsyncLink(Arc::clone(aq))) as Arc<dyn AsyncLink>);
    let eas = eas_api(&settings, &gateway, async_link)?;
    let max_workers = args
        .max_workers
        .unwrap_or(settings.server.max_workers)
        .max(1);
    let stop = serve::shutdown_token();
    let nodes_stop = CancellationToken::new();
    let mut nodes = Vec::new();
    for n in 0..settings.server.request_queue_amount {
        let opts = node_options(
            &settings,
            n,
            format!("{}-q{n}", serve::default_node_id()),
            max_workers,
        );
        let node = Arc::new(DispatcherNode::new(
            Arc::clone(&node_models),
            opts,
            Arc::new(LocalDispatchLink(Arc::clone(&service))),
        ));
        nodes.push(tokio::spawn(node.run(nodes_stop.clone())));
    }
    for n in async_nodes(&settings, &node_models, &serve::default_node_id(), || {
        Arc::new(LocalDispatchLink(Arc::clone(&service)))
    }) {
        nodes.push(tokio::spawn(n.run(nodes_stop.clone())));
    }
    tracing::info!(models = ?gateway.paths(), max_workers, "standalone starting");
    // Requests in flight are answered before the dispatchers drain.
    serve_gateway(gateway, eas, &settings, args.port, args.grpc_port, stop).await?;
    nodes_stop.cancel();
    for n in nodes {
        let _ = n.await;
    }
    backend_stop.cancel();
    Ok(())
}

async fn run_dead_letters(settings: Settings, args: DeadLettersArgs) -> anyhow::Result<()> {
    if settings.server.backend == BackendChoice::Memory {
        anyhow::bail!("Server.Backend is memory: dead letters live in the queue process and end with it; this command reads them from Redis");
    }
    let stop = CancellationToken::new();
    let instance_id = format!("cli-{}", uuid::Uuid::now_v7().simple());
    let backend = RedisBackend::start(
        redis_options(&settings, &instance_id),
        ResultWaiters::new(),
        stop.clone(),
    )
    .map_err(|e| anyhow::anyhow!("Server.RedisServer: {e}"))?;
    let r = match args.action {
        DeadLetterAction::List { queue, max } => {
            let queue = settings.server.queue(queue);
            let dead = backend.dead_letters(&queue, max).await?;
            println!("# {} dead letters in {queue}", dead.len());
            println!("# id\trequest_id\tapi_path\tat_unix_ms\treason");
            for d in dead {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    d.id, d.job.request_id, d.job.api_path, d.at_unix_ms, d.reason
                );
            }
            Ok(())
        }
        DeadLetterAction::Requeue { queue, all, ids } => {
            if !all && ids.is_empty() {
                anyhow::bail!("name the dead letters to re-queue, or pass --all");
            }
            let queue = settings.server.queue(queue);
            let n = backend.requeue_dead(&queue, &ids).await?;
            println!("re-queued {n} jobs in {queue}");
            Ok(())
        }
    };
    stop.cancel();
    r
}
