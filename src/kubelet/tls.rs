//! The kubelet API's TLS: the serving certificate and key from files (reloaded when their
//! content changes) or a self-signed one, and client certificates verified against the client CA.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

use crate::kubelet::error::{Error, Result};

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    /// PEM files, watched.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// Generated at start for these names (IPs become IP SANs), as a kubelet without a
    /// certificate does. Clients must skip verification or trust it some other way.
    SelfSigned(Vec<String>),
}

/// The PEM material one `ServerConfig` is built from (kept to see whether files changed).
#[derive(Clone, PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// The current TLS configuration, swapped in place when the files change; every new connection
/// takes the current one.
pub struct Tls {
    serving: Serving,
    client_ca: Option<PathBuf>,
    loaded: Mutex<Material>,
    current: RwLock<Arc<ServerConfig>>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Tls(format!("reading the {what} {}: {e}", path.display())))
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Tls {
    /// Loads (or generates) the serving certificate and the client CA.
    pub fn load(serving: Serving, client_ca: Option<PathBuf>) -> Result<Tls> {
        let material = Self::material(&serving, client_ca.as_deref())?;
        let config = build(&material)?;
        Ok(Tls {
            serving,
            client_ca,
            loaded: Mutex::new(material),
            current: RwLock::new(Arc::new(config)),
        })
    }

    fn material(serving: &Serving, client_ca: Option<&Path>) -> Result<Material> {
        let (cert, key) = match serving {
            Serving::Files { cert, key } => (
                read(cert, "serving certificate")?,
                read(key, "serving key")?,
            ),
            Serving::SelfSigned(names) => {
                let generated = rcgen::generate_simple_self_signed(names.clone()).map_err(|e| {
                    Error::Tls(format!(
                        "generating a self-signed certificate for {names:?}: {e}"
                    ))
                })?;
                (
                    generated.cert.pem().into_bytes(),
                    generated.signing_key.serialize_pem().into_bytes(),
                )
            }
        };
        let client_ca = client_ca.map(|p| read(p, "client CA")).transpose()?;
        Ok(Material {
            cert,
            key,
            client_ca,
        })
    }

    /// Whether client certificates are asked for (a client CA is configured).
    pub fn verifies_client_certificates(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls lock").clone()
    }

    /// Reads the files again and, when their content changed and still makes a valid
    /// configuration, swaps it in. `Ok(true)` when it did; an error leaves the old one serving.
    pub fn reload(&self) -> Result<bool> {
        if matches!(self.serving, Serving::SelfSigned(_)) && self.client_ca.is_none() {
            return Ok(false);
        }
        let serving = match &self.serving {
            Serving::SelfSigned(_) => None,
            files => Some(files),
        };
        let mut loaded = self.loaded.lock().expect("tls material lock");
        let material = match serving {
            Some(files) => Self::material(files, self.client_ca.as_deref())?,
            None => Material {
                client_ca: self
                    .client_ca
                    .as_deref()
                    .map(|p| read(p, "client CA"))
                    .transpose()?,
                ..loaded.clone()
            },
        };
        if material == *loaded {
            return Ok(false);
        }
        let config = build(&material)?;
        *self.current.write().expect("tls lock") = Arc::new(config);
        *loaded = material;
        Ok(true)
    }

    /// Checks the files every `every` until `shutdown`; a bad edit is logged once and the last
    /// good certificate keeps serving.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut last_error = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.reload() {
                Ok(true) => {
                    last_error = None;
                    tracing::info!("kubelet API: reloaded the serving certificate / client CA");
                }
                Ok(false) => last_error = None,
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_ref() != Some(&text) {
                        tracing::warn!(error = %text, "kubelet API: the changed TLS files are not usable; the previous certificate keeps serving");
                        last_error = Some(text);
                    }
                }
            }
        }
    }
}

fn build(m: &Material) -> Result<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&m.cert)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(format!("the serving certificate is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(
            "the serving certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&m.key)
        .map_err(|e| Error::Tls(format!("the serving key is not a PEM private key: {e}")))?;
    let builder = ServerConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = match &m.client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| Error::Tls(format!("the client CA is not PEM: {e}")))?;
                roots.add(cert).map_err(|e| {
                    Error::Tls(format!("the client CA holds an unusable certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(Error::Tls("the client CA file holds no certificate".into()));
            }
            // Client certificates are optional: bearer tokens authenticate too. A certificate
            // that is presented must chain to the client CA, or the handshake fails.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto())
                .allow_unauthenticated()
                .build()
                .map_err(|e| {
                    Error::Tls(format!("the client CA cannot verify certificates: {e}"))
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        Error::Tls(format!(
            "the serving certificate and key do not make a pair: {e}"
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA and a function to sign leaf certificates with it (PEM cert, PEM key).
    pub(crate) struct TestCa {
        pub(crate) pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl TestCa {
        pub(crate) fn new(name: &str) -> TestCa {
            let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            TestCa {
                pem: cert.pem(),
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        pub(crate) fn leaf(&self, cn: &str, sans: &[&str]) -> (String, String) {
            let mut params = rcgen::CertificateParams::new(
                sans.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    fn served_cert(tls: &Tls) -> Vec<u8> {
        tls.loaded.lock().unwrap().cert.clone()
    }

    #[test]
    fn a_changed_certificate_file_is_served_after_a_reload_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("ca");
        let (cert, key) = ca.leaf("one", &["127.0.0.1"]);
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let tls = Tls::load(
            Serving::Files {
                cert: cert_path.clone(),
                key: key_path.clone(),
            },
            None,
        )
        .unwrap();
        let first = tls.current();
        assert!(!tls.reload().unwrap(), "nothing changed");
        assert!(Arc::ptr_eq(&first, &tls.current()));

        let (cert2, key2) = ca.leaf("two", &["127.0.0.1"]);
        std::fs::write(&cert_path, &cert2).unwrap();
        std::fs::write(&key_path, &key2).unwrap();
        assert!(tls.reload().unwrap());
        assert_eq!(served_cert(&tls), cert2.as_bytes());
        assert!(!Arc::ptr_eq(&first, &tls.current()));

        // Half-way through an update (new certificate, old key): refused, the last good pair serves.
        let (cert3, _) = ca.leaf("three", &["127.0.0.1"]);
        std::fs::write(&cert_path, &cert3).unwrap();
        let err = tls.reload().unwrap_err();
        assert!(err.to_string().contains("do not make a pair"), "{err}");
        assert_eq!(served_cert(&tls), cert2.as_bytes());
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let err = Tls::load(
            Serving::Files {
                cert: "/nonexistent/tls.crt".into(),
                key: "/nonexistent/tls.key".into(),
            },
            None,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
    }

    #[test]
    fn without_files_a_self_signed_certificate_serves_and_a_client_ca_asks_for_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, TestCa::new("ca").pem).unwrap();
        let tls = Tls::load(
            Serving::SelfSigned(vec!["127.0.0.1".into(), "burstgate".into()]),
            Some(ca_path),
        )
        .unwrap();
        assert!(tls.verifies_client_certificates());
        assert_eq!(tls.current().alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
