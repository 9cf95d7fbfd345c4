//! The broker's wire protocol, shared by the broker and the sidecar so both read one definition.
//!
//! Both calls are `POST` with JSON over HTTPS (the broker's key pinned by the sidecar):
//!
//! 1. [`CHALLENGE_PATH`], no body → [`Challenge`]: a fresh single-use nonce.
//! 2. [`RELEASE_PATH`] with the pod's projected ServiceAccount token as `Authorization: Bearer`
//!    and a [`ReleaseRequest`] → [`Released`] (200), or [`Refused`] (4xx/5xx) naming the check
//!    that failed.
//!
//! Binary fields are hex (fixed-size keys and nonces) or standard base64 (evidence, ciphertext).
//! The released plaintext is a [`Payload`] sealed with [`crate::envelope`] under
//! [`envelope_context`], so an envelope opens only for the release it was made for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::envelope::Envelope;

/// Where challenges are issued.
pub const CHALLENGE_PATH: &str = "/v1/challenge";
/// Where releases are asked for.
pub const RELEASE_PATH: &str = "/v1/release";
/// The audience the pod's projected token must carry for the broker.
pub const DEFAULT_AUDIENCE: &str = phantom_crds::wellknown::BROKER_AUDIENCE;

/// A challenge: the nonce the evidence's report_data must bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Challenge {
    /// 32 bytes, hex.
    pub nonce: String,
    pub expires_in_seconds: u64,
}

/// Evidence as collected in the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tee", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EvidenceRequest {
    /// An SEV-SNP report and, when the host supplies one, its certificate table (configfs-tsm
    /// `auxblob`): its VCEK is used when the broker's bundle has none for the chip, and is
    /// trusted only through the pinned AMD chain.
    #[serde(rename_all = "camelCase")]
    SevSnp {
        report: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cert_table: Option<String>,
    },
    /// A TDX quote; its collateral comes from the broker's bundle.
    Tdx { quote: String },
    /// What a CoCo attestation-agent answered ([`crate::aa`]), forwarded untouched: the broker
    /// parses it into one of the above (the sidecar links no report parser).
    AttestationAgent { answer: String },
}

impl EvidenceRequest {
    /// SEV-SNP evidence from raw bytes (a report, the host's certificate table if any).
    pub fn sev_snp(report: &[u8], cert_table: Option<&[u8]>) -> Self {
        Self::SevSnp {
            report: base64_encode(report),
            cert_table: cert_table.map(base64_encode),
        }
    }

    /// TDX evidence from a raw quote.
    pub fn tdx(quote: &[u8]) -> Self {
        Self::Tdx {
            quote: base64_encode(quote),
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A release request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The challenge's nonce, hex.
    pub nonce: String,
    /// The sidecar's ephemeral X25519 public key, hex.
    pub public_key: String,
    /// The SecretBinding (in the pod's namespace) whose secrets are asked for.
    pub binding: String,
    pub evidence: EvidenceRequest,
}

/// The sealed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Released {
    /// The broker's ephemeral X25519 public key, hex.
    pub ephemeral_public: String,
    /// AES-256-GCM nonce, hex.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ciphertext: String,
}

impl From<&Envelope> for Released {
    fn from(envelope: &Envelope) -> Self {
        Self {
            ephemeral_public: hex::encode(envelope.ephemeral_public),
            nonce: hex::encode(envelope.nonce),
            ciphertext: base64_encode(&envelope.ciphertext),
        }
    }
}

impl TryFrom<&Released> for Envelope {
    type Error = String;

    fn try_from(released: &Released) -> Result<Self, String> {
        use base64::Engine as _;
        Ok(Self {
            ephemeral_public: fixed_hex("ephemeralPublic", &released.ephemeral_public)?,
            nonce: fixed_hex("nonce", &released.nonce)?,
            ciphertext: base64::engine::general_purpose::STANDARD
                .decode(&released.ciphertext)
                .map_err(|e| format!("ciphertext is not base64: {e}"))?,
        })
    }
}

/// Refusal kinds that say nothing about the pod's TEE (a nonce that expired in transit, a broker
/// not ready, OpenBao failing the broker's read): asked again, the release may succeed. Every
/// other kind is a verdict on the pod, and what was released before is withdrawn.
pub const TRANSIENT_REFUSALS: &[&str] = &["challenge", "unavailable", "openbao"];

/// A refusal: which check failed (a stable kind) and why, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Refused {
    pub kind: String,
    pub message: String,
}

/// One secret of the binding as OpenBao holds it; the sidecar selects keys and delivers as usual.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PayloadItem {
    pub version: u64,
    pub data: BTreeMap<String, String>,
}

impl std::fmt::Debug for PayloadItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadItem")
            .field("version", &self.version)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Drop for PayloadItem {
    fn drop(&mut self) {
        for value in self.data.values_mut() {
            value.zeroize();
        }
    }
}

/// What a release carries: the binding's secrets by item name.
pub type Payload = BTreeMap<String, PayloadItem>;

/// The envelope's associated data: the release it answers (nonce, pod UID and binding), with a
/// domain-separation prefix.
pub fn envelope_context(nonce: &[u8; 32], pod_uid: &str, binding: &str) -> Vec<u8> {
    let mut context = b"phantom.dev/broker/release/v1\0".to_vec();
    context.extend_from_slice(nonce);
    for part in [pod_uid, binding] {
        context.extend_from_slice(&(part.len() as u64).to_be_bytes());
        context.extend_from_slice(part.as_bytes());
    }
    context
}

/// Decodes `N` bytes of hex, naming the field when it is not.
pub fn fixed_hex<const N: usize>(field: &str, text: &str) -> Result<[u8; N], String> {
    let bytes = hex::decode(text).map_err(|e| format!("{field} is not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{field} has {} bytes, expected {N}", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_back_and_unknown_fields_are_refused() {
        let request = ReleaseRequest {
            nonce: "00".repeat(32),
            public_key: "11".repeat(32),
            binding: "db".into(),
            evidence: EvidenceRequest::SevSnp {
                report: "AAAA".into(),
                cert_table: None,
            },
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(text.contains(r#""tee":"sev-snp""#), "{text}");
        assert_eq!(
            serde_json::from_str::<ReleaseRequest>(&text).unwrap(),
            request
        );
        let extra = text.replacen('{', r#"{"skipChecks":true,"#, 1);
        assert!(serde_json::from_str::<ReleaseRequest>(&extra).is_err());
    }

    #[test]
    fn an_envelope_survives_the_wire() {
        let envelope = Envelope {
            ephemeral_public: [3; 32],
            nonce: [4; 12],
            ciphertext: vec![5; 40],
        };
        let wire = Released::from(&envelope);
        assert_eq!(Envelope::try_from(&wire).unwrap(), envelope);
        let short = Released {
            nonce: "00".into(),
            ..wire
        };
        assert_eq!(
            Envelope::try_from(&short).unwrap_err(),
            "nonce has 1 bytes, expected 12"
        );
    }

    #[test]
    fn the_context_separates_releases() {
        let a = envelope_context(&[1; 32], "uid", "db");
        assert_ne!(a, envelope_context(&[2; 32], "uid", "db"));
        assert_ne!(a, envelope_context(&[1; 32], "uidd", "b"));
    }

    #[test]
    fn payload_debug_names_keys_never_values() {
        let item = PayloadItem {
            version: 2,
            data: [("password".to_owned(), "hunter2-secret".to_owned())].into(),
        };
        let text = format!("{item:?}");
        assert!(
            text.contains("password") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
