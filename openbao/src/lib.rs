//! Phantom's one OpenBao (and Vault) client, shared by every component that talks to OpenBao: the
//! sidecar, the preflight probe, and the broker and node agent to come.
//!
//! - [`client`]: Kubernetes auth with a projected ServiceAccount token, token renewal and
//!   revocation, KV v2 and dynamic reads with leases, coalesced reads, health and role lookups.
//! - [`sessions`]: Kubernetes-auth sessions renewed before they expire, replaced when they cannot be.
//! - [`tls`]: trust through a CA bundle and/or pinned SubjectPublicKeyInfo digests, mTLS.
//! - [`SecretValue`]: every value read, zeroized on drop and never printed.
//! - [`observe`]: how a caller counts requests (its metrics) without this crate knowing them.
//!
//! Answers are parsed from zeroizing buffers and the secret data moves straight into
//! [`SecretValue`]s; errors carry OpenBao's `errors` array only, never a body that could hold
//! data.

pub mod client;
pub mod coalesce;
pub mod observe;
pub mod secret;
pub mod sessions;
pub mod tls;

use std::sync::Arc;

pub use client::{DynamicSecret, Health, KvSecret, Lease, OpenBaoClient, Session};
pub use observe::{Observer, Operation, RequestOutcome};
pub use secret::SecretValue;

/// A shared, clonable source error (coalesced reads hand one error to every waiter).
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// Errors of the OpenBao client. None of them ever carries a secret value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// OpenBao could not be reached.
    #[error(
        "OpenBao at {addr} is unreachable ({cause}); check the address, DNS and network policy, and that OpenBao is unsealed"
    )]
    Unreachable {
        addr: String,
        /// The whole cause chain, as one line (reqwest's own message says only "error sending
        /// request").
        cause: String,
        #[source]
        source: Option<Source>,
    },
    /// The TLS connection to OpenBao failed (certificate not trusted, pin mismatch, client
    /// certificate refused), or TLS settings cannot be loaded (`addr` is `-` then).
    #[error(
        "TLS to OpenBao at {addr} failed: {cause}; check PHANTOM_OPENBAO_CA_FILE, PHANTOM_OPENBAO_SPKI_SHA256 and the client certificate (PHANTOM_OPENBAO_CLIENT_CERT/KEY)"
    )]
    Tls {
        addr: String,
        cause: String,
        #[source]
        source: Option<Source>,
    },
    /// OpenBao refused a login.
    #[error(
        "OpenBao at {addr} refused the Kubernetes login with role {role} at auth/{mount} ({status}: {errors}); check that the role binds this pod's namespace and ServiceAccount and accepts the token's audience"
    )]
    LoginRefused {
        addr: String,
        role: String,
        mount: String,
        status: u16,
        errors: String,
    },
    /// OpenBao refused or failed a request.
    #[error("OpenBao at {addr} answered {status} reading {path}: {errors}; {hint}")]
    Read {
        addr: String,
        path: String,
        status: u16,
        errors: String,
        hint: &'static str,
    },
    /// OpenBao's answer did not have the expected shape.
    #[error("OpenBao at {addr} answered {path} with an unexpected body ({what})")]
    Malformed {
        addr: String,
        path: String,
        what: String,
        #[source]
        source: Option<Source>,
    },
    /// The ServiceAccount token could not be read.
    #[error(
        "reading the ServiceAccount token {path}: {source}; is the projected token volume mounted?"
    )]
    Token {
        path: String,
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl Error {
    /// Whether OpenBao refused the session itself (login refused, token expired or revoked): the
    /// caller should log in afresh. An outage is not a refusal: sessions and leases stay valid.
    pub fn is_session_refused(&self) -> bool {
        matches!(
            self,
            Self::LoginRefused { .. }
                | Self::Read {
                    status: 401 | 403,
                    ..
                }
        )
    }

    /// The HTTP status OpenBao answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::LoginRefused { status, .. } | Self::Read { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
