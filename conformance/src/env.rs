//! The environment: etcd, kube-apiserver, kube-controller-manager and OpenBao on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::{CertificateAuthority, signing_key_pem};
use crate::process::{ENV_DIR_PREFIX, ManagedProcess, reap_stale_environments, write};
use crate::{Error, OpenBao, Result, Tools, wait};

/// Options of [`Env::start_with`].
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// Run kube-controller-manager (default ServiceAccounts, Deployments → ReplicaSets → Pods).
    pub controller_manager: bool,
    /// Enable and configure OpenBao's Kubernetes auth method at `kubernetes/` against this API server.
    pub kubernetes_auth: bool,
    /// How long to wait for each component to become ready.
    pub ready_timeout: Duration,
    /// Add a node (kube-scheduler + kubelet + containerd) that runs real pods. Needs root; see
    /// [`crate::node::unsupported_reason`].
    pub node: bool,
    /// The kubelet's port on 127.0.0.1 (a free one when `None`): set it when a firewall or a
    /// second tool needs to know it in advance.
    pub kubelet_port: Option<u16>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            controller_manager: true,
            kubernetes_auth: true,
            ready_timeout: Duration::from_secs(90),
            node: false,
            kubelet_port: None,
        }
    }
}

/// A running control plane + OpenBao. Dropping it stops every process and removes its directory.
pub struct Env {
    // Field order matters: the node is torn down first (in `Drop`), then processes stop, then the
    // directory they live in is removed.
    node: Mutex<Option<crate::node::Node>>,
    processes: Mutex<Vec<ManagedProcess>>,
    dir: tempfile::TempDir,
    tools: Tools,
    api_url: String,
    kubeconfig: PathBuf,
    ca: CertificateAuthority,
    etcd_endpoint: String,
    openbao: OpenBao,
    client: kube::Client,
    started_in: Duration,
}

/// Name of the OpenBao root token of the dev server (test environment only).
const BAO_ROOT_TOKEN: &str = "phantom-dev-root";
/// The ServiceAccount OpenBao uses to call TokenReview.
pub(crate) const REVIEWER_NAMESPACE: &str = "kube-system";
pub(crate) const REVIEWER_SERVICE_ACCOUNT: &str = "openbao-token-reviewer";

pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(Error::io("finding a free loopback port"))?;
    Ok(listener
        .local_addr()
        .map_err(Error::io("finding a free loopback port"))?
        .port())
}

impl Env {
    /// Starts an environment with default options.
    pub async fn start() -> Result<Self> {
        Self::start_with(EnvOptions::default()).await
    }

