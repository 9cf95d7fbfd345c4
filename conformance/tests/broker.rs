//! `phantom-broker` (the real binary) against the real API server and a TLS OpenBao: a pod whose
//! key release requires SEV-SNP gets its secret sealed to its key, with evidence from the
//! test-only report emulator signed by the synthetic chain (trusted only because this suite
//! configures it); a debug report, a replayed nonce, another pod's token, hostile bodies and
//! unreadable evidence are refused with the check that failed while the broker keeps serving;
//! the pod's own OpenBao role cannot read the gated path; etcd and the broker's log hold no value.

use anyhow::{Context, ensure};
use phantom_attestation::emulator::SnpReportBuilder;
use phantom_attestation::envelope::Recipient;
use phantom_attestation::protocol::Refused;
use phantom_attestation::report_data::Binding;
use phantom_attestation::snp::cert_table;
use phantom_attestation::tsm::Collector;
use phantom_conformance::attestation_agent::AgentEmulator;
use phantom_conformance::broker::{
    Answer, EmulatedTsm, MEASUREMENT, chip, create_pod, release_body, synthetic,
};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::{Env, EnvOptions};
use phantom_openbao::tls::TlsSettings;
use phantom_runtime_proxy::attested::{BrokerClient, BrokerSettings, EvidenceChoice, EvidenceMode};
use serde_json::json;

fn main() {
    run(
        EnvOptions::default(),
        vec![Case::new(
            "the_broker_releases_a_gated_secret_only_to_attested_evidence_of_the_pod_and_names_the_check_that_refused",
            broker,
        )],
    )
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

async fn broker(env: std::sync::Arc<Env>) -> anyhow::Result<()> {
    let mut case = env.start_broker_case().await?;
    let (ns, value, pin) = (case.ns.clone(), case.value.clone(), case.client.pin);
    let client = &case.client;
    let health = case.health;
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
    let body = release_body(&nonce, &recipient.public_key(), "api", &report, None);
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
    // A binding of this namespace naming another namespace's path: the broker's role could read
    // it, the broker does not release it.
    let answer = client
        .release(&token, &uid, "elsewhere", good("a", vcek_a.clone()))
        .await?;
    refused(answer, 403, "binding", "outside")?;
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

    // 7. The sidecar's own client (phantom-proxy's code) collects through its configfs-tsm
    // collector, from an emulated SEV-SNP guest, and opens the release.
    let settings = |name: &str, evidence: EvidenceChoice| -> anyhow::Result<BrokerSettings> {
        let token_file = env.dir().join(format!("broker-token-{name}"));
        std::fs::write(&token_file, &token)?;
        Ok(BrokerSettings {
            addr: format!("https://localhost:{}", case.port),
            tls: TlsSettings {
                spki_pins: vec![case.broker_pin],
                ..TlsSettings::default()
            },
            token_path: token_file,
            evidence,
            pod_uid: uid.clone(),
            openbao_spki_sha256: pin,
        })
    };
    let sidecar = |debug| -> anyhow::Result<_> {
        let evidence = EvidenceChoice {
            mode: EvidenceMode::ConfigfsTsm,
            tsm_root: "/sys/kernel/config/tsm".into(),
            agent_url: phantom_attestation::aa::DEFAULT_URL.into(),
        };
        Ok(BrokerClient::with_collector(
            settings(&format!("tsm-{debug}"), evidence)?,
            Collector::with_fs("/sys/kernel/config/tsm", EmulatedTsm::new(debug)?),
        )?)
    };
    let payload = sidecar(false)?.release("api").await?;
    ensure!(
        payload.get("db").and_then(|db| db.data.get("password")) == Some(&value),
        "the sidecar's client did not open the broker's release"
    );
    let err = sidecar(true)?.release("api").await.unwrap_err();
    ensure!(
        matches!(&err, phantom_runtime_proxy::Error::BrokerRefused { kind, .. } if kind == "requirement")
            && err.to_string().contains("forbids debug"),
        "the sidecar's client did not report the broker's reason: {err}"
    );

    // 7b. The same client where configfs-tsm is absent: evidence from the attestation-agent
    // emulator (the answer forwarded, parsed by the broker), with the text form of report_data.
    let agent = AgentEmulator::start("127.0.0.1:0".parse()?).await?;
    let through_agent = BrokerClient::new(settings(
        "agent",
        EvidenceChoice {
            mode: EvidenceMode::Auto,
            tsm_root: env.dir().join("no-configfs-tsm-here"),
            agent_url: format!("http://{}", agent.addr),
        },
    )?)?;
    ensure!(
        matches!(
            through_agent.source(),
            phantom_runtime_proxy::attested::EvidenceSource::AttestationAgent(_)
        ),
        "auto without configfs-tsm did not pick the agent"
    );
    let payload = through_agent.release("api").await?;
    ensure!(
        payload.get("db").and_then(|db| db.data.get("password")) == Some(&value)
            && agent.served() == 1,
        "the release through the attestation-agent did not open"
    );
    agent.set_debug(true);
    let err = through_agent.release("api").await.unwrap_err();
    ensure!(
        err.to_string().contains("forbids debug"),
        "the agent's debug report was not refused: {err}"
    );
    drop(agent);
    let err = through_agent.release("api").await.unwrap_err();
    ensure!(
        matches!(&err, phantom_runtime_proxy::Error::Evidence { .. })
            && err
                .to_string()
                .contains("attestation-agent at http://127.0.0.1:"),
        "an unreachable agent is not named: {err}"
    );

    // 8. The pod's own role cannot go around the broker.
    case.own_role_is_refused(&env).await?;

    // 9. Audit and metrics name what happened; nothing holds the value.
    let metrics = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{health}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in [
        r#"phantom_broker_releases_total{outcome="released",check="",tee="sev-snp"} 6"#,
        r#"phantom_broker_releases_total{outcome="refused",check="requirement",tee="sev-snp"}"#,
        r#"phantom_broker_releases_total{outcome="refused",check="challenge",tee="sev-snp"}"#,
        r#"phantom_broker_collateral_entries{tee="sev-snp",status="ready"} 1"#,
    ] {
        ensure!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    case.process.check_alive()?;
    let log = std::fs::read_to_string(case.process.log())?;
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
