//! One release, end to end: parse, redeem the challenge, review the token, read the pod (and its
//! namespace and the binding, from the reflectors), pick the collateral, decide
//! ([`crate::verdict::decide`]), read the secrets as the broker and seal them to the attested key.
//! Every answer is an audit record (target `phantom_broker::audit`) that names the pod, the
//! binding, the requirements and the failed check — never a value.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use phantom_attestation::claims::{OpenBaoClaims, PodClaims, ServiceAccountClaims};
use phantom_attestation::collateral::Collateral;
use phantom_attestation::envelope::seal;
use phantom_attestation::protocol::{
    Challenge, EvidenceRequest, Payload, Refused, ReleaseRequest, Released, envelope_context,
    fixed_hex,
};
use phantom_attestation::snp::{Endorsement, cert_table};
use phantom_attestation::tsm::Provider;
use phantom_crds::SecretBinding;
use phantom_identity::review::review;
use phantom_policies::store::{PolicyStore, Snapshot};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::challenges::Challenges;
use crate::metrics::{Check, Metrics, Outcome, ReleaseLabels, TeeLabel};
use crate::secrets::SecretReader;
use crate::unix_now as now;
use crate::verdict::{Evidence, PathRule, Refusal, Release, Verdict, Verifiers, decide};

/// Everything the broker holds.
pub struct Broker {
    pub challenges: Mutex<Challenges>,
    pub verifiers: Verifiers,
    pub collateral: RwLock<Arc<Collateral>>,
    pub store: Arc<PolicyStore>,
    /// Namespaces, from a reflector (their labels select the policies).
    pub namespaces: Store<Namespace>,
    pub kube: Client,
    pub secrets: SecretReader,
    /// The audience pod tokens must carry.
    pub audience: String,
    /// The OpenBao the broker reads from, as claims and as the pin report_data binds.
    pub openbao: OpenBaoClaims,
    pub openbao_spki_sha256: [u8; 32],
    /// Which paths each namespace's bindings may have released.
    pub paths: PathRule,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("audience", &self.audience)
            .field("openbao", &self.openbao)
            .finish_non_exhaustive()
    }
}

/// An HTTP answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, value: &impl serde::Serialize) -> Self {
        Self {
            status,
            body: serde_json::to_vec(value).expect("protocol types serialize"),
        }
    }
}

/// A release that ended without a value.
#[derive(Debug)]
struct Failure {
    status: u16,
    check: Check,
    message: String,
}

impl Failure {
    fn new(status: u16, check: Check, message: impl Into<String>) -> Self {
        Self {
            status,
            check,
            message: message.into(),
        }
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Self::new(403, refusal.kind(), refusal.to_string())
    }
}

/// What the audit record names about the release, filled in as the steps learn it.
#[derive(Debug, Default)]
struct Subject {
    pod: String,
    pod_uid: String,
    binding: String,
    requirements: Vec<String>,
    tee: Option<TeeLabel>,
}

fn base64(field: &str, text: &str) -> Result<Vec<u8>, Failure> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Failure::new(400, Check::Request, format!("{field} is not base64: {e}")))
}

/// The evidence's bytes, whichever way the sidecar collected them.
#[derive(Debug)]
enum Decoded {
    Snp {
        report: Vec<u8>,
        cert_table: Option<Vec<u8>>,
    },
    Tdx {
        quote: Vec<u8>,
    },
}

/// Decodes the request's evidence and names its TEE in the audit subject (an agent's answer
/// names it once parsed).
fn decode_evidence(evidence: &EvidenceRequest, subject: &mut Subject) -> Result<Decoded, Failure> {
    let decoded = match evidence {
        EvidenceRequest::SevSnp { report, cert_table } => {
            subject.tee = Some(TeeLabel::SevSnp);
            Decoded::Snp {
                report: base64("evidence.report", report)?,
                cert_table: cert_table
                    .as_deref()
                    .map(|table| base64("evidence.certTable", table))
                    .transpose()?,
            }
        }
        EvidenceRequest::Tdx { quote } => {
            subject.tee = Some(TeeLabel::Tdx);
            Decoded::Tdx {
                quote: base64("evidence.quote", quote)?,
            }
        }
        EvidenceRequest::AttestationAgent { answer } => {
            let parsed = phantom_attestation::aa::parse(answer)
                .map_err(|e| Failure::new(400, Check::Evidence, e.to_string()))?;
            match parsed.provider {
                Provider::SevGuest => {
                    subject.tee = Some(TeeLabel::SevSnp);
                    Decoded::Snp {
                        report: parsed.outblob,
                        cert_table: parsed.auxblob,
                    }
                }
                Provider::TdxGuest => {
                    subject.tee = Some(TeeLabel::Tdx);
                    Decoded::Tdx {
                        quote: parsed.outblob,
                    }
                }
            }
        }
    };
    Ok(decoded)
}

