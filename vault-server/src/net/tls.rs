//! TLS from PEM files (rustls on ring; TLS 1.2 and 1.3, HTTP/1.1 by ALPN).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ServeError, TlsFiles};

impl TlsFiles {
    /// The acceptor of these files.
    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
        let bad = |what: &str| ServeError::Tls(format!("{what}: {}", self.cert_chain.display()));
        let certs = CertificateDer::pem_file_iter(&self.cert_chain)
            .map_err(|_| bad("cannot read the certificate chain"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("not a PEM certificate chain"))?;
        if certs.is_empty() {
            return Err(bad("no certificate in"));
        }
        // The key's own errors could quote key bytes: a fixed message, naming the file only.
        let key = PrivateKeyDer::from_pem_file(&self.private_key).map_err(|_| {
            ServeError::Tls(format!(
                "cannot read a PEM private key from {}",
                self.private_key.display()
            ))
        })?;
        // ring, as the vault's own crypto: one audited library, no C toolchain for aws-lc. rustls
        // marks it deprecated for lacking post-quantum key exchange; a deliberate choice here.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServeError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ServeError::Tls(format!("certificate and key do not fit: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
