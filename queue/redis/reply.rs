//! Reading Redis replies: the few shapes both stores get back from their
//! commands and scripts, read without panicking on a reply of another shape.

use redis::Value;

use crate::queue::error::StoreError;

/// A string reply's bytes (an integer as its decimal digits); None for any
/// other shape.
pub fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// A string reply as text (invalid UTF-8 replaced).
pub fn string(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A string reply's bytes, empty for any other shape.
pub fn bytes_or_empty(v: &Value) -> Vec<u8> {
    bytes(v).unwrap_or_default()
}

/// A count: an integer reply or a decimal string; 0 for anything else
/// (negative counts included).
pub fn count(v: &Value) -> u64 {
    match v {
        Value::Int(i) => (*i).max(0) as u64,
        other => string(other).and_then(|t| t.parse().ok()).unwrap_or(0),
    }
}

/// The error for a reply of the wrong shape to `what`.
pub fn unexpected(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis: unexpected reply to {what}"))
}

// ---- Stream replies ----

/// An XREADGROUP reply (RESP2 array or RESP3 map) → [(stream key, entries)].
/// Stream entries as read: (entry id, field/value list).
pub type Entries = Vec<(String, Vec<Value>)>;

/// `[id, [field, value, ...]]` → (id, fields).
pub fn entry(v: &Value) -> Option<(String, Vec<Value>)> {
    let Value::Array(parts) = v else { return None };
    let id = string(parts.first()?)?;
    match parts.get(1) {
        Some(Value::Array(fields)) => Some((id, fields.clone())),
        _ => None,
    }
}

pub fn field(fields: &[Value], name: &str) -> Option<Vec<u8>> {
    fields.chunks(2).find_map(|kv| match kv {
        [k, v] if string(k).as_deref() == Some(name) => bytes(v),
        _ => None,
    })
}

pub fn stream_reply(v: Value) -> Vec<(String, Entries)> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop()?;
                    let key = kv.pop()?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(m) => m,
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, entries)| {
            let key = string(&k)?;
            let Value::Array(es) = entries else {
                return None;
            };
            Some((key, es.iter().filter_map(entry).collect()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_any_shape_are_read_without_panics() {
        assert_eq!(
            bytes(&Value::BulkString(b"ab".to_vec())),
            Some(b"ab".to_vec())
        );
        assert_eq!(
            string(&Value::SimpleString("OK".into())).as_deref(),
            Some("OK")
        );
        assert_eq!(string(&Value::Int(7)).as_deref(), Some("7"));
        assert_eq!(bytes(&Value::Nil), None);
        assert_eq!(bytes_or_empty(&Value::Nil), Vec::<u8>::new());
        assert_eq!(count(&Value::Int(-3)), 0);
        assert_eq!(count(&Value::BulkString(b"12".to_vec())), 12);
        assert_eq!(count(&Value::BulkString(b"x".to_vec())), 0);
        assert_eq!(count(&Value::Array(vec![])), 0);
    }
}
