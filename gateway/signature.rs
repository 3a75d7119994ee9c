//! go-infer's signed envelope: the string that is signed, and its signatures.
//!
//! The signed string takes every top-level field but `signData` (and `encData`,
//! `extra`), sorted by name, as `key=value` joined by `&`, then `&key=<secret>`.
//! Two client families render values differently, so the verifier accepts
//! either [`Canonical`] form:
//! - [`Canonical::Python`] (go-infer's Python client): objects as
//!   `json.dumps(sort_keys=True, ensure_ascii=False, separators=(',',':'))`,
//!   other values with `str()` (`True`, `None`, `1.0`, `[1, 2]`).
//! - [`Canonical::Go`] (Go's encoding/json, as go-infer's server re-encodes):
//!   `<`, `>`, `&`, U+2028/9 escaped as `\u003c` etc., whole floats without
//!   `.0`, top-level lists left out.
//!
//! SHA256: `signData = base64(lowercase_hex(sha256(string)))`, compared in
//! constant time. SM2: SM2-with-SM3, default ID `1234567812345678`,
//! `signData = base64(r‖s)`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sm2::dsa::signature::{Signer, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use subtle::ConstantTimeEq;

/// SM2's default distinguishing ID, as go-infer and gmssl use it.
pub const SM2_DEFAULT_ID: &str = "1234567812345678";

/// Top-level fields that are never part of the signed string.
const UNSIGNED_FIELDS: [&str; 3] = ["signData", "encData", "extra"];

/// Which client family's rendering to build the signed string with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonical {
    Python,
    Go,
}

/// The string a client signed, for `secret`, in one rendering.
pub fn signed_string(fields: &Map<String, Value>, secret: &str, style: Canonical) -> String {
    let mut out = String::with_capacity(256);
    // serde_json's Map is a BTreeMap: keys come sorted by byte order.
    for (k, v) in fields {
        if UNSIGNED_FIELDS.contains(&k.as_str()) {
            continue;
        }
        if style == Canonical::Go && v.is_array() {
            continue;
        }
        out.push_str(k);
        out.push('=');
        match style {
            Canonical::Python => write_python_top(&mut out, v),
            Canonical::Go => write_go_top(&mut out, v),
        }
        out.push('&');
    }
    out.push_str("key=");
    out.push_str(secret);
    out
}

/// True when `matches` accepts the signed string in Python's form or, only if
/// that fails, in Go's form (rendered only then, and tried only if different).
pub fn verify_either_form(
    fields: &Map<String, Value>,
    secret: &str,
    matches: impl Fn(&str) -> bool,
) -> bool {
    let py = signed_string(fields, secret, Canonical::Python);
    if matches(&py) {
        return true;
    }
    let go = signed_string(fields, secret, Canonical::Go);
    go != py && matches(&go)
}

/// `base64(lowercase_hex(sha256(s)))`.
pub fn sha256_sign(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    B64.encode(hex::encode(digest))
}

/// True when `sign_data` is the SHA256 signature of `signed`.
pub fn sha256_verify(signed: &str, sign_data: &str) -> bool {
    // Constant time over equal lengths; lengths are public (base64 of 64 hex chars).
    sha256_sign(signed)
        .as_bytes()
        .ct_eq(sign_data.as_bytes())
        .into()
}

/// SM2 signature of `s` as `base64(r‖s)`.
pub fn sm2_sign(key: &SigningKey, s: &str) -> String {
    let sig: Signature = key.sign(s.as_bytes());
    B64.encode(sig.to_bytes())
}

/// The SM2 signature in `sign_data` (`base64(r‖s)`), if well formed.
pub fn sm2_signature(sign_data: &str) -> Option<Signature> {
    let raw = B64.decode(sign_data.trim()).ok()?;
    Signature::from_slice(&raw).ok()
}

/// True when `sig` is an SM2 signature over `signed`.
pub fn sm2_verify(key: &VerifyingKey, signed: &str, sig: &Signature) -> bool {
    key.verify(signed.as_bytes(), sig).is_ok()
}

/// Why an SM2 key in the settings cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Sm2KeyError {
    #[error("not base64: {0}")]
    NotBase64(String),
    #[error("neither hex nor base64")]
    NotHexOrBase64,
    #[error("not a valid SM2 private key")]
    InvalidPrivateKey,
    #[error("SM2 key: {0}")]
    Signing(String),
    #[error("not a valid SM2 public key point")]
    InvalidPublicKey,
}

