//! Serving a [`Gateway`]: its REST listener (with the OpenAI-style and PAI-EAS
//! routes when the settings turn them on) and its public gRPC listener, until
//! a stop is asked for and the requests in flight are answered.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::core::{Gateway, ModelReadiness};
use super::eas::{EasApi, EasApiError};
use super::http::{self, HttpLimits};
use super::openai::OpenAiApi;
use crate::config::Settings;
use crate::proto::EasLink;
use crate::serve;

impl HttpLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        HttpLimits {
            max_body_bytes: settings.api.max_body_bytes,
            max_concurrent_requests: settings.api.max_concurrent_requests,
            request_timeout: settings.server.message_timeout() + Duration::from_secs(2),
            admin_token: (settings.api.admin_listen.is_empty()
                && !settings.api.admin_token.is_empty())
            .then(|| settings.api.admin_token.clone()),
        }
    }
}

/// The PAI-EAS API of a gateway, when services are declared.
pub fn eas_api(
    settings: &Settings,
    gateway: &Arc<Gateway>,
    link: Option<Arc<dyn EasLink>>,
) -> Result<Option<EasApi>, EasApiError> {
    match link {
        Some(link) if !settings.async_services.is_empty() => {
            Ok(Some(EasApi::new(settings, Arc::clone(gateway), link)?))
        }
        _ => Ok(None),
    }
}

/// The ports to listen on, when the command line overrides the settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    pub http: Option<u16>,
    pub grpc: Option<u16>,
}

/// The admin routes: `/metrics` and the health routes.
pub fn admin_router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(crate::metrics::handler))
        .merge(health_router(gateway))
}

/// Health, on the public and the admin listener:
/// - `/healthz`, `/v2/health/live`: the process answers (200);
/// - `/readyz`: 200 when a queue service answers within a second, else 503
///   with the reason; `/v2/health/ready` the same, with KServe's 400 for
///   not ready;
/// - `/v2/models/{name}/ready` (KServe v2): 200 when the model at
///   `/api/{name}` is served here, a queue answers and a dispatcher is
///   connected for one of this gateway's queues; 400 when not, 404 for a
///   model this gateway does not serve.
pub fn health_router(gateway: Arc<Gateway>) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    async fn ready(gw: &Gateway, not_ready: StatusCode) -> (StatusCode, String) {
        match gw.queue_ready().await {
            Ok(()) => (StatusCode::OK, "ok\n".to_string()),
            Err(e) => (not_ready, format!("queue service: {e}\n")),
        }
    }
    let alive = || async { (StatusCode::OK, "ok\n") };
    axum::Router::new()
        .route("/healthz", get(alive))
        .route("/v2/health/live", get(alive))
        .route(
            "/readyz",
            get(|State(gw): State<Arc<Gateway>>| async move {
                ready(&gw, StatusCode::SERVICE_UNAVAILABLE).await
            }),
        )
        .route(
            "/v2/health/ready",
            get(|State(gw): State<Arc<Gateway>>| async move {
                ready(&gw, StatusCode::BAD_REQUEST).await
            }),
        )
        .route(
            "/v2/models/{name}/ready",
            get(
                |State(gw): State<Arc<Gateway>>, Path(name): Path<String>| async move {
                    match gw.model_ready(&name).await {
                        ModelReadiness::Ready => (StatusCode::OK, "ok\n".to_string()),
                        ModelReadiness::Unknown => (
                            StatusCode::NOT_FOUND,
                            "no such model on this gateway\n".to_string(),
                        ),
                        ModelReadiness::NotReady(why) => (StatusCode::BAD_REQUEST, why + "\n"),
                    }
                },
            ),
        )
        .with_state(gateway)
}

/// Serves the REST and gRPC APIs of `gateway` (and the admin routes on
/// `API.AdminListen`) until `stop` is cancelled and the requests in flight
/// are answered. Every listener runs [`serve::serve_connections`].
pub async fn serve(
    gateway: Arc<Gateway>,
    eas: Option<EasApi>,
    settings: &Settings,
    ports: Ports,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let http_addr = format!(
        "{}:{}",
        settings.api.addr,
        ports.http.unwrap_or(settings.api.port)
    );
    let grpc_port = ports.grpc.or(settings.api.grpc_port);
    let admin = !settings.api.admin_listen.is_empty();
    let listeners = 1 + u64::from(grpc_port.is_some()) + u64::from(admin);
    let conn_limits = serve::ConnectionLimits::public(settings, listeners);
    let tls = serve::tls::ListenerTls::load(&settings.tls)?.public();
    let limits = HttpLimits::from_settings(settings);
    // One concurrency limit for REST and gRPC together.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests));
    let openai = (!settings.openai.api_keys.is_empty()).then(|| OpenAiApi {
        api_keys: settings.openai.api_keys.clone(),
        models: crate::model_zoo::embedding_models(settings),
    });
    let mut servers = Vec::new();
    // The admin listener first: once the API listeners are announced, so is it.
    if admin {
        let listener = serve::bind("gateway-admin", &settings.api.admin_listen).await?;
        servers.push(tokio::spawn(serve::serve_connections(
            "gateway-admin",
            listener,
            admin_router(Arc::clone(&gateway)),
            conn_limits.clone(),
            tls.clone(),
            stop.clone(),
        )));
    }
    let listener = serve::bind("gateway-http", &http_addr).await?;
    let app = http::router(
        Arc::clone(&gateway),
        limits.clone(),
        Arc::clone(&in_flight),
        openai,
        eas.clone(),
    )
    .merge(health_router(Arc::clone(&gateway)));
    servers.push(tokio::spawn(serve::serve_connections(
        "gateway-http",
        listener,
        app,
        conn_limits.clone(),
        tls.clone(),
        stop.clone(),
    )));
    if let Some(p) = grpc_port {
        let addr = format!("{}:{}", settings.api.addr, p);
        let listener = serve::bind("gateway-grpc", &addr).await?;
        let app = super::grpc::router(Arc::clone(&gateway), eas, &limits, in_flight, stop.clone());
        servers.push(tokio::spawn(serve::serve_connections(
            "gateway-grpc",
            listener,
            app,
            conn_limits.clone(),
            tls.clone(),
            stop.clone(),
        )));
    }
    for s in servers {
        s.await.context("gateway listener")?;
    }
    Ok(())
}
