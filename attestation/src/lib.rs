//! TEE evidence for attested key release.
//!
//! What the broker (the relying party next to OpenBao) needs to decide whether a pod's TEE may
//! receive a secret, and what the sidecar needs to produce the evidence, in one library:
//!
//! - [`envelope`]: the secret sealed to the sidecar's ephemeral key (X25519, HKDF-SHA256,
//!   AES-256-GCM);
//! - [`report_data`]: the 64 bytes a report carries, binding the broker's nonce, the sidecar's
//!   ephemeral key, the pinned OpenBao key and the pod UID;
//! - [`tsm`]: evidence collection through Linux configfs-tsm;
//! - [`aa`]: evidence from the CoCo attestation-agent (Kata/CoCo pods), parsed broker-side;
//! - [`snp`] and [`tdx`]: offline verification of AMD SEV-SNP reports and Intel TDX quotes
//!   against pinned vendor roots and operator-supplied collateral, never fetched at release time;
//! - [`collateral`]: the operator's offline bundle (VCEKs/VLEKs, TDX collateral), each entry with
//!   a status, looked up by what the evidence needs;
//! - [`protocol`]: the broker's wire format (challenge, release request, sealed answer);
//! - [`claims`]: what verification established, in the one shape CEL conditions read
//!   (`attestation.tee`, `.snp.*`, `.tdx.*`, `.pod`, `.serviceAccount`, `.openbao`);
//! - [`requirement`]: every structured field of an `AttestationRequirement`, enforced over the
//!   claims with a refusal that names the field and what was found.
//!
//! Verification never runs in the sidecar: a check inside the node its owner controls is no gate.
//! The verifiers are behind the default feature `verify`; the sidecar builds without it.

pub mod aa;
pub mod claims;
#[cfg(feature = "verify")]
pub mod collateral;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod envelope;
mod error;
pub mod protocol;
pub mod report_data;
pub mod requirement;
#[cfg(feature = "verify")]
pub mod snp;
#[cfg(feature = "verify")]
pub mod tdx;
pub mod tsm;

pub use claims::{Claims, SnpClaims, TdxClaims, Tee};
pub use error::{Error, Result};
pub use requirement::{Reason, Refusal};
