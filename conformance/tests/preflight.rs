//! `phantom-preflight` (the real binary) against a real, non-dev OpenBao with TLS: up (every
//! check passes, the bootstrap token is revoked afterwards, the results land in a ConfigMap),
//! presenting a certificate that does not match the pin, a missing role, down, and sealed. Each
//! failure must exit 1 and say what to fix.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use phantom_conformance::harness::{Case, run};
use phantom_conformance::{Env, EnvOptions, KubernetesRole, TlsOpenBao, bins, random_hex};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn main() {
    run(
        EnvOptions::default(),
        vec![Case::new(
            "preflight_passes_against_a_healthy_openbao_and_names_the_fix_when_the_certificate_role_network_or_seal_is_wrong",
            preflight,
        )],
    )
}

struct Run<'a> {
    env: &'a Env,
    token_path: PathBuf,
    results: String,
}

impl Run<'_> {
    fn preflight(
        &self,
        addr: &str,
        pin: &str,
        role: &str,
        bootstrap: Option<&str>,
    ) -> anyhow::Result<Output> {
        let mut command = std::process::Command::new(bins::built("phantom-preflight")?);
        command
            .args([
                "--openbao-addr",
                addr,
                "--openbao-spki-sha256",
                pin,
                "--role",
                role,
            ])
            .args([
                "--timeout-seconds",
                "3",
                "--results-configmap",
                &self.results,
            ])
            .arg("--token-path")
            .arg(&self.token_path)
            .env("KUBECONFIG", self.env.kubeconfig())
            .env_remove("PHANTOM_BOOTSTRAP_TOKEN");
        if let Some(token) = bootstrap {
            command.env("PHANTOM_BOOTSTRAP_TOKEN", token);
        }
        Ok(command.output()?)
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn bootstrap_token(tls: &TlsOpenBao) -> anyhow::Result<String> {
    tls.admin
        .put_policy(
            "preflight-reader",
            r#"path "auth/kubernetes/role/*" { capabilities = ["read"] }"#,
        )
        .await?;
    let answer = tls
        .admin
        .write(
            "auth/token/create",
            json!({"policies": ["preflight-reader"], "ttl": "10m"}),
        )
        .await?
        .context("auth/token/create answered nothing")?;
    Ok(answer["auth"]["client_token"]
        .as_str()
        .context("no client_token")?
        .to_owned())
}

async fn token_is_valid(tls: &TlsOpenBao, token: &str) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(
            std::fs::read(tls.dir.join("ca.crt"))?.as_slice(),
        )?)
        .build()?;
    let status = http
        .get(format!("{}/v1/auth/token/lookup-self", tls.addr))
        .header("X-Vault-Token", token)
        .send()
        .await?
        .status();
    Ok(status.is_success())
}

fn pin_of(spki_der: &[u8]) -> String {
    format!("{:x}", Sha256::digest(spki_der)).chars().collect()
}

async fn results(env: &Env, destination: &str) -> anyhow::Result<Value> {
    let (ns, name) = destination.split_once('/').context("ns/name")?;
    let cm = Api::<ConfigMap>::namespaced(env.client(), ns)
        .get(name)
        .await?;
    let json = cm
        .data
        .as_ref()
        .and_then(|d| d.get("results.json"))
        .context("results.json")?;
    Ok(serde_json::from_str(json)?)
}

fn status_of(results: &Value, check: &str) -> String {
    results["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == check)
        .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| "absent".into())
}

async fn preflight(env: Arc<Env>) -> anyhow::Result<()> {
    let tls = env.start_tls_openbao().await?;
    let ns = env.create_namespace("pre", &[]).await?;
    let role = format!("{ns}-preflight");
    tls.admin
        .put_kubernetes_role(
            "kubernetes",
            &KubernetesRole::for_service_account(&role, &ns, "preflight", &[&ns]),
        )
        .await?;
    let identity = env.pod_identity(&ns, "preflight").await?;
    let token_path = env.dir().join(format!("preflight-token-{}", random_hex(3)));
    std::fs::write(&token_path, &identity.token)?;
    let run = Run {
        env: &env,
        token_path,
        results: format!("{ns}/phantom-preflight"),
    };
    let pin = pin_of(&tls.server.spki_der);

    // Up: everything passes, the bootstrap token is spent.
    let bootstrap = bootstrap_token(&tls).await?;
    let out = run.preflight(&tls.addr, &pin, &role, Some(&bootstrap))?;
    let log = text(&out);
    ensure!(out.status.success(), "a healthy OpenBao passes:\n{log}");
    eprintln!("{log}");
    ensure!(
        log.contains("all checks passed") && log.contains("version 2.7.2"),
        "{log}"
    );
    ensure!(
        !log.contains(&bootstrap) && !log.contains(identity.token.trim()),
        "no token in the output"
    );
    let r = results(&env, &run.results).await?;
    for check in ["dns", "tcp", "tls", "health", "role", "login", "revoke"] {
        ensure!(status_of(&r, check) == "pass", "{check} in {r:#}");
    }
    ensure!(
        !token_is_valid(&tls, &bootstrap).await?,
        "the bootstrap token was revoked"
    );
    let raw = Api::<ConfigMap>::namespaced(env.client(), &ns)
        .get("phantom-preflight")
        .await?;
    ensure!(
        !serde_json::to_string(&raw)?.contains(&bootstrap),
        "the ConfigMap holds no token"
    );

    // The certificate does not match the pin.
    let wrong = pin_of(&tls.client.spki_der);
    let out = run.preflight(&tls.addr, &wrong, &role, None)?;
    let log = text(&out);
    ensure!(out.status.code() == Some(1), "wrong pin exits 1:\n{log}");
    ensure!(
        log.contains("tls failed") && log.contains("PHANTOM_OPENBAO_SPKI_SHA256"),
        "{log}"
    );
    let r = results(&env, &run.results).await?;
    ensure!(
        status_of(&r, "tls") == "fail" && status_of(&r, "login") == "skip",
        "{r:#}"
    );

    // The role does not exist (read with a bootstrap token).
    let bootstrap = bootstrap_token(&tls).await?;
    let out = run.preflight(&tls.addr, &pin, "no-such-role", Some(&bootstrap))?;
    let log = text(&out);
    ensure!(out.status.code() == Some(1), "{log}");
    ensure!(
        log.contains("role no-such-role does not exist")
            && log.contains("bao write auth/kubernetes/role/no-such-role"),
        "{log}"
    );
    ensure!(
        !token_is_valid(&tls, &bootstrap).await?,
        "revoked even when a check failed"
    );

    // Down: nothing listens.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let out = run.preflight(&format!("https://127.0.0.1:{closed}"), &pin, &role, None)?;
    let log = text(&out);
    ensure!(out.status.code() == Some(1), "{log}");
    ensure!(
        log.contains("tcp failed") && log.contains("NetworkPolicy"),
        "{log}"
    );

    // Sealed.
    tls.admin.write("sys/seal", json!({})).await?;
    let out = run.preflight(&tls.addr, &pin, &role, None)?;
    let log = text(&out);
    ensure!(out.status.code() == Some(1), "{log}");
    ensure!(
        log.contains("is sealed") && log.contains("bao operator unseal"),
        "{log}"
    );
    let r = results(&env, &run.results).await?;
    ensure!(
        status_of(&r, "tls") == "pass" && status_of(&r, "health") == "fail",
        "{r:#}"
    );
    Ok(())
}
