//! The tonic server for `inferq.v1.QueueService`: a thin wrapper that turns
//! gRPC requests into [`QueueService`] calls.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::eas::{api, EasQueues};
use super::service::QueueService;
use crate::proto::client::InternalToken;
use crate::proto::queue_service_server::{self, QueueServiceServer};
use crate::proto::ItemStream;
use crate::proto::{
    AsyncAttributesReply, AsyncAttributesRequest, AsyncCommitReply, AsyncCommitRequest,
    AsyncGetReply, AsyncGetRequest, AsyncPutReply, AsyncPutRequest, AsyncSearchReply,
    AsyncSearchRequest, AsyncWatchRequest, CallReply, CallRequest, DispatcherMessage,
    MarkSeenReply, MarkSeenRequest, PingReply, PingRequest, QueueMessage, StatsReply, StatsRequest,
};
use crate::serve::{serve_connections, ConnectionLimits};

pub struct QueueGrpc {
    service: Arc<QueueService>,
}

impl QueueGrpc {
    pub fn new(service: Arc<QueueService>) -> Self {
        QueueGrpc { service }
    }

    fn eas(&self) -> Result<&Arc<EasQueues>, Status> {
        self.service
            .eas()
            .ok_or_else(|| Status::not_found("no asynchronous services are declared"))
    }
}

#[tonic::async_trait]
impl queue_service_server::QueueService for QueueGrpc {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallReply>, Status> {
        let trace = crate::proto::trace::TraceMetadata::read(request.metadata());
        let mut job = request
            .into_inner()
            .job
            .ok_or_else(|| Status::invalid_argument("CallRequest.job is missing"))?;
        trace.fill(&mut job);
        let result = self.service.call(job).await?;
        Ok(Response::new(CallReply {
            result: Some(result),
        }))
    }

    type DispatchStream = ReceiverStream<Result<QueueMessage, Status>>;

    async fn dispatch(
        &self,
        request: Request<Streaming<DispatcherMessage>>,
    ) -> Result<Response<Self::DispatchStream>, Status> {
        let inbound = request.into_inner().boxed();
        Ok(Response::new(ReceiverStream::new(
            self.service.dispatch(inbound),
        )))
    }

    async fn mark_seen(
        &self,
        request: Request<MarkSeenRequest>,
    ) -> Result<Response<MarkSeenReply>, Status> {
        let r = request.into_inner();
        let ttl = Duration::from_millis(u64::try_from(r.ttl_ms).unwrap_or(0));
        let first = self.service.mark_seen(&r.key, ttl).await?;
        Ok(Response::new(MarkSeenReply { first }))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        self.service
            .ping()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(PingReply {}))
    }

    async fn stats(&self, request: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        let q = request.into_inner().queue;
        let queue = (!q.is_empty()).then_some(q.as_str());
        let queues = self
            .service
            .stats(queue)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(StatsReply { queues }))
    }

    async fn async_put(
        &self,
        request: Request<AsyncPutRequest>,
    ) -> Result<Response<AsyncPutReply>, Status> {
        let aq = self.eas()?;
        Ok(Response::new(api::put(aq, request.into_inner()).await?))
    }

    async fn async_get(
        &self,
        request: Request<AsyncGetRequest>,
    ) -> Result<Response<AsyncGetReply>, Status> {
        let aq = self.eas()?;
        Ok(Response::new(api::get(aq, request.into_inner()).await?))
    }

    async fn async_commit(
        &self,
        request: Request<AsyncCommitRequest>,
    ) -> Result<Response<AsyncCommitReply>, Status> {
        let aq = self.eas()?;
        Ok(Response::new(api::commit(aq, request.into_inner()).await?))
    }

    async fn async_attributes(
        &self,
        request: Request<AsyncAttributesRequest>,
    ) -> Result<Response<AsyncAttributesReply>, Status> {
        let aq = self.eas()?;
        Ok(Response::new(
            api::attributes(aq, request.into_inner()).await?,
        ))
    }

    async fn async_search(
        &self,
        request: Request<AsyncSearchRequest>,
    ) -> Result<Response<AsyncSearchReply>, Status> {
        let aq = self.eas()?;
        Ok(Response::new(api::search(aq, request.into_inner()).await?))
    }

    type AsyncWatchStream = ItemStream;

    async fn async_watch(
        &self,
        request: Request<AsyncWatchRequest>,
    ) -> Result<Response<Self::AsyncWatchStream>, Status> {
        let aq = self.eas()?;
        Ok(Response::new(api::watch(aq, request.into_inner()).await?))
    }
}

/// Serves the queue service's gRPC API on `listener` until `stop` is
/// cancelled, within `limits`.
/// Who may use the queue's listener: TLS (none: plain TCP) and the
/// internal token every call must carry (none: any caller).
#[derive(Clone, Default)]
pub struct Access {
    pub tls: Option<TlsAcceptor>,
    pub token: InternalToken,
}

pub async fn serve(
    service: Arc<QueueService>,
    listener: TcpListener,
    limits: ConnectionLimits,
    access: Access,
    stop: CancellationToken,
) {
    let routes = tonic::service::Routes::new(QueueServiceServer::new(QueueGrpc::new(Arc::clone(
        &service,
    ))));
    const SERVICES: &[&str] = &["inferq.v1.QueueService"];
    let (routes, health) = crate::serve::grpc::with_health_and_reflection(routes, SERVICES);
    crate::serve::grpc::track_health(
        health,
        SERVICES,
        move || {
            let service = Arc::clone(&service);
            async move { service.ping().await.is_ok() }
        },
        stop.clone(),
    );
    let token = access.token;
    let app = routes
        .into_axum_router()
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                // Health tells nothing a probe without the token may not know.
                let admitted = token.admits(req.headers())
                    || req.uri().path().starts_with("/grpc.health.v1.Health/");
                async move {
                    if admitted {
                        next.run(req).await
                    } else {
                        tracing::warn!(path = %req.uri().path(), "internal call without the internal token refused");
                        Status::unauthenticated("the internal token is missing or wrong")
                            .into_http()
                    }
                }
            },
        ));
    serve_connections("queue-grpc", listener, app, limits, access.tls, stop).await
}

/// The queue's admin routes (`Server.QueueMetricsListen`): `/metrics`;
/// `/healthz` (the process answers); `/readyz`: 200 while the store
/// answers, else 503 with the reason.
pub fn admin_router(service: Arc<QueueService>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    axum::Router::new()
        .route("/metrics", get(crate::metrics::handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let service = Arc::clone(&service);
                async move {
                    match service.ping().await {
                        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
                    }
                }
            }),
        )
}
