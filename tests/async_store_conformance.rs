//! One conformance suite for the asynchronous-queue stores ([`EasStore`]),
//! run on the memory store and on the Redis store against a real
//! redis-server. Plus Redis-only cases: two queue instances sharing one Redis,
//! and the holds of a vanished instance ending after the hold time.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, TestDir};
use inferq::config::QueueLimits;
use inferq::queue::eas::memory::MemoryEasStore;
use inferq::queue::eas::redis::RedisEasStore;
use inferq::queue::eas::store::{
    Completion, EasStore, GetLimit, ItemState, Negative, NewItem, QueueRef, Selector, TakeOptions,
};
use inferq::queue::{RedisOptions, StoreError};
use tokio_util::sync::CancellationToken;

fn limits(max_length: u64, auto_evict: bool) -> QueueLimits {
    QueueLimits {
        enabled: true,
        max_length,
        max_payload_bytes: 1 << 20,
        auto_evict,
    }
}

fn item(data: &str, priority: u32) -> NewItem {
    let mut tags = BTreeMap::new();
    tags.insert("requestId".to_string(), format!("rid-{data}"));
    tags.insert(
        "kind".to_string(),
        if data.starts_with('x') { "x" } else { "plain" }.to_string(),
    );
    NewItem {
        request_id: format!("rid-{data}"),
        tags,
        data: data.as_bytes().to_vec(),
        priority,
    }
}

fn take(max: usize) -> TakeOptions {
    TakeOptions {
        from: 0,
        max,
        tags: BTreeMap::new(),
        auto_commit: false,
        sink_room: false,
    }
}

fn data(items: &[inferq::queue::eas::store::Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| String::from_utf8_lossy(&i.data).to_string())
        .collect()
}

fn redis_store(
    redis: &RedisServer,
    prefix: &str,
    hold: Duration,
    stop: &CancellationToken,
) -> Arc<RedisEasStore> {
    let opts = RedisOptions {
        server: redis.addr(),
        password: String::new(),
        pool_size: 4,
        reclaim_idle: hold,
        key_prefix: prefix.to_string(),
    };
    RedisEasStore::start(&opts, stop.clone()).expect("redis store")
}

