//! go-infer's envelopes: the fields a signed request must carry, and the JSON
//! every answer has (`appId, code, success, signType, encType, timestamp, data`).

use serde_json::{json, Map, Value};

use crate::codes::ErrorKind;
use crate::model_zoo::Params;

/// The checked fields of a signed request. `fields` keeps every top-level
/// field, since all of them (but signData) are part of the signed string.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub fields: Map<String, Value>,
    pub app_id: String,
    pub sign_type: String,
    pub sign_data: String,
    pub timestamp: i64,
    pub version: Option<String>,
}

/// A field problem: which kind and a detail for the message.
pub type FieldError = (ErrorKind, String);

impl Envelope {
    /// Parses a request body.
    pub fn from_body(body: &[u8]) -> Result<Envelope, FieldError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            (
                ErrorKind::SignFail1,
                format!("body is not valid JSON ({e})"),
            )
        })?;
        match value {
            Value::Object(fields) => Envelope::from_fields(fields),
            _ => Err((ErrorKind::SignFail1, "body is not a JSON object".into())),
        }
    }

    /// Checks the fields of a parsed request.
    pub fn from_fields(fields: Map<String, Value>) -> Result<Envelope, FieldError> {
        let missing = |name: &str, what: &str| (ErrorKind::SignFail1, format!("{name}: {what}"));
        let string = |name: &str| -> Result<String, FieldError> {
            match fields.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(missing(name, "must be a string")),
                None => Err(missing(name, "is required")),
            }
        };
        let app_id = string("appId")?;
        let sign_type = string("signType")?;
        let sign_data = match fields.get("signData") {
            Some(Value::String(s)) => s.clone(),
            None if sign_type == "plain" => String::new(),
            Some(_) => return Err(missing("signData", "must be a string")),
            None => return Err(missing("signData", "is required")),
        };
        let timestamp = match fields.get("timestamp") {
            Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => i,
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => f as i64,
                _ => return Err(missing("timestamp", "must be an integer (unix seconds)")),
            },
            Some(_) => return Err(missing("timestamp", "must be an integer (unix seconds)")),
            None => return Err(missing("timestamp", "is required")),
        };
        match fields.get("data") {
            Some(Value::Object(_)) => {}
            Some(_) => return Err(missing("data", "must be a JSON object")),
            None => return Err(missing("data", "is required")),
        }
        let version = match fields.get("version") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        Ok(Envelope {
            fields,
            app_id,
            sign_type,
            sign_data,
            timestamp,
            version,
        })
    }

    /// The model parameters (`data`); checked to be an object at parse time.
    pub fn take_data(&mut self) -> Params {
        match self.fields.get("data") {
            Some(Value::Object(m)) => m.clone(),
            _ => Params::new(),
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The answer to a successful request: the model output plus `msg` and `requestId`.
pub fn success_body(app_id: &str, request_id: &str, mut output: Params) -> Value {
    output.insert("msg".into(), Value::String("success".into()));
    output.insert("requestId".into(), Value::String(request_id.into()));
    json!({
        "appId": app_id,
        "code": 0,
        "success": true,
        "signType": "plain",
        "encType": "plain",
        "timestamp": now_secs(),
        "data": output,
    })
}

/// The answer to a failed request.
pub fn failure_body(app_id: &str, request_id: &str, code: i32, msg: &str) -> Value {
    json!({
        "appId": app_id,
        "code": code,
        "success": false,
        "signType": "plain",
        "encType": "plain",
        "timestamp": now_secs(),
        "data": {"msg": msg, "requestId": request_id},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors() {
        let e = Envelope::from_body(b"not json").unwrap_err();
        assert_eq!(e.0, ErrorKind::SignFail1);
        let e = Envelope::from_body(b"[1]").unwrap_err();
        assert_eq!(e.0, ErrorKind::SignFail1);
        let e = Envelope::from_body(
            br#"{"appId":"a","signType":"SHA256","signData":"x","timestamp":"1","data":{}}"#,
        )
        .unwrap_err();
        assert!(e.1.starts_with("timestamp"), "{e:?}");
        let e = Envelope::from_body(
            br#"{"appId":"a","signType":"SHA256","signData":"x","timestamp":1}"#,
        )
        .unwrap_err();
        assert!(e.1.starts_with("data"));
        let ok =
            Envelope::from_body(br#"{"appId":"a","signType":"plain","timestamp":1.0,"data":{}}"#)
                .unwrap();
        assert_eq!(ok.timestamp, 1);
        assert_eq!(ok.version, None);
    }
}