/// The signing key for go-infer's `SM2PrivateKey` (base64 of the 32-byte scalar).
pub fn sm2_signing_key(private_b64: &str) -> Result<SigningKey, Sm2KeyError> {
    let raw = B64
        .decode(private_b64.trim())
        .map_err(|e| Sm2KeyError::NotBase64(e.to_string()))?;
    let secret = sm2::SecretKey::from_slice(&raw).map_err(|_| Sm2KeyError::InvalidPrivateKey)?;
    SigningKey::new(SM2_DEFAULT_ID, &secret).map_err(|e| Sm2KeyError::Signing(e.to_string()))
}

/// A verifying key from a SEC1 point (`04‖x‖y`, or `x‖y`), hex or base64.
pub fn sm2_verifying_key(public: &str) -> Result<VerifyingKey, Sm2KeyError> {
    let t = public.trim();
    let mut raw = match hex::decode(t) {
        Ok(b) => b,
        Err(_) => B64.decode(t).map_err(|_| Sm2KeyError::NotHexOrBase64)?,
    };
    if raw.len() == 64 {
        raw.insert(0, 0x04);
    }
    VerifyingKey::from_sec1_bytes(SM2_DEFAULT_ID, &raw).map_err(|_| Sm2KeyError::InvalidPublicKey)
}

// ---- rendering ----

fn write_python_top(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Object(_) => write_json(out, v, Canonical::Python),
        other => write_python_repr(out, other),
    }
}

fn write_go_top(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Number(n) => write_go_number(out, n),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("<nil>"),
        other => write_json(out, other, Canonical::Go),
    }
}

/// Python's `str()` of a decoded JSON value (used for top-level non-objects).
fn write_python_repr(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Number(n) => write_python_number(out, n),
        Value::String(s) => {
            out.push('\'');
            for c in s.chars() {
                match c {
                    '\'' => out.push_str("\\'"),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c => out.push(c),
                }
            }
            out.push('\'');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_repr(out, &Value::String(k.clone()));
                out.push_str(": ");
                write_python_repr(out, item);
            }
            out.push('}');
        }
    }
}

/// Compact JSON with sorted keys, non-ASCII left as UTF-8.
fn write_json(out: &mut String, v: &Value, style: Canonical) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match style {
            Canonical::Python => write_python_number(out, n),
            Canonical::Go => write_go_number(out, n),
        },
        Value::String(s) => write_json_string(out, s, style),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item, style);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, k, style);
                out.push(':');
                write_json(out, item, style);
            }
            out.push('}');
        }
    }
}

fn write_json_string(out: &mut String, s: &str, style: Canonical) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' if style == Canonical::Python => out.push_str("\\b"),
            '\u{c}' if style == Canonical::Python => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style == Canonical::Go => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's float repr: shortest digits; exponent form below 1e-4 or from 1e16,
/// with a sign and at least two exponent digits (`1e+16`, `1.5e-07`).
fn write_python_number(out: &mut String, n: &serde_json::Number) {
    if let Some(f) = float_only(n) {
        let a = f.abs();
        if f == 0.0 || (1e-4..1e16).contains(&a) {
            let s = format!("{f:?}");
            out.push_str(&s);
        } else {
            out.push_str(&exponent_form(f, 2));
        }
    } else {
        out.push_str(&n.to_string());
    }
}

/// Go's encoding/json float64: whole numbers without `.0`; exponent form below
/// 1e-6 or from 1e21 (`1e+21`, `1e-07`).
fn write_go_number(out: &mut String, n: &serde_json::Number) {
    let f = match float_only(n) {
        Some(f) => f,
        None => {
            out.push_str(&n.to_string());
            return;
        }
    };
    let a = f.abs();
    if f == 0.0 || (1e-6..1e21).contains(&a) {
        if f.fract() == 0.0 && a < 1e21 {
            out.push_str(&format!("{}", f as i128));
        } else {
            out.push_str(&format!("{f}"));
        }
    } else {
        out.push_str(&exponent_form(f, 2));
    }
}

fn float_only(n: &serde_json::Number) -> Option<f64> {
    if n.is_f64() {
        n.as_f64()
    } else {
        None
    }
}

