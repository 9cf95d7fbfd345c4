//! Attested key release, the sidecar's half: it only *collects*. For a binding whose key release
//! gates on an AttestationRequirement, the sidecar asks the broker for a challenge, makes a fresh
//! X25519 key, collects evidence whose report_data binds the challenge, that key, OpenBao's key
//! and the pod UID (configfs-tsm), and asks the broker for the release with the pod's projected
//! token (audience `phantom-broker`). The answer opens only with the key, which is consumed by
//! opening it. No verifier and no collateral live here: a check in the sidecar would be no gate.
//!
//! Evidence comes from the kernel's configfs-tsm where the sidecar can reach it (a TEE guest that
//! mounts it), else from the CoCo attestation-agent on the pod's loopback (Kata/CoCo pods, whose
//! containers run inside the TEE): [`EvidenceChoice`].

use std::path::PathBuf;
use std::time::Duration;

use phantom_attestation::aa;
use phantom_attestation::envelope::{Envelope, Recipient};
use phantom_attestation::protocol::{
    CHALLENGE_PATH, Challenge, EvidenceRequest, Payload, RELEASE_PATH, Refused, ReleaseRequest,
    Released, envelope_context, fixed_hex,
};
use phantom_attestation::report_data::Binding;
use phantom_attestation::tsm::{Collector, Fs, Provider, System};
use phantom_openbao::tls::TlsSettings;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Where the broker is and how this sidecar reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// `https://host:port`.
    pub addr: String,
    /// How the broker is trusted: its key pinned (and/or a CA).
    pub tls: TlsSettings,
    /// The pod's projected token for the broker (audience `phantom-broker`).
    pub token_path: PathBuf,
    /// Where evidence comes from.
    pub evidence: EvidenceChoice,
    /// This pod's UID (downward API).
    pub pod_uid: String,
    /// The OpenBao key the broker reads from (the sidecar's first OpenBao pin).
    pub openbao_spki_sha256: [u8; 32],
}

/// Which evidence source the sidecar uses (`--evidence-source`): `auto` takes configfs-tsm when
/// `<tsm-root>/report` exists, else the attestation-agent; the others force one.
// The variants carry no doc comments: clap would print per-value help and switch every flag of
// `--help` (and the generated docs) to its long layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EvidenceMode {
    #[default]
    Auto,
    ConfigfsTsm,
    AttestationAgent,
}

/// The evidence settings as configured; [`EvidenceChoice::resolve`] picks the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceChoice {
    pub mode: EvidenceMode,
    /// The configfs-tsm root.
    pub tsm_root: PathBuf,
    /// The attestation-agent's base URL.
    pub agent_url: String,
}

/// The source one client collects from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvidenceSource {
    ConfigfsTsm(PathBuf),
    AttestationAgent(String),
}

impl EvidenceChoice {
    /// The source, given whether configfs-tsm's report directory is there (pure).
    pub fn resolve(&self, tsm_present: bool) -> EvidenceSource {
        match (self.mode, tsm_present) {
            (EvidenceMode::ConfigfsTsm, _) | (EvidenceMode::Auto, true) => {
                EvidenceSource::ConfigfsTsm(self.tsm_root.clone())
            }
            (EvidenceMode::AttestationAgent, _) | (EvidenceMode::Auto, false) => {
                EvidenceSource::AttestationAgent(self.agent_url.clone())
            }
        }
    }
}

/// Asks the broker for a binding's secrets.
#[derive(Debug, Clone)]
pub struct BrokerClient<F = System> {
    http: reqwest::Client,
    settings: BrokerSettings,
    source: EvidenceSource,
    collector: Collector<F>,
}

impl BrokerClient<System> {
    /// A client collecting evidence from the kernel's configfs-tsm, or from the attestation-agent
    /// where configfs-tsm is absent (`auto`) or the settings say so.
    pub fn new(settings: BrokerSettings) -> Result<Self> {
        let evidence = &settings.evidence;
        let source = evidence.resolve(evidence.tsm_root.join("report").is_dir());
        let collector = Collector::new(evidence.tsm_root.clone());
        Self::build(settings, source, collector)
    }
}

