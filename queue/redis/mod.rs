//! What both Redis stores share: how to reach Redis ([`RedisOptions`]), the
//! connections ([`pool`]) and reading replies ([`reply`]).

use std::time::Duration;

use redis::IntoConnectionInfo;

use crate::queue::error::StoreError;

pub mod pool;
pub mod reply;

/// How to reach Redis and how to use it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `host:port` (go-infer's `RedisServer`) or a `redis://` / `rediss://` URL
    /// (which may carry an ACL user name and password).
    pub server: String,
    /// go-infer's `RedisPasswd` (requirepass); overrides a URL's password.
    pub password: String,
    /// Most pooled connections.
    pub pool_size: usize,
    /// A job or item held this long by a consumer that does not renew it (its
    /// queue instance died) is handed to another one.
    pub reclaim_idle: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
}

impl RedisOptions {
    /// The address as shown in logs (no password).
    pub fn display_addr(&self) -> String {
        match self.server.split_once('@') {
            Some((scheme_auth, host)) => {
                let scheme = scheme_auth.split("://").next().unwrap_or("redis");
                format!("{scheme}://{host}")
            }
            None => self.server.clone(),
        }
    }

    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo, StoreError> {
        let url = if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("redis://{}", self.server)
        };
        let info = url.as_str().into_connection_info().map_err(|e| {
            StoreError::Unavailable(format!("bad Redis address {}: {e}", self.display_addr()))
        })?;
        if self.password.is_empty() {
            return Ok(info);
        }
        let settings = info.redis_settings().clone().set_password(&self.password);
        Ok(info.set_redis_settings(settings))
    }
}
