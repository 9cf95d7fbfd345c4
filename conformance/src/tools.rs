//! The real components' binaries, installed and cached by `scripts/install-tools.sh`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// The tool cache, `~/.cache/phantom` unless `PHANTOM_CACHE_DIR` says otherwise (the install
/// script reads the same variable).
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("PHANTOM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/phantom")
        })
}

/// Paths of the cached tools.
#[derive(Debug, Clone)]
pub struct Tools {
    pub etcd: PathBuf,
    pub etcdctl: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
    pub bao: PathBuf,
    /// Directory with PostgreSQL's `initdb`, `postgres` and `psql`.
    pub postgres_bin: PathBuf,
    /// A Python with `helm_python` (Helm v4's SDK) for rendering and linting the chart.
    pub helm_python: PathBuf,
    /// Present when installed with the node (kubelet, scheduler, containerd).
    pub node: Option<crate::node::NodeTools>,
}

impl Tools {
    /// The install script shipped with this crate.
    pub fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install-tools.sh")
    }

    /// Installs whatever is missing (a no-op taking milliseconds once cached) and returns the
    /// paths. Blocking: the first run builds Kubernetes from source, which takes minutes. The
    /// script holds a lock, so concurrent callers build once.
    pub fn ensure() -> Result<Self> {
        Self::ensure_with(false)
    }

    /// [`Tools::ensure`], plus the node's tools when `node` is set.
    pub fn ensure_with(node: bool) -> Result<Self> {
        let script = Self::script();
        let out = Command::new("bash")
            .arg(&script)
            .args(node.then_some("--with-node"))
            .arg("--print-paths")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|source| Error::Spawn {
                what: "the tool installer",
                program: script.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Install {
                script,
                status: out.status,
            });
        }
        let paths: HashMap<String, PathBuf> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
            .collect();
        let get = |key: &'static str| {
            paths.get(key).cloned().ok_or_else(|| Error::ToolMissing {
                key,
                script: script.clone(),
            })
        };
        Ok(Self {
            etcd: get("ETCD")?,
            etcdctl: get("ETCDCTL")?,
            kube_apiserver: get("KUBE_APISERVER")?,
            kube_controller_manager: get("KUBE_CONTROLLER_MANAGER")?,
            kubectl: get("KUBECTL")?,
            bao: get("BAO")?,
            postgres_bin: get("POSTGRES_BIN")?,
            helm_python: get("HELM_PYTHON")?,
            node: match node {
                false => None,
                true => Some(crate::node::NodeTools {
                    kube_scheduler: get("KUBE_SCHEDULER")?,
                    kubelet: get("KUBELET")?,
                    containerd: get("CONTAINERD")?,
                    ctr: get("CTR")?,
                    k8s_source: get("K8S_SOURCE")?,
                }),
            },
        })
    }
}
