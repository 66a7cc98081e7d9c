//! rustls client configuration from the seed's `mqtt.tls` keys.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsSettings;

/// A TLS setting that cannot be used, and the key that holds it, so the
/// configuration check can name the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

fn error(key: &'static str, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        key,
        message: message.to_string(),
    }
}

/// Built when the configuration is checked (every file read and parsed,
/// the client key matched to its certificate) and again when the bridge
/// connects; rumqttc's reconnects reuse that one.
pub fn client_config(tls: &TlsSettings) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    match &tls.ca_certs {
        Some(path) => {
            const KEY: &str = "mqtt.tls.ca_certs";
            for cert in certificates(KEY, path)? {
                roots
                    .add(cert)
                    .map_err(|e| error(KEY, format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error("mqtt.tls", e))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| error("mqtt.tls.ca_certs", e))?;
    let mode = match (tls.cert_reqs, tls.insecure_cert) {
        (Some(false), _) => Mode::NoVerification,
        (_, true) => Mode::SkipHostname,
        _ => Mode::Full,
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            inner: verifier,
            mode,
        }));
    let config = match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key_path)) => {
            const KEY: &str = "mqtt.tls.keyfile";
            let chain = certificates("mqtt.tls.certfile", cert)?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
                error(
                    KEY,
                    format!("{}: no usable PEM private key ({e})", key_path.display()),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => error(
                        KEY,
                        format!(
                            "{} is not the key of the certificate in mqtt.tls.certfile ({})",
                            key_path.display(),
                            cert.display()
                        ),
                    ),
                    e => error(KEY, format!("{}: {e}", key_path.display())),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Every PEM certificate in `path`; none is an error.
fn certificates(
    key: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(error(
            key,
            format!("no PEM certificate in {}", path.display()),
        ));
    }
    Ok(certs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    /// `insecure_cert: true`: the chain must still lead to the CA, but
    /// the name may differ (self-signed plant certificates).
    SkipHostname,
    /// `cert_reqs: false`: anything goes.
    NoVerification,
}

#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    mode: Mode,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.mode {
            Mode::NoVerification => Ok(ServerCertVerified::assertion()),
            Mode::Full => {
                self.inner
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            Mode::SkipHostname => match self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            },
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
