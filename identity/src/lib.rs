//! Who is asking. Four answers, the first three used by more than one component:
//!
//! - [`cgroup`]: which pod and container a process belongs to, from its cgroup path and the
//!   pods' container IDs (the memory guard names attackers with it, the node agent its callers);
//! - [`peer`]: the process at the other end of a Unix socket connection, pinned by the pidfd the
//!   kernel hands over (`SO_PEERPIDFD`), so that what is read about it is about that process and
//!   not one that later got its PID;
//! - [`review`]: what a pod-bound ServiceAccount token proves, as the API server's TokenReview
//!   says (the broker and the node agent);
//! - [`runtime`]: which pod and container a container ID is, from the container runtime's own
//!   record on the node (the node agent, before the kubelet has reported the container).

pub mod cgroup;
pub mod peer;
pub mod review;
pub mod runtime;

/// Errors of identity checks. None carries a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server could not review a token (unreachable, or the caller may not create
    /// TokenReviews).
    #[error(
        "creating a TokenReview failed: {source}; can the API server be reached, and may this component create tokenreviews (RBAC: system:auth-delegator)?"
    )]
    Review {
        #[source]
        source: kube::Error,
    },
    /// A token proved no pod identity.
    #[error(transparent)]
    Identity(#[from] review::IdentityError),
    /// The kernel would not say who the peer of a socket is.
    #[error("asking the kernel for the peer of a Unix socket ({what}) failed: {source}")]
    Peer {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    /// A `/proc` file of the peer could not be read: it exited, or `/proc` is not the host's
    /// (the reader needs the host's PID namespace).
    #[error(
        "reading {path} failed: {source}; did the process exit, or does this process not run in the host's PID namespace (hostPID)?"
    )]
    Procfs {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The peer is not the process it was when the connection was made (it exited and its PID
    /// may belong to another process now), or the kernel reports nothing usable about it.
    #[error("the peer of the socket (pid {pid}) {why}; nothing about it is trusted")]
    PeerGone { pid: i32, why: String },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
