//! The public gRPC API of the asynchronous services, `inferq.v1.AsyncQueue`:
//! the operations of the HTTP queue API ([`super`]) for gRPC clients,
//! with the service's token in the `authorization` metadata key and the same
//! checks (size, the model's parameter check on input puts).

use tonic::{Request, Response, Status};

use super::EasApi;
use crate::config::ServiceSpec;
use crate::proto::async_queue_server::AsyncQueue;
use crate::proto::ItemStream;
use crate::proto::{
    AsyncAttributesReply, AsyncAttributesRequest, AsyncCommitReply, AsyncCommitRequest,
    AsyncGetReply, AsyncGetRequest, AsyncPutReply, AsyncPutRequest, AsyncQueueRef,
    AsyncSearchReply, AsyncSearchRequest, AsyncWatchRequest,
};

pub struct EasQueueGrpc {
    api: EasApi,
}

impl EasQueueGrpc {
    pub fn new(api: EasApi) -> Self {
        EasQueueGrpc { api }
    }

    /// Checks the request's token against its service.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        queue: &Option<AsyncQueueRef>,
    ) -> Result<&ServiceSpec, Status> {
        let service = queue
            .as_ref()
            .map(|q| q.service.as_str())
            .ok_or_else(|| Status::invalid_argument("queue is missing"))?;
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        Ok(self.api.authorize(service, token)?)
    }
}

#[tonic::async_trait]
impl AsyncQueue for EasQueueGrpc {
    async fn submit(
        &self,
        request: Request<AsyncPutRequest>,
    ) -> Result<Response<AsyncPutReply>, Status> {
        let spec = self.authorize(&request, &request.get_ref().queue)?;
        let r = request.into_inner();
        let sink = r.queue.as_ref().is_some_and(|q| q.sink);
        self.api.check_put(spec, sink, &r.data)?;
        Ok(Response::new(self.api.link().put(r).await?))
    }

    async fn get(
        &self,
        request: Request<AsyncGetRequest>,
    ) -> Result<Response<AsyncGetReply>, Status> {
        self.authorize(&request, &request.get_ref().queue)?;
        Ok(Response::new(
            self.api.link().get(request.into_inner()).await?,
        ))
    }

    async fn commit(
        &self,
        request: Request<AsyncCommitRequest>,
    ) -> Result<Response<AsyncCommitReply>, Status> {
        self.authorize(&request, &request.get_ref().queue)?;
        Ok(Response::new(
            self.api.link().commit(request.into_inner()).await?,
        ))
    }

    async fn attributes(
        &self,
        request: Request<AsyncAttributesRequest>,
    ) -> Result<Response<AsyncAttributesReply>, Status> {
        self.authorize(&request, &request.get_ref().queue)?;
        Ok(Response::new(
            self.api.link().attributes(request.into_inner()).await?,
        ))
    }

    async fn search(
        &self,
        request: Request<AsyncSearchRequest>,
    ) -> Result<Response<AsyncSearchReply>, Status> {
        self.authorize(&request, &request.get_ref().queue)?;
        Ok(Response::new(
            self.api.link().search(request.into_inner()).await?,
        ))
    }

    type WatchStream = ItemStream;

    async fn watch(
        &self,
        request: Request<AsyncWatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.authorize(&request, &request.get_ref().queue)?;
        Ok(Response::new(
            self.api.link().watch(request.into_inner()).await?,
        ))
    }
}
