//! [`RedisEasStore`]: asynchronous queues in Redis, shared by every queue
//! instance on that Redis.
//!
//! Every operation is one call of one Lua script (`redis.lua`), so each
//! is atomic; the script's header lists the keys. Holds carry an end time:
//! this store renews the holds of its own consumers every third of the hold
//! time, and a hold nobody renews (its queue instance died) is ready again
//! when it ends, for the next `take` anywhere. Other instances' changes are
//! not signalled here, so waiters also poll ([`POLL`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::{Script, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::store::{
    ChangeSignals, Completion, EasStore, GetLimit, Item, ItemState, Negative, NewItem, QueueRef,
    QueueStats, Selector, TakeOptions,
};
use crate::config::QueueLimits;
use crate::proto::unix_ms_now;
use crate::queue::error::StoreError;
use crate::queue::redis::pool::{unavailable, RedisConnections};
use crate::queue::redis::{reply, RedisOptions};

const SCRIPT: &str = include_str!("redis.lua");

/// How often waiters look again for changes made by other instances.
pub const POLL: Duration = Duration::from_millis(50);

pub struct RedisEasStore {
    conns: RedisConnections,
    prefix: String,
    hold: Duration,
    script: Script,
    signals: ChangeSignals,
    /// This instance's consumers, whose holds and watch claims it renews.
    live: Mutex<HashSet<(QueueRef, String)>>,
}

/// The JSON meta of an item as the script stores it.
#[derive(serde::Deserialize)]
struct Meta {
    #[serde(default)]
    r: String,
    /// Tags; an empty object comes back from Lua as `[]` or `{}`.
    #[serde(default)]
    t: serde_json::Value,
    #[serde(default)]
    p: u32,
    #[serde(default)]
    n: u32,
}

fn tags_json(tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".into())
}

/// Items from the script's flat reply: index, meta JSON, data, ...
fn items(flat: Vec<Value>) -> Result<Vec<Item>, StoreError> {
    flat.chunks(3)
        .map(|c| {
            let [index, meta, data] = c else {
                return Err(reply::unexpected("a read"));
            };
            let meta: Meta = serde_json::from_slice(&reply::bytes_or_empty(meta))
                .map_err(|_| reply::unexpected("a read (meta)"))?;
            let tags = match meta.t {
                serde_json::Value::Object(m) => m
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_default()))
                    .collect(),
                _ => BTreeMap::new(),
            };
            Ok(Item {
                index: reply::count(index),
                request_id: meta.r,
                tags,
                data: reply::bytes_or_empty(data),
                priority: meta.p,
                deliveries: meta.n,
            })
        })
        .collect()
}

impl RedisEasStore {
    /// Builds the pool (connections are made on first use) and starts the
    /// renewal of this instance's holds; it stops with `stop`.
    pub fn start(opts: &RedisOptions, stop: CancellationToken) -> Result<Arc<Self>, StoreError> {
        let conns = RedisConnections::new(opts.connection_info()?, opts.pool_size)?;
        let store = Arc::new(RedisEasStore {
            conns,
            prefix: format!("{}eas:", opts.key_prefix),
            hold: opts.reclaim_idle,
            script: Script::new(SCRIPT),
            signals: ChangeSignals::default(),
            live: Mutex::new(HashSet::new()),
        });
        tokio::spawn(Arc::clone(&store).renew(stop));
        Ok(store)
    }

    fn prefix(&self, q: &QueueRef) -> String {
        let side = if q.sink { "sink" } else { "in" };
        format!("{}{}:{side}:", self.prefix, q.service)
    }

    /// Runs operation `op` of the script on queue `q`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        q: &QueueRef,
        op: &str,
        args: &[Vec<u8>],
    ) -> Result<T, StoreError> {
        let mut inv = self.script.key(self.prefix(q));
        inv.key(self.prefix(&QueueRef::sink(&q.service)));
        inv.arg(op);
        for a in args {
            inv.arg(a.as_slice());
        }
        let mut c = self.conns.get().await?;
        inv.invoke_async::<T>(&mut c).await.map_err(unavailable)
    }

    fn until(&self) -> i64 {
        unix_ms_now() + self.hold.as_millis() as i64
    }

    fn notify(&self, q: &QueueRef) {
        self.signals.notify(q);
        if q.sink {
            self.signals.notify(&QueueRef::input(&q.service));
        }
    }

    async fn renew(self: Arc<Self>, stop: CancellationToken) {
        let period = (self.hold / 3).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let live: Vec<(QueueRef, String)> = self.live.lock().iter().cloned().collect();
            let mut by_queue: BTreeMap<QueueRef, Vec<String>> = BTreeMap::new();
            for (q, c) in live {
                by_queue.entry(q).or_default().push(c);
            }
            for (q, consumers) in by_queue {
                let mut args = vec![arg(self.until())];
                args.extend(consumers.iter().map(arg));
                if let Err(e) = self.run::<i64>(&q, "renew", &args).await {
                    tracing::warn!(queue = %q.name(), error = %e, "could not renew holds; they end after the hold time and go to other consumers");
                }
            }
        }
    }
}

