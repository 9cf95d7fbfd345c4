//! A real test environment for Phantom: etcd + kube-apiserver + kube-controller-manager v1.20.2
//! and an OpenBao 2.7.2 dev server, all on free loopback ports with fresh TLS material, torn down
//! on drop. Tools are installed on demand and cached under `~/.cache/phantom/<tool>-<version>`
//! (see `scripts/install-tools.sh`).
//!
//! Tests use one [`Env`] per test binary through [`harness::run`], and keep apart by namespace.
//! Every wait has a timeout; a hang becomes an error that says what was awaited.

pub mod attestation_agent;
pub mod bins;
pub mod broker;
pub mod chart;
pub mod control;
pub mod counting_proxy;
mod env;
mod error;
pub mod harness;
mod images;
mod kube_helpers;
pub mod local;
pub mod node;
mod openbao;
mod phantom_setup;
mod pki;
mod postgres;
mod process;
mod tls_openbao;
mod tools;
pub mod wait;
pub mod webhook;

pub use env::{Env, EnvOptions, free_port};
pub use error::{Error, Result};
pub use images::{ImageSpec, build_oci_tar};
pub use kube_helpers::PodIdentity;
pub use openbao::{KubernetesRole, OpenBao};
pub use phantom_setup::AppNamespace;
pub use pki::{CertificateAuthority, ServingCert};
pub use postgres::Postgres;
pub use tls_openbao::TlsOpenBao;
pub use tools::Tools;

/// Default log filter of the environment's binaries and suites: warnings, without kube's noise
/// about connection attempts while the API server is still starting.
const DEFAULT_LOG_FILTER: &str = "warn,kube_client::client::builder=off";

/// Logs to stderr (or libtest's captured output when `for_tests`), filtered by `RUST_LOG`.
pub fn init_logging(for_tests: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if for_tests {
        builder.with_test_writer().try_init()
    } else {
        builder.with_writer(std::io::stderr).try_init()
    };
}

/// A random lower-case hex string of `bytes * 2` characters (for unique names and test secrets).
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
