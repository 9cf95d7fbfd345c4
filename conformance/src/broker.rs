//! The attestation broker as a suite or bench meets it: a TLS OpenBao whose gated path only the
//! broker's role reads, a namespace whose policy gates key release on an SEV-SNP requirement, the
//! real `phantom-broker` binary trusting the synthetic chain, and [`AttestingClient`], the sidecar's
//! side of the protocol with evidence from the test-only report emulator.

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
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::local::LocalProcess;
use crate::{Env, KubernetesRole, TlsOpenBao, free_port, random_hex};

/// The measurement the case's AttestationRequirement allows.
pub const MEASUREMENT: [u8; 48] = [0x5a; 48];
/// Where the broker's ServiceAccount lives.
pub const BROKER_NAMESPACE: &str = "phantom-system";

/// A file of the synthetic SEV-SNP chain (attestation/tests/data/synthetic).
pub fn synthetic(file: &str) -> anyhow::Result<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/tests/data/synthetic")
        .join(file);
    std::fs::read(&path).with_context(|| path.display().to_string())
}

pub fn chip(name: &str) -> [u8; 64] {
    let bytes: Vec<u8> = format!("chip-{name}").bytes().cycle().take(64).collect();
    bytes.try_into().expect("64 bytes")
}

/// The namespace's owner naming another namespace's gated path.
const FOREIGN_BINDING: &str = r#"---
apiVersion: phantom.dev/v1alpha1
kind: SecretBinding
metadata: {name: elsewhere, namespace: {ns}}
spec:
  selector: {serviceAccountName: app}
  openbao: {role: {ns}-app}
  secrets:
    - {name: payroll, path: payroll/gated, key: password, delivery: [{kind: file, path: payroll}]}
"#;

/// A running broker case. Dropping it stops the broker and the TLS OpenBao.
pub struct BrokerCase {
    /// The namespace (label `phantom.dev/tee-case=<ns>`), with ServiceAccounts `app` and `other`.
    pub ns: String,
    /// The gated secret's value (for assertions; never print it).
    pub value: String,
    pub client: AttestingClient,
    pub process: LocalProcess,
    /// The broker's HTTPS port and the sha256 of its key (what sidecars pin).
    pub port: u16,
    pub broker_pin: [u8; 32],
    /// The broker's status port.
    pub health: u16,
    pub bao: TlsOpenBao,
}

impl BrokerCase {
    /// Fails unless OpenBao refuses the gated path (403) to the namespace's own role, logged in
    /// with a token of ServiceAccount `app`: only the broker's role reads it.
    pub async fn own_role_is_refused(&self, env: &Env) -> anyhow::Result<()> {
        let ns = &self.ns;
        let app_token = env
            .token_request(ns, "app", &["openbao"], std::time::Duration::from_secs(600))
            .await?;
        let app = self
            .bao
            .admin
            .login_kubernetes("kubernetes", &format!("{ns}-app"), &app_token)
            .await?;
        let direct = self
            .bao
            .admin
            .kv_get(&app, "secret", &format!("{ns}/gated"))
            .await;
        ensure!(
            direct
                .as_ref()
                .is_err_and(|e| e.to_string().contains("403")),
            "the pod's own role read the gated path: {direct:?}"
        );
        Ok(())
    }
}

