//! `phantom-env`: the test environment for humans. `phantom-env up` starts etcd, kube-apiserver,
//! kube-controller-manager and OpenBao on loopback, installs Phantom's CRDs, prints how to reach
//! them, and tears everything down on Ctrl-C.

use anyhow::Context;
use clap::{Parser, Subcommand};
use phantom_conformance::{Env, EnvOptions, Tools};

#[derive(Parser, Debug)]
#[command(
    name = "phantom-env",
    version,
    about = "A real local control plane + OpenBao for trying and testing Phantom"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install (or verify) the cached tools: etcd, kube-apiserver, kube-controller-manager, kubectl, bao.
    Install,
    /// Build the node's OCI images (pause, busybox) into the cache; every node imports them.
    Images,
    /// Start the environment and keep it running until Ctrl-C.
    Up {
        /// Add a node (kubelet + containerd) that runs real pods (needs root).
        #[arg(long, env = "PHANTOM_ENV_NODE")]
        node: bool,
        /// The kubelet's port on 127.0.0.1 (with --node; default: a free one).
        #[arg(long, env = "PHANTOM_ENV_KUBELET_PORT", requires = "node")]
        kubelet_port: Option<u16>,
        /// Do not install Phantom's CRDs.
        #[arg(long, env = "PHANTOM_ENV_NO_CRDS")]
        no_crds: bool,
        /// Also write the `export` lines to this file (for `source`).
        #[arg(long, env = "PHANTOM_ENV_FILE")]
        env_file: Option<std::path::PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    phantom_conformance::init_logging(false);
    match Cli::parse().command {
        Command::Install => {
            let tools = tokio::task::spawn_blocking(Tools::ensure).await??;
            println!("{tools:#?}");
        }
        Command::Images => {
            let tools = tokio::task::spawn_blocking(|| Tools::ensure_with(true)).await??;
            let node_tools = tools
                .node
                .context("the installer did not report the node's tools")?;
            for (spec, tar) in tokio::task::spawn_blocking(move || {
                phantom_conformance::node::image_tarballs(&node_tools)
            })
            .await??
            {
                println!("{} {}", spec.reference(), tar.display());
            }
        }
        Command::Up {
            no_crds,
            env_file,
            node,
            kubelet_port,
        } => {
            let env = Env::start_with(EnvOptions {
                node,
                kubelet_port,
                ..EnvOptions::default()
            })
            .await
            .context("starting the environment")?;
            if !no_crds {
                env.install_crds()
                    .await
                    .context("installing Phantom's CRDs")?;
            }
            let exports = format!(
                "export KUBECONFIG={}\nexport BAO_ADDR={}\nexport BAO_TOKEN={}\n",
                env.kubeconfig().display(),
                env.openbao().addr(),
                env.openbao().root_token()
            );
            if let Some(path) = env_file {
                std::fs::write(&path, &exports)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!(
                "phantom-env: up in {:.1?}; API server {}, OpenBao {}; logs in {}",
                env.started_in(),
                env.api_url(),
                env.openbao().addr(),
                env.dir().display()
            );
            println!("{exports}");
            eprintln!(
                "phantom-env: kubectl is {}; press Ctrl-C to tear down",
                env.tools().kubectl.display()
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("phantom-env: tearing down");
        }
    }
    Ok(())
}
