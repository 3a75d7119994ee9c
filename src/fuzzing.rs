//! What the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh` with cargo-fuzz)
//! feed hostile bytes to, and the properties they check beyond "no panic".
//! The same functions run over the stored corpus in the ordinary test suite
//! (`tests/fuzz_corpus.rs`), so a crash once found stays fixed.
//!
//! - [`envelope`]: go-infer's request body: parse, both canonical signed
//!   strings, the checks of [`Authenticator::verify`]; a body signed with the
//!   secret must verify;
//! - [`eas_request`]: a PAI-EAS query string and headers, through the parse
//!   step of every operation;
//! - [`dispatcher_messages`]: protobuf `DispatcherMessage`s, valid or not, as
//!   a dispatcher's stream to a real queue service (memory store): the
//!   session ends, and every job is answered or back in the queue.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use serde_json::Value;

use crate::config::{ApiSettings, Settings, StoreKind};
use crate::gateway::auth::Authenticator;
use crate::gateway::eas::cmd::{commit::Commit, delete::Delete, get::Get, search::Search};
use crate::gateway::eas::query::{parse_duration, Query};
use crate::gateway::envelope::Envelope;
use crate::gateway::signature::{self, Canonical};
use crate::proto::eas::INPUT_QUEUE_PREFIX;
use crate::proto::{
    dispatcher_message, job_result, queue_message, DispatcherMessage, Job, JobResult,
};

const APP_ID: &str = "FUZZAPP";
const SECRET: &str = "fuzz-secret";
const SM2_KEY: &str = "JShsBOJL0RgPAoPttEB1hgtPAvCikOl0V1oTOYL7k5U=";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let mut api = ApiSettings {
            sm2_private_key: Some(SM2_KEY.into()),
            allow_sign_plain: vec!["PLAIN".into()],
            ..ApiSettings::default()
        };
        api.app_id_secret.insert(APP_ID.into(), SECRET.into());
        api.app_id_secret.insert("PLAIN".into(), "x".into());
        Authenticator::new(&api).expect("fuzz settings")
    })
}

/// go-infer's envelope: `data` as a request body.
pub fn envelope(data: &[u8]) {
    let Ok(mut env) = Envelope::from_body(data) else {
        return;
    };
    for style in [Canonical::Python, Canonical::Go] {
        let _ = signature::signed_string(&env.fields, SECRET, style);
    }
    let auth = authenticator();
    // Far clocks (the window check must not overflow), then the client's own
    // time, so that the signature checks are reached.
    for now in [i64::MIN, -1, 0, i64::MAX, env.timestamp] {
        let _ = auth.verify(&env, now);
    }
    let _ = signature::sm2_signature(&env.sign_data);
    // Signed with the secret, the same fields verify (SHA256 for our appId).
    if env.app_id == APP_ID && env.version.as_deref().is_none_or(|v| v == "1") {
        env.sign_type = "SHA256".into();
        if let Some(Value::String(t)) = env.fields.get_mut("signType") {
            *t = "SHA256".into();
        }
        let signed = signature::signed_string(&env.fields, SECRET, Canonical::Python);
        env.sign_data = signature::sha256_sign(&signed);
        assert!(
            auth.verify(&env, env.timestamp).is_ok(),
            "a body signed with its secret must verify"
        );
    }
}

/// A PAI-EAS request: the first line of `data` is the query string, each
/// further line a `name: value` header.
pub fn eas_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or_default();
    let mut headers = http::HeaderMap::new();
    for line in lines.take(32) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::try_from(name.trim()),
            http::HeaderValue::try_from(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    let Ok(uri) = format!("/api/predict/svc?{query}").parse::<http::Uri>() else {
        return;
    };
    let Ok(q) = Query::of(&uri) else {
        return;
    };
    let _ = Get::parse(&q, &headers);
    let _ = Commit::parse(&q);
    let _ = Delete::parse(&q);
    let _ = Search::parse(&q);
    let _ = q.tags();
    for key in ["_timeout_", "_window_", "_length_", "_index_"] {
        let _ = q.duration(key);
        let _ = q.number::<u64>(key);
        let _ = q.flag(key);
        if let Some(v) = q.get(key) {
            let _ = parse_duration(v);
        }
    }
}

/// Jobs put in the queue before the stream starts.
const FUZZ_JOBS: usize = 3;

/// A dispatcher's stream: `data` is a sequence of length-prefixed (one
/// byte) protobuf messages; one that does not decode ends the stream with an
/// error, as tonic's decoder does.
pub fn dispatcher_messages(data: &[u8]) {
    run_messages(data);
}

/// Jobs answered and jobs waiting again after one stream.
#[derive(Debug, PartialEq)]
struct Outcome {
    answered: usize,
    ready: usize,
}

fn run_messages(data: &[u8]) -> Outcome {
    let mut messages = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        messages.push(DispatcherMessage::decode(chunk).map_err(|e| e.to_string()));
        rest = tail;
        if messages.len() >= 64 {
            break;
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run_session(messages))
}

