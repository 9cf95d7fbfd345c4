//! Admission latency over HTTPS against the real `phantom-admission` binary (release build):
//! 20 CEL policies (`policies/tests/data/bench-policy.yaml`), 2 of them with a WASM plugin, 10,000 AdmissionReviews at concurrency 32,
//! latency measured by the client (TLS, HTTP, decision, patch), and the server's RSS sampled
//! during the load. Prints figures; asserts nothing.
//!
//! `make plugins && cargo bench -p phantom-conformance --bench admission`

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use phantom_conformance::bins::{build_release, measured_copy, status_kib, target_dir};
use phantom_conformance::{Env, random_hex};
use phantom_crds::{PhantomPolicy, SecretBinding};
use phantom_policies::wasm::module_digest;
use serde_json::{Value, json};

const REQUESTS: usize = 10_000;
const CONCURRENCY: usize = 32;

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn policy(i: usize, plugin: Option<(&str, &str, Value)>) -> PhantomPolicy {
    let plugins: Vec<Value> = plugin
        .into_iter()
        .map(|(name, sha, settings)| json!({"name": name, "sha256": sha, "timeoutMs": 100, "settings": settings,
            "module": {"configMap": {"namespace": "phantom-system", "name": "bench-plugins", "key": format!("{name}.wasm")}}}))
        .collect();
    let template = include_str!("../../policies/tests/data/bench-policy.yaml");
    let mut policy: Value = serde_yaml::from_str(template).expect("bench-policy.yaml");
    policy["metadata"]["name"] = json!(format!("bench-{i:02}"));
    policy["spec"]["rules"]["plugins"] = json!(plugins);
    serde_json::from_value(policy).expect("policy")
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(") ")?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn review(namespace: &str, nonce: Option<usize>) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE", "userInfo": {"username": "bench"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-5f7-", "namespace": namespace,
                             "labels": {"app": "web", "team": "shop", "pod-template-hash": "5f7", "nonce": nonce.map(|n| n.to_string()).unwrap_or_default()},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5f7", "uid": "u", "controller": true}]},
                "spec": {"serviceAccountName": "default", "containers": [
                    {"name": "web", "image": "registry.example/web:1.4.2", "command": ["/web"], "env": [{"name": "MODE", "value": "prod"}],
                     "securityContext": {"runAsNonRoot": true, "runAsUser": 1000}},
                    {"name": "log", "image": "registry.example/log:2.0", "command": ["/log"]}]}}}
    })
    .to_string()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(
        build_release(&["-p", "phantom-admission", "--bin", "phantom-admission"]),
        "building phantom-admission failed"
    );
    // Measure a copy, not the linker's fresh output (see `measured_copy`).
    let copies = tempfile::tempdir().expect("a directory for the measured binary");
    let binary = measured_copy(
        &target_dir().join("release/phantom-admission"),
        copies.path(),
    )
    .expect("copy of phantom-admission");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let env = Env::start().await.expect("environment");
        env.install_crds().await.expect("CRDs");
        let client = env.client();

        let mut data = std::collections::BTreeMap::new();
        let mut plugins = Vec::new();
        for (name, settings) in [("require_labels", json!({"labels": ["team"]})), ("no_privileged", json!({}))] {
            let path = target_dir().join(format!("wasm32-unknown-unknown/release/phantom_plugin_{name}.wasm"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `make plugins`)", path.display()));
            plugins.push((name.replace('_', "-"), module_digest(&bytes), settings));
            data.insert(format!("{}.wasm", name.replace('_', "-")), ByteString(bytes));
        }
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("bench-plugins".into());
        cm.binary_data = Some(data);
        env.create_namespace_named("phantom-system", &[]).await.expect("namespace");
        Api::<ConfigMap>::namespaced(client.clone(), "phantom-system").create(&PostParams::default(), &cm).await.expect("plugin ConfigMap");
        let policies: Api<PhantomPolicy> = Api::all(client.clone());
        for i in 0..20 {
            let plugin = plugins.get(i).filter(|_| i < 2).map(|(n, s, settings)| (n.as_str(), s.as_str(), settings.clone()));
            policies.create(&PostParams::default(), &policy(i, plugin)).await.expect("policy");
        }
        let ns = env.create_namespace("bench", &[("phantom.dev/inject", "enabled")]).await.expect("namespace");
        let binding: SecretBinding = serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding", "metadata": {"name": "db", "namespace": ns},
            "spec": {"selector": {"podSelector": {}}, "openbao": {"role": "r"},
                     "secrets": [{"name": "s", "path": "p", "delivery": [{"kind": "socket"}]}]}
        })).expect("binding");
        Api::<SecretBinding>::namespaced(client.clone(), &ns).create(&PostParams::default(), &binding).await.expect("binding");

        let cert = env.ca().serving_cert("phantom-admission", &["localhost"]).expect("cert");
        let dir = env.dir().join(format!("bench-{}", random_hex(3)));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("tls.crt"), &cert.cert_pem).expect("cert");
        std::fs::write(dir.join("tls.key"), &cert.key_pem).expect("key");
        let port = |l: std::net::TcpListener| l.local_addr().expect("addr").port();
        let (listen, health) = (
            port(std::net::TcpListener::bind("127.0.0.1:0").expect("port")),
            port(std::net::TcpListener::bind("127.0.0.1:0").expect("port")),
        );
        let mut server = Command::new(&binary)
            .args(["--listen", &format!("127.0.0.1:{listen}"), "--health-listen", &format!("127.0.0.1:{health}")])
            .arg("--tls-cert").arg(dir.join("tls.crt"))
            .arg("--tls-key").arg(dir.join("tls.key"))
            .arg("--decision-key").arg(env.new_seal_key().expect("seal key"))
            .env("KUBECONFIG", env.kubeconfig())
            .env("PHANTOM_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("phantom-admission");
        let pid = server.id();
        let metrics_url = format!("http://127.0.0.1:{health}/metrics");
        phantom_conformance::wait::until("phantom-admission ready with 20 policies", Duration::from_secs(60), Duration::from_millis(100), || async {
            let text = reqwest::get(&metrics_url).await?.text().await?;
            anyhow::Ok(text.lines().any(|l| l.starts_with("phantom_admission_policy_generation ") && !l.ends_with(" 0")).then_some(()))
        }).await.expect("ready");
        let idle_rss = rss_kib(pid);

        let ca = reqwest::Certificate::from_pem(env.ca().cert_pem.as_bytes()).expect("ca");
        let http = reqwest::Client::builder().add_root_certificate(ca).pool_max_idle_per_host(CONCURRENCY).build().expect("client");
        let url = format!("https://127.0.0.1:{listen}/mutate");
        let body = review(&ns, None);
        // Warm-up (connections, plugin instances), and a check that the pod is injected.
        let first: Value = http.post(&url).body(body.clone()).send().await.expect("post").json().await.expect("json");
        assert_eq!(first["response"]["allowed"], true, "{first}");
        assert!(first["response"]["patch"].is_string(), "the bench pod is injected: {first}");
        for _ in 0..200 {
            http.post(&url).body(body.clone()).send().await.expect("warm-up");
        }

        println!("phantom-admission (release), 20 CEL policies (2 with a WASM plugin), HTTPS, {REQUESTS} requests per run; the load generator shares the 2 cores:");
        let identical: Vec<String> = (0..REQUESTS).map(|_| body.clone()).collect();
        let unique: Vec<String> = (0..REQUESTS).map(|i| review(&ns, Some(i))).collect();
        for (what, bodies, concurrency) in [
            ("identical pods (a ReplicaSet's replicas: memoised)", &identical, CONCURRENCY),
            ("distinct pods (every decision evaluated)", &unique, CONCURRENCY),
            ("distinct pods, one at a time", &unique, 1),
        ] {
            let peak = Arc::new(AtomicU64::new(0));
            let sampler = {
                let peak = peak.clone();
                tokio::spawn(async move {
                    loop {
                        peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            };
            let ticks = cpu_ticks(pid);
            let started = Instant::now();
            let mut samples: Vec<Duration> = futures::stream::iter(bodies.iter().take(if concurrency == 1 { 2_000 } else { REQUESTS }).cloned())
                .map(|body| {
                    let (http, url) = (http.clone(), url.clone());
                    async move {
                        let t = Instant::now();
                        let r = http.post(&url).body(body).send().await.expect("post");
                        assert_eq!(r.status().as_u16(), 200);
                        r.bytes().await.expect("body");
                        t.elapsed()
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            let wall = started.elapsed();
            let server_cpu_ms = (cpu_ticks(pid) - ticks) as f64 * 10.0;
            sampler.abort();
            samples.sort();
            let n = samples.len();
            let at = |q: f64| samples[((n as f64 * q) as usize).min(n - 1)];
            println!("  {what}, concurrency {concurrency}: n={n} wall={wall:.2?} throughput={:.0}/s server CPU/request={:.0} µs",
                n as f64 / wall.as_secs_f64(), server_cpu_ms * 1000.0 / n as f64);
            println!("    latency p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}; server RSS peak={:.1} MiB",
                at(0.5), at(0.9), at(0.99), at(1.0), peak.load(Ordering::Relaxed) as f64 / 1024.0);
        }
        println!("  server RSS idle (before the load)={:.1} MiB, after={:.1} MiB", idle_rss as f64 / 1024.0, rss_kib(pid) as f64 / 1024.0);
        let _ = server.kill();
        let _ = server.wait();
    });
}