/// One script argument.
fn arg(v: impl redis::ToRedisArgs) -> Vec<u8> {
    v.to_redis_args().concat()
}

#[async_trait]
impl EasStore for RedisEasStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn put(
        &self,
        q: &QueueRef,
        item: NewItem,
        limits: &QueueLimits,
    ) -> Result<u64, StoreError> {
        let index: i64 = self
            .run(
                q,
                "put",
                &[
                    arg(&item.request_id),
                    arg(tags_json(&item.tags)),
                    arg(item.priority),
                    arg(item.data.as_slice()),
                    arg(limits.max_length),
                    arg(if limits.auto_evict { "1" } else { "0" }),
                ],
            )
            .await?;
        if index < 0 {
            return Err(StoreError::QueueFull {
                queue: q.name(),
                limit: limits.max_length as usize,
            });
        }
        self.notify(q);
        Ok(index as u64)
    }

    async fn get(
        &self,
        q: &QueueRef,
        which: &Selector,
        limit: GetLimit,
        tags: &BTreeMap<String, String>,
        delete: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let (mode, at) = match which {
            Selector::From(i) => ("from", i.to_string()),
            Selector::Newest => ("newest", String::new()),
            Selector::RequestId(r) => ("rid", r.clone()),
        };
        let flat: Vec<Value> = self
            .run(
                q,
                "get",
                &[
                    arg(mode),
                    arg(at),
                    arg(limit.items.max(1)),
                    arg(tags_json(tags)),
                    arg(if delete { "1" } else { "0" }),
                    arg(limit.bytes),
                ],
            )
            .await?;
        let found = items(flat)?;
        if delete && !found.is_empty() {
            self.notify(q);
        }
        Ok(found)
    }

    async fn take(
        &self,
        q: &QueueRef,
        consumer: &str,
        opts: &TakeOptions,
        sink_limits: &QueueLimits,
    ) -> Result<Vec<Item>, StoreError> {
        if opts.max == 0 {
            return Ok(Vec::new());
        }
        let bounded = opts.sink_room && sink_limits.enabled && !sink_limits.auto_evict;
        self.live.lock().insert((q.clone(), consumer.to_string()));
        let flat: Vec<Value> = self
            .run(
                q,
                "take",
                &[
                    arg(consumer),
                    arg(opts.from),
                    arg(opts.max),
                    arg(tags_json(&opts.tags)),
                    arg(if opts.auto_commit { "1" } else { "0" }),
                    arg(self.until()),
                    arg(unix_ms_now()),
                    arg(if bounded { "1" } else { "0" }),
                    arg(sink_limits.max_length),
                ],
            )
            .await?;
        let taken = items(flat)?;
        if opts.auto_commit && !taken.is_empty() {
            self.notify(q);
        }
        Ok(taken)
    }

    async fn remove(&self, q: &QueueRef, indexes: &[u64]) -> Result<u64, StoreError> {
        if indexes.is_empty() {
            return Ok(0);
        }
        let args: Vec<_> = indexes.iter().map(arg).collect();
        let n: u64 = self.run(q, "remove", &args).await?;
        if n > 0 {
            self.notify(q);
        }
        Ok(n)
    }

    async fn reject(&self, q: &QueueRef, negative: Negative) -> Result<bool, StoreError> {
        let n: u64 = self
            .run(
                q,
                "reject",
                &[
                    arg(negative.index),
                    arg(negative.code),
                    arg(&negative.reason),
                ],
            )
            .await?;
        if n > 0 {
            self.notify(q);
        }
        Ok(n > 0)
    }

    async fn truncate(&self, q: &QueueRef, before: u64) -> Result<u64, StoreError> {
        let n: u64 = self.run(q, "truncate", &[arg(before)]).await?;
        if n > 0 {
            self.notify(q);
        }
        Ok(n)
    }

    async fn release(&self, q: &QueueRef, consumer: &str) -> Result<u64, StoreError> {
        self.live.lock().remove(&(q.clone(), consumer.to_string()));
        let n: u64 = self.run(q, "release", &[arg(consumer)]).await?;
        if n > 0 {
            self.notify(q);
        }
        Ok(n)
    }

    async fn held_by(&self, q: &QueueRef, consumer: &str) -> Result<u64, StoreError> {
        self.run(q, "held", &[arg(consumer)]).await
    }

    async fn complete(&self, service: &str, done: &[Completion]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let mut args = vec![arg(done.len())];
        for c in done {
            args.push(arg(c.index));
            match &c.result {
                Some(r) => {
                    args.push(arg("1"));
                    args.push(arg(&r.request_id));
                    args.push(arg(tags_json(&r.tags)));
                    args.push(arg(r.data.as_slice()));
                }
                None => {
                    args.extend([arg("0"), arg(""), arg("{}"), arg("")]);
                }
            }
        }
        let input = QueueRef::input(service);
        let written: u64 = self.run(&input, "complete", &args).await?;
        self.notify(&input);
        if written > 0 {
            self.signals.notify(&QueueRef::sink(service));
        }
        Ok(())
    }

    async fn newest_index(&self, q: &QueueRef) -> Result<u64, StoreError> {
        let mut c = self.conns.get().await?;
        let seq: Option<u64> = redis::cmd("GET")
            .arg(format!("{}seq", self.prefix(q)))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(seq.unwrap_or(0))
    }

    async fn stats(&self, q: &QueueRef) -> Result<QueueStats, StoreError> {
        let v: Vec<Value> = self.run(q, "stats", &[arg(unix_ms_now())]).await?;
        let [length, first, last, held, consumers, negs, last_neg, neg] = v.as_slice() else {
            return Err(reply::unexpected("stats"));
        };
        let opt = |v: &Value| reply::string(v).and_then(|t| t.parse::<u64>().ok());
        let last_negative = opt(last_neg).and_then(|index| {
            let n: serde_json::Value = serde_json::from_slice(&reply::bytes_or_empty(neg)).ok()?;
            Some(Negative {
                index,
                code: n.get("code")?.as_i64()? as i32,
                reason: n.get("reason")?.as_str()?.to_string(),
            })
        });
        Ok(QueueStats {
            length: reply::count(length),
            first_index: opt(first),
            last_index: opt(last),
            held: reply::count(held),
            consumers: reply::count(consumers),
            negatives: reply::count(negs),
            last_negative,
        })
    }

    async fn search(&self, q: &QueueRef, index: u64) -> Result<Option<ItemState>, StoreError> {
        let v: Vec<Value> = self.run(q, "search", &[arg(index)]).await?;
        let kind = v.first().and_then(reply::string).unwrap_or_default();
        let detail = v.get(1).and_then(reply::string).unwrap_or_default();
        Ok(match kind.as_str() {
            "ready" => Some(ItemState::Ready {
                ahead: detail.parse().unwrap_or(0),
            }),
            "held" => Some(ItemState::Held { consumer: detail }),
            "rejected" => {
                let n: serde_json::Value =
                    serde_json::from_str(&detail).map_err(|_| reply::unexpected("search"))?;
                Some(ItemState::Rejected(Negative {
                    index,
                    code: n.get("code").and_then(|c| c.as_i64()).unwrap_or(0) as i32,
                    reason: n
                        .get("reason")
                        .and_then(|r| r.as_str())
                        .unwrap_or_default()
                        .to_string(),
                }))
            }
            _ => None,
        })
    }

    async fn claim_watch(&self, q: &QueueRef, consumer: &str) -> Result<bool, StoreError> {
        let ok: i64 = self
            .run(
                q,
                "claim_watch",
                &[arg(consumer), arg(self.until()), arg(unix_ms_now())],
            )
            .await?;
        if ok == 1 {
            self.live.lock().insert((q.clone(), consumer.to_string()));
        }
        Ok(ok == 1)
    }

    async fn end_watch(&self, q: &QueueRef, consumer: &str) -> Result<(), StoreError> {
        self.live.lock().remove(&(q.clone(), consumer.to_string()));
        self.run::<i64>(q, "end_watch", &[arg(consumer)]).await?;
        Ok(())
    }

    fn signal(&self, q: &QueueRef) -> Arc<Notify> {
        self.signals.get(q)
    }

    fn poll_interval(&self) -> Option<Duration> {
        Some(POLL)
    }
}