async fn run_session(messages: Vec<Result<DispatcherMessage, String>>) -> Outcome {
    let (queue, credits) = match messages.first() {
        Some(Ok(DispatcherMessage {
            kind: Some(dispatcher_message::Kind::Hello(h)),
        })) if !h.queue.is_empty() && !h.queue.starts_with(INPUT_QUEUE_PREFIX) => {
            (h.queue.clone(), h.max_workers as usize)
        }
        _ => ("q".to_string(), 0),
    };
    let settings = Settings::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let service =
        crate::queue::build::queue_service(&settings, "fuzz".into(), StoreKind::Memory, &stop)
            .expect("memory queue service");
    let mut callers = Vec::new();
    for n in 0..FUZZ_JOBS {
        let s = Arc::clone(&service);
        let job = Job {
            request_id: format!("j{n}"),
            queue: queue.clone(),
            api_path: "/api/echo".into(),
            params_json: b"{}".to_vec(),
            deadline_unix_ms: crate::proto::unix_ms_now() + 60_000,
            ..Job::default()
        };
        callers.push(tokio::spawn(async move { s.call(job).await }));
    }
    tokio::task::yield_now().await;
    // The Hello first; the rest once the jobs it can hold were sent, so
    // that results can meet their jobs.
    let (to_queue, inbound) = tokio::sync::mpsc::channel(64);
    let mut messages = messages.into_iter();
    if let Some(first) = messages.next() {
        let _ = to_queue.try_send(first.map_err(tonic::Status::internal));
    }
    let mut outbound =
        service.dispatch(tokio_stream::wrappers::ReceiverStream::new(inbound).boxed());
    let expected_jobs = credits.min(FUZZ_JOBS);
    let session = async {
        let mut jobs = 0;
        while jobs < expected_jobs {
            match outbound.recv().await {
                Some(Ok(m)) if matches!(m.kind, Some(queue_message::Kind::Job(_))) => jobs += 1,
                Some(_) => {}
                None => break,
            }
        }
        for m in messages {
            let _ = to_queue.try_send(m.map_err(tonic::Status::internal));
        }
        drop(to_queue);
        while outbound.recv().await.is_some() {}
    };
    let ended = tokio::time::timeout(Duration::from_secs(10), session).await;
    assert!(
        ended.is_ok(),
        "a dispatcher's stream that ended ends its session"
    );
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    // Every job was answered or is back in the queue: none lost, none held.
    let mut answered = 0;
    for c in callers {
        if c.is_finished() {
            if let Ok(Ok(JobResult {
                outcome:
                    Some(
                        job_result::Outcome::OutputJson(_)
                        | job_result::Outcome::OutputBytes(_)
                        | job_result::Outcome::Error(_),
                    ),
                ..
            })) = c.await
            {
                answered += 1;
            }
        } else {
            c.abort();
        }
    }
    let stats = service.stats(Some(&queue)).await.expect("memory stats");
    let (ready, leased) = stats
        .iter()
        .fold((0, 0), |(r, l), s| (r + s.ready, l + s.leased));
    assert_eq!(leased, 0, "a gone dispatcher holds no job");
    assert_eq!(
        ready as usize + answered,
        FUZZ_JOBS,
        "each job is answered or waits again"
    );
    stop.cancel();
    Outcome {
        answered,
        ready: ready as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Drain, Hello, JobError};

    fn framed(messages: &[DispatcherMessage]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            let bytes = m.encode_to_vec();
            out.push(u8::try_from(bytes.len()).unwrap());
            out.extend(bytes);
        }
        out
    }

    fn hello(max_workers: u32) -> DispatcherMessage {
        DispatcherMessage {
            kind: Some(dispatcher_message::Kind::Hello(Hello {
                node_id: "n".into(),
                queue: "q".into(),
                api_paths: vec!["/api/echo".into()],
                max_workers,
            })),
        }
    }

    fn result(id: &str, r: job_result::Outcome) -> DispatcherMessage {
        DispatcherMessage {
            kind: Some(dispatcher_message::Kind::Result(JobResult {
                request_id: id.into(),
                outcome: Some(r),
            })),
        }
    }

    #[test]
    fn results_meet_their_jobs_and_the_rest_wait_again() {
        let ok = |id: &str| result(id, job_result::Outcome::OutputJson(b"{}".to_vec()));
        let err = job_result::Outcome::Error(JobError {
            code: 9999,
            message: "boom".into(),
        });
        let drain = DispatcherMessage {
            kind: Some(dispatcher_message::Kind::Drain(Drain {})),
        };
        let all = framed(&[hello(3), ok("j0"), result("j1", err), ok("j2"), drain]);
        assert_eq!(
            run_messages(&all),
            Outcome {
                answered: 3,
                ready: 0
            }
        );
        let one = framed(&[hello(3), ok("j1"), ok("j1"), ok("unknown")]);
        assert_eq!(
            run_messages(&one),
            Outcome {
                answered: 1,
                ready: 2
            }
        );
        // Found by this target: a result without an outcome completed its
        // job with nothing (a PAI-EAS item then left no result in the sink).
        let empty = DispatcherMessage {
            kind: Some(dispatcher_message::Kind::Result(JobResult {
                request_id: "j0".into(),
                outcome: None,
            })),
        };
        assert_eq!(
            run_messages(&framed(&[hello(3), empty])),
            Outcome {
                answered: 1,
                ready: 2
            }
        );
        let gone = framed(&[hello(2)]);
        assert_eq!(
            run_messages(&gone),
            Outcome {
                answered: 0,
                ready: 3
            }
        );
        assert_eq!(
            run_messages(&[7, 1, 2]),
            Outcome {
                answered: 0,
                ready: 3
            }
        );
    }
}