impl std::fmt::Debug for BrokerCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerCase")
            .field("ns", &self.ns)
            .field("value", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What a broker case varies.
#[derive(Debug, Clone)]
pub struct BrokerCaseOptions {
    /// More labels on the namespace (a webhook's enable label).
    pub namespace_labels: Vec<(String, String)>,
    /// The PhantomPolicy's `injection` (for pods a webhook injects).
    pub injection: Option<serde_json::Value>,
    /// SecretBinding `elsewhere`, naming another namespace's gated path for ServiceAccount `app`
    /// (the broker refuses it; an injected pod with it would wait for it).
    pub foreign_binding: bool,
}

impl Default for BrokerCaseOptions {
    fn default() -> Self {
        Self {
            namespace_labels: Vec::new(),
            injection: None,
            foreign_binding: true,
        }
    }
}

impl Env {
    /// Sets up and starts a broker case (see the module docs).
    pub async fn start_broker_case(&self) -> anyhow::Result<BrokerCase> {
        self.start_broker_case_with(BrokerCaseOptions::default())
            .await
    }

    /// [`Env::start_broker_case`] with `options`.
    pub async fn start_broker_case_with(
        &self,
        options: BrokerCaseOptions,
    ) -> anyhow::Result<BrokerCase> {
        let env = self;
        env.install_crds().await?;
        let bao = env.start_tls_openbao().await?;
        let ns = format!("tee-{}", random_hex(4));
        let mut labels: Vec<(&str, &str)> = vec![("phantom.dev/tee-case", &ns)];
        labels.extend(
            options
                .namespace_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        env.create_namespace_named(&ns, &labels).await?;
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
        let apply = |yaml: String| async move {
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
        };
        let injection = options
            .injection
            .as_ref()
            .map(|i| format!("\n  injection: {i}"))
            .unwrap_or_default();
        let foreign = if options.foreign_binding {
            FOREIGN_BINDING.replace("{ns}", &ns)
        } else {
            String::new()
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
    namespaceSelector: {{matchLabels: {{phantom.dev/tee-case: {ns}}}}}{injection}
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
{foreign}"#,
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
        process
            .wait_ready(
                "phantom-broker",
                &format!("http://127.0.0.1:{health}/readyz"),
            )
            .await?;

        let client = AttestingClient {
            http: reqwest::Client::builder()
                .use_rustls_tls()
                .add_root_certificate(reqwest::Certificate::from_pem(
                    env.ca().cert_pem.as_bytes(),
                )?)
                .build()?,
            base: format!("https://localhost:{port}"),
            pin,
        };

        Ok(BrokerCase {
            ns,
            value,
            client,
            process,
            port,
            broker_pin: Sha256::digest(&serving.spki_der).into(),
            health,
            bao,
        })
    }
}

/// A sidecar's side of the protocol, as a test drives it.
#[derive(Debug)]
pub struct AttestingClient {
    http: reqwest::Client,
    base: String,
    /// The OpenBao key report_data binds.
    pub pin: [u8; 32],
}

/// What a release answered.
#[derive(Debug)]
pub enum Answer {
    Released(Payload),
    Refused(u16, Refused),
}

impl AttestingClient {
    pub async fn challenge(&self) -> anyhow::Result<[u8; 32]> {
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

    pub async fn post(&self, token: &str, body: Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
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
    pub async fn release(
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
        let request = release_body(
            &nonce,
            &recipient.public_key(),
            binding,
            &report,
            cert_table.as_deref(),
        );
        let (status, body) = self.post(token, request).await?;
        if status != 200 {
            return Ok(Answer::Refused(status, serde_json::from_slice(&body)?));
        }
        let released: Released = serde_json::from_slice(&body)?;
        let envelope = Envelope::try_from(&released).map_err(anyhow::Error::msg)?;
        let plaintext = recipient.open(&envelope, &envelope_context(&nonce, uid, binding))?;
        Ok(Answer::Released(serde_json::from_slice(&plaintext)?))
    }
}

/// A release request's body for SEV-SNP evidence.
pub fn release_body(
    nonce: &[u8; 32],
    public_key: &[u8; 32],
    binding: &str,
    report: &[u8],
    cert_table: Option<&[u8]>,
) -> Vec<u8> {
    serde_json::to_vec(&ReleaseRequest {
        nonce: hex::encode(nonce),
        public_key: hex::encode(public_key),
        binding: binding.to_owned(),
        evidence: EvidenceRequest::sev_snp(report, cert_table),
    })
    .expect("a release request serialises")
}

/// Creates a pod (never scheduled here: the API server alone gives it a UID); returns the UID.
pub async fn create_pod(
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

/// What the emulated TEE of chip a reports for `report_data`: the allowed measurement, `debug` in
/// its policy, signed with the VCEK key `vcek_pkcs8`.
pub fn emulated_report(report_data: [u8; 64], debug: bool, vcek_pkcs8: &[u8]) -> Vec<u8> {
    SnpReportBuilder::milan(chip("a"))
        .measurement(MEASUREMENT)
        .report_data(report_data)
        .debug(debug)
        .sign(vcek_pkcs8)
}

/// A configfs-tsm tree as the kernel serves it on an SEV-SNP guest, emulated in memory: an entry
/// created, `inblob` written, `outblob` read → a fresh report over `inblob`, signed by the
/// synthetic chip-a VCEK. Test-only: it hands the
/// sidecar's real collector ([`phantom_attestation::tsm::Collector`]) evidence as a TEE would.
#[derive(Clone)]
pub struct EmulatedTsm {
    vcek_pkcs8: Vec<u8>,
    debug: bool,
    entries: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<PathBuf, Vec<u8>>>>,
}

impl std::fmt::Debug for EmulatedTsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedTsm")
            .field("debug", &self.debug)
            .finish_non_exhaustive()
    }
}

impl EmulatedTsm {
    /// A guest whose reports carry `debug` in their policy.
    pub fn new(debug: bool) -> anyhow::Result<Self> {
        Ok(Self {
            vcek_pkcs8: synthetic("vcek-a.pk8")?,
            debug,
            entries: Default::default(),
        })
    }
}

impl phantom_attestation::tsm::Fs for EmulatedTsm {
    fn create_dir(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut entries = self.entries.lock().expect("emulator lock");
        if entries.contains_key(path) {
            return Err(std::io::ErrorKind::AlreadyExists.into());
        }
        entries.insert(path.to_owned(), Vec::new());
        Ok(())
    }

    fn write(&self, path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
        let entry = path.parent().ok_or(std::io::ErrorKind::NotFound)?;
        match (
            path.file_name().and_then(|n| n.to_str()),
            self.entries.lock().expect("emulator lock").get_mut(entry),
        ) {
            (Some("inblob"), Some(inblob)) => {
                *inblob = contents.to_vec();
                Ok(())
            }
            _ => Err(std::io::ErrorKind::PermissionDenied.into()),
        }
    }

    fn read(&self, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        let entry = path.parent().ok_or(std::io::ErrorKind::NotFound)?;
        let inblob = self
            .entries
            .lock()
            .expect("emulator lock")
            .get(entry)
            .cloned()
            .ok_or(std::io::ErrorKind::NotFound)?;
        match path.file_name().and_then(|n| n.to_str()) {
            Some("generation") => Ok(b"1\n".to_vec()),
            Some("provider") => Ok(b"sev_guest\n".to_vec()),
            Some("outblob") => {
                let report_data: [u8; 64] = inblob
                    .try_into()
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
                Ok(emulated_report(report_data, self.debug, &self.vcek_pkcs8))
            }
            _ => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    fn remove_dir(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.entries
            .lock()
            .expect("emulator lock")
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
}