/// The contract, on one store.
async fn conformance(store: Arc<dyn EasStore>) {
    let q = QueueRef::sink("svc");
    let none = limits(0, true);
    // put, indexes increase, get from an index, newest, by request id.
    let a = store
        .put(&q, item("a", 0), &limits(100, false))
        .await
        .unwrap();
    let b = store
        .put(&q, item("b", 0), &limits(100, false))
        .await
        .unwrap();
    let c = store
        .put(&q, item("xc", 0), &limits(100, false))
        .await
        .unwrap();
    assert!(a < b && b < c);
    let empty = BTreeMap::new();
    let got = store
        .get(&q, &Selector::From(b), GetLimit::items(10), &empty, false)
        .await
        .unwrap();
    assert_eq!(data(&got), ["b", "xc"]);
    assert_eq!(got[0].tags["requestId"], "rid-b");
    let got = store
        .get(&q, &Selector::Newest, GetLimit::items(1), &empty, false)
        .await
        .unwrap();
    assert_eq!(data(&got), ["xc"]);
    let got = store
        .get(
            &q,
            &Selector::RequestId("rid-a".into()),
            GetLimit::items(1),
            &empty,
            false,
        )
        .await
        .unwrap();
    assert_eq!(got[0].index, a);
    let mut only_x = BTreeMap::new();
    only_x.insert("kind".to_string(), "x".to_string());
    let got = store
        .get(&q, &Selector::From(0), GetLimit::items(10), &only_x, false)
        .await
        .unwrap();
    assert_eq!(data(&got), ["xc"]);
    // full: refused without eviction, oldest evicted with it.
    let err = store
        .put(&q, item("d", 0), &limits(3, false))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QueueFull { .. }));
    store.put(&q, item("d", 0), &limits(3, true)).await.unwrap();
    let got = store
        .get(&q, &Selector::From(0), GetLimit::items(10), &empty, false)
        .await
        .unwrap();
    assert_eq!(data(&got), ["b", "xc", "d"]);
    let stats = store.stats(&q).await.unwrap();
    assert_eq!(
        (stats.length, stats.first_index, stats.last_index),
        (3, Some(b), got.last().map(|i| i.index))
    );

    // take holds items for a consumer; others do not get them; release returns them.
    let t = store.take(&q, "c1", &take(2), &none).await.unwrap();
    assert_eq!(data(&t), ["b", "xc"]);
    assert_eq!(t[0].deliveries, 1);
    assert_eq!(store.held_by(&q, "c1").await.unwrap(), 2);
    assert!(
        matches!(store.search(&q, b).await.unwrap(), Some(ItemState::Held { consumer }) if consumer == "c1")
    );
    let t2 = store.take(&q, "c2", &take(5), &none).await.unwrap();
    assert_eq!(data(&t2), ["d"]);
    assert_eq!(store.release(&q, "c1").await.unwrap(), 2);
    assert_eq!(store.held_by(&q, "c1").await.unwrap(), 0);
    let t3 = store.take(&q, "c3", &take(5), &none).await.unwrap();
    assert_eq!(data(&t3), ["b", "xc"]);
    assert_eq!(t3[0].deliveries, 2, "a redelivery is counted");
    // commit removes, whoever holds the item.
    assert_eq!(store.remove(&q, &[b, 999_999]).await.unwrap(), 1);
    assert_eq!(store.held_by(&q, "c3").await.unwrap(), 1);
    // take from an index, and with auto commit (removed as taken).
    store.release(&q, "c3").await.unwrap();
    store.release(&q, "c2").await.unwrap();
    let mut from = take(5);
    from.from = c + 1;
    from.auto_commit = true;
    let t4 = store.take(&q, "c4", &from, &none).await.unwrap();
    assert_eq!(data(&t4), ["d"]);
    assert_eq!(store.stats(&q).await.unwrap().length, 1);
    // negative commit.
    assert!(store
        .reject(
            &q,
            Negative {
                index: c,
                code: 500,
                reason: "bad".into()
            }
        )
        .await
        .unwrap());
    assert!(
        matches!(store.search(&q, c).await.unwrap(), Some(ItemState::Rejected(n)) if n.code == 500 && n.reason == "bad")
    );
    let stats = store.stats(&q).await.unwrap();
    assert_eq!((stats.length, stats.negatives), (0, 1));
    assert_eq!(stats.last_negative.unwrap().reason, "bad");
    assert_eq!(store.search(&q, 123_456).await.unwrap(), None);

    // priority lane first; search counts the items ahead; truncate.
    let p = QueueRef::input("svc");
    let n1 = store
        .put(&p, item("n1", 0), &limits(100, false))
        .await
        .unwrap();
    let n2 = store
        .put(&p, item("n2", 0), &limits(100, false))
        .await
        .unwrap();
    let h1 = store
        .put(&p, item("h1", 1), &limits(100, false))
        .await
        .unwrap();
    assert_eq!(
        store.search(&p, h1).await.unwrap(),
        Some(ItemState::Ready { ahead: 0 })
    );
    assert_eq!(
        store.search(&p, n2).await.unwrap(),
        Some(ItemState::Ready { ahead: 2 })
    );
    assert_eq!(
        store.search(&p, n1).await.unwrap(),
        Some(ItemState::Ready { ahead: 1 })
    );
    let t = store.take(&p, "d1", &take(2), &none).await.unwrap();
    assert_eq!(data(&t), ["h1", "n1"]);

    // complete: input items removed, results written to the sink; an item
    // already gone writes nothing; an empty result writes nothing.
    let result = |rid: &str, d: &str| NewItem {
        request_id: rid.into(),
        tags: [("requestId".to_string(), rid.to_string())].into(),
        data: d.as_bytes().to_vec(),
        priority: 0,
    };
    store
        .complete(
            "svc",
            &[
                Completion {
                    index: h1,
                    result: Some(result("rid-h1", "H")),
                },
                Completion {
                    index: n1,
                    result: None,
                },
                Completion {
                    index: 424_242,
                    result: Some(result("gone", "G")),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(store.stats(&p).await.unwrap().length, 1);
    let sink = store
        .get(&q, &Selector::From(0), GetLimit::items(10), &empty, false)
        .await
        .unwrap();
    assert_eq!(data(&sink), ["H"]);
    assert_eq!(sink[0].tags["requestId"], "rid-h1");

    // backpressure: take from the input no more than the sink has room for,
    // counting items already held.
    let mut bp = take(10);
    bp.sink_room = true;
    let sink_limits = limits(2, false);
    let t = store.take(&p, "d2", &bp, &sink_limits).await.unwrap();
    assert_eq!(data(&t), ["n2"], "sink holds 1 of 2: room for one");
    store
        .put(&p, item("n3", 0), &limits(100, false))
        .await
        .unwrap();
    let t = store.take(&p, "d2", &bp, &sink_limits).await.unwrap();
    assert!(t.is_empty(), "the held item takes the last room");
    let t = store.take(&p, "d2", &bp, &limits(2, true)).await.unwrap();
    assert_eq!(data(&t), ["n3"], "an evicting sink never blocks");

    // truncate removes everything below the index, held or not.
    assert_eq!(store.truncate(&p, u64::MAX).await.unwrap(), 2);
    assert_eq!(store.stats(&p).await.unwrap().length, 0);
    assert_eq!(store.held_by(&p, "d2").await.unwrap(), 0);

    // one watch per consumer.
    assert!(store.claim_watch(&q, "w1").await.unwrap());
    assert!(!store.claim_watch(&q, "w1").await.unwrap());
    assert!(store.claim_watch(&q, "w2").await.unwrap());
    store.end_watch(&q, "w1").await.unwrap();
    assert!(store.claim_watch(&q, "w1").await.unwrap());

    // queues are separate per service.
    let other = QueueRef::sink("other");
    assert_eq!(store.stats(&other).await.unwrap().length, 0);

    // a get returns at most its byte cap of payloads, at least one item;
    // with delete, only what it returned is removed.
    let big = QueueRef::sink("big");
    for c in ["a", "b", "c"] {
        store
            .put(&big, item(&c.repeat(1000), 0), &limits(100, false))
            .await
            .unwrap();
    }
    let capped = |bytes| GetLimit { items: 10, bytes };
    let got = store
        .get(&big, &Selector::From(0), capped(2500), &empty, false)
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "2 x 1000 bytes fit in 2500");
    let got = store
        .get(&big, &Selector::From(0), capped(10), &empty, false)
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "one item, however large");
    let got = store
        .get(&big, &Selector::From(0), capped(2000), &empty, true)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        store.stats(&big).await.unwrap().length,
        1,
        "the third stays"
    );
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(Arc::new(MemoryEasStore::new())).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let dir = TestDir::new();
    let redis = RedisServer::start(dir.path());
    let stop = CancellationToken::new();
    conformance(redis_store(&redis, "t1:", Duration::from_secs(5), &stop)).await;
    stop.cancel();
}

