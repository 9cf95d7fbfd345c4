//! The serving certificate, reloaded when its files change (cert-manager, the controller or a
//! mounted Secret rotate it in place), so rotation never needs a restart. A pair that fails to
//! load is reported and the previous one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::TlsSource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::{Metrics, Reload, ReloadLabels};
use crate::{Error, Result};

/// A certificate/key pair read from PEM files and re-read when they change.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

/// A file's modification time, `None` when it cannot be read (a reload then compares unequal).
pub(crate) fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let tls = |what, path: &Path, message: String, source: Option<TlsSource>| Error::Tls {
        what,
        path: path.display().to_string(),
        message,
        source: source.map(Box::new),
    };
    let pem = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| {
            tls(what, &path, e.to_string(), Some(TlsSource::Pem(e)))
        }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem("certificate", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("certificate", cert))?;
    if chain.is_empty() {
        return Err(tls(
            "certificate",
            cert,
            "no CERTIFICATE block".into(),
            None,
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(pem("key", key))?;
    CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| tls("key", key, e.to_string(), Some(TlsSource::Rustls(e))))
}

impl ReloadingCertificate {
    /// Loads the pair; fails when either file is missing or they do not match.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = (modified(cert_path), modified(key_path));
        let key = load(cert_path, key_path, &provider)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// Re-reads the pair if a file's modification time changed; `Ok(true)` when a new pair is in
    /// use. On error the previous pair stays.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let stamp = (modified(&self.cert_path), modified(&self.key_path));
        let mut seen = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == stamp {
            return Ok(false);
        }
        let key = load(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *seen = stamp;
        Ok(true)
    }

    /// A rustls server configuration resolving to the current pair (HTTP/2 and HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS protocol versions: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Checks the files every `interval` until the task is dropped.
    pub fn watch(
        self: Arc<Self>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        let what = format!("serving certificate {}", self.cert_path.display());
        watch_file(
            interval,
            what,
            metrics.certificate_reloads.clone(),
            move || self.reload_if_changed(),
        )
    }
}

/// Calls `reload` every `interval` until the task is dropped; logs and counts what changed. A
/// failed reload keeps the previous material in use.
pub fn watch_file(
    interval: Duration,
    what: String,
    counter: Family<ReloadLabels, Counter>,
    reload: impl Fn() -> Result<bool> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let outcome = match reload() {
                Ok(false) => continue,
                Ok(true) => {
                    tracing::info!(%what, "reloaded");
                    Reload::Ok
                }
                Err(e) => {
                    tracing::error!(%what, error = %e, "reload failed; the previous version stays in use");
                    Reload::Error
                }
            };
            counter.get_or_create(&ReloadLabels { outcome }).inc();
        }
    })
}

impl ReloadingCertificate {
    /// DER of the leaf certificate in use.
    pub fn current_leaf(&self) -> Vec<u8> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        current.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn write(dir: &Path, (cert, key): (&str, &str)) {
        // Rename into place, as Secret volume updates and cert-manager do.
        for (name, text) in [("tls.crt", cert), ("tls.key", key)] {
            std::fs::write(dir.join(format!("{name}.new")), text).expect("write");
            std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).expect("rename");
        }
    }

    #[test]
    fn a_rotated_pair_is_picked_up_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert_a, key_a, der_a) = pair("a.example");
        write(dir.path(), (&cert_a, &key_a));
        let tls =
            ReloadingCertificate::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
                .expect("load");
        assert_eq!(tls.current_leaf(), der_a);
        assert!(
            !tls.reload_if_changed().expect("unchanged"),
            "no change, no reload"
        );

        std::thread::sleep(Duration::from_millis(20));
        let (cert_b, key_b, der_b) = pair("b.example");
        write(dir.path(), (&cert_b, &key_b));
        assert!(tls.reload_if_changed().expect("reload"));
        assert_eq!(tls.current_leaf(), der_b);

        std::thread::sleep(Duration::from_millis(20));
        write(dir.path(), (&cert_a, &key_b));
        let err = tls.reload_if_changed().expect_err("mismatched pair");
        assert!(err.to_string().contains("tls.key"), "{err}");
        assert_eq!(tls.current_leaf(), der_b, "the previous pair keeps serving");

        let missing =
            ReloadingCertificate::load(&dir.path().join("nope.crt"), &dir.path().join("tls.key"))
                .expect_err("missing file");
        assert!(missing.to_string().contains("nope.crt"), "{missing}");
    }
}