/// The certificate table's VCEK (or VLEK), when the host supplied one.
fn table_endorsement(table: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
    let entries = cert_table::parse(table)
        .map_err(|e| Failure::new(400, Check::Evidence, format!("the certificate table: {e}")))?;
    Ok(entries
        .into_iter()
        .find(|(entry, _)| matches!(entry, cert_table::Entry::Vcek | cert_table::Entry::Vlek))
        .map(|(_, der)| der))
}

impl Broker {
    /// A fresh challenge.
    pub fn challenge(&self) -> Answer {
        let mut challenges = self.challenges.lock().expect("challenge store poisoned");
        let issued = challenges.issue(now());
        self.metrics
            .challenges_outstanding
            .set(challenges.outstanding() as i64);
        match issued {
            Ok(challenge) => {
                self.metrics.challenges_issued.inc();
                Answer::json(
                    200,
                    &Challenge {
                        nonce: hex::encode(challenge.nonce),
                        expires_in_seconds: challenge.expires_at.saturating_sub(now()),
                    },
                )
            }
            Err(e) => Answer::json(
                503,
                &Refused {
                    kind: Check::Challenge.as_str().into(),
                    message: e.to_string(),
                },
            ),
        }
    }

    /// Answers a release request (`bearer`: the pod's token from the Authorization header).
    pub async fn release(&self, bearer: Option<&str>, body: &[u8]) -> Answer {
        let started = Instant::now();
        let mut subject = Subject::default();
        let result = self.try_release(bearer, body, &mut subject).await;
        self.metrics
            .release_seconds
            .observe(started.elapsed().as_secs_f64());
        let tee = subject.tee.unwrap_or(TeeLabel::Unknown);
        let (outcome, check) = match &result {
            Ok(_) => (Outcome::Released, None),
            Err(failure) => (Outcome::Refused, Some(failure.check)),
        };
        self.metrics
            .releases
            .get_or_create(&ReleaseLabels {
                outcome,
                check,
                tee,
            })
            .inc();
        match result {
            Ok(released) => {
                tracing::info!(
                    target: "phantom_broker::audit",
                    outcome = "released",
                    pod = %subject.pod,
                    pod_uid = %subject.pod_uid,
                    binding = %subject.binding,
                    requirements = %subject.requirements.join(","),
                    tee = tee.as_str(),
                    "secrets released, sealed to the attested key"
                );
                Answer::json(200, &released)
            }
            Err(failure) => {
                tracing::warn!(
                    target: "phantom_broker::audit",
                    outcome = "refused",
                    pod = %subject.pod,
                    pod_uid = %subject.pod_uid,
                    binding = %subject.binding,
                    requirements = %subject.requirements.join(","),
                    tee = tee.as_str(),
                    check = failure.check.as_str(),
                    reason = %failure.message,
                    "release refused"
                );
                Answer::json(
                    failure.status,
                    &Refused {
                        kind: failure.check.as_str().into(),
                        message: failure.message,
                    },
                )
            }
        }
    }

