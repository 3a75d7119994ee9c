//! The command line: `inferq gateway | queue | dispatcher | standalone |
//! dead-letters | autoscale`, one file per role; each builds its component from the
//! settings and runs it until SIGTERM.
//!
//! [`run`] is also the entry point of a user's own binary: pass a function that
//! builds the models from the settings and get the same subcommands (go-infer's
//! `ModelList` + CLI commands). See `examples/custom_model.rs`. The `inferq`
//! binary adds its load generators (`bench`, `bench-model`, `bench-async`,
//! `bench/`) to these.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;
use crate::gateway::server::Ports;
use crate::model_zoo::{Model, ModelError, ModelFactory};
use crate::proto::client::QueueConnector;

pub mod autoscale;
pub mod dead_letters;
pub mod dispatcher;
pub mod gateway;
pub mod queue;

#[derive(Debug, Parser)]
#[command(
    name = "inferq",
    version,
    about = "Model-inference serving: gateway, queue, dispatchers"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the settings come from: every subcommand takes these.
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// The settings file (go-infer's settings.yaml works as it is).
    #[arg(long, global = true, default_value = "config/settings.yaml")]
    pub yaml: PathBuf,
    /// A PAI-EAS service.json, as the document writes it (plus a `token`
    /// key): adds its asynchronous service and the model that answers it.
    /// With it, the settings file is optional.
    #[arg(long, global = true, value_name = "SERVICE_JSON")]
    pub eas_service: Option<PathBuf>,
}

impl SettingsArgs {
    /// Reads the settings, with the service file applied.
    pub fn load(&self) -> anyhow::Result<Settings> {
        let Some(file) = &self.eas_service else {
            return Ok(Settings::load(&self.yaml)?);
        };
        let mut settings = if self.yaml.exists() {
            Settings::load(&self.yaml)?
        } else {
            let mut s = Settings::from_yaml("", file)?;
            s.source = Some(file.clone());
            s
        };
        let service = crate::config::service_file::ServiceFile::load(file)?;
        if settings.async_services.contains_key(&service.name) {
            anyhow::bail!(
                "service file {}: the settings already have an asynchronous service named {:?}",
                file.display(),
                service.name
            );
        }
        service.apply(&mut settings, file);
        Ok(settings)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The REST and gRPC gateway (go-infer's `http`).
    #[command(alias = "http")]
    Gateway(gateway::GatewayArgs),
    /// The queue service that stores jobs for dispatchers.
    Queue(queue::QueueArgs),
    /// A dispatcher node serving one queue (go-infer's `server N`).
    #[command(alias = "server")]
    Dispatcher(dispatcher::DispatcherArgs),
    /// Gateway, in-memory queue and a dispatcher in one process.
    Standalone(crate::standalone::StandaloneArgs),
    /// List or re-queue the jobs given up on (Redis backend).
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Dispatcher processes for queue N, as many as its desired count
    /// (Server.Autoscale), scale to zero included.
    Autoscale(autoscale::AutoscaleArgs),
}

/// Runs the command line with the models `factory` builds.
pub fn run<F>(factory: F) -> ExitCode
where
    F: Fn(&Settings) -> Result<Vec<Box<dyn Model>>, ModelError> + Send + Sync + 'static,
{
    let cli = Cli::parse();
    let factory: ModelFactory = Arc::new(factory);
    block_on(execute(cli.settings, cli.command, factory))
}

/// Sets up logging and the runtime, runs `work` to its end; the exit code
/// (2 with one line on stderr when it fails).
pub fn block_on(work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
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
    // Logging (and span export, which lives on the runtime).
    let telemetry = {
        let _in_runtime = runtime.enter();
        crate::telemetry::init()
    };
    crate::serve::raise_file_limit();
    let outcome = runtime.block_on(work);
    // Sends the spans still buffered while the runtime is up.
    drop(telemetry);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inferq: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one command with the settings `from` names.
pub async fn execute(
    from: SettingsArgs,
    command: Command,
    factory: ModelFactory,
) -> anyhow::Result<()> {
    let settings = from.load()?;
    match command {
        Command::Gateway(a) => gateway::run(settings, &factory, a).await,
        Command::Queue(a) => queue::run(settings, a).await,
        Command::Dispatcher(a) => dispatcher::run(settings, &factory, a).await,
        Command::Standalone(a) => crate::standalone::run(settings, &factory, a).await,
        Command::DeadLetters(a) => dead_letters::run(settings, a).await,
        Command::Autoscale(a) => autoscale::run(&from, settings, a).await,
    }
}

/// The listening ports a gateway takes from the command line.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// REST port (overrides API.Port; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Public gRPC port (overrides API.GrpcPort; 0 picks a free one).
    #[arg(long)]
    pub grpc_port: Option<u16>,
}

impl PortArgs {
    pub fn ports(&self) -> Ports {
        Ports {
            http: self.port,
            grpc: self.grpc_port,
        }
    }
}

/// Where the queue instances are, when the command line says.
#[derive(Debug, Args)]
pub struct QueueEndpointArgs {
    /// Queue service URL (repeatable; overrides Server.QueueEndpoints).
    #[arg(long = "queue-endpoint")]
    pub queue_endpoints: Vec<String>,
}

impl QueueEndpointArgs {
    /// The command line's endpoints, else the settings'.
    pub fn or_settings(&self, settings: &Settings) -> Vec<String> {
        if self.queue_endpoints.is_empty() {
            settings.server.queue_endpoints.clone()
        } else {
            self.queue_endpoints.clone()
        }
    }
}

/// How this process reaches the queue service: `TLS.CaFile` and
/// `Server.InternalToken`. Warns when the token or TLS is missing on a link
/// that leaves the machine.
pub fn queue_connector(
    settings: &Settings,
    endpoints: &[String],
) -> anyhow::Result<QueueConnector> {
    let ca =
        (!settings.tls.ca_file.is_empty()).then(|| std::path::Path::new(&settings.tls.ca_file));
    let connector = QueueConnector::new(ca, &settings.server.internal_token)?;
    for url in endpoints.iter().filter(|u| !is_loopback_url(u)) {
        if settings.server.internal_token.is_empty() {
            tracing::warn!(%url, "no Server.InternalToken: the queue cannot tell this process from any other client");
        }
        if url.starts_with("http://") {
            tracing::warn!(%url, "plain-text link to a queue on another machine: use https:// (TLS section)");
        }
    }
    Ok(connector)
}

/// Whether `url`'s host is a loopback address or `localhost`.
fn is_loopback_url(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(is_loopback_host))
        .unwrap_or(false)
}

/// Whether `host` (a name, an IP, or an IPv6 address in brackets) is
/// `localhost` or a loopback address.
fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the listen address `addr` (host:port) is on loopback only.
fn is_loopback_listen(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, _)| is_loopback_host(host))
}