/// A unique configfs-tsm entry name per collection (two refresh rounds never share one).
fn entry_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "phantom-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl<F: Fs + Clone + Send + Sync + 'static> BrokerClient<F> {
    /// A client collecting evidence through `collector` (tests hand a configfs-tsm emulator),
    /// unless the settings name the attestation-agent.
    pub fn with_collector(settings: BrokerSettings, collector: Collector<F>) -> Result<Self> {
        let source = settings.evidence.resolve(true);
        Self::build(settings, source, collector)
    }

    fn build(
        settings: BrokerSettings,
        source: EvidenceSource,
        collector: Collector<F>,
    ) -> Result<Self> {
        let broker_error = |cause: String| Error::Broker {
            addr: settings.addr.clone(),
            binding: "-".into(),
            cause,
        };
        if !settings.addr.starts_with("https://") {
            return Err(broker_error(
                "the address is not https://; the broker is reached over TLS only".into(),
            ));
        }
        let tls = phantom_openbao::tls::client_config(&settings.tls)
            .map_err(|e| broker_error(format!("its TLS settings: {e}")))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| broker_error(format!("building the HTTP client: {e}")))?;
        if let EvidenceSource::AttestationAgent(url) = &source
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(broker_error(format!(
                "the attestation-agent URL {url:?} is not http(s)://; set --attestation-agent-url (default {})",
                phantom_attestation::aa::DEFAULT_URL
            )));
        }
        tracing::info!(source = ?source, "attested key release: evidence source");
        Ok(Self {
            http,
            settings,
            source,
            collector,
        })
    }

    /// Where this client collects evidence.
    pub fn source(&self) -> &EvidenceSource {
        &self.source
    }

    fn failed(&self, binding: &str, cause: impl std::fmt::Display) -> Error {
        Error::Broker {
            addr: self.settings.addr.clone(),
            binding: binding.to_owned(),
            cause: cause.to_string(),
        }
    }

    /// Evidence whose report_data binds `bound`, from this client's source.
    async fn evidence(&self, bound: &Binding<'_>) -> std::result::Result<EvidenceRequest, String> {
        match &self.source {
            EvidenceSource::ConfigfsTsm(_) => {
                let collector = self.collector.clone();
                let report_data = bound.report_data();
                let evidence = tokio::task::spawn_blocking(move || {
                    collector.collect(&entry_name(), &report_data)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                Ok(match evidence.provider {
                    Provider::SevGuest => {
                        EvidenceRequest::sev_snp(&evidence.outblob, evidence.auxblob.as_deref())
                    }
                    Provider::TdxGuest => EvidenceRequest::tdx(&evidence.outblob),
                })
            }
            EvidenceSource::AttestationAgent(base) => {
                let url = aa::evidence_url(base, &bound.runtime_data());
                let agent = |cause: String| format!("the attestation-agent at {base}: {cause}");
                let mut response = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| agent(e.without_url().to_string()))?;
                let mut answer = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| agent(e.without_url().to_string()))?
                {
                    answer.extend_from_slice(&chunk);
                    if answer.len() > aa::MAX_ANSWER_LEN {
                        return Err(agent(format!(
                            "its answer is longer than {} bytes",
                            aa::MAX_ANSWER_LEN
                        )));
                    }
                }
                let answer = String::from_utf8(answer)
                    .map_err(|_| agent("its answer is not UTF-8 text".into()))?;
                Ok(EvidenceRequest::AttestationAgent { answer })
            }
        }
    }

    /// Every secret of `binding` as OpenBao holds it, released by the broker to this pod's TEE.
    pub async fn release(&self, binding: &str) -> Result<Payload> {
        let base = self.settings.addr.trim_end_matches('/');
        let challenge: Challenge = self
            .http
            .post(format!("{base}{CHALLENGE_PATH}"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| self.failed(binding, format!("the challenge: {e}")))?
            .json()
            .await
            .map_err(|e| self.failed(binding, format!("the challenge's answer: {e}")))?;
        let nonce: [u8; 32] =
            fixed_hex("nonce", &challenge.nonce).map_err(|e| self.failed(binding, e))?;
        let recipient = Recipient::generate().map_err(|e| self.failed(binding, e))?;
        let bound = Binding {
            nonce,
            public_key: recipient.public_key(),
            openbao_spki_sha256: self.settings.openbao_spki_sha256,
            pod_uid: &self.settings.pod_uid,
        };
        let evidence = self
            .evidence(&bound)
            .await
            .map_err(|cause| Error::Evidence {
                binding: binding.to_owned(),
                cause,
            })?;
        let token = Zeroizing::new(std::fs::read_to_string(&self.settings.token_path).map_err(
            |e| {
                self.failed(
                    binding,
                    format!(
                        "reading the broker token {}: {e}; is the projected token volume mounted?",
                        self.settings.token_path.display()
                    ),
                )
            },
        )?);
        let request = ReleaseRequest {
            nonce: challenge.nonce,
            public_key: hex::encode(recipient.public_key()),
            binding: binding.to_owned(),
            evidence,
        };
        let response = self
            .http
            .post(format!("{base}{RELEASE_PATH}"))
            .bearer_auth(token.trim())
            .json(&request)
            .send()
            .await
            .map_err(|e| self.failed(binding, format!("the release: {e}")))?;
        let status = response.status();
        let body = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|e| self.failed(binding, format!("the release's answer: {e}")))?
                .to_vec(),
        );
        if !status.is_success() {
            let refused: Refused = serde_json::from_slice(&body).map_err(|_| {
                self.failed(
                    binding,
                    format!("the broker answered {status} without a reason"),
                )
            })?;
            return Err(Error::BrokerRefused {
                binding: binding.to_owned(),
                kind: refused.kind,
                message: refused.message,
            });
        }
        let released: Released = serde_json::from_slice(&body)
            .map_err(|e| self.failed(binding, format!("the release's answer: {e}")))?;
        let envelope = Envelope::try_from(&released).map_err(|e| self.failed(binding, e))?;
        let plaintext = recipient
            .open(
                &envelope,
                &envelope_context(&nonce, &self.settings.pod_uid, binding),
            )
            .map_err(|e| self.failed(binding, e))?;
        serde_json::from_slice(&plaintext)
            .map_err(|e| self.failed(binding, format!("the sealed payload: {e}")))
    }
}
