//! `phantom-broker` (the real binary) against the real API server and a TLS OpenBao: a pod whose
//! key release requires SEV-SNP gets its secret sealed to its key, with evidence from the
//! test-only report emulator signed by the synthetic chain (trusted only because this suite
//! configures it); a debug report, a replayed nonce, another pod's token, hostile bodies and
//! unreadable evidence are refused with the check that failed while the broker keeps serving;
//! the pod's own OpenBao role cannot read the gated path; etcd and the broker's log hold no value.

use std::path::PathBuf;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use phantom_attestation::emulator::SnpReportBuilder;
use phantom_attestation::envelope::{Envelope, Recipient};
use phantom_attestation::protocol::{
    Challenge, EvidenceRequest, Payload, Refused, ReleaseRequest, Released, envelope_context,
};
use phantom_attestation::report_data::Binding;
use phantom_attestation::snp::cert_table;
use phantom_conformance::harness::{Case, run};
use phantom_conformance::{Env, EnvOptions, KubernetesRole, free_port, random_hex};
use serde_json::json;
use sha2::{Digest, Sha256};

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const BROKER_NAMESPACE: &str = "phantom-system";

fn main() {
    run(
        EnvOptions::default(),
        vec![Case::new(
            "the_broker_releases_a_gated_secret_only_to_attested_evidence_of_the_pod_and_names_the_check_that_refused",
            broker,
        )],
    )
}

fn synthetic(file: &str) -> anyhow::Result<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/tests/data/synthetic")
        .join(file);
    std::fs::read(&path).with_context(|| path.display().to_string())
}