    async fn try_release(
        &self,
        bearer: Option<&str>,
        body: &[u8],
        subject: &mut Subject,
    ) -> Result<Released, Failure> {
        let request: ReleaseRequest = serde_json::from_slice(body).map_err(|e| {
            Failure::new(
                400,
                Check::Request,
                format!("the body is not a release request: {e}"),
            )
        })?;
        subject.binding = request.binding.clone();
        let evidence = decode_evidence(&request.evidence, subject)?;
        let bad = |e: String| Failure::new(400, Check::Request, e);
        let nonce: [u8; 32] = fixed_hex("nonce", &request.nonce).map_err(bad)?;
        let public_key: [u8; 32] = fixed_hex("publicKey", &request.public_key).map_err(bad)?;
        let token = bearer.ok_or_else(|| {
            Failure::new(
                401,
                Check::Identity,
                "no Authorization: Bearer header; send the pod's projected ServiceAccount token",
            )
        })?;

        let issued_at = {
            let mut challenges = self.challenges.lock().expect("challenge store poisoned");
            let redeemed = challenges.redeem(&nonce, now());
            self.metrics
                .challenges_outstanding
                .set(challenges.outstanding() as i64);
            redeemed.map_err(|e| Failure::new(403, Check::Challenge, e.to_string()))?
        };

        let reviewed = review(&self.kube, token, &self.audience)
            .await
            .map_err(|e| match e {
                phantom_identity::Error::Identity(identity) => {
                    Failure::new(401, Check::Identity, identity.to_string())
                }
                other => Failure::new(503, Check::Unavailable, other.to_string()),
            })?;
        let reviewed_pod = PodClaims {
            uid: reviewed.pod.uid.clone(),
            name: reviewed.pod.name.clone(),
            namespace: reviewed.pod.namespace.clone(),
        };
        let reviewed_service_account = ServiceAccountClaims {
            name: reviewed.service_account.clone(),
            namespace: reviewed.pod.namespace.clone(),
        };
        subject.pod = format!("{}/{}", reviewed.pod.namespace, reviewed.pod.name);
        subject.pod_uid = reviewed.pod.uid.clone();
        let namespace = &reviewed.pod.namespace;

        let snapshot = self.store.snapshot();
        if !snapshot.synced {
            return Err(Failure::new(
                503,
                Check::Unavailable,
                "the broker has not loaded the policy set yet; retry in a moment",
            ));
        }
        let (pod, namespace_object, binding) = self
            .objects(&snapshot, namespace, &reviewed.pod.name, &request.binding)
            .await?;
        subject.requirements = snapshot
            .set
            .key_release_plan(&snapshot.set.policies_admitting(&namespace_object), &pod)
            .requirements
            .into_iter()
            .map(|r| r.name)
            .collect();

        let collateral = self.collateral.read().expect("collateral poisoned").clone();
        let openbao = self.openbao.clone();
        let release = |evidence| Release {
            now: now(),
            issued_at,
            nonce,
            public_key,
            evidence,
            reviewed_pod: &reviewed_pod,
            reviewed_service_account: &reviewed_service_account,
            pod: &pod,
            namespace: &namespace_object,
            binding: &binding,
            openbao: &openbao,
            openbao_spki_sha256: self.openbao_spki_sha256,
            paths: &self.paths,
        };
        let verdict: Verdict = match &evidence {
            Decoded::Snp { report, cert_table } => {
                let mut candidates: Vec<Endorsement> = match collateral.snp_endorsements(report) {
                    Ok(found) => found.into_iter().cloned().collect(),
                    Err(e) => match cert_table {
                        None => return Err(Refusal::Evidence(e).into()),
                        Some(_) => Vec::new(),
                    },
                };
                if let Some(table) = cert_table
                    && let Some(der) = table_endorsement(table)?
                {
                    // Trusted only through the pinned chain, checked here once.
                    candidates.push(
                        self.verifiers
                            .snp
                            .endorsement(&der, crate::verifier_time(now()))
                            .map_err(|e| Failure::from(Refusal::Evidence(e)))?,
                    );
                }
                let mut last = None;
                let mut granted = None;
                for endorsement in &candidates {
                    match decide(
                        &self.verifiers,
                        &snapshot.set,
                        &release(Evidence::Snp {
                            report,
                            endorsement,
                        }),
                    ) {
                        Ok(verdict) => {
                            granted = Some(verdict);
                            break;
                        }
                        Err(refusal) => last = Some(refusal),
                    }
                }
                match (granted, last) {
                    (Some(verdict), _) => verdict,
                    (None, Some(refusal)) => return Err(refusal.into()),
                    (None, None) => {
                        return Err(Failure::new(
                            403,
                            Check::Evidence,
                            "neither the collateral bundle nor the certificate table has the report's VCEK/VLEK",
                        ));
                    }
                }
            }
            Decoded::Tdx { quote } => {
                let documents = collateral
                    .tdx_collateral(quote)
                    .map_err(|e| Failure::from(Refusal::Evidence(e)))?;
                decide(
                    &self.verifiers,
                    &snapshot.set,
                    &release(Evidence::Tdx {
                        quote,
                        collateral: documents,
                    }),
                )?
            }
        };
        subject.requirements = verdict.requirements.clone();

        let typed: SecretBinding = serde_json::from_value(binding.clone()).map_err(|e| {
            Failure::new(
                403,
                Check::Binding,
                format!(
                    "SecretBinding {namespace}/{} does not read: {e}",
                    request.binding
                ),
            )
        })?;
        let payload = self
            .secrets
            .read(&typed)
            .await
            .map_err(|e| Failure::new(502, Check::OpenBao, e.to_string()))?;
        let plaintext = serialise(&payload);
        let envelope = seal(
            &public_key,
            &envelope_context(&nonce, &reviewed.pod.uid, &request.binding),
            &plaintext,
        )
        .map_err(|e| Failure::new(500, Check::Unavailable, e.to_string()))?;
        Ok(Released::from(&envelope))
    }