/// `1.5e-07` style: shortest mantissa, signed exponent of at least `width` digits.
fn exponent_form(f: f64, width: usize) -> String {
    let s = format!("{f:e}"); // e.g. "1.5e-7", "1e16"
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mant}e{sign}{digits:0>width$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn reference_vector() {
        let f = fields(json!({
            "appId": "3EA25569454745D01219080B779F021F",
            "version": "1",
            "signType": "SHA256",
            "signData": "ignored",
            "encType": "plain",
            "timestamp": 1658716494,
            "data": {"text": "test text", "image": ""}
        }));
        let s = signed_string(&f, "41DF0E6AE27B5282C07EF5124642A352", Canonical::Python);
        assert_eq!(s, "appId=3EA25569454745D01219080B779F021F&data={\"image\":\"\",\"text\":\"test text\"}&encType=plain&signType=SHA256&timestamp=1658716494&version=1&key=41DF0E6AE27B5282C07EF5124642A352");
        assert_eq!(
            sha256_sign(&s),
            "ZWFiMDgxNGVjYTM0Yjg3YWJmMmMyMWJlY2QyNGExYmVhOTYxZjYxZDkzNmRjYzQ3ZTc0NjdjYWVkZWE1Y2U4Yg=="
        );
        assert!(verify_either_form(
            &f,
            "41DF0E6AE27B5282C07EF5124642A352",
            |c| {
                sha256_verify(c,
            "ZWFiMDgxNGVjYTM0Yjg3YWJmMmMyMWJlY2QyNGExYmVhOTYxZjYxZDkzNmRjYzQ3ZTc0NjdjYWVkZWE1Y2U4Yg==")
            }
        ));
        assert!(!sha256_verify(&s, "ZWFi"));
    }

    #[test]
    fn python_and_go_forms_differ_where_documented() {
        let f = fields(
            json!({"data": {"a": 1.0, "t": "<&>", "n": {"z": 1, "b": [1.5, "中"]}}, "l": [1, 2]}),
        );
        let py = signed_string(&f, "k", Canonical::Python);
        let go = signed_string(&f, "k", Canonical::Go);
        assert_eq!(
            py,
            "data={\"a\":1.0,\"n\":{\"b\":[1.5,\"中\"],\"z\":1},\"t\":\"<&>\"}&l=[1, 2]&key=k"
        );
        assert_eq!(go, "data={\"a\":1,\"n\":{\"b\":[1.5,\"中\"],\"z\":1},\"t\":\"\\u003c\\u0026\\u003e\"}&key=k");
    }

    #[test]
    fn float_forms() {
        let mut s = String::new();
        write_python_number(&mut s, &serde_json::Number::from_f64(1e16).unwrap());
        assert_eq!(s, "1e+16");
        s.clear();
        write_python_number(&mut s, &serde_json::Number::from_f64(1.5e-7).unwrap());
        assert_eq!(s, "1.5e-07");
        s.clear();
        write_go_number(&mut s, &serde_json::Number::from_f64(1e21).unwrap());
        assert_eq!(s, "1e+21");
        s.clear();
        write_go_number(&mut s, &serde_json::Number::from_f64(2.5).unwrap());
        assert_eq!(s, "2.5");
    }

    #[test]
    fn sm2_reference_key_and_round_trip() {
        let sk = sm2_signing_key("JShsBOJL0RgPAoPttEB1hgtPAvCikOl0V1oTOYL7k5U=").unwrap();
        let pt = sk.verifying_key().to_sec1_bytes();
        assert_eq!(
            hex::encode(&pt[1..33]),
            "4f1df6069a086ac4e1d1c4ad60a3ab26a19ba5fc97a45dedf386c7480dcab18f"
        );
        assert_eq!(
            hex::encode(&pt[33..]),
            "a745c3a0f6dba6ed6993d0367d9f6b12c06dc01d4079c9eda3f807e21f93edc6"
        );
        let vk = sm2_verifying_key(&hex::encode(&pt)).unwrap();
        let sig = sm2_signature(&sm2_sign(&sk, "hello")).unwrap();
        assert!(sm2_verify(&vk, "hello", &sig));
        assert!(!sm2_verify(&vk, "hellO", &sig));
        assert!(sm2_signature("not base64!").is_none());
    }
}
