//! Serving a [`Gateway`]: its REST listener (with the OpenAI-style and PAI-EAS
//! routes when the settings turn them on) and its public gRPC listener, until
//! a stop is asked for and the requests in flight are answered.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::core::Gateway;
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

/// Serves the REST and gRPC APIs of `gateway` until `stop` is cancelled and
/// the requests in flight are answered.
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
    let listener = serve::bind("gateway-http", &http_addr).await?;
    let openai = (!settings.openai.api_keys.is_empty()).then(|| OpenAiApi {
        api_keys: settings.openai.api_keys.clone(),
        models: crate::model_zoo::embedding_models(settings),
    });
    let app = http::router(
        Arc::clone(&gateway),
        HttpLimits::from_settings(settings),
        openai,
        eas.clone(),
    );
    let s = stop.clone();
    let rest = tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await
    });
    let grpc = match ports.grpc.or(settings.api.grpc_port) {
        Some(p) => {
            let addr = format!("{}:{}", settings.api.addr, p);
            let listener = serve::bind("gateway-grpc", &addr).await?;
            let s = stop.clone();
            let gw = Arc::clone(&gateway);
            Some(tokio::spawn(async move {
                super::grpc::serve(gw, eas, listener, async move { s.cancelled().await }).await
            }))
        }
        None => None,
    };
    rest.await?.context("REST server")?;
    if let Some(g) = grpc {
        g.await?.context("gRPC server")?;
    }
    Ok(())
}
