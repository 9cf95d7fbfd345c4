//! A single-node cluster that runs real pods: kube-scheduler and a kubelet (built from the same
//! Debian Kubernetes 1.20.2 source) on a private containerd (Debian's 1.6, its own root, state
//! and socket), following the recipe in shared/spec/real-components.md ("Real pods").
//!
//! Pods use `hostNetwork: true` (the node has only a loopback CNI config: there is no pod network
//! here) and `imagePullPolicy: Never` (images are imported from OCI tarballs; there is no
//! registry). Production pods need neither. Only one node runs per machine (a lock).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::images::{ImageSpec, build_oci_tar};
use crate::process::{ManagedProcess, run_checked, write};
use crate::{Error, Result};

/// Name of the node in the API.
pub const NODE_NAME: &str = "node1";
/// The pause image every pod sandbox uses.
pub const PAUSE_IMAGE: &str = "phantom.local/pause:1.20.2";
/// A tiny application image: busybox-static as `/bin/sh` and friends.
pub const BUSYBOX_IMAGE: &str = "phantom.local/busybox:1";
/// The guard suite's attacker: busybox plus `/bin/memory-reader`, which reads another process's
/// environment by ptrace, process_vm_readv, `/proc/<pid>/mem` or `/proc/<pid>/environ`.
pub const MEMORY_READER_IMAGE: &str = "phantom.local/memory-reader:1";
const MEMORY_READER_SOURCE: &str = include_str!("images/memory-reader.c");

/// The kubelet's pods directory of the node started in `env_dir`.
pub(crate) fn kubelet_pods_dir(env_dir: &Path) -> PathBuf {
    env_dir.join("node/kubelet/pods")
}

/// containerd's task directory for Kubernetes' containers on the node started in `env_dir` (each
/// container's OCI bundle), as the node agent reads it.
pub(crate) fn containerd_tasks_dir(env_dir: &Path) -> PathBuf {
    env_dir.join("node/containerd/state/io.containerd.runtime.v2.task/k8s.io")
}

/// Binaries the node needs, reported by the install script.
#[derive(Debug, Clone)]
pub struct NodeTools {
    pub kube_scheduler: PathBuf,
    pub kubelet: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub k8s_source: PathBuf,
}

/// Why a node cannot run here, when it cannot (tests then skip with this message).
pub fn unsupported_reason() -> Option<String> {
    if !crate::process::running_as_root() {
        return Some("running pods needs root (kubelet and containerd mount filesystems and create cgroups); CI runs as root".into());
    }
    if !Path::new("/sys/fs/cgroup").exists() {
        return Some("no /sys/fs/cgroup: the kernel's cgroups are not mounted".into());
    }
    None
}

/// The running node; torn down explicitly by [`Node::teardown`] (the environment does it first on drop).
#[derive(Debug)]
pub(crate) struct Node {
    dir: PathBuf,
    socket: PathBuf,
    ctr: PathBuf,
    processes: Vec<ManagedProcess>,
    /// Entries of the kubelet's fixed log directories that existed before this node started;
    /// teardown removes only the others.
    logs_before: Vec<PathBuf>,
    _lock: File,
}

/// Where a 1.20 kubelet writes container logs, whatever its root dir.
const LOG_DIRS: [&str; 2] = ["/var/log/pods", "/var/log/containers"];

fn log_entries() -> Vec<PathBuf> {
    LOG_DIRS
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
        })
        .collect()
}

/// Takes the machine-wide node lock, waiting up to `timeout`.
fn lock(timeout: Duration) -> Result<File> {
    let cache = crate::tools::cache_dir();
    std::fs::create_dir_all(&cache).map_err(Error::io("creating the cache dir"))?;
    let path = cache.join("node.lock");
    let file = File::create(&path).map_err(Error::io(format!("opening {}", path.display())))?;
    let deadline = Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!(
                        "the node lock {} (another node-backed environment is running)",
                        path.display()
                    ),
                    after: timeout,
                    last_error: None,
                });
            }
        }
    }
}

