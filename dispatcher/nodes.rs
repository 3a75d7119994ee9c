//! The nodes a dispatcher process runs, as the settings describe them: one
//! for its job queue (`QueueName` + N, MaxWorkers credits) and one for each
//! PAI-EAS service whose model it holds (`rpc.worker_threads` credits).

use std::sync::Arc;

use super::node::{DispatcherNode, NodeOptions};
use crate::codes::{CodeTable, ErrorKind};
use crate::config::Settings;
use crate::model_zoo::ModelSet;
use crate::proto::eas::input_queue_name;
use crate::proto::DispatchLink;

impl NodeOptions {
    /// A node serving job queue `queue_no` with `max_workers` credits.
    pub fn from_settings(
        settings: &Settings,
        queue_no: u32,
        node_id: String,
        max_workers: u32,
    ) -> Self {
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
}

/// The nodes for the PAI-EAS services whose model is in `models`: one
/// Dispatch stream each (made by `link`), with the service's
/// `rpc.worker_threads` as its credits.
pub fn eas_nodes(
    settings: &Settings,
    models: &Arc<ModelSet>,
    node_id: &str,
    link: impl Fn() -> Arc<dyn DispatchLink>,
) -> Vec<Arc<DispatcherNode>> {
    let mut nodes = Vec::new();
    for (name, svc) in &settings.async_services {
        if models.get(&svc.model).is_none() {
            tracing::warn!(service = %name, model = %svc.model, "this dispatcher has no model for the asynchronous service; not serving it");
            continue;
        }
        let mut opts = NodeOptions::from_settings(
            settings,
            0,
            format!("{node_id}-{name}"),
            svc.rpc.worker_threads,
        );
        opts.queue = input_queue_name(name);
        nodes.push(Arc::new(DispatcherNode::new(
            Arc::clone(models),
            opts,
            link(),
        )));
    }
    nodes
}
