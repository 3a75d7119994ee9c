//! The PAI-EAS queue service's conventions that more than one component
//! speaks: header and tag names, the Dispatch name of a service's input
//! queue, and how an input payload becomes a model's parameters and a model's
//! output a sink payload.

use serde_json::{Map, Value};
use thiserror::Error;

/// The prefix of a `Hello.queue` that names a PAI-EAS service's input.
pub const INPUT_QUEUE_PREFIX: &str = "async:";

/// The `Hello.queue` (and `Stats`) name of `service`'s input queue.
pub fn input_queue_name(service: &str) -> String {
    format!("{INPUT_QUEUE_PREFIX}{service}")
}

/// The tag that carries an item's request id.
pub const REQUEST_ID_TAG: &str = "requestId";

/// The request headers a client sends, as attributes name them.
pub const HEADER_USER: &str = "X-EAS-QueueService-Redis-Uid";
pub const HEADER_GROUP: &str = "X-EAS-QueueService-Redis-Gid";
pub const HEADER_PRIORITY: &str = "X-EAS-QueueService-Priority";

/// The most items one `get` returns.
pub const MAX_GET_LENGTH: u32 = 10_000;

/// The most payload bytes one `get` returns (at least one item, however
/// large): a reply stays well under the gRPC message cap between gateway and
/// queue, and a client cannot make the queue copy a whole queue at once.
pub const MAX_GET_BYTES: usize = 16 << 20;

/// The largest `_window_` of a watch; a larger one is served with this.
pub const MAX_WATCH_WINDOW: u32 = 1_000;

/// An input payload that is not JSON.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("the payload is not JSON: {0}")]
pub struct PayloadError(String);

/// Turns a model's input payload into its parameters: a JSON object is passed
/// as it is, any other JSON value as `{"instances": value}`.
pub fn payload_params(data: &[u8]) -> Result<Map<String, Value>, PayloadError> {
    match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => {
            let mut m = Map::new();
            m.insert("instances".into(), other);
            Ok(m)
        }
        Err(e) => Err(PayloadError(e.to_string())),
    }
}

/// Turns a model's output into the sink payload: `{"predictions": X}` becomes
/// X; None when there is nothing to write (an empty output).
pub fn sink_payload(output_json: &[u8]) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(output_json).ok()?;
    let value = match value {
        Value::Object(mut m) if m.len() == 1 && m.contains_key("predictions") => {
            m.remove("predictions").unwrap_or(Value::Null)
        }
        v => v,
    };
    let empty = match &value {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if empty {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_parameters() {
        let p = payload_params(br#"{"a": 1}"#).expect("object");
        assert_eq!(p["a"], 1);
        let p = payload_params(b"[1, 2]").expect("list");
        assert_eq!(p["instances"], serde_json::json!([1, 2]));
        assert!(payload_params(b"not json").is_err());
    }

    #[test]
    fn outputs_become_sink_payloads() {
        assert_eq!(
            sink_payload(br#"{"predictions": [0.5]}"#).as_deref(),
            Some(&b"[0.5]"[..])
        );
        assert_eq!(sink_payload(b"{}"), None);
        assert_eq!(sink_payload(br#"{"predictions": null}"#), None);
        assert_eq!(sink_payload(br#""""#), None);
        assert_eq!(
            sink_payload(br#"{"p": 1}"#).as_deref(),
            Some(&br#"{"p":1}"#[..])
        );
    }
}
