//! [`SeenKeys`]: keys remembered for a while, so that a gateway can tell a
//! signed request it has seen before (a replay) from a new one, across every
//! gateway of the deployment. In memory for one process; in Redis (`SET NX
//! PX`) when the queue instances share one.
//!
//! Keys are fixed-size digests (a gateway sends the SHA-256 of a signature),
//! so an entry costs the same whatever the client sent.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::error::StoreError;
use super::redis::pool::{unavailable, RedisConnections};
use super::redis::RedisOptions;

/// The length of a key: a SHA-256 digest.
pub const KEY_LEN: usize = 32;

#[async_trait]
pub trait SeenKeys: Send + Sync + 'static {
    /// Remembers `key` for `ttl`; true when it was not already remembered.
    async fn first_sighting(&self, key: [u8; KEY_LEN], ttl: Duration) -> Result<bool, StoreError>;
}

/// Keys in this process. At most `capacity`: when full of keys that have not
/// expired, a new one is refused (the request is refused as busy) rather
/// than an old one forgotten, which would let its replay through.
pub struct MemorySeenKeys {
    capacity: usize,
    state: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    until: HashMap<[u8; KEY_LEN], Instant>,
    /// Keys in the order they expire (all share one ttl per deployment, so
    /// insertion order is close to it); expired ones are dropped from the front.
    order: VecDeque<(Instant, [u8; KEY_LEN])>,
}

impl MemorySeenKeys {
    pub fn new(capacity: usize) -> Self {
        MemorySeenKeys {
            capacity: capacity.max(1),
            state: Mutex::default(),
        }
    }
}

#[async_trait]
impl SeenKeys for MemorySeenKeys {
    async fn first_sighting(&self, key: [u8; KEY_LEN], ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut s = self.state.lock();
        while let Some((at, k)) = s.order.front().copied() {
            if at > now {
                break;
            }
            s.order.pop_front();
            if s.until.get(&k).is_some_and(|u| *u <= now) {
                s.until.remove(&k);
            }
        }
        if s.until.get(&key).is_some_and(|u| *u > now) {
            return Ok(false);
        }
        if s.until.len() >= self.capacity {
            return Err(StoreError::Unavailable(format!(
                "{} signatures remembered, none expired yet",
                self.capacity
            )));
        }
        let until = now + ttl;
        s.until.insert(key, until);
        s.order.push_back((until, key));
        Ok(true)
    }
}

/// Keys in Redis, shared by every queue instance on it.
pub struct RedisSeenKeys {
    conns: RedisConnections,
    prefix: String,
}

impl RedisSeenKeys {
    pub fn new(opts: &RedisOptions) -> Result<Self, StoreError> {
        Ok(RedisSeenKeys {
            conns: RedisConnections::new(opts.connection_info()?, 4)?,
            prefix: format!("{}seen:", opts.key_prefix),
        })
    }
}

#[async_trait]
impl SeenKeys for RedisSeenKeys {
    async fn first_sighting(&self, key: [u8; KEY_LEN], ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.conns.get().await?;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}{}", self.prefix, hex::encode(key)))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_is_seen_once_until_it_expires_and_a_full_memory_refuses() {
        let seen = MemorySeenKeys::new(2);
        let ttl = Duration::from_secs(10);
        assert!(seen.first_sighting([1; 32], ttl).await.unwrap());
        assert!(
            !seen.first_sighting([1; 32], ttl).await.unwrap(),
            "a replay"
        );
        assert!(seen.first_sighting([2; 32], ttl).await.unwrap());
        assert!(
            seen.first_sighting([3; 32], ttl).await.is_err(),
            "full of live keys: refused, not forgotten"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            seen.first_sighting([3; 32], ttl).await.unwrap(),
            "expired ones made room"
        );
        assert!(
            seen.first_sighting([1; 32], ttl).await.unwrap(),
            "expired: new again"
        );
    }
}