/// Phantom's sidecar image, as admission's defaults name it.
pub const PROXY_IMAGE: &str = "phantom.local/phantom-proxy:dev";
/// Phantom's wrapper image (the init container copies `/phantom-exec` out of it).
pub const EXEC_IMAGE: &str = "phantom.local/phantom-exec:dev";

/// Phantom's own images, from the static binaries of `make static`, built into `work` (they
/// change with the code, so they are not cached); `None` when the binaries are not built.
pub fn phantom_images(work: &Path) -> Result<Option<Vec<(ImageSpec, PathBuf)>>> {
    let (Some(proxy), Some(exec)) = (
        crate::bins::static_built("phantom-proxy"),
        crate::bins::static_built("phantom-exec"),
    ) else {
        return Ok(None);
    };
    std::fs::create_dir_all(work).map_err(Error::io("creating the image work directory"))?;
    let mut out = Vec::new();
    for (reference, binary, entry) in [
        (PROXY_IMAGE, proxy, "/phantom-proxy"),
        (EXEC_IMAGE, exec, "/phantom-exec"),
    ] {
        let (name, tag) = reference.split_once(':').unwrap_or((reference, "dev"));
        let spec = ImageSpec {
            name: name.into(),
            tag: tag.into(),
            files: vec![(binary, entry.into(), 0o755)],
            symlinks: vec![],
            entrypoint: vec![entry.into()],
        };
        let tar = work.join(format!("{}.oci.tar", name.replace('/', "_")));
        build_oci_tar(
            &spec,
            &work.join(format!("work-{tag}-{}", entry.trim_start_matches('/'))),
            &tar,
        )?;
        out.push((spec, tar));
    }
    Ok(Some(out))
}

/// Builds (once, cached) the image tarballs the node imports.
pub fn image_tarballs(tools: &NodeTools) -> Result<Vec<(ImageSpec, PathBuf)>> {
    let cache = crate::tools::cache_dir().join("images");
    std::fs::create_dir_all(&cache).map_err(Error::io("creating the image cache"))?;
    let pause_bin = cache.join("pause-1.20.2.bin");
    if !pause_bin.exists() {
        let src = tools.k8s_source.join("build/pause/linux/pause.c");
        let mut gcc = Command::new("gcc");
        gcc.args(["-Os", "-static", "-o"]).arg(&pause_bin).arg(&src);
        run_checked(&mut gcc, &format!("gcc -static {}", src.display()))?;
    }
    // Keyed by its source, so an edited attacker is rebuilt.
    let reader_bin = cache.join(format!(
        "memory-reader-{}.bin",
        &hex::encode(Sha256::digest(MEMORY_READER_SOURCE))[..12]
    ));
    if !reader_bin.exists() {
        let src = cache.join("memory-reader.c");
        write(&src, MEMORY_READER_SOURCE)?;
        let mut gcc = Command::new("gcc");
        gcc.args(["-Os", "-static", "-Wall", "-Werror", "-o"])
            .arg(&reader_bin)
            .arg(&src);
        run_checked(&mut gcc, "gcc -static memory-reader.c")?;
    }
    let busybox_links = |commands: &[&str]| -> Vec<(String, String)> {
        commands
            .iter()
            .map(|c| (format!("/bin/{c}"), "busybox".to_owned()))
            .collect()
    };
    let specs = vec![
        ImageSpec {
            name: "phantom.local/pause".into(),
            tag: "1.20.2".into(),
            files: vec![(pause_bin, "/pause".into(), 0o755)],
            symlinks: vec![],
            entrypoint: vec!["/pause".into()],
        },
        ImageSpec {
            name: "phantom.local/busybox".into(),
            tag: "1".into(),
            files: vec![(PathBuf::from("/bin/busybox"), "/bin/busybox".into(), 0o755)],
            symlinks: busybox_links(&[
                "sh",
                "cat",
                "echo",
                "sleep",
                "sha256sum",
                "ls",
                "env",
                "wc",
                "cut",
            ]),
            entrypoint: vec!["/bin/sh".into()],
        },
        {
            let (name, tag) = MEMORY_READER_IMAGE
                .split_once(':')
                .expect("the image reference has a tag");
            ImageSpec {
                name: name.into(),
                tag: tag.into(),
                files: vec![
                    (PathBuf::from("/bin/busybox"), "/bin/busybox".into(), 0o755),
                    (reader_bin, "/bin/memory-reader".into(), 0o755),
                ],
                symlinks: busybox_links(&["sh", "cat", "echo", "sleep"]),
                entrypoint: vec!["/bin/sh".into()],
            }
        },
    ];
    let mut out = Vec::new();
    for spec in specs {
        // The files' sources in the name: a rebuilt binary (a new cache path) makes a new tarball.
        let sources = hex::encode(Sha256::digest(format!("{:?}", spec.files)));
        let stem = format!(
            "{}-{}-{}",
            spec.name.replace('/', "_"),
            spec.tag,
            &sources[..8]
        );
        let tar = cache.join(format!("{stem}.oci.tar"));
        if !tar.exists() {
            let work = cache.join(format!("work-{stem}"));
            build_oci_tar(&spec, &work, &tar.with_extension("tmp"))?;
            std::fs::rename(tar.with_extension("tmp"), &tar)
                .map_err(Error::io("storing an image tarball"))?;
            let _ = std::fs::remove_dir_all(work);
        }
        out.push((spec, tar));
    }
    Ok(out)
}

