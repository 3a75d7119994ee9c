//! TLS on inferq's listeners: the certificate chain and key of
//! `TLS.CertFile` / `TLS.KeyFile`, read once at start, offered with ALPN
//! `h2` and `http/1.1` (gRPC clients insist on `h2`; browsers and go-infer's
//! client speak either). [`ListenerTls`] says which listeners use it:
//! `TLS.Public` for REST, gRPC, admin and a dispatcher's metrics,
//! `TLS.Internal` for `inferq queue`. The handshake runs in the
//! connection's own task, within the header-read timeout
//! ([`super::connections`]).

use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;

/// Why the TLS settings cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("TLS.{key} {path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("TLS: certificate and key do not go together: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS acceptors of one process's listeners; `None` serves plain TCP.
#[derive(Clone, Default)]
pub struct ListenerTls {
    public: Option<TlsAcceptor>,
    internal: Option<TlsAcceptor>,
}

impl ListenerTls {
    /// Reads `TLS.CertFile` and `TLS.KeyFile` (when set).
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        if settings.cert_file.is_empty() {
            return Ok(ListenerTls::default());
        }
        let acceptor = TlsAcceptor::from(Arc::new(server_config(
            Path::new(&settings.cert_file),
            Path::new(&settings.key_file),
        )?));
        Ok(ListenerTls {
            public: settings.public.then(|| acceptor.clone()),
            internal: settings.internal.then_some(acceptor),
        })
    }

    /// For REST, public gRPC, admin and metrics listeners.
    pub fn public(&self) -> Option<TlsAcceptor> {
        self.public.clone()
    }

    /// For `inferq queue`'s listener.
    pub fn internal(&self) -> Option<TlsAcceptor> {
        self.internal.clone()
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let file_error = |k: &'static str, p: &Path, e: &dyn std::fmt::Display| TlsError::File {
        key: k,
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error("CertFile", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("CertFile", cert, &e))?;
    if chain.is_empty() {
        return Err(file_error("CertFile", cert, &"no PEM certificate in it"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("KeyFile", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cert: &str, key: &str) -> TlsSettings {
        TlsSettings {
            cert_file: cert.into(),
            key_file: key.into(),
            ..TlsSettings::default()
        }
    }

    #[test]
    fn no_certificate_serves_plain_tcp() {
        let tls = ListenerTls::load(&TlsSettings::default()).unwrap();
        assert!(tls.public().is_none() && tls.internal().is_none());
    }

    #[test]
    fn unreadable_or_empty_files_name_their_key() {
        let e = ListenerTls::load(&settings("/nonexistent/cert.pem", "/nonexistent/key.pem"))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("TLS.CertFile /nonexistent/cert.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not PEM\n").unwrap();
        let e = ListenerTls::load(&settings(empty.to_str().unwrap(), "/nonexistent/key.pem"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
