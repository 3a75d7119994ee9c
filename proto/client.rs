//! How gateways and dispatchers reach `inferq.v1.QueueService`, and how the
//! queue knows them:
//!
//! - [`QueueConnector`] makes an [`Endpoint`] per URL, with TLS for
//!   `https://` (the system's roots plus `TLS.CaFile`), and clients that send
//!   the [`InternalToken`] with every call;
//! - [`InternalToken::admits`] is the queue's side of the token: a call
//!   without it is refused (UNAUTHENTICATED) before it reaches the service.

use std::path::Path;
use std::time::Duration;

use subtle::ConstantTimeEq;
use thiserror::Error;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::queue_service_client::QueueServiceClient;

/// A client of the queue service that sends the internal token.
pub type QueueClient = QueueServiceClient<InterceptedService<Channel, InternalToken>>;

/// Why a queue endpoint cannot be used.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum ConnectError {
    #[error("queue endpoint {url}: {message}")]
    Endpoint { url: String, message: String },
    #[error("TLS.CaFile {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("Server.InternalToken: must be printable ASCII without spaces")]
    Token,
}

/// The shared secret of the internal API, as the `authorization` value
/// (`Bearer <token>`); none when not configured.
#[derive(Clone, Default)]
pub struct InternalToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "InternalToken(set)"
        } else {
            "InternalToken(none)"
        })
    }
}

impl InternalToken {
    /// `token` empty: no token.
    pub fn new(token: &str) -> Result<Self, ConnectError> {
        if token.is_empty() {
            return Ok(InternalToken(None));
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ConnectError::Token);
        }
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ConnectError::Token)?;
        Ok(InternalToken(Some(value)))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether a call with these headers may use the internal API: always
    /// when no token is configured; else its `authorization` must match (in
    /// constant time).
    pub fn admits(&self, headers: &http::HeaderMap) -> bool {
        let Some(expected) = &self.0 else {
            return true;
        };
        let Some(got) = headers.get(http::header::AUTHORIZATION) else {
            return false;
        };
        got.as_bytes().ct_eq(expected.as_bytes()).into()
    }
}

impl Interceptor for InternalToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// Endpoints and clients of the queue service, as this process is
/// configured to reach it.
#[derive(Clone, Debug, Default)]
pub struct QueueConnector {
    ca: Option<Certificate>,
    token: InternalToken,
}

impl QueueConnector {
    /// `ca_file`: PEM certificates trusted for `https://` endpoints besides
    /// the system's roots; `token`: the internal token (empty: none).
    pub fn new(ca_file: Option<&Path>, token: &str) -> Result<Self, ConnectError> {
        let ca = match ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| ConnectError::CaFile {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                Some(Certificate::from_pem(pem))
            }
        };
        Ok(QueueConnector {
            ca,
            token: InternalToken::new(token)?,
        })
    }

    /// The endpoint of `url` (`http://` or `https://`), with the keep-alive
    /// and timeouts of an internal link.
    pub fn endpoint(&self, url: &str, connect_timeout: Duration) -> Result<Endpoint, ConnectError> {
        let bad = |message: String| ConnectError::Endpoint {
            url: url.to_string(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(ca.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
        }
        Ok(endpoint)
    }

    /// A client on `channel` that sends the internal token with each call.
    pub fn client(&self, channel: Channel) -> QueueClient {
        QueueServiceClient::with_interceptor(channel, self.token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(a) = auth {
            h.insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_token_admits_only_its_bearer() {
        let t = InternalToken::new("s3cret").unwrap();
        assert!(t.admits(&headers(Some("Bearer s3cret"))));
        assert!(!t.admits(&headers(None)));
        assert!(!t.admits(&headers(Some("Bearer s3cre"))));
        assert!(!t.admits(&headers(Some("Bearer s3cret2"))));
        assert!(!t.admits(&headers(Some("s3cret"))));
        let none = InternalToken::new("").unwrap();
        assert!(!none.is_set());
        assert!(none.admits(&headers(None)), "no token configured: open");
        assert_eq!(
            InternalToken::new("two words").unwrap_err(),
            ConnectError::Token
        );
        assert_eq!(
            InternalToken::new("tab\t").unwrap_err(),
            ConnectError::Token
        );
    }

    #[test]
    fn the_interceptor_sends_the_token() {
        let mut t = InternalToken::new("abc").unwrap();
        let r = t.call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer abc");
        let mut none = InternalToken::default();
        let r = none.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get("authorization").is_none());
    }

    #[test]
    fn endpoints_and_ca_files_are_checked() {
        let c = QueueConnector::default();
        assert!(c
            .endpoint("http://127.0.0.1:1", Duration::from_secs(1))
            .is_ok());
        assert!(c
            .endpoint("https://127.0.0.1:1", Duration::from_secs(1))
            .is_ok());
        assert!(matches!(
            c.endpoint("not a url", Duration::from_secs(1)),
            Err(ConnectError::Endpoint { .. })
        ));
        let missing = QueueConnector::new(Some(Path::new("/nonexistent/ca.pem")), "");
        assert!(
            matches!(&missing, Err(ConnectError::CaFile { path, .. }) if path == "/nonexistent/ca.pem"),
            "{missing:?}"
        );
    }
}
