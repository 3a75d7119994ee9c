//! Connections to Redis, for both Redis stores.
//!
//! A deadpool-redis pool makes and checks the connections (`RedisPoolSize`).
//! The commands of the request path go over a few of them held long
//! (`HOT_CONNECTIONS`, used round robin): redis-rs multiplexes a connection,
//! so concurrent commands on it are pipelined, and no health check (PING) is
//! paid per command, as it would be on every `pool.get()`. A held connection
//! that fails is dropped, and the next use takes a fresh one from the pool,
//! which checks it. Blocking reads and the pub/sub subscription get
//! connections of their own ([`RedisConnections::dedicated`],
//! [`RedisConnections::pubsub`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::{Manager, Pool, Runtime};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use crate::queue::error::StoreError;

/// Pooled connections held for the request path.
const HOT_CONNECTIONS: usize = 4;

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

pub(crate) struct RedisConnections {
    client: redis::Client,
    pool: Pool,
    hot: Vec<Mutex<Option<Arc<deadpool_redis::Connection>>>>,
    next: AtomicUsize,
}

impl RedisConnections {
    /// Builds the pool; connections are made on first use.
    pub(crate) fn new(info: redis::ConnectionInfo, pool_size: usize) -> Result<Self, StoreError> {
        let client = redis::Client::open(info.clone()).map_err(unavailable)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(3)));
        let manager = Manager::new_with_config(info, config).map_err(unavailable)?;
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .wait_timeout(Some(Duration::from_secs(3)))
            .create_timeout(Some(Duration::from_secs(2)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(unavailable)?;
        Ok(RedisConnections {
            client,
            pool,
            hot: (0..HOT_CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// A connection for one command or pipeline: one of the held ones.
    pub(crate) async fn get(&self) -> Result<HotConnection<'_>, StoreError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.hot.len();
        let held = self.hot[slot].lock().clone();
        let pooled = match held {
            Some(c) => c,
            None => {
                let c = Arc::new(self.pool.get().await.map_err(unavailable)?);
                let mut s = self.hot[slot].lock();
                Arc::clone(s.get_or_insert(c))
            }
        };
        Ok(HotConnection {
            conn: (**pooled).clone(),
            pooled,
            slot,
            owner: self,
        })
    }

    /// A connection of its own, without a response timeout (for blocking
    /// commands, which bound themselves).
    pub(crate) async fn dedicated(&self) -> Result<MultiplexedConnection, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)
    }

    /// A pub/sub connection.
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }

    /// Drops a held connection that failed, back to the pool's care.
    fn drop_hot(&self, slot: usize, pooled: &Arc<deadpool_redis::Connection>) {
        let mut s = self.hot[slot].lock();
        if s.as_ref().is_some_and(|c| Arc::ptr_eq(c, pooled)) {
            *s = None;
        }
    }
}

/// One use of a hot connection; reports a broken connection so that the
/// next use takes a fresh one from the pool.
pub(crate) struct HotConnection<'a> {
    conn: MultiplexedConnection,
    pooled: Arc<deadpool_redis::Connection>,
    slot: usize,
    owner: &'a RedisConnections,
}

impl HotConnection<'_> {
    fn check<T>(&self, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &r {
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.is_unrecoverable_error()
            {
                self.owner.drop_hot(self.slot, &self.pooled);
            }
        }
        r
    }
}

impl redis::aio::ConnectionLike for HotConnection<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.conn.req_packed_command(cmd).await;
            self.check(r)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.check(r)
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
