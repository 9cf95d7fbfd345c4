//! The release decision, as a pure function of what the broker checked ("classify, then act": the
//! caller does the I/O — redeeming the challenge, the TokenReview, reading the pod, namespace and
//! binding from the API server — and acts on the verdict).
//!
//! Nothing here trusts what the pod wrote: the policies come from the broker's own view of the
//! cluster (never the plan admission put on the pod), the pod identity from the reviewed token,
//! and the evidence is verified against pinned roots and the operator's collateral.

use phantom_attestation::claims::{Claims, OpenBaoClaims, PodClaims, ServiceAccountClaims};
use phantom_attestation::report_data::Binding;
use phantom_attestation::snp::{Endorsement, SnpVerifier};
use phantom_attestation::tdx::{TdxFailure, TdxVerifier};
use phantom_attestation::{Error as EvidenceError, Refusal as RequirementRefusal, requirement};
use phantom_crds::WorkloadSelector;
use phantom_policies::{
    KeyReleaseInput, KeyReleaseRefusal, PolicySet, binding_selects_pod, key_release_pod_view,
};
use serde_json::Value;

use crate::metrics::Check;

/// The evidence a sidecar sent, with the collateral the broker picked for it.
#[derive(Debug, Clone, Copy)]
pub enum Evidence<'a> {
    /// An SEV-SNP report and the key that signed it (VCEK/VLEK), its chain checked when the
    /// collateral (or the report's certificate table) was read.
    Snp {
        report: &'a [u8],
        endorsement: &'a Endorsement,
    },
    /// A TDX quote and its QuoteCollateralV3 JSON.
    Tdx {
        quote: &'a [u8],
        collateral: &'a [u8],
    },
}

/// Everything one release is decided on.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// Now, unix seconds.
    pub now: u64,
    /// When the redeemed challenge was issued (its age is the evidence's age).
    pub issued_at: u64,
    pub nonce: [u8; 32],
    /// The sidecar's ephemeral X25519 key the secret is to be sealed to.
    pub public_key: [u8; 32],
    pub evidence: Evidence<'a>,
    /// Pod and ServiceAccount the reviewed token names.
    pub reviewed_pod: &'a PodClaims,
    pub reviewed_service_account: &'a ServiceAccountClaims,
    /// The pod, its namespace and the SecretBinding, as the API server has them.
    pub pod: &'a Value,
    pub namespace: &'a Value,
    pub binding: &'a Value,
    /// The OpenBao endpoint the broker reads from, and the SHA-256 of its SPKI.
    pub openbao: &'a OpenBaoClaims,
    pub openbao_spki_sha256: [u8; 32],
    /// Which paths a namespace's bindings may have released.
    pub paths: &'a PathRule,
}

/// Which OpenBao paths (mount-relative) the bindings of a namespace may have released: the
/// broker's role reads every gated path, so without this a namespace's owner could name another
/// namespace's path in their own binding. A template over `{namespace}`, e.g. `{namespace}/`
/// (the default) or `teams/{namespace}/attested/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    template: String,
}

impl PathRule {
    /// Parses a template; it must name `{namespace}` (a rule without it lets every namespace
    /// release every path) and no other placeholder.
    pub fn parse(template: &str) -> Result<Self, String> {
        let rest = template.replace("{namespace}", "");
        if rest.len() == template.len() {
            return Err(format!(
                "{template:?} does not contain {{namespace}}; without it any namespace could have any gated path released"
            ));
        }
        if rest.contains('{') || rest.contains('}') {
            return Err(format!(
                "{template:?} has a placeholder other than {{namespace}}"
            ));
        }
        Ok(Self {
            template: template.to_owned(),
        })
    }

    /// The prefix every path of `namespace`'s bindings must start with.
    pub fn prefix(&self, namespace: &str) -> String {
        self.template.replace("{namespace}", namespace)
    }
}

impl Default for PathRule {
    fn default() -> Self {
        Self {
            template: "{namespace}/".into(),
        }
    }
}

/// The first path of `binding` outside what `rule` allows `namespace` (or with `.`/`..`/empty
/// segments, which could step out of the prefix).
fn forbidden_path<'v>(binding: &'v Value, rule: &PathRule, namespace: &str) -> Option<&'v str> {
    let prefix = rule.prefix(namespace);
    binding
        .pointer("/spec/secrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|item| item.get("path").and_then(Value::as_str).unwrap_or(""))
        .find(|path| {
            !path.starts_with(&prefix)
                || path
                    .split('/')
                    .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        })
}

/// The verifiers the broker holds (pinned roots, cached chains).
#[derive(Debug)]
pub struct Verifiers {
    pub snp: SnpVerifier,
    pub tdx: TdxVerifier,
}