fn chip(name: &str) -> [u8; 64] {
    let bytes: Vec<u8> = format!("chip-{name}").bytes().cycle().take(64).collect();
    bytes.try_into().expect("64 bytes")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A sidecar's side of the protocol, as a test drives it.
struct Client {
    http: reqwest::Client,
    base: String,
    pin: [u8; 32],
}

/// What a release answered.
enum Answer {
    Released(Payload),
    Refused(u16, Refused),
}

impl Client {
    async fn challenge(&self) -> anyhow::Result<[u8; 32]> {
        let challenge: Challenge = self
            .http
            .post(format!("{}/v1/challenge", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ensure!(challenge.expires_in_seconds > 0);
        phantom_attestation::protocol::fixed_hex("nonce", &challenge.nonce)
            .map_err(anyhow::Error::msg)
    }

    async fn post(&self, token: &str, body: Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
        let response = self
            .http
            .post(format!("{}/v1/release", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.bytes().await?.to_vec()))
    }

    /// A full release for the pod `uid`: fresh challenge, fresh key, a report built by `report`
    /// over the binding, sent with `token`.
    async fn release(
        &self,
        token: &str,
        uid: &str,
        binding: &str,
        report: impl FnOnce([u8; 64]) -> (Vec<u8>, Option<Vec<u8>>),
    ) -> anyhow::Result<Answer> {
        let nonce = self.challenge().await?;
        let recipient = Recipient::generate()?;
        let report_data = Binding {
            nonce,
            public_key: recipient.public_key(),
            openbao_spki_sha256: self.pin,
            pod_uid: uid,
        }
        .report_data();
        let (report, cert_table) = report(report_data);
        let request = ReleaseRequest {
            nonce: hex::encode(nonce),
            public_key: hex::encode(recipient.public_key()),
            binding: binding.to_owned(),
            evidence: EvidenceRequest::SevSnp {
                report: b64(&report),
                cert_table: cert_table.as_deref().map(b64),
            },
        };
        let (status, body) = self.post(token, serde_json::to_vec(&request)?).await?;
        if status != 200 {
            return Ok(Answer::Refused(status, serde_json::from_slice(&body)?));
        }
        let released: Released = serde_json::from_slice(&body)?;
        let envelope = Envelope::try_from(&released).map_err(anyhow::Error::msg)?;
        let plaintext = recipient.open(&envelope, &envelope_context(&nonce, uid, binding))?;
        Ok(Answer::Released(serde_json::from_slice(&plaintext)?))
    }
}

fn refused(answer: Answer, status: u16, kind: &str, says: &str) -> anyhow::Result<()> {
    match answer {
        Answer::Released(_) => anyhow::bail!("released where {kind} should refuse ({says})"),
        Answer::Refused(got, refusal) => {
            ensure!(
                got == status && refusal.kind == kind && refusal.message.contains(says),
                "expected {status} {kind} saying {says:?}, got {got} {refusal:?}"
            );
            Ok(())
        }
    }
}

async fn create_pod(
    env: &Env,
    ns: &str,
    name: &str,
    service_account: &str,
) -> anyhow::Result<String> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "api"}},
        "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}
    }))?;
    let created = Api::<Pod>::namespaced(env.client(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {ns}/{name}"))?;
    created.metadata.uid.context("the created pod has a UID")
}

async fn broker(env: std::sync::Arc<Env>) -> anyhow::Result<()> {
    env.install_crds().await?;
    let bao = env.start_tls_openbao().await?;
    let ns = format!("tee-{}", random_hex(4));
    env.create_namespace_named(&ns, &[("phantom.dev/tee-case", &ns)])
        .await?;
    env.create_namespace_named(BROKER_NAMESPACE, &[]).await?;
    env.ensure_service_account(BROKER_NAMESPACE, "phantom-broker")
        .await?;
    // Created early: the 1.20 API server admits a pod only once its ServiceAccount's token
    // secret exists.
    env.ensure_service_account(&ns, "app").await?;
    env.ensure_service_account(&ns, "other").await?;

    // OpenBao: the gated secret is readable by the broker's role only; the pod's own role reads
    // its namespace's open paths.
    let value = format!("gated-{}", random_hex(16));
    bao.admin
        .kv_put("secret", &format!("{ns}/gated"), json!({"password": value}))
        .await?;
    bao.admin
        .put_kv_read_policy("phantom-broker", "secret", &[&format!("{ns}/gated")])
        .await?;
    bao.admin
        .put_kv_read_policy(&format!("{ns}-open"), "secret", &[&format!("{ns}/open/*")])
        .await?;
    bao.admin
        .put_kubernetes_role(
            "kubernetes",
            &KubernetesRole::for_service_account(
                "phantom-broker",
                BROKER_NAMESPACE,
                "phantom-broker",
                &["phantom-broker"],
            ),
        )
        .await?;
    bao.admin
        .put_kubernetes_role(
            "kubernetes",
            &KubernetesRole::for_service_account(
                &format!("{ns}-app"),
                &ns,
                "app",
                &[&format!("{ns}-open")],
            ),
        )
        .await?;

    // Phantom's resources: the namespace's policy gates key release on prod-snp.
    let apply = |yaml: String| {
        let env = env.clone();
        async move {
            let mut child = env
                .kubectl()
                .args(["apply", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            use std::io::Write as _;
            child
                .stdin
                .take()
                .context("kubectl stdin")?
                .write_all(yaml.as_bytes())?;
            let out = child.wait_with_output()?;
            ensure!(
                out.status.success(),
                "kubectl apply: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            anyhow::Ok(())
        }
    };
    apply(format!(
        r#"apiVersion: phantom.dev/v1alpha1
kind: AttestationRequirement
metadata: {{name: {ns}-snp}}
spec:
  teeTypes: [sev-snp]
  sevSnp: {{measurements: ["{measurement}"], vmpl: 0}}
  openbao: {{jurisdictions: [DE]}}
---
apiVersion: phantom.dev/v1alpha1
kind: PhantomPolicy
metadata: {{name: {ns}}}
spec:
  match:
    namespaceSelector: {{matchLabels: {{phantom.dev/tee-case: {ns}}}}}
  keyRelease:
    attestationRequirementRef: {{name: {ns}-snp}}
    conditions:
      - {{name: own-namespace, expression: "attestation.pod.namespace == binding.metadata.namespace"}}
---
apiVersion: phantom.dev/v1alpha1
kind: SecretBinding
metadata: {{name: api, namespace: {ns}}}
spec:
  selector: {{serviceAccountName: app}}
  openbao: {{role: {ns}-app}}
  secrets:
    - {{name: db, path: {ns}/gated, key: password, delivery: [{{kind: file, path: db}}]}}
"#,
        measurement = hex::encode(MEASUREMENT)
    ))
    .await?;

    // The broker, as its chart runs it: its own token, the synthetic chain, one VCEK in the
    // collateral bundle (chip a); chip b's VCEK comes only in the report's certificate table.
    let dir = env.dir().join("broker");
    std::fs::create_dir_all(dir.join("collateral"))?;
    let serving = env.ca().serving_cert("phantom-broker", &["localhost"])?;
    std::fs::write(dir.join("tls.crt"), &serving.cert_pem)?;
    std::fs::write(dir.join("tls.key"), &serving.key_pem)?;
    std::fs::write(
        dir.join("chain.pem"),
        [synthetic("ark.pem")?, synthetic("ask.pem")?].concat(),
    )?;
    std::fs::write(dir.join("collateral/vcek-a.der"), synthetic("vcek-a.der")?)?;
    let broker_token = env
        .token_request(
            BROKER_NAMESPACE,
            "phantom-broker",
            &["openbao"],
            std::time::Duration::from_secs(600),
        )
        .await?;
    std::fs::write(dir.join("openbao-token"), &broker_token)?;
    let pin: [u8; 32] = Sha256::digest(&bao.server.spki_der).into();
    let (port, health) = (free_port()?, free_port()?);
    let path = |name: &str| dir.join(name).display().to_string();
    let mut process = env.spawn_phantom(
        "phantom-broker",
        "phantom-broker",
        &[
            format!("--listen=127.0.0.1:{port}"),
            format!("--health-listen=127.0.0.1:{health}"),
            format!("--tls-cert={}", path("tls.crt")),
            format!("--tls-key={}", path("tls.key")),
            format!("--openbao-addr={}", bao.addr),
            format!("--openbao-ca-file={}", bao.dir.join("ca.crt").display()),
            format!("--openbao-spki-sha256={}", hex::encode(pin)),
            format!("--openbao-token-file={}", path("openbao-token")),
            "--openbao-jurisdiction=DE".into(),
            format!("--collateral-dir={}", path("collateral")),
            format!("--snp-trust-chain={}", path("chain.pem")),
        ],
    )?;
    let status = reqwest::Client::new();
    let alive = std::sync::Mutex::new(&mut process);
    let ready = phantom_conformance::wait::until_guarded(
        "phantom-broker /readyz",
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(200),
        || alive.lock().expect("process lock").check_alive(),
        || async {
            let r = status
                .get(format!("http://127.0.0.1:{health}/readyz"))
                .send()
                .await?;
            anyhow::Ok(r.status().is_success().then_some(()))
        },
    )
    .await;
    if let Err(e) = ready {
        let log = std::fs::read_to_string(process.log()).unwrap_or_default();
        anyhow::bail!("{e}\n--- broker log ---\n{log}");
    }

    let client = Client {
        http: reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(
                env.ca().cert_pem.as_bytes(),
            )?)
            .build()?,
        base: format!("https://localhost:{port}"),
        pin,
    };
    let uid = create_pod(&env, &ns, "api-0", "app").await?;
    let token = env
        .pod_bound_token(&ns, "app", "api-0", &uid, "phantom-broker")
        .await?;
    let vcek_a = synthetic("vcek-a.pk8")?;
    let good = |chip_name: &'static str, key: Vec<u8>| {
        move |report_data: [u8; 64]| {
            (
                SnpReportBuilder::milan(chip(chip_name))
                    .measurement(MEASUREMENT)
                    .report_data(report_data)
                    .sign(&key),
                None,
            )
        }
    };

    // 1. Released, sealed to the pod's key, opened only with it.
    let payload = match client
        .release(&token, &uid, "api", good("a", vcek_a.clone()))
        .await?
    {
        Answer::Released(payload) => payload,
        Answer::Refused(status, refusal) => {
            anyhow::bail!("the attested pod was refused: {status} {refusal:?}")
        }
    };
    let db = payload.get("db").context("the payload has item db")?;
    ensure!(
        db.data.get("password") == Some(&value),
        "the released value is not OpenBao's"
    );

    // 2. The VCEK from the report's certificate table (chip b is not in the bundle).
    let vcek_b_der = synthetic("vcek-b.der")?;
    let vcek_b = synthetic("vcek-b.pk8")?;
    let answer = client
        .release(&token, &uid, "api", |report_data| {
            (
                SnpReportBuilder::milan(chip("b"))
                    .measurement(MEASUREMENT)
                    .report_data(report_data)
                    .sign(&vcek_b),
                Some(cert_table::build(&[(cert_table::Entry::Vcek, &vcek_b_der)])),
            )
        })
        .await?;
    ensure!(
        matches!(answer, Answer::Released(_)),
        "a report whose VCEK is in its certificate table was refused"
    );

    // 3. Debug: the requirement's reason, verbatim.
    let answer = client
        .release(&token, &uid, "api", |report_data| {
            (
                SnpReportBuilder::milan(chip("a"))
                    .measurement(MEASUREMENT)
                    .report_data(report_data)
                    .debug(true)
                    .sign(&vcek_a),
                None,
            )
        })
        .await?;
    refused(
        answer,
        403,
        "requirement",
        &format!("SEV-SNP report has debug=1; AttestationRequirement {ns}-snp forbids debug"),
    )?;

    // 4. A replayed nonce.
    let nonce = client.challenge().await?;
    let recipient = Recipient::generate()?;
    let report = SnpReportBuilder::milan(chip("a"))
        .measurement(MEASUREMENT)
        .report_data(
            Binding {
                nonce,
                public_key: recipient.public_key(),
                openbao_spki_sha256: pin,
                pod_uid: &uid,
            }
            .report_data(),
        )
        .sign(&vcek_a);
    let body = serde_json::to_vec(&ReleaseRequest {
        nonce: hex::encode(nonce),
        public_key: hex::encode(recipient.public_key()),
        binding: "api".into(),
        evidence: EvidenceRequest::SevSnp {
            report: b64(&report),
            cert_table: None,
        },
    })?;
    let (first, _) = client.post(&token, body.clone()).await?;
    ensure!(first == 200, "the first use of a nonce answered {first}");
    let (second, text) = client.post(&token, body).await?;
    let replay: Refused = serde_json::from_slice(&text)?;
    ensure!(
        second == 403 && replay.kind == "challenge" && replay.message.contains("already used"),
        "a replayed nonce answered {second} {replay:?}"
    );

    // 5. Another pod's token with evidence bound to api-0: the report_data names api-0's UID.
    let other_uid = create_pod(&env, &ns, "api-1", "app").await?;
    let other_token = env
        .pod_bound_token(&ns, "app", "api-1", &other_uid, "phantom-broker")
        .await?;
    let answer = client
        .release(&other_token, &uid, "api", good("a", vcek_a.clone()))
        .await?;
    refused(answer, 403, "report_data", "does not bind this release")?;
    // A pod of another ServiceAccount, attested and bound correctly, is not selected by `api`.
    let stranger = create_pod(&env, &ns, "other-0", "other").await?;
    let stranger_token = env
        .pod_bound_token(&ns, "other", "other-0", &stranger, "phantom-broker")
        .await?;
    let answer = client
        .release(&stranger_token, &stranger, "api", good("a", vcek_a.clone()))
        .await?;
    refused(answer, 403, "binding", "does not select pod")?;
    // A plain ServiceAccount token (not bound to a pod) proves no pod at all.
    let plain = env
        .token_request(
            &ns,
            "app",
            &["phantom-broker"],
            std::time::Duration::from_secs(600),
        )
        .await?;
    let answer = client
        .release(&plain, &uid, "api", good("a", vcek_a.clone()))
        .await?;
    refused(answer, 401, "identity", "not bound to a pod")?;

    // 6. Hostile input: a clear refusal each, and the broker keeps serving.
    for (body, status) in [
        (b"not json".to_vec(), 400),
        (
            serde_json::to_vec(&json!({"nonce": "00", "publicKey": "00", "binding": "api",
                "evidence": {"tee": "sev-snp", "report": "AAAA"}, "skipChecks": true}))?,
            400,
        ),
        (vec![b' '; 200 * 1024], 413),
    ] {
        let (got, _) = client.post(&token, body).await?;
        ensure!(
            got == status,
            "hostile body answered {got}, expected {status}"
        );
    }
    let answer = client
        .release(&token, &uid, "api", |_| (vec![0u8; 300], None))
        .await?;
    refused(answer, 403, "evidence", "1184")?;
    let answer = client
        .release(&token, &uid, "api", |report_data| {
            (
                SnpReportBuilder::milan(chip("c"))
                    .measurement(MEASUREMENT)
                    .report_data(report_data)
                    .sign(&vcek_a),
                Some(b"garbage certificate table".to_vec()),
            )
        })
        .await?;
    refused(answer, 400, "evidence", "certificate table")?;
    ensure!(
        matches!(
            client
                .release(&token, &uid, "api", good("a", vcek_a.clone()))
                .await?,
            Answer::Released(_)
        ),
        "the broker stopped releasing after hostile input"
    );

    // 7. The pod's own role cannot go around the broker.
    let app_token = env
        .token_request(
            &ns,
            "app",
            &["openbao"],
            std::time::Duration::from_secs(600),
        )
        .await?;
    let app = bao
        .admin
        .login_kubernetes("kubernetes", &format!("{ns}-app"), &app_token)
        .await?;
    let direct = bao
        .admin
        .kv_get(&app, "secret", &format!("{ns}/gated"))
        .await;
    ensure!(
        direct
            .as_ref()
            .is_err_and(|e| e.to_string().contains("403")),
        "the pod's own role read the gated path: {direct:?}"
    );

    // 8. Audit and metrics name what happened; nothing holds the value.
    let metrics = status
        .get(format!("http://127.0.0.1:{health}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in [
        r#"phantom_broker_releases_total{outcome="released",check="",tee="sev-snp"} 4"#,
        r#"phantom_broker_releases_total{outcome="refused",check="requirement",tee="sev-snp"}"#,
        r#"phantom_broker_releases_total{outcome="refused",check="challenge",tee="sev-snp"}"#,
        r#"phantom_broker_collateral_entries{tee="sev-snp",status="ready"} 1"#,
    ] {
        ensure!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    process.check_alive()?;
    let log = std::fs::read_to_string(process.log())?;
    ensure!(
        log.contains("secrets released") && log.contains(&format!("{ns}-snp forbids debug")),
        "the audit records are missing from the broker's log:\n{log}"
    );
    ensure!(!log.contains(&value), "the broker's log holds the value");
    ensure!(
        env.etcd_contains_any(&[&value])?.is_empty(),
        "etcd holds the value"
    );
    Ok(())
}
