//! One file per PAI-EAS operation, each with `parse` (from the request, a
//! 400 naming the key when it is malformed) and `apply` (through the
//! [`crate::proto::EasLink`], to an HTTP answer).

pub mod attributes;
pub mod commit;
pub mod delete;
pub mod get;
pub mod put;
pub mod search;
pub mod watch;
