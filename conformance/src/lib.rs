//! A real test environment for Phantom: etcd + kube-apiserver + kube-controller-manager v1.20.2
//! and an OpenBao 2.7.2 dev server, all on free loopback ports with fresh TLS material, torn down
//! on drop. Tools are installed on demand and cached under `~/.cache/phantom/<tool>-<version>`
//! (see `scripts/install-tools.sh`).
//!
//! Tests use one [`Env`] per test binary through [`harness::run`], and keep apart by namespace.
//! Every wait has a timeout; a hang becomes an error that says what was awaited.

mod env;
mod error;
pub mod harness;
mod kube_helpers;
mod openbao;
mod pki;
mod process;
mod tools;
pub mod wait;

pub use env::{Env, EnvOptions};
pub use error::{Error, Result};
pub use kube_helpers::PodIdentity;
pub use openbao::{KubernetesRole, OpenBao};
pub use pki::{CertificateAuthority, ServingCert};
pub use tools::Tools;

/// A random lower-case hex string of `bytes * 2` characters (for unique names and test secrets).
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
