//! The error codes a client sees, go-infer's `ErrCode` table.
//!
//! Every failure that reaches a client is one [`ErrorKind`]. Its number and
//! default message come from go-infer and can be changed per deployment in the
//! `ErrCode` section of settings.yaml (`SignFail: {code: 9800, msg: "..."}`), so
//! [`CodeTable`] is built once from the settings and shared by the gateway.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A kind of failure, named as in go-infer's `ErrCode` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// 9800: the signature does not verify.
    SignFail,
    /// 9801: a required field is missing or of the wrong type, or the body is not JSON.
    SignFail1,
    /// 9802: the timestamp is outside the allowed window.
    SignFail2,
    /// 9803: unknown signType, or `plain` for an appId not allowed it.
    SignFail3,
    /// 9805: unknown appId.
    SignFail5,
    /// 9806: version is not "1".
    SignFail6,
    /// 9701: the model's parameter check rejected the parameters.
    ApiEntryFail,
    /// 9702: the request could not be queued (queue full, queue service unreachable).
    SendMsgFail,
    /// 9703: the result could not be received.
    RecvMsgFail,
    /// 9709: no model serves this path.
    UnknownApiPath,
    /// 9900: the dispatcher has no such model.
    UnknownApi,
    /// 9997: no result within `Server.MessageTimeout`.
    QueueTimeout,
    /// 9998: inference failed.
    InferFail,
    /// 9810 (inferq): the request body is larger than `API.MaxBodyBytes`.
    BodyTooLarge,
    /// 9807 (inferq): this signature was already used within the timestamp
    /// window (`API.RefuseReplays`).
    SignReplay,
    /// 9811 (inferq): the client is over its `API.RateLimit`.
    RateLimited,
    /// 9812 (inferq): the gateway holds its `API.MaxInFlightBytes` of bodies.
    ServerBusy,
    /// 9813 (inferq): an `Idempotency-Key` used again, within the result
    /// TTL, for a request with other parameters.
    IdempotencyConflict,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 18] = [
        ErrorKind::SignFail,
        ErrorKind::SignFail1,
        ErrorKind::SignFail2,
        ErrorKind::SignFail3,
        ErrorKind::SignFail5,
        ErrorKind::SignFail6,
        ErrorKind::ApiEntryFail,
        ErrorKind::SendMsgFail,
        ErrorKind::RecvMsgFail,
        ErrorKind::UnknownApiPath,
        ErrorKind::UnknownApi,
        ErrorKind::QueueTimeout,
        ErrorKind::InferFail,
        ErrorKind::BodyTooLarge,
        ErrorKind::SignReplay,
        ErrorKind::RateLimited,
        ErrorKind::ServerBusy,
        ErrorKind::IdempotencyConflict,
    ];

    /// The key of this kind in settings.yaml's `ErrCode` section.
    pub fn key(self) -> &'static str {
        match self {
            ErrorKind::SignFail => "SignFail",
            ErrorKind::SignFail1 => "SignFail1",
            ErrorKind::SignFail2 => "SignFail2",
            ErrorKind::SignFail3 => "SignFail3",
            ErrorKind::SignFail5 => "SignFail5",
            ErrorKind::SignFail6 => "SignFail6",
            ErrorKind::ApiEntryFail => "ApiEntryFail",
            ErrorKind::SendMsgFail => "SendMsgFail",
            ErrorKind::RecvMsgFail => "RecvMsgFail",
            ErrorKind::UnknownApiPath => "UnknownApiPath",
            ErrorKind::UnknownApi => "UnknownApi",
            ErrorKind::QueueTimeout => "QueueTimeout",
            ErrorKind::InferFail => "InferFail",
            ErrorKind::BodyTooLarge => "BodyTooLarge",
            ErrorKind::SignReplay => "SignReplay",
            ErrorKind::RateLimited => "RateLimited",
            ErrorKind::ServerBusy => "ServerBusy",
            ErrorKind::IdempotencyConflict => "IdempotencyConflict",
        }
    }

    /// go-infer's default number and message.
    pub fn default_entry(self) -> CodeEntry {
        let (code, msg) = match self {
            ErrorKind::SignFail => (9800, "signature verification failed"),
            ErrorKind::SignFail1 => (9801, "missing or malformed field"),
            ErrorKind::SignFail2 => (9802, "timestamp out of the allowed window"),
            ErrorKind::SignFail3 => (9803, "unsupported signType"),
            ErrorKind::SignFail5 => (9805, "unknown appId"),
            ErrorKind::SignFail6 => (9806, "unsupported version"),
            ErrorKind::ApiEntryFail => (9701, "invalid parameters"),
            ErrorKind::SendMsgFail => (9702, "request could not be queued"),
            ErrorKind::RecvMsgFail => (9703, "result could not be received"),
            ErrorKind::UnknownApiPath => (9709, "unknown api path"),
            ErrorKind::UnknownApi => (9900, "no such model on the dispatcher"),
            ErrorKind::QueueTimeout => (9997, "timeout waiting for the result"),
            ErrorKind::InferFail => (9998, "inference failed"),
            ErrorKind::BodyTooLarge => (9810, "request body too large"),
            ErrorKind::SignReplay => (9807, "signature already used (replay)"),
            ErrorKind::RateLimited => (9811, "too many requests"),
            ErrorKind::ServerBusy => (9812, "server busy"),
            ErrorKind::IdempotencyConflict => {
                (9813, "idempotency key already used with other parameters")
            }
        };
        CodeEntry {
            code,
            msg: msg.to_string(),
        }
    }
}

/// One row of the `ErrCode` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CodeEntry {
    pub code: i32,
    #[serde(default)]
    pub msg: String,
}

/// The codes in force: go-infer's defaults overridden by settings.yaml.
#[derive(Debug, Clone)]
pub struct CodeTable {
    entries: BTreeMap<ErrorKind, CodeEntry>,
}

impl CodeTable {
    /// Builds the table; unknown keys in `overrides` are ignored here (the
    /// settings loader warns about them).
    pub fn new(overrides: &BTreeMap<String, CodeEntry>) -> Self {
        let entries = ErrorKind::ALL
            .iter()
            .map(|kind| {
                let mut entry = kind.default_entry();
                if let Some(o) = overrides.get(kind.key()) {
                    entry.code = o.code;
                    if !o.msg.is_empty() {
                        entry.msg = o.msg.clone();
                    }
                }
                (*kind, entry)
            })
            .collect();
        CodeTable { entries }
    }

    pub fn code(&self, kind: ErrorKind) -> i32 {
        self.entries[&kind].code
    }

    pub fn msg(&self, kind: ErrorKind) -> &str {
        &self.entries[&kind].msg
    }

    /// The kind a number stands for, if any (for mapping to gRPC statuses).
    pub fn kind_of(&self, code: i32) -> Option<ErrorKind> {
        self.entries
            .iter()
            .find(|(_, e)| e.code == code)
            .map(|(k, _)| *k)
    }
}

impl Default for CodeTable {
    fn default() -> Self {
        CodeTable::new(&BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_number_and_keep_default_message_when_empty() {
        let mut o = BTreeMap::new();
        o.insert(
            "SignFail".to_string(),
            CodeEntry {
                code: 1234,
                msg: String::new(),
            },
        );
        let t = CodeTable::new(&o);
        assert_eq!(t.code(ErrorKind::SignFail), 1234);
        assert_eq!(t.msg(ErrorKind::SignFail), "signature verification failed");
        assert_eq!(t.code(ErrorKind::InferFail), 9998);
        assert_eq!(t.kind_of(1234), Some(ErrorKind::SignFail));
    }
}
