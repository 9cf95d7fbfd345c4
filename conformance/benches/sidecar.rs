//! The sidecar against OpenBao's own agent, in the same run and on the same machine: both log
//! in with Kubernetes auth (the same ServiceAccount token, the same role) and render the same 10
//! KV v2 secrets to files on tmpfs. Measured: time from process start to the 10th file (p50,
//! p99), resident memory once idle (after a few refresh rounds), and the binaries' sizes.
//! Prints figures; asserts nothing.
//!
//! `cargo bench -p phantom-conformance --bench sidecar`
//!
//! With `PHANTOM_BENCH_BASELINE_PROXY=<older static phantom-proxy>[,<another>…]` the idle RSS of
//! those binaries and of this tree's static build are also sampled side by side, three rounds,
//! in KiB: before/after figures from one run on one machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phantom_conformance::bins::{
    STATIC_TARGET, build_release, build_static, measured_copy, static_built, status_kib, target_dir,
};
use phantom_conformance::{Env, KubernetesRole, random_hex};
use serde_json::json;

const SECRETS: usize = 10;
const START_RUNS: usize = 40;
const AGENT_START_RUNS: usize = 10;
const IDLE: Duration = Duration::from_secs(8);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits until every file in `files` exists and is non-empty; the elapsed time since `started`.
fn wait_for_files(files: &[PathBuf], started: Instant, child: &mut Child) -> Duration {
    loop {
        if files
            .iter()
            .all(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
        {
            return started.elapsed();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the process exited with {status} before delivering");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no delivery within 60 s"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn size(path: &Path) -> String {
    let raw = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let stripped = std::env::temp_dir().join(format!("phantom-bench-{}", random_hex(4)));
    let stripped_size = std::fs::copy(path, &stripped)
        .ok()
        .and_then(|_| Command::new("strip").arg(&stripped).status().ok())
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&stripped).ok())
        .map(|m| m.len());
    let _ = std::fs::remove_file(&stripped);
    match stripped_size {
        Some(s) => format!(
            "{:.1} MiB ({:.1} MiB stripped)",
            raw as f64 / 1048576.0,
            s as f64 / 1048576.0
        ),
        None => format!("{:.1} MiB", raw as f64 / 1048576.0),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(
        build_release(&["-p", "phantom-runtime-proxy", "--bins"]),
        "building the runtime binaries failed"
    );
    let proxy_bin = target_dir().join("release/phantom-proxy");
    let exec_bin = target_dir().join("release/phantom-exec");
    // What the container images ship: static musl, no dynamic relocations to apply at start.
    let musl = STATIC_TARGET;
    let static_proxy = build_static("phantom-runtime-proxy")
        .then(|| static_built("phantom-proxy"))
        .flatten();
    // Measure copies, not the linker's fresh output (see `measured_copy`).
    let copies = tempfile::tempdir().expect("a directory for the measured binaries");
    let static_dir = copies.path().join("static");
    std::fs::create_dir_all(&static_dir).expect("static dir");
    let proxy_bin = measured_copy(&proxy_bin, copies.path()).expect("copy of phantom-proxy");
    let static_proxy = static_proxy
        .map(|bin| measured_copy(&bin, &static_dir).expect("copy of the static phantom-proxy"));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let env = rt.block_on(Env::start()).expect("environment");
    let ns = rt
        .block_on(env.create_namespace("bench", &[]))
        .expect("namespace");
    let bao = env.openbao();
    let paths: Vec<String> = (0..SECRETS).map(|i| format!("{ns}/s{i}")).collect();
    for path in &paths {
        rt.block_on(bao.kv_put(
            "secret",
            path,
            json!({"password": format!("bench-{}", random_hex(16))}),
        ))
        .expect("secret");
    }
    rt.block_on(bao.put_kv_read_policy(&ns, "secret", &[&format!("{ns}/*")]))
        .expect("policy");
    let role = format!("{ns}-app");
    rt.block_on(bao.put_kubernetes_role(
        "kubernetes",
        &KubernetesRole::for_service_account(&role, &ns, "app", &[&ns]),
    ))
    .expect("role");
    let identity = rt.block_on(env.pod_identity(&ns, "app")).expect("identity");
    let work = tempfile::Builder::new()
        .prefix("phantom-sidecar-bench-")
        .tempdir_in("/dev/shm")
        .expect("a tmpfs directory under /dev/shm");
    let token = work.path().join("token");
    std::fs::write(&token, &identity.token).expect("token");

    let plan = json!([{
        "name": "bench",
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": role},
                 "secrets": paths.iter().enumerate().map(|(i, p)| json!({
                     "name": format!("s{i}"), "path": p, "key": "password",
                     "delivery": [{"kind": "file", "path": format!("s{i}")}]})).collect::<Vec<_>>()}
    }]);
    let proxy_with = |bin: &Path, dir: &Path| {
        Command::new(bin)
            .env("PHANTOM_OPENBAO_ADDR", bao.addr())
            .env("PHANTOM_TOKEN_PATH", &token)
            .env("PHANTOM_SECRETS_DIR", dir)
            .env("PHANTOM_SOCKET", dir.join(".phantom/proxy.sock"))
            .env("PHANTOM_PLAN", plan.to_string())
            .env("PHANTOM_REFRESH_SECONDS", "2")
            .env("PHANTOM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("phantom-proxy")
    };
    let proxy = |dir: &Path| proxy_with(&proxy_bin, dir);
    let agent = |dir: &Path| {
        std::fs::create_dir_all(dir).expect("agent dir");
        let templates: String = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "template {{\n  contents = \"{{{{ with secret \\\"secret/data/{p}\\\" }}}}{{{{ .Data.data.password }}}}{{{{ end }}}}\"\n  destination = \"{}\"\n  perms = \"0400\"\n}}\n",
                    dir.join(format!("s{i}")).display()
                )
            })
            .collect();
        let config = format!(
            "vault {{\n  address = \"{}\"\n}}\nauto_auth {{\n  method \"kubernetes\" {{\n    mount_path = \"auth/kubernetes\"\n    config = {{\n      role = \"{role}\"\n      token_path = \"{}\"\n    }}\n  }}\n}}\ntemplate_config {{\n  static_secret_render_interval = \"2s\"\n}}\n{templates}",
            bao.addr(),
            token.display()
        );
        let path = dir.join("agent.hcl");
        std::fs::write(&path, config).expect("agent config");
        Command::new(&env.tools().bao)
            .args(["agent", &format!("-config={}", path.display())])
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).expect("agent log"))
            .spawn()
            .expect("bao agent")
    };
    let files =
        |dir: &Path| -> Vec<PathBuf> { (0..SECRETS).map(|i| dir.join(format!("s{i}"))).collect() };

    // Start to the 10th file.
    let mut proxy_starts = Vec::new();
    for run in 0..START_RUNS {
        let dir = work.path().join(format!("proxy-{run}"));
        let started = Instant::now();
        let mut child = proxy(&dir);
        proxy_starts.push(wait_for_files(&files(&dir), started, &mut child));
        stop(child);
    }
    let mut agent_starts = Vec::new();
    for run in 0..AGENT_START_RUNS {
        let dir = work.path().join(format!("agent-{run}"));
        let started = Instant::now();
        let mut child = agent(&dir);
        agent_starts.push(wait_for_files(&files(&dir), started, &mut child));
        stop(child);
    }
    proxy_starts.sort();
    agent_starts.sort();

    // Idle memory: delivered, then a few refresh rounds.
    let dir = work.path().join("proxy-idle");
    let started = Instant::now();
    let mut idle_proxy = proxy(&dir);
    wait_for_files(&files(&dir), started, &mut idle_proxy);
    let static_idle = static_proxy.as_ref().map(|bin| {
        let dir = work.path().join("static-idle");
        let started = Instant::now();
        let mut child = proxy_with(bin, &dir);
        wait_for_files(&files(&dir), started, &mut child);
        child
    });
    let dir = work.path().join("agent-idle");
    let started = Instant::now();
    let mut idle_agent = agent(&dir);
    wait_for_files(&files(&dir), started, &mut idle_agent);
    std::thread::sleep(IDLE);
    let (proxy_rss, proxy_hwm) = (
        status_kib(idle_proxy.id(), "VmRSS:"),
        status_kib(idle_proxy.id(), "VmHWM:"),
    );
    let (agent_rss, agent_hwm) = (
        status_kib(idle_agent.id(), "VmRSS:"),
        status_kib(idle_agent.id(), "VmHWM:"),
    );
    let static_rss = static_idle
        .as_ref()
        .map(|c| (status_kib(c.id(), "VmRSS:"), status_kib(c.id(), "VmHWM:")));
    stop(idle_proxy);
    stop(idle_agent);
    if let Some(child) = static_idle {
        stop(child);
    }

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    println!(
        "{SECRETS} KV v2 secrets rendered to files on tmpfs, Kubernetes auth, OpenBao dev server on loopback"
    );
    println!(
        "start → 10th file: phantom-proxy p50 {} p99 {} ({START_RUNS} runs); bao agent p50 {} p99 {} ({AGENT_START_RUNS} runs)",
        ms(percentile(&proxy_starts, 0.5)),
        ms(percentile(&proxy_starts, 0.99)),
        ms(percentile(&agent_starts, 0.5)),
        ms(percentile(&agent_starts, 0.99)),
    );
    println!(
        "idle RSS after {}s (refresh every 2 s): phantom-proxy (glibc, PIE) {} (peak {}); bao agent {} (peak {})",
        IDLE.as_secs(),
        mib(proxy_rss),
        mib(proxy_hwm),
        mib(agent_rss),
        mib(agent_hwm)
    );
    match (static_rss, &static_proxy) {
        (Some((rss, hwm)), Some(bin)) => println!(
            "idle RSS of the static musl phantom-proxy (as in the images): {} (peak {}); binary {}",
            mib(rss),
            mib(hwm),
            size(bin)
        ),
        _ => println!(
            "static musl build skipped: `rustup target add {musl}` and `apt-get install musl-tools`"
        ),
    }
    let baselines: Vec<PathBuf> = std::env::var("PHANTOM_BENCH_BASELINE_PROXY")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if let (false, Some(current)) = (baselines.is_empty(), &static_proxy) {
        let mut measured = Vec::new();
        for (i, bin) in baselines.iter().enumerate() {
            let dir = copies.path().join(format!("baseline-{i}"));
            std::fs::create_dir_all(&dir).expect("baseline dir");
            measured.push(measured_copy(bin, &dir).expect("copy of a baseline"));
        }
        measured.push(current.clone());
        let mut samples = vec![Vec::new(); measured.len()];
        for round in 0..3 {
            let children: Vec<Child> = measured
                .iter()
                .enumerate()
                .map(|(i, bin)| {
                    let dir = work.path().join(format!("compare-{round}-{i}"));
                    let started = Instant::now();
                    let mut child = proxy_with(bin, &dir);
                    wait_for_files(&files(&dir), started, &mut child);
                    child
                })
                .collect();
            std::thread::sleep(IDLE);
            for (i, child) in children.into_iter().enumerate() {
                samples[i].push(status_kib(child.id(), "VmRSS:"));
                stop(child);
            }
        }
        println!("idle RSS, static builds side by side (3 rounds, KiB):");
        for (i, bin) in measured.iter().enumerate() {
            let label = baselines
                .get(i)
                .map_or("this tree".to_owned(), |b| b.display().to_string());
            println!("  {label}: {:?}, binary {}", samples[i], size(bin));
        }
    }
    println!(
        "binaries (release): phantom-proxy {}; phantom-exec {}; bao {}",
        size(&proxy_bin),
        size(&exec_bin),
        size(&std::fs::canonicalize(&env.tools().bao).unwrap_or(env.tools().bao.clone()))
    );
    drop(env);
}