/// Why nothing is released. Each names what failed and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the token names pod {token} but the release is for {found}")]
    Identity { token: String, found: String },
    #[error("SecretBinding {binding} is not in the pod's namespace {namespace}")]
    BindingNamespace { binding: String, namespace: String },
    #[error(
        "SecretBinding {binding} does not select pod {pod} (its ServiceAccount or labels); a pod gets only the bindings that select it"
    )]
    NotSelected { binding: String, pod: String },
    #[error(
        "SecretBinding {binding} names path {path:?}, outside {prefix:?} where namespace {namespace}'s attested secrets live (the broker's --release-path-template)"
    )]
    PathOutside {
        binding: String,
        namespace: String,
        path: String,
        prefix: String,
    },
    #[error("no enforced PhantomPolicy admits SecretBinding {binding} in namespace {namespace}")]
    NotAdmitted { binding: String, namespace: String },
    #[error(
        "no policy gates SecretBinding {binding} on an AttestationRequirement; the broker releases only attested secrets (the pod reads the others with its own role)"
    )]
    NotGated { binding: String },
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error(
        "the evidence's report_data does not bind this release (challenge, public key, OpenBao key and pod {pod_uid})"
    )]
    ReportData { pod_uid: String },
    #[error(transparent)]
    Requirement(#[from] RequirementRefusal),
    #[error(transparent)]
    Conditions(#[from] KeyReleaseRefusal),
}

impl Refusal {
    /// The check that refused (metrics label, audit field, the refusal's `kind`).
    pub fn kind(&self) -> Check {
        match self {
            Self::Identity { .. } | Self::BindingNamespace { .. } => Check::Identity,
            Self::NotSelected { .. } | Self::PathOutside { .. } => Check::Binding,
            Self::NotAdmitted { .. } | Self::NotGated { .. } => Check::Policy,
            Self::Evidence(_) => Check::Evidence,
            Self::ReportData { .. } => Check::ReportData,
            Self::Requirement(_) => Check::Requirement,
            Self::Conditions(_) => Check::Conditions,
        }
    }
}

fn text<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A release granted: what was verified, and under which AttestationRequirements.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub claims: Claims,
    pub requirements: Vec<String>,
}

/// Decides one release: `Ok` carries the verified claims (for the audit record); only then may
/// the caller read the secret and seal it to `release.public_key`.
pub fn decide(
    verifiers: &Verifiers,
    set: &PolicySet,
    release: &Release<'_>,
) -> Result<Verdict, Refusal> {
    let pod_uid = text(release.pod, "/metadata/uid");
    let pod_namespace = text(release.pod, "/metadata/namespace");
    if release.reviewed_pod.uid != pod_uid || release.reviewed_pod.namespace != pod_namespace {
        return Err(Refusal::Identity {
            token: format!(
                "{}/{} ({})",
                release.reviewed_pod.namespace, release.reviewed_pod.name, release.reviewed_pod.uid
            ),
            found: format!(
                "{pod_namespace}/{} ({pod_uid})",
                text(release.pod, "/metadata/name")
            ),
        });
    }
    let binding_name = text(release.binding, "/metadata/name").to_owned();
    if text(release.binding, "/metadata/namespace") != pod_namespace {
        return Err(Refusal::BindingNamespace {
            binding: binding_name,
            namespace: pod_namespace.to_owned(),
        });
    }
    let selects = release
        .binding
        .pointer("/spec/selector")
        .cloned()
        .and_then(|v| serde_json::from_value::<WorkloadSelector>(v).ok())
        .is_some_and(|selector| binding_selects_pod(&selector, release.pod));
    if !selects {
        return Err(Refusal::NotSelected {
            binding: binding_name,
            pod: format!("{pod_namespace}/{}", text(release.pod, "/metadata/name")),
        });
    }
    if let Some(path) = forbidden_path(release.binding, release.paths, pod_namespace) {
        return Err(Refusal::PathOutside {
            binding: binding_name,
            namespace: pod_namespace.to_owned(),
            path: path.to_owned(),
            prefix: release.paths.prefix(pod_namespace),
        });
    }
    let policies = set.policies_admitting(release.namespace);
    if policies.is_empty() {
        return Err(Refusal::NotAdmitted {
            binding: binding_name,
            namespace: pod_namespace.to_owned(),
        });
    }
    let requirements = set.key_release_plan(&policies, release.pod).requirements;
    if requirements.is_empty() {
        return Err(Refusal::NotGated {
            binding: binding_name,
        });
    }

    let expected = Binding {
        nonce: release.nonce,
        public_key: release.public_key,
        openbao_spki_sha256: release.openbao_spki_sha256,
        pod_uid,
    };
    let age = release.now.saturating_sub(release.issued_at);
    let mut verified: Option<Claims> = None;
    for required in &requirements {
        let claims = match (release.evidence, &verified) {
            (_, Some(claims)) if claims.snp.is_some() => claims.clone(),
            (
                Evidence::Snp {
                    report,
                    endorsement,
                },
                _,
            ) => Claims::snp(verifiers.snp.verify_endorsed(
                report,
                endorsement,
                crate::verifier_time(release.now),
            )?),
            // TDX: dcap-qvl applies each requirement's TCB rules inside its policy step.
            (Evidence::Tdx { quote, collateral }, _) => {
                let tdx_requirement = required.spec.tdx.clone().unwrap_or_default();
                match verifiers.tdx.verify(
                    quote,
                    collateral,
                    release.now,
                    &required.name,
                    &tdx_requirement,
                ) {
                    Ok(tdx) => Claims::tdx(tdx),
                    Err(TdxFailure::Refused(refusal)) => return Err(refusal.into()),
                    Err(TdxFailure::Invalid(error)) => return Err(error.into()),
                }
            }
        };
        if !expected.matches(&claims.report_data()) {
            return Err(Refusal::ReportData {
                pod_uid: pod_uid.to_owned(),
            });
        }
        let claims = Claims {
            pod: Some(release.reviewed_pod.clone()),
            service_account: Some(release.reviewed_service_account.clone()),
            openbao: Some(release.openbao.clone()),
            ..claims
        };
        requirement::check(&required.name, &required.spec, &claims, age)?;
        verified = Some(claims);
    }
    let claims = verified.expect("at least one requirement was checked");
    set.check_key_release(
        &policies,
        &KeyReleaseInput {
            pod: key_release_pod_view(release.pod),
            binding: release.binding.clone(),
            attestation: Some(claims.to_value()),
        },
    )?;
    Ok(Verdict {
        claims,
        requirements: requirements.into_iter().map(|r| r.name).collect(),
    })
}

#[cfg(test)]
mod tests;
