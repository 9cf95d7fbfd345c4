//! The attested release round trip against the real `phantom-broker` (release build), the real
//! API server and a TLS OpenBao: challenge → (report signed by the emulator, not timed) →
//! release → sealed answer, measured by the client (TLS, TokenReview, three API reads, SEV-SNP
//! verification, policy, OpenBao read, sealing); then 100 releases at once; the broker's RSS idle
//! and its peak. Prints figures; asserts nothing.
//!
//! `cargo bench -p phantom-conformance --bench broker` (PHANTOM_BENCH_RUNS, default 300)

use std::sync::Arc;
use std::time::{Duration, Instant};

use phantom_attestation::emulator::SnpReportBuilder;
use phantom_attestation::envelope::Recipient;
use phantom_attestation::report_data::Binding;
use phantom_conformance::bins::{build_release, status_kib};
use phantom_conformance::broker::{
    AttestingClient, MEASUREMENT, chip, create_pod, release_body, synthetic,
};
use phantom_conformance::{Env, Tools};
use phantom_testkit::bench::percentiles;

const CONCURRENT: usize = 100;

/// One release; returns the client-side time of the two calls (signing excluded).
async fn release(client: &AttestingClient, token: &str, uid: &str, vcek: &[u8]) -> Duration {
    let started = Instant::now();
    let nonce = client.challenge().await.expect("challenge");
    let challenge = started.elapsed();
    let recipient = Recipient::generate().expect("key");
    let report = SnpReportBuilder::milan(chip("a"))
        .measurement(MEASUREMENT)
        .report_data(
            Binding {
                nonce,
                public_key: recipient.public_key(),
                openbao_spki_sha256: client.pin,
                pod_uid: uid,
            }
            .report_data(),
        )
        .sign(vcek);
    let body = release_body(&nonce, &recipient.public_key(), "api", &report, None);
    let sent = Instant::now();
    let (status, _) = client.post(token, body).await.expect("release");
    assert_eq!(status, 200, "the release was refused");
    challenge + sent.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("PHANTOM_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    assert!(
        build_release(&["-p", "phantom-broker", "--bin", "phantom-broker"]),
        "building phantom-broker failed"
    );
    Tools::ensure().expect("tools installed");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let env = Env::start().await.expect("environment");
        let case = Arc::new(env.start_broker_case().await.expect("broker case"));
        let uid = create_pod(&env, &case.ns, "api-0", "app").await.expect("pod");
        let token = env
            .pod_bound_token(&case.ns, "app", "api-0", &uid, "phantom-broker")
            .await
            .expect("token");
        let vcek = synthetic("vcek-a.pk8").expect("test VCEK key");
        for _ in 0..runs / 10 {
            release(&case.client, &token, &uid, &vcek).await;
        }
        let pid = case.process.id();
        let idle = status_kib(pid, "VmRSS:");
        let mut sequential = Vec::with_capacity(runs);
        for _ in 0..runs {
            sequential.push(release(&case.client, &token, &uid, &vcek).await);
        }
        let started = Instant::now();
        let tasks: Vec<_> = (0..CONCURRENT)
            .map(|_| {
                let (case, token, uid, vcek) =
                    (case.clone(), token.clone(), uid.clone(), vcek.clone());
                tokio::spawn(async move { release(&case.client, &token, &uid, &vcek).await })
            })
            .collect();
        let mut concurrent = Vec::with_capacity(CONCURRENT);
        for task in tasks {
            concurrent.push(task.await.expect("release task"));
        }
        let wall = started.elapsed();
        let (rss, peak) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
        println!(
            "phantom-broker (release), SEV-SNP evidence from the emulator, one binding of one KV secret; client and broker share the 2 cores:"
        );
        percentiles("challenge → release round trip, sequential", sequential);
        percentiles(
            &format!("round trip, {CONCURRENT} at once"),
            concurrent,
        );
        println!(
            "{CONCURRENT} concurrent releases in {wall:.2?}; broker RSS idle {:.1} MiB, after {:.1} MiB, peak {:.1} MiB",
            idle as f64 / 1024.0,
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    });
}