#[tokio::test]
async fn redis_holds_of_a_vanished_instance_end_and_live_ones_are_renewed() {
    let dir = TestDir::new();
    let redis = RedisServer::start(dir.path());
    let hold = Duration::from_millis(600);
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let a = redis_store(&redis, "t2:", hold, &stop_a);
    let b = redis_store(&redis, "t2:", hold, &stop_b);
    let q = QueueRef::input("svc");
    let none = limits(0, true);
    for d in ["1", "2"] {
        a.put(&q, item(d, 0), &limits(100, false)).await.unwrap();
    }
    // Both instances see the same queue.
    assert_eq!(b.stats(&q).await.unwrap().length, 2);
    let held_a = a.take(&q, "on-a", &take(1), &none).await.unwrap();
    assert_eq!(data(&held_a), ["1"]);
    let held_b = b.take(&q, "on-b", &take(1), &none).await.unwrap();
    assert_eq!(data(&held_b), ["2"]);
    // Instance b vanishes (stops renewing); a keeps renewing its hold.
    stop_b.cancel();
    tokio::time::sleep(hold * 3).await;
    let t = a.take(&q, "other", &take(5), &none).await.unwrap();
    assert_eq!(data(&t), ["2"], "b's hold ended; a's renewed hold did not");
    assert_eq!(t[0].deliveries, 2);
    assert_eq!(a.held_by(&q, "on-a").await.unwrap(), 1);
    stop_a.cancel();
}
