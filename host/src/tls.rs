//! rustls client configuration from the seed's `mqtt.tls` keys.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
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
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error("mqtt.tls", e))?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier(tls, provider)?));
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

/// The broker's certificate check as the settings ask for it.
fn verifier(
    tls: &TlsSettings,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Verifier, TlsError> {
    let mode = if tls.insecure_cert {
        Mode::SkipHostname
    } else {
        Mode::Full
    };
    let algorithms = provider.signature_verification_algorithms;
    if tls.cert_reqs == Some(false) {
        // No chain to check, so no roots to find: a machine without a CA
        // store must not fail a setting that asked for none.
        return Ok(Verifier {
            inner: None,
            algorithms,
            mode,
            pinned: Vec::new(),
        });
    }
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    match &tls.ca_certs {
        Some(path) => {
            const KEY: &str = "mqtt.tls.ca_certs";
            for cert in certificates(KEY, path)? {
                roots
                    .add(cert.clone())
                    .map_err(|e| error(KEY, format!("{}: {e}", path.display())))?;
                pinned.push(cert);
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(error(
                    "mqtt.tls.ca_certs",
                    format!(
                        "not set, and the system has no CA certificates to use instead{}: \
                         install them (Debian: ca-certificates) or name the broker's CA here",
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", why.join("; "))
                        }
                    ),
                ));
            }
        }
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| error("mqtt.tls.ca_certs", e))?;
    Ok(Verifier {
        inner: Some(inner),
        algorithms,
        mode,
        pinned,
    })
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
}

#[derive(Debug)]
struct Verifier {
    /// The chain check; none with `cert_reqs: false`, where anything goes
    /// (`mode` then does not matter).
    inner: Option<Arc<WebPkiServerVerifier>>,
    /// For the handshake's signatures, checked in every mode: they prove
    /// the broker holds the key of the certificate it sent.
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    mode: Mode,
    /// The certificates of `ca_certs` as they are. A broker that presents
    /// one of them is trusted directly, as OpenSSL (and so the Python bridge)
    /// does: the usual self-signed broker certificate (`openssl req -x509`)
    /// says `CA:TRUE`, which webpki refuses in a server certificate whatever
    /// the trust anchors, and without this the only way left was
    /// `cert_reqs: false`, no verification at all.
    pinned: Vec<CertificateDer<'static>>,
}

impl Verifier {
    /// `end_entity` is one of the certificates the user listed, and the
    /// chain check refused it for a reason other than its dates (which
    /// webpki checks first, so any later refusal means they passed).
    fn trusted_as_it_is(&self, end_entity: &CertificateDer<'_>, refusal: &rustls::Error) -> bool {
        use rustls::CertificateError as C;
        let dates = matches!(
            refusal,
            rustls::Error::InvalidCertificate(
                C::Expired
                    | C::ExpiredContext { .. }
                    | C::NotValidYet
                    | C::NotValidYetContext { .. }
            )
        );
        !dates
            && self
                .pinned
                .iter()
                .any(|p| p.as_ref() == end_entity.as_ref())
    }
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
        // `cert_reqs: false` built no chain check: anything goes.
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if self.mode == Mode::SkipHostname => Ok(ServerCertVerified::assertion()),
            Err(refusal) if self.trusted_as_it_is(end_entity, &refusal) => {
                if self.mode == Mode::Full {
                    verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
                }
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// A self-signed certificate as `openssl req -x509` makes it (which
    /// marks it `CA:TRUE`), for `localhost`; returns its PEM file.
    fn self_signed(dir: &Path, name: &str) -> std::path::PathBuf {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "30", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost"])
            // Said, not left to the local openssl.cnf's default.
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (tests/brokers.sh needs it too)");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        cert
    }

    fn check(
        tls: &TlsSettings,
        cert: &Path,
        host: &str,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let v = verifier(tls, provider).unwrap();
        let der = CertificateDer::from_pem_file(cert).unwrap();
        let name = ServerName::try_from(host.to_owned()).unwrap();
        v.verify_server_cert(&der, &[], &name, &[], now).map(|_| ())
    }

    /// The usual plant setup: the broker's own self-signed certificate in
    /// `ca_certs`. Trusted as it is, for its name (any name with
    /// `insecure_cert`), within its dates; another self-signed certificate
    /// is not.
    #[test]
    fn a_self_signed_broker_certificate_listed_in_ca_certs_is_trusted_for_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let broker = self_signed(dir.path(), "broker");
        let stranger = self_signed(dir.path(), "stranger");
        let full = TlsSettings {
            ca_certs: Some(broker.clone()),
            ..TlsSettings::default()
        };
        let now = UnixTime::now();
        // What webpki alone says: the case this is about.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let inner = verifier(&full, provider).unwrap().inner.unwrap();
        let der = CertificateDer::from_pem_file(&broker).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        assert!(inner
            .verify_server_cert(&der, &[], &name, &[], now)
            .is_err());
        assert_eq!(check(&full, &broker, "localhost", now), Ok(()));
        assert!(matches!(
            check(&full, &broker, "other.plant", now),
            Err(rustls::Error::InvalidCertificate(_))
        ));
        assert!(check(&full, &stranger, "localhost", now).is_err());
        let in_a_year =
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.as_secs() + 365 * 86400));
        assert!(
            check(&full, &broker, "localhost", in_a_year).is_err(),
            "expired"
        );

        let any_name = TlsSettings {
            insecure_cert: true,
            ..full.clone()
        };
        assert_eq!(check(&any_name, &broker, "other.plant", now), Ok(()));
        assert!(check(&any_name, &stranger, "localhost", now).is_err());
        assert!(check(&any_name, &broker, "localhost", in_a_year).is_err());

        // `cert_reqs: false` checks no chain and needs no roots at all.
        let none = TlsSettings {
            cert_reqs: Some(false),
            ..TlsSettings::default()
        };
        assert_eq!(check(&none, &stranger, "other.plant", in_a_year), Ok(()));
    }
}
