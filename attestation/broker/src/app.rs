//! Wiring: verifiers, collateral, policy watches, OpenBao identity and the server, started
//! together. The binary and the conformance suite both start the broker through [`launch`].

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::Client;
use phantom_attestation::Tee;
use phantom_attestation::claims::OpenBaoClaims;
use phantom_attestation::collateral::{Collateral, EntryStatus};
use phantom_attestation::snp::{Roots, SnpVerifier};
use phantom_attestation::tdx::TdxVerifier;
use phantom_openbao::OpenBaoClient;
use phantom_policies::store::PolicyStore;
use phantom_policies::wasm::PluginHost;

use crate::args::Settings;
use crate::challenges::Challenges;
use crate::metrics::{CollateralLabels, EntryLabel, Metrics, TeeLabel};
use crate::release::Broker;
use crate::secrets::SecretReader;
use crate::server::Running;
use crate::verdict::Verifiers;
use crate::{Error, Result};

/// A started broker.
#[derive(Debug)]
pub struct Launched {
    pub server: Running,
    pub broker: Arc<Broker>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Launched {
    /// Graceful shutdown: stop accepting, finish in-flight releases, stop the watches.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.server.shutdown().await;
    }
}

/// Reads every regular file of `dir` (a mounted ConfigMap's `..data` links are followed; its
/// hidden bookkeeping entries are skipped).
fn read_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let io = |source| Error::Collateral {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        files.push((name, std::fs::read(entry.path()).map_err(io)?));
    }
    Ok(files)
}

fn load_collateral(dir: Option<&Path>, snp: &SnpVerifier, metrics: &Metrics) -> Result<Collateral> {
    let files = match dir {
        Some(dir) => read_dir(dir)?,
        None => Vec::new(),
    };
    let collateral = Collateral::load(files, snp, crate::verifier_time(crate::unix_now()));
    metrics.collateral_entries.clear();
    for entry in collateral.entries() {
        let tee = match entry.tee {
            Some(Tee::SevSnp) => TeeLabel::SevSnp,
            Some(Tee::Tdx) => TeeLabel::Tdx,
            None => TeeLabel::Unknown,
        };
        let status = match entry.status {
            EntryStatus::Ready => EntryLabel::Ready,
            EntryStatus::Expired => EntryLabel::Expired,
            EntryStatus::Invalid => EntryLabel::Invalid,
        };
        metrics
            .collateral_entries
            .get_or_create(&CollateralLabels { tee, status })
            .inc();
        if entry.status != EntryStatus::Ready {
            tracing::warn!(file = %entry.file, status = entry.status.as_str(), detail = %entry.detail, "collateral entry not usable");
        }
    }
    Ok(collateral)
}

/// What `/readyz` says: ready once the policy set is loaded.
fn readiness(store: &PolicyStore, collateral: &RwLock<Arc<Collateral>>) -> Result<String, String> {
    let snapshot = store.snapshot();
    if !snapshot.synced {
        return Err("not ready: the watches on Phantom's resources have not synced (are the CRDs installed and readable by the broker?)\n".into());
    }
    let collateral = collateral.read().map_err(|_| "collateral poisoned")?;
    Ok(format!(
        "ready: policy set {} (generation {}); collateral: {} SEV-SNP, {} TDX entries ready\n",
        snapshot.set.digest(),
        snapshot.generation,
        collateral.ready(Tee::SevSnp),
        collateral.ready(Tee::Tdx)
    ))
}

/// Starts the broker.
pub async fn launch(client: Client, settings: Settings) -> Result<Launched> {
    let tls = crate::server::tls_config(&settings.tls_cert, &settings.tls_key)?;
    let roots = match &settings.snp_trust_chain {
        None => Roots::amd()?,
        Some((product, path)) => {
            tracing::warn!(chain = %path.display(), "trusting a configured SEV-SNP chain instead of AMD's roots: for tests only");
            let pem = std::fs::read(path).map_err(|e| Error::Flag {
                flag: "snp-trust-chain",
                reason: format!("{}: {e}", path.display()),
            })?;
            Roots::only_chain(product, &pem)?
        }
    };
    let snp = SnpVerifier::new(roots);
    let metrics = Arc::new(Metrics::default());
    let collateral = load_collateral(settings.collateral_dir.as_deref(), &snp, &metrics)?;
    let collateral = RwLock::new(Arc::new(collateral));

    let store = Arc::new(PolicyStore::new(PluginHost::new()?));
    let compile = tokio::spawn(phantom_policies::cluster::keep_compiled(
        client.clone(),
        store.clone(),
        Duration::from_millis(100),
        |_| {},
    ));
    let (namespaces, namespace_watch) = phantom_policies::cluster::reflect(
        kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()),
        Arc::new(tokio::sync::Notify::new()),
        Arc::default(),
    );
    let openbao = OpenBaoClient::with_tls(settings.openbao_addr.clone(), &settings.openbao_tls)?;
    let broker = Arc::new(Broker {
        challenges: Mutex::new(Challenges::new(
            settings.challenge_ttl_seconds,
            settings.max_challenges,
        )),
        verifiers: Verifiers {
            snp,
            tdx: TdxVerifier::intel(),
        },
        collateral,
        store,
        namespaces,
        kube: client,
        secrets: SecretReader::new(openbao, settings.identity.clone()),
        audience: settings.audience.clone(),
        openbao: OpenBaoClaims {
            address: settings.openbao_addr.clone(),
            jurisdiction: settings.openbao_jurisdiction.clone(),
            spki_sha256: hex::encode(settings.openbao_spki_sha256),
        },
        openbao_spki_sha256: settings.openbao_spki_sha256,
        paths: settings.paths.clone(),
        metrics,
    });
    // The first login at start: a broker whose role is wrong says so now, not at the first pod.
    if let Err(e) = broker.secrets.session().await {
        tracing::warn!(error = %e, "the broker's OpenBao login failed; releases will fail until it succeeds");
    }
    let reload = {
        let broker = broker.clone();
        let dir = settings.collateral_dir.clone();
        let interval = settings.collateral_reload;
        tokio::spawn(async move {
            let Some(dir) = dir else { return };
            loop {
                tokio::time::sleep(interval).await;
                match load_collateral(Some(&dir), &broker.verifiers.snp, &broker.metrics) {
                    Ok(loaded) => {
                        *broker.collateral.write().expect("collateral poisoned") = Arc::new(loaded)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "re-reading the collateral bundle failed; the previous one stays")
                    }
                }
            }
        })
    };
    let ready = broker.clone();
    let server = crate::server::start(
        broker.clone(),
        tls,
        settings.server.clone(),
        Arc::new(move || readiness(&ready.store, &ready.collateral)),
    )
    .await?;
    Ok(Launched {
        server,
        broker,
        tasks: vec![compile, namespace_watch, reload],
    })
}