    /// The pod (named by the token), its namespace and the binding, as the API server has them.
    async fn objects(
        &self,
        snapshot: &Snapshot,
        namespace: &str,
        pod: &str,
        binding: &str,
    ) -> Result<(Value, Value, Value), Failure> {
        let unavailable = |what: String| {
            move |e: kube::Error| {
                Failure::new(503, Check::Unavailable, format!("reading {what}: {e}"))
            }
        };
        let missing =
            |what: String| Failure::new(403, Check::Binding, format!("{what} does not exist"));
        let pod_object = Api::<Pod>::namespaced(self.kube.clone(), namespace)
            .get_opt(pod)
            .await
            .map_err(unavailable(format!("pod {namespace}/{pod}")))?
            .ok_or_else(|| missing(format!("pod {namespace}/{pod}")))?;
        // Namespaces and bindings from the reflectors the policy set is built from (the same
        // versions decide); read directly only when created a moment ago.
        let cached_namespace = self
            .namespaces
            .get(&ObjectRef::new(namespace))
            .map(|ns| (*ns).clone());
        let namespace_object = match cached_namespace {
            Some(ns) => ns,
            None => Api::<Namespace>::all(self.kube.clone())
                .get_opt(namespace)
                .await
                .map_err(unavailable(format!("namespace {namespace}")))?
                .ok_or_else(|| missing(format!("namespace {namespace}")))?,
        };
        let cached_binding = snapshot
            .sources
            .bindings
            .iter()
            .find(|b| {
                b.metadata.namespace.as_deref() == Some(namespace)
                    && b.metadata.name.as_deref() == Some(binding)
            })
            .cloned();
        let binding_object = match cached_binding {
            Some(b) => b,
            None => Api::<SecretBinding>::namespaced(self.kube.clone(), namespace)
                .get_opt(binding)
                .await
                .map_err(unavailable(format!("SecretBinding {namespace}/{binding}")))?
                .ok_or_else(|| missing(format!("SecretBinding {namespace}/{binding}")))?,
        };
        let value = |v: serde_json::Result<Value>| {
            v.map_err(|e| Failure::new(500, Check::Unavailable, e.to_string()))
        };
        Ok((
            value(serde_json::to_value(pod_object))?,
            value(serde_json::to_value(namespace_object))?,
            value(serde_json::to_value(binding_object))?,
        ))
    }
}

/// The payload as JSON in one zeroizing buffer sized up front (growing it would leave unwiped
/// copies of the values behind).
fn serialise(payload: &Payload) -> Zeroizing<Vec<u8>> {
    let bound = 64
        + payload
            .iter()
            .map(|(name, item)| {
                6 * name.len()
                    + 48
                    + item
                        .data
                        .iter()
                        .map(|(k, v)| 6 * (k.len() + v.len()) + 8)
                        .sum::<usize>()
            })
            .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(bound));
    serde_json::to_writer(&mut *out, payload).expect("the payload serializes");
    debug_assert!(out.len() <= bound, "the buffer never reallocated");
    out
}

#[cfg(test)]
mod tests {
    use phantom_attestation::protocol::PayloadItem;

    use super::*;

    #[test]
    fn the_payload_fits_its_buffer_and_reads_back() {
        let payload: Payload = [(
            "db".to_owned(),
            PayloadItem {
                version: 3,
                data: [
                    ("password".to_owned(), "\"\\\n\u{1}ö🔑".repeat(50)),
                    ("user".to_owned(), String::new()),
                ]
                .into(),
            },
        )]
        .into();
        let text = serialise(&payload);
        assert!(text.len() <= text.capacity());
        let back: Payload = serde_json::from_slice(&text).unwrap();
        assert_eq!(back, payload);
    }
}
