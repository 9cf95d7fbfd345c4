//! A production-shaped OpenBao next to the dev server: integrated (raft) storage — OpenBao 2.x
//! has no `file` backend any more — TLS listeners, `operator
//! init` + unseal. One listener takes any TLS client; the other requires a client certificate
//! signed by the environment's CA (mTLS). Its Kubernetes auth points at the environment's API
//! server, so pod identities log in exactly as with the dev server.

use std::process::Command;
use std::time::Duration;

use crate::env::free_port;
use crate::pki::ServingCert;
use crate::process::ManagedProcess;
use crate::{Env, Error, OpenBao, Result, wait};

/// The running TLS server; stopped on drop.
#[derive(Debug)]
pub struct TlsOpenBao {
    /// Admin client on the listener without client certificates (root token from init).
    pub admin: OpenBao,
    /// `https://127.0.0.1:P` — any TLS client.
    pub addr: String,
    /// `https://127.0.0.1:Q` — client certificate required.
    pub mtls_addr: String,
    /// The server's certificate (its `spki_der` is what a pin hashes).
    pub server: ServingCert,
    /// A client certificate the mTLS listener accepts.
    pub client: ServingCert,
    /// Files for the sidecar: `ca.crt`, `client.crt`, `client.key`.
    pub dir: std::path::PathBuf,
    _process: ManagedProcess,
}

impl Env {
    /// Starts, initialises and unseals a TLS OpenBao with KV v2 at `secret/` and Kubernetes auth
    /// at `kubernetes/` (one per test binary is plenty; it takes a few seconds).
    pub async fn start_tls_openbao(&self) -> Result<TlsOpenBao> {
        let dir = self.dir().join("openbao-tls");
        std::fs::create_dir_all(dir.join("data")).map_err(Error::io("creating openbao-tls/"))?;
        let server = self.ca().serving_cert("openbao", &["localhost"])?;
        let client = self.ca().serving_cert("phantom-proxy", &[])?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(Error::io(format!("writing {name}")))
        };
        write("ca.crt", &self.ca().cert_pem)?;
        write("server.crt", &server.cert_pem)?;
        write("server.key", &server.key_pem)?;
        write("client.crt", &client.cert_pem)?;
        write("client.key", &client.key_pem)?;
        let (port, mtls_port, cluster_port) = (free_port()?, free_port()?, free_port()?);
        let d = dir.display();
        write(
            "config.hcl",
            &format!(
                r#"ui = false
storage "raft" {{
  path = "{d}/data"
  node_id = "phantom-test"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_cert_file = "{d}/server.crt"
  tls_key_file = "{d}/server.key"
}}
listener "tcp" {{
  address = "127.0.0.1:{mtls_port}"
  tls_cert_file = "{d}/server.crt"
  tls_key_file = "{d}/server.key"
  tls_require_and_verify_client_cert = true
  tls_client_ca_file = "{d}/ca.crt"
}}
api_addr = "https://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
"#
            ),
        )?;
        let mut command = Command::new(&self.tools().bao);
        command
            .env("HOME", self.dir())
            .args(["server", &format!("-config={d}/config.hcl")]);
        let process =
            std::sync::Mutex::new(ManagedProcess::spawn("openbao-tls", command, self.dir())?);
        let alive = || process.lock().expect("process").check_alive();

        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca().cert_pem.as_bytes()).map_err(
                    |source| Error::Http {
                        what: "reading the environment's CA".into(),
                        source,
                    },
                )?,
            )
            .build()
            .map_err(|source| Error::Http {
                what: "building an HTTPS client for OpenBao".into(),
                source,
            })?;
        let addr = format!("https://127.0.0.1:{port}");
        let mut admin = OpenBao::with_client(&addr, "", http);
        wait::until_guarded(
            "the TLS OpenBao listening",
            Duration::from_secs(30),
            Duration::from_millis(100),
            alive,
            || async { Ok::<_, Error>(admin.health_code().await.ok().map(|_| ())) },
        )
        .await?;
        admin.init_and_unseal().await?;
        wait::until_guarded(
            "the TLS OpenBao active after unseal (raft elects itself)",
            Duration::from_secs(30),
            Duration::from_millis(100),
            alive,
            || async {
                Ok::<_, Error>((admin.health_code().await.ok() == Some(200)).then_some(()))
            },
        )
        .await?;
        admin.enable_kv2("secret").await?;
        self.configure_kubernetes_auth_on(&admin).await?;
        Ok(TlsOpenBao {
            admin,
            addr,
            mtls_addr: format!("https://127.0.0.1:{mtls_port}"),
            server,
            client,
            dir,
            _process: process.into_inner().expect("process"),
        })
    }
}
