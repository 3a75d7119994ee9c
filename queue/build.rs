//! A queue service as the settings describe it: the store `Server.Backend`
//! chooses, for the job queues and (when `AsyncServices` are declared) the
//! PAI-EAS queues, with their limits and codes.

use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::eas::{EasQueues, EasStore, MemoryEasStore, RedisEasStore, ResultCodes};
use super::error::StoreError;
use super::jobs::{JobStore, JobStoreOptions, MemoryJobStore, RedisJobStore, ResultWaiters};
use super::redis::RedisOptions;
use super::seen::{MemorySeenKeys, RedisSeenKeys, SeenKeys};
use super::service::{QueueService, ServiceOptions};
use super::session::SessionOptions;
use crate::codes::{CodeTable, ErrorKind};
use crate::config::{KeyError, Settings, StoreKind};

/// Signature digests one memory queue remembers at once (about 100 bytes
/// each): 300 s of 1,600 signed requests a second.
const MEMORY_SEEN_KEYS: usize = 500_000;

/// Why a queue service could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("Server.RedisServer: {0}")]
    Redis(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] KeyError),
}

impl JobStoreOptions {
    pub fn from_settings(settings: &Settings, instance_id: &str) -> Self {
        let codes = CodeTable::new(&settings.err_code);
        JobStoreOptions {
            instance_id: instance_id.to_string(),
            max_queue_length: settings.server.max_queue_length,
            max_deliveries: settings.server.max_deliveries,
            dead_letter_code: codes.code(ErrorKind::InferFail),
            result_ttl: settings.server.result_ttl(),
            max_result_bytes: settings.server.max_result_bytes,
            ..JobStoreOptions::default()
        }
    }
}

impl RedisOptions {
    pub fn from_settings(settings: &Settings) -> Self {
        RedisOptions {
            server: settings.server.redis_server.clone(),
            password: settings.server.redis_passwd.clone(),
            pool_size: settings.server.redis_pool_size,
            reclaim_idle: settings.server.reclaim_idle(),
            key_prefix: settings.server.redis_key_prefix.clone(),
        }
    }
}

/// The Redis job store alone (for `inferq dead-letters`).
pub fn redis_job_store(
    settings: &Settings,
    instance_id: &str,
    stop: CancellationToken,
) -> Result<Arc<RedisJobStore>, BuildError> {
    Ok(RedisJobStore::start(
        RedisOptions::from_settings(settings),
        JobStoreOptions::from_settings(settings, instance_id),
        ResultWaiters::new(),
        stop,
    )?)
}

/// The queue service of one instance; its Redis tasks stop with `stop`.
pub fn queue_service(
    settings: &Settings,
    instance_id: String,
    store: StoreKind,
    stop: &CancellationToken,
) -> Result<Arc<QueueService>, BuildError> {
    let codes = CodeTable::new(&settings.err_code);
    let waiters = ResultWaiters::new();
    let job_options = JobStoreOptions::from_settings(settings, &instance_id);
    let redis = RedisOptions::from_settings(settings);
    let seen: Arc<dyn SeenKeys> = match store {
        StoreKind::Memory => Arc::new(MemorySeenKeys::new(MEMORY_SEEN_KEYS)),
        StoreKind::Redis => Arc::new(RedisSeenKeys::new(&redis)?),
    };
    let jobs: Arc<dyn JobStore> = match store {
        StoreKind::Memory => Arc::new(MemoryJobStore::new(job_options, Arc::clone(&waiters))),
        StoreKind::Redis => {
            tracing::info!(redis = %redis.display_addr(), pool = redis.pool_size, "using the Redis Streams backend");
            super::jobs::timed::TimedJobStore::wrap(RedisJobStore::start(
                redis.clone(),
                job_options,
                Arc::clone(&waiters),
                stop.clone(),
            )?)
        }
    };
    let opts = ServiceOptions {
        instance_id: instance_id.clone(),
        session: SessionOptions {
            expired_code: codes.code(ErrorKind::QueueTimeout),
            empty_result_code: codes.code(ErrorKind::InferFail),
            ..SessionOptions::default()
        },
        wait_for_store: settings.server.wait_for_store,
        max_calls_waiting_for_store: settings.server.max_calls_waiting_for_store,
        ..ServiceOptions::default()
    };
    if settings.async_services.is_empty() {
        return Ok(QueueService::new(jobs, seen, waiters, opts, None));
    }
    let eas_store: Arc<dyn EasStore> = match store {
        StoreKind::Memory => Arc::new(MemoryEasStore::new()),
        StoreKind::Redis => RedisEasStore::start(&redis, stop.clone())?,
    };
    let eas = EasQueues::new(
        eas_store,
        settings,
        ResultCodes {
            dead_letter: codes.code(ErrorKind::InferFail),
            max_deliveries: settings.server.max_deliveries,
        },
    )?;
    tracing::info!(services = ?settings.async_services.keys().collect::<Vec<_>>(), "asynchronous services");
    Ok(QueueService::new(jobs, seen, waiters, opts, Some(eas)))
}
