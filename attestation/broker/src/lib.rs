//! `phantom-broker`: the relying party for attested key release, run next to OpenBao.
//!
//! The sidecar asks for a [`challenges::Challenge`], collects evidence binding it, and asks for a
//! release with the evidence and the pod's ServiceAccount token. [`verdict::decide`] is the whole
//! decision as a pure function of what the broker checked: the challenge redeemed, the token
//! reviewed, the evidence verified against the operator's collateral and bound to this release,
//! the AttestationRequirement's fields and conditions and the policies' key-release conditions.
//! Only an `Ok` lets the caller read the secret with the broker's own OpenBao identity and seal it
//! to the key the evidence binds ([`phantom_attestation::envelope::seal`]).
//!
//! State today: the decision and the challenge store are built and tested; the HTTPS service,
//! the TokenReview and OpenBao clients and the chart option are the next step.

pub mod challenges;
pub mod verdict;