    /// Starts an environment. Installs missing tools first (minutes, once per machine). Retries
    /// when a port picked as free was taken by someone else in the meantime.
    pub async fn start_with(options: EnvOptions) -> Result<Self> {
        reap_stale_environments();
        let with_node = options.node;
        let tools = tokio::task::spawn_blocking(move || Tools::ensure_with(with_node))
            .await
            .expect("installer thread panicked")?;
        let mut attempt = 1;
        loop {
            match Self::try_start(&tools, &options).await {
                Err(Error::Exited { tail, .. })
                    if attempt < 3 && tail.contains("address already in use") =>
                {
                    tracing::warn!(
                        attempt,
                        "a port was taken while starting; retrying with new ports"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_start(tools: &Tools, options: &EnvOptions) -> Result<Self> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix(ENV_DIR_PREFIX)
            .tempdir()
            .map_err(Error::io("creating the environment directory"))?;
        let d = dir.path().to_path_buf();
        write(&d.join("owner"), &std::process::id().to_string())?;

        let ca = CertificateAuthority::new("phantom-test-ca")?;
        let serving = ca.serving_cert(
            "kube-apiserver",
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        write(&d.join("ca.crt"), &ca.cert_pem)?;
        write(&d.join("ca.key"), &ca.key_pem)?;
        write(&d.join("apiserver.crt"), &serving.cert_pem)?;
        write(&d.join("apiserver.key"), &serving.key_pem)?;
        let (sa_key, sa_pub) = signing_key_pem()?;
        write(&d.join("sa.key"), &sa_key)?;
        // 1.20 reads verification keys only as PUBLIC KEY / RSA / EC PEM blocks, not PKCS#8.
        write(&d.join("sa.pub"), &sa_pub)?;
        let admin_token = crate::random_hex(24);
        write(
            &d.join("tokens.csv"),
            &format!("{admin_token},phantom-admin,phantom-admin,\"system:masters\"\n"),
        )?;

        let (etcd_port, etcd_peer_port, api_port, bao_port) =
            (free_port()?, free_port()?, free_port()?, free_port()?);
        let etcd_endpoint = format!("http://127.0.0.1:{etcd_port}");
        let api_url = format!("https://127.0.0.1:{api_port}");
        let bao_addr = format!("http://127.0.0.1:{bao_port}");
        let kubeconfig = d.join("kubeconfig");
        write(
            &kubeconfig,
            &kubeconfig_yaml(&api_url, &d.join("ca.crt"), &admin_token),
        )?;

        let mut processes = Vec::new();
        let mut etcd = Command::new(&tools.etcd);
        etcd.args(["--name", "default", "--data-dir"])
            .arg(d.join("etcd"))
            .args([
                "--listen-client-urls",
                &etcd_endpoint,
                "--advertise-client-urls",
                &etcd_endpoint,
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer_port}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{etcd_peer_port}"),
            ]);
        processes.push(ManagedProcess::spawn("etcd", etcd, &d)?);

        let mut apiserver = Command::new(&tools.kube_apiserver);
        apiserver.args([
            format!("--etcd-servers={etcd_endpoint}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--tls-cert-file=apiserver.crt".into(),
            "--tls-private-key-file=apiserver.key".into(),
            "--client-ca-file=ca.crt".into(),
            "--token-auth-file=tokens.csv".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-account-key-file=sa.pub".into(),
            "--service-account-signing-key-file=sa.key".into(),
            "--api-audiences=https://kubernetes.default.svc".into(),
            "--authorization-mode=Node,RBAC".into(),
            // Debug containers (alpha in 1.20): admission's guard against them is tested here.
            "--feature-gates=EphemeralContainers=true".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--logtostderr=true".into(),
        ]);
        processes.push(ManagedProcess::spawn("kube-apiserver", apiserver, &d)?);

        // HOME inside the environment: the dev server writes a token helper file there.
        let mut bao = Command::new(&tools.bao);
        bao.env("HOME", &d).args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={BAO_ROOT_TOKEN}"),
            &format!("-dev-listen-address=127.0.0.1:{bao_port}"),
        ]);
        processes.push(ManagedProcess::spawn("openbao", bao, &d)?);

        let mut env = Self {
            node: Mutex::new(None),
            processes: Mutex::new(processes),
            client: client_from_kubeconfig(&kubeconfig).await?,
            dir,
            tools: tools.clone(),
            api_url,
            kubeconfig,
            ca,
            etcd_endpoint,
            openbao: OpenBao::new(bao_addr, BAO_ROOT_TOKEN),
            started_in: Duration::ZERO,
        };
        env.wait_for_apiserver(options.ready_timeout).await?;
        if options.controller_manager {
            let mut cm = Command::new(&tools.kube_controller_manager);
            cm.args([
                "--kubeconfig=kubeconfig",
                "--service-account-private-key-file=sa.key",
                "--root-ca-file=ca.crt",
                "--cluster-signing-cert-file=ca.crt",
                "--cluster-signing-key-file=ca.key",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--port=0",
                "--controllers=*",
                "--logtostderr=true",
            ]);
            let cm = ManagedProcess::spawn("kube-controller-manager", cm, env.dir())?;
            env.processes.lock().expect("process list").push(cm);
        }
        env.wait_for_openbao(options.ready_timeout).await?;
        if options.kubernetes_auth {
            env.configure_openbao_kubernetes_auth().await?;
        }
        if options.node {
            env.start_node(&serving, options.ready_timeout, options.kubelet_port)
                .await?;
        }
        env.started_in = started.elapsed();
        Ok(env)
    }

    /// Fails with the component's log when one of the processes has died.
    pub fn check_processes(&self) -> Result<()> {
        self.processes
            .lock()
            .expect("process list")
            .iter_mut()
            .try_for_each(ManagedProcess::check_alive)?;
        self.node
            .lock()
            .expect("node")
            .as_mut()
            .map_or(Ok(()), crate::node::Node::check_processes)
    }

    /// Kills a running container of the node (`containerd://<id>` from a pod's container status)
    /// with SIGKILL, as an OOM kill or a crash would: the kubelet restarts it.
    pub fn kill_container(&self, container_id: &str) -> Result<()> {
        let guard = self.node.lock().expect("node");
        let node = guard.as_ref().ok_or_else(|| Error::Io {
            context: "killing a container".into(),
            source: std::io::Error::other("this environment has no node (EnvOptions::node)"),
        })?;
        let mut kill = node.ctr();
        kill.args(["tasks", "kill", "-s", "SIGKILL"])
            .arg(container_id.trim_start_matches("containerd://"));
        crate::process::run_checked(&mut kill, "ctr tasks kill").map(drop)
    }

    async fn start_node(
        &self,
        serving: &crate::ServingCert,
        timeout: Duration,
        kubelet_port: Option<u16>,
    ) -> Result<()> {
        use k8s_openapi::api::core::v1::Node as NodeObject;
        let tools = self
            .tools
            .node
            .clone()
            .expect("node tools are installed when the node is requested");
        let (dir, kubeconfig, serving) = (
            self.dir().to_owned(),
            self.kubeconfig.clone(),
            serving.clone(),
        );
        let node = tokio::task::spawn_blocking(move || {
            crate::node::Node::start(&tools, &dir, &kubeconfig, &serving, kubelet_port)
        })
        .await
        .expect("node start thread panicked")?;
        *self.node.lock().expect("node") = Some(node);
        let nodes: kube::Api<NodeObject> = kube::Api::all(self.client.clone());
        let guard = || self.check_processes();
        wait::until_guarded(
            "the node to become Ready",
            timeout,
            Duration::from_millis(250),
            guard,
            || async {
                let node = nodes.get_opt(crate::node::NODE_NAME).await?;
                let ready = node
                    .and_then(|n| n.status)
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                Ok::<_, kube::Error>(ready.then_some(()))
            },
        )
        .await
    }

    async fn wait_for_apiserver(&self, timeout: Duration) -> Result<()> {
        use k8s_openapi::api::rbac::v1::ClusterRole;
        let roles: kube::Api<ClusterRole> = kube::Api::all(self.client.clone());
        // RBAC's bootstrap roles appear last in start-up; OpenBao's reviewer needs one of them.
        let what = "kube-apiserver to serve its bootstrap RBAC roles";
        wait::until_guarded(
            what,
            timeout,
            Duration::from_millis(200),
            || self.check_processes(),
            || async {
                roles
                    .get_opt("system:auth-delegator")
                    .await
                    .map(|role| role.map(|_| ()))
            },
        )
        .await
    }

    async fn wait_for_openbao(&self, timeout: Duration) -> Result<()> {
        wait::until_guarded(
            "OpenBao to report healthy",
            timeout,
            Duration::from_millis(100),
            || self.check_processes(),
            || async {
                let health = self.openbao.health().await?;
                Ok::<_, Error>(
                    (health["initialized"] == true && health["sealed"] == false).then_some(()),
                )
            },
        )
        .await
    }

    /// How long [`Env::start`] took (tools already cached).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The environment's directory (TLS material, kubeconfig, component logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node's kubelet pods directory (`<root-dir>/pods`: each pod's volumes, the projected
    /// tokens among them), as the node agent reads it.
    pub fn kubelet_pods_dir(&self) -> std::path::PathBuf {
        crate::node::kubelet_pods_dir(self.dir())
    }

    /// The node's containerd task directory (each container's OCI bundle), as the node agent
    /// reads it.
    pub fn containerd_tasks_dir(&self) -> std::path::PathBuf {
        crate::node::containerd_tasks_dir(self.dir())
    }

    /// `phantom-agent`'s flags for this node: its socket in `socket_dir`, OpenBao at `openbao`,
    /// serving namespaces labelled `enable_label=enabled`, status on `127.0.0.1:<status_port>`,
    /// and the node's kubelet and containerd directories.
    pub fn node_agent_args(
        &self,
        socket_dir: &Path,
        openbao: &str,
        enable_label: &str,
        status_port: u16,
    ) -> Vec<String> {
        vec![
            format!("--node-name={}", crate::node::NODE_NAME),
            format!("--socket-dir={}", socket_dir.display()),
            format!("--openbao-addr={openbao}"),
            format!("--kubelet-pods-dir={}", self.kubelet_pods_dir().display()),
            format!(
                "--containerd-tasks-dir={}",
                self.containerd_tasks_dir().display()
            ),
            format!("--status-addr=127.0.0.1:{status_port}"),
            format!("--enable-label={enable_label}=enabled"),
        ]
    }

    /// The cached tool binaries.
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// A client authenticated as a cluster admin (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// `https://127.0.0.1:PORT` of the API server.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Admin kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client with the permissions of ServiceAccount `namespace/name` (impersonated by the
    /// admin), to prove that an RBAC grant is enough.
    pub async fn client_as_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client> {
        client_impersonating(
            &self.kubeconfig,
            Some(&format!("system:serviceaccount:{namespace}:{name}")),
        )
        .await
    }

    /// The environment's CA (it signed the API server's certificate and can sign more).
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The OpenBao server.
    pub fn openbao(&self) -> &OpenBao {
        &self.openbao
    }

    /// A `kubectl` command pointed at this environment.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.tools.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Every key and value in etcd (`etcdctl get --prefix ""`), the raw bytes.
    pub fn etcd_dump(&self) -> Result<Vec<u8>> {
        let mut etcdctl = Command::new(&self.tools.etcdctl);
        etcdctl.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &self.etcd_endpoint,
            "get",
            "--prefix",
            "",
        ]);
        Ok(crate::process::run_checked(&mut etcdctl, "etcdctl get --prefix \"\"")?.stdout)
    }

    /// Log files of every component started so far.
    pub fn component_logs(&self) -> Vec<PathBuf> {
        self.processes
            .lock()
            .expect("process list")
            .iter()
            .map(|p| p.log.clone())
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut node) = self.node.lock().map(|mut n| n.take()).unwrap_or(None) {
            node.teardown();
        }
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("dir", &self.dir.path())
            .field("api_url", &self.api_url)
            .field("openbao", &self.openbao.addr())
            .finish_non_exhaustive()
    }
}

fn kubeconfig_yaml(api_url: &str, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: phantom-test\n  cluster:\n    server: {api_url}\n    certificate-authority: {}\n\
         users:\n- name: phantom-admin\n  user:\n    token: {token}\ncontexts:\n- name: phantom-test\n  context:\n    cluster: phantom-test\n    user: phantom-admin\n\
         current-context: phantom-test\n",
        ca.display()
    )
}

async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    client_impersonating(path, None).await
}

/// A client from `path`, impersonating `user` when given (RBAC tests: the admin's credentials,
/// a ServiceAccount's permissions).
pub(crate) async fn client_impersonating(path: &Path, user: Option<&str>) -> Result<kube::Client> {
    let err = |message: String| Error::KubeConfig {
        kubeconfig: path.to_owned(),
        message,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    config.auth_info.impersonate = user.map(str::to_owned);
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}