impl Node {
    /// Starts containerd, imports the images, starts kube-scheduler and the kubelet.
    pub(crate) fn start(
        tools: &NodeTools,
        env_dir: &Path,
        kubeconfig: &Path,
        serving: &crate::ServingCert,
        kubelet_port: Option<u16>,
    ) -> Result<Self> {
        let lock = lock(Duration::from_secs(900))?;
        let dir = env_dir.join("node");
        for sub in ["containerd/root", "containerd/state", "cni", "kubelet"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(Error::io("creating the node's directories"))?;
        }
        let socket = dir.join("containerd/containerd.sock");
        let default = Command::new(&tools.containerd)
            .args(["config", "default"])
            .output()
            .map_err(Error::io("containerd config default"))?;
        let config = String::from_utf8_lossy(&default.stdout)
            .replace(
                "root = \"/var/lib/containerd\"",
                &format!("root = \"{}\"", dir.join("containerd/root").display()),
            )
            .replace(
                "state = \"/run/containerd\"",
                &format!("state = \"{}\"", dir.join("containerd/state").display()),
            )
            .replace(
                "address = \"/run/containerd/containerd.sock\"",
                &format!("address = \"{}\"", socket.display()),
            )
            .replace(
                "restrict_oom_score_adj = false",
                "restrict_oom_score_adj = true",
            )
            .replace("bin_dir = \"/opt/cni/bin\"", "bin_dir = \"/usr/lib/cni\"")
            .replace(
                "conf_dir = \"/etc/cni/net.d\"",
                &format!("conf_dir = \"{}\"", dir.join("cni").display()),
            );
        let config: String = config
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("sandbox_image =") {
                    format!("    sandbox_image = \"{PAUSE_IMAGE}\"")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        write(&dir.join("containerd/config.toml"), &config)?;
        write(
            &dir.join("cni/10-lo-only.conf"),
            r#"{"cniVersion":"0.4.0","name":"lo-only","plugins":[{"type":"loopback"}]}"#,
        )?;
        // A conflist is what containerd's CRI loads.
        let _ = std::fs::rename(
            dir.join("cni/10-lo-only.conf"),
            dir.join("cni/10-lo-only.conflist"),
        );

        let mut containerd = Command::new(&tools.containerd);
        containerd
            .arg("--config")
            .arg(dir.join("containerd/config.toml"));
        let mut node = Self {
            dir: dir.clone(),
            socket: socket.clone(),
            ctr: tools.ctr.clone(),
            processes: Vec::new(),
            logs_before: log_entries(),
            _lock: lock,
        };
        node.processes
            .push(ManagedProcess::spawn("containerd", containerd, env_dir)?);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            node.processes[0].check_alive()?;
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "containerd's socket".into(),
                    after: Duration::from_secs(30),
                    last_error: None,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let phantom = phantom_images(&dir.join("images"))?;
        if phantom.is_none() {
            tracing::info!(
                "Phantom's images are not built (run `make static`); the node runs without them"
            );
        }
        for (spec, tar) in image_tarballs(tools)?
            .into_iter()
            .chain(phantom.into_iter().flatten())
        {
            let mut import = node.ctr();
            import
                .args(["images", "import", "--base-name", &spec.name])
                .arg(&tar);
            run_checked(&mut import, &format!("ctr images import {}", tar.display()))?;
        }

        write(&dir.join("kubelet.crt"), &serving.cert_pem)?;
        write(&dir.join("kubelet.key"), &serving.key_pem)?;
        let port = match kubelet_port {
            Some(port) => port,
            None => std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(Error::io("finding a free port"))?
                .port(),
        };
        write(
            &dir.join("kubelet.yaml"),
            &format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\nfailSwapOn: false\n\
cgroupsPerQOS: false\nenforceNodeAllocatable: []\nauthentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}\n\
authorization: {{mode: AlwaysAllow}}\naddress: 127.0.0.1\nport: {port}\nreadOnlyPort: 0\nhealthzPort: 0\n\
tlsCertFile: {}\ntlsPrivateKeyFile: {}\nevictionHard: {{memory.available: \"100Mi\"}}\nresolvConf: /etc/resolv.conf\n",
                dir.join("kubelet.crt").display(),
                dir.join("kubelet.key").display()
            ),
        )?;
        let mut kubelet = Command::new(&tools.kubelet);
        kubelet
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--config={}", dir.join("kubelet.yaml").display()))
            .arg("--container-runtime=remote")
            .arg(format!(
                "--container-runtime-endpoint=unix://{}",
                socket.display()
            ))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--root-dir={}", dir.join("kubelet").display()))
            .arg(format!("--cert-dir={}", dir.join("kubelet/pki").display()))
            .arg("--logtostderr=true");
        node.processes
            .push(ManagedProcess::spawn("kubelet", kubelet, env_dir)?);
        let mut scheduler = Command::new(&tools.kube_scheduler);
        scheduler
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--port=0",
                "--logtostderr=true",
            ]);
        node.processes
            .push(ManagedProcess::spawn("kube-scheduler", scheduler, env_dir)?);
        Ok(node)
    }

    pub(crate) fn ctr(&self) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address").arg(&self.socket).args(["-n", "k8s.io"]);
        c
    }

    /// Fails with a component's log tail when one of the node's processes died.
    pub(crate) fn check_processes(&mut self) -> Result<()> {
        self.processes
            .iter_mut()
            .try_for_each(ManagedProcess::check_alive)
    }

    /// Stops the kubelet and scheduler, kills every container, stops containerd and its shims,
    /// and unmounts everything mounted under the node's directory.
    pub(crate) fn teardown(&mut self) {
        for p in self.processes.iter_mut().skip(1) {
            p.stop();
        }
        if let Ok(out) = self.ctr().args(["tasks", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
            {
                let _ = self
                    .ctr()
                    .args(["tasks", "kill", "-s", "SIGKILL", id])
                    .output();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        if let Some(containerd) = self.processes.first_mut() {
            containerd.stop();
        }
        // Shims outlive containerd; they are recognised by the socket path on their command line.
        let socket = self.socket.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("containerd-shim") && cmdline.contains(&socket) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(entry.file_name())
                    .status();
            }
        }
        let prefix = self.dir.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
        for entry in log_entries()
            .into_iter()
            .filter(|e| !self.logs_before.contains(e))
        {
            let _ = std::fs::remove_dir_all(&entry).or_else(|_| std::fs::remove_file(&entry));
        }
    }
}
