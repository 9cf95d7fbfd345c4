//! The decision over synthetic SEV-SNP evidence (the test chain of attestation/tests/data) and a
//! real compiled policy set.

use std::path::PathBuf;

use phantom_attestation::emulator::SnpReportBuilder;
use phantom_attestation::snp::Roots;
use phantom_crds::{AttestationRequirement, PhantomPolicy, SecretBinding};
use phantom_policies::wasm::PluginHost;
use phantom_policies::{Modules, Sources};
use serde_json::json;

use super::*;

const NOW: u64 = 1_798_761_600;
const UID: &str = "0b8e5c1e-6f5d-4a55-9a3e-2f9c8d7e6b5a";
const MEASUREMENT: [u8; 48] = [0x5a; 48];

fn data(path: &str) -> Vec<u8> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/synthetic")
        .join(path);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn verifiers() -> Verifiers {
    let mut roots = Roots::only("milan", &data("ark.pem")).unwrap();
    roots.add_intermediates(&data("ask.pem")).unwrap();
    Verifiers {
        snp: SnpVerifier::new(roots),
        tdx: TdxVerifier::intel(),
    }
}

fn set(gated: bool) -> PolicySet {
    let key_release = if gated {
        "  keyRelease:\n    attestationRequirementRef: {name: prod-snp}\n    conditions:\n      - {name: own-namespace, expression: \"attestation.pod.namespace == binding.metadata.namespace\"}\n"
    } else {
        ""
    };
    let policy: PhantomPolicy = serde_yaml::from_str(&format!(
        "apiVersion: phantom.dev/v1alpha1\nkind: PhantomPolicy\nmetadata: {{name: payments}}\nspec:\n  match:\n    namespaceSelector: {{matchLabels: {{phantom.dev/inject: enabled}}}}\n{key_release}"
    ))
    .unwrap();
    let requirement: AttestationRequirement = serde_yaml::from_str(&format!(
        "apiVersion: phantom.dev/v1alpha1\nkind: AttestationRequirement\nmetadata: {{name: prod-snp}}\nspec:\n  teeTypes: [sev-snp]\n  sevSnp: {{measurements: [\"{}\"], vmpl: 0}}\n  conditions:\n    - {{name: zero-host-data, expression: \"attestation.snp.hostData.matches('^0+$')\"}}\n",
        hex::encode(MEASUREMENT)
    ))
    .unwrap();
    let binding: SecretBinding = serde_yaml::from_str(
        "apiVersion: phantom.dev/v1alpha1\nkind: SecretBinding\nmetadata: {name: api, namespace: shop}\nspec:\n  selector: {serviceAccountName: api}\n  openbao: {role: broker}\n  secrets:\n    - {name: db, path: shop/db, key: password, delivery: [{kind: file, path: db}]}\n",
    )
    .unwrap();
    compile(policy, vec![binding], requirement)
}

fn compile(
    policy: PhantomPolicy,
    bindings: Vec<SecretBinding>,
    requirement: AttestationRequirement,
) -> PolicySet {
    let (set, errors) = PolicySet::compile(
        &Sources {
            policies: vec![policy],
            bindings,
            requirements: vec![requirement],
            unreadable: Vec::new(),
        },
        &PluginHost::new().unwrap(),
        &Modules::default(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    set
}

struct Case {
    pod: Value,
    namespace: Value,
    binding: Value,
    reviewed: PodClaims,
    service_account: ServiceAccountClaims,
    openbao: OpenBaoClaims,
    report: Vec<u8>,
    endorsement: Vec<u8>,
    issued_at: u64,
}

fn chip() -> [u8; 64] {
    let bytes: Vec<u8> = "chip-a".bytes().cycle().take(64).collect();
    bytes.try_into().unwrap()
}

fn binding_values(uid: &str) -> Binding<'_> {
    Binding {
        nonce: [1; 32],
        public_key: [2; 32],
        openbao_spki_sha256: [3; 32],
        pod_uid: uid,
    }
}

impl Case {
    fn new(report: SnpReportBuilder) -> Self {
        Self {
            pod: json!({"metadata": {"name": "api-0", "namespace": "shop", "uid": UID},
                        "spec": {"serviceAccountName": "api", "containers": [{"name": "app"}]}}),
            namespace: json!({"metadata": {"name": "shop", "labels": {"phantom.dev/inject": "enabled"}}}),
            binding: json!({"metadata": {"name": "api", "namespace": "shop"},
                            "spec": {"selector": {"serviceAccountName": "api"},
                                     "secrets": [{"name": "db", "path": "shop/db"}]}}),
            reviewed: PodClaims {
                uid: UID.into(),
                name: "api-0".into(),
                namespace: "shop".into(),
            },
            service_account: ServiceAccountClaims {
                name: "api".into(),
                namespace: "shop".into(),
            },
            openbao: OpenBaoClaims {
                address: "https://bao.example:8200".into(),
                jurisdiction: Some("DE".into()),
                spki_sha256: hex::encode([3; 32]),
            },
            report: report.sign(&data("vcek-a.pk8")),
            endorsement: data("vcek-a.der"),
            issued_at: NOW - 5,
        }
    }

    fn good() -> Self {
        Self::new(
            SnpReportBuilder::milan(chip())
                .measurement(MEASUREMENT)
                .report_data(binding_values(UID).report_data()),
        )
    }

    fn decide(&self, set: &PolicySet) -> Result<Claims, Refusal> {
        let values = binding_values(UID);
        decide(
            &verifiers(),
            set,
            &Release {
                now: NOW,
                issued_at: self.issued_at,
                nonce: values.nonce,
                public_key: values.public_key,
                evidence: Evidence::Snp {
                    report: &self.report,
                    endorsement: &verifiers()
                        .snp
                        .endorsement(&self.endorsement, NOW as i64)
                        .expect("the test VCEK chains to the test root"),
                },
                reviewed_pod: &self.reviewed,
                reviewed_service_account: &self.service_account,
                pod: &self.pod,
                namespace: &self.namespace,
                binding: &self.binding,
                openbao: &self.openbao,
                openbao_spki_sha256: values.openbao_spki_sha256,
                paths: &PathRule::default(),
            },
        )
        .map(|verdict| verdict.claims)
    }
}

#[test]
fn attested_evidence_bound_to_this_release_is_released() {
    let claims = Case::good().decide(&set(true)).expect("released");
    assert_eq!(claims.pod.unwrap().uid, UID);
    assert_eq!(claims.service_account.unwrap().name, "api");
}

#[test]
fn a_token_of_another_pod_is_refused() {
    let mut case = Case::good();
    case.reviewed.uid = "another-uid".into();
    let err = case.decide(&set(true)).unwrap_err();
    assert_eq!(err.kind().as_str(), "identity", "{err}");
}

#[test]
fn evidence_bound_to_another_pod_is_refused() {
    let case = Case::new(
        SnpReportBuilder::milan(chip())
            .measurement(MEASUREMENT)
            .report_data(binding_values("another-uid").report_data()),
    );
    let err = case.decide(&set(true)).unwrap_err();
    assert!(matches!(err, Refusal::ReportData { .. }), "{err}");
}

#[test]
fn requirement_fields_conditions_and_freshness_refuse_precisely() {
    let debug = Case::new(
        SnpReportBuilder::milan(chip())
            .measurement(MEASUREMENT)
            .report_data(binding_values(UID).report_data())
            .debug(true),
    );
    assert_eq!(
        debug.decide(&set(true)).unwrap_err().to_string(),
        "SEV-SNP report has debug=1; AttestationRequirement prod-snp forbids debug"
    );

    let host_data = Case::new(
        SnpReportBuilder::milan(chip())
            .measurement(MEASUREMENT)
            .report_data(binding_values(UID).report_data())
            .host_data([1; 32]),
    );
    let err = host_data.decide(&set(true)).unwrap_err();
    let Refusal::Conditions(refusal) = &err else {
        panic!("{err}")
    };
    assert_eq!(refusal.condition, "prod-snp/zero-host-data");

    let mut stale = Case::good();
    stale.issued_at = NOW - 301;
    assert!(
        stale
            .decide(&set(true))
            .unwrap_err()
            .to_string()
            .starts_with("evidence is 301s old")
    );
}

#[test]
fn forged_evidence_is_refused() {
    let mut case = Case::good();
    case.report[0x90] ^= 1;
    assert_eq!(
        case.decide(&set(true)).unwrap_err().kind().as_str(),
        "evidence"
    );
}

#[test]
fn a_binding_no_requirement_gates_is_not_the_brokers_to_release() {
    let err = Case::good().decide(&set(false)).unwrap_err();
    assert!(matches!(err, Refusal::NotGated { .. }), "{err}");
    let mut elsewhere = Case::good();
    elsewhere.namespace = json!({"metadata": {"name": "shop", "labels": {}}});
    assert!(matches!(
        elsewhere.decide(&set(true)).unwrap_err(),
        Refusal::NotAdmitted { .. }
    ));
    let mut foreign = Case::good();
    foreign.binding = json!({"metadata": {"name": "api", "namespace": "other"}});
    assert_eq!(
        foreign.decide(&set(true)).unwrap_err().kind().as_str(),
        "identity"
    );
}

#[test]
fn a_binding_that_does_not_select_the_pod_is_refused() {
    let mut case = Case::good();
    case.binding["spec"]["selector"] = json!({"serviceAccountName": "billing"});
    let err = case.decide(&set(true)).unwrap_err();
    assert!(matches!(err, Refusal::NotSelected { .. }), "{err}");
    assert_eq!(err.kind().as_str(), "binding");
    case.binding["spec"] = json!({});
    assert!(matches!(
        case.decide(&set(true)).unwrap_err(),
        Refusal::NotSelected { .. }
    ));
}

/// A set whose policy gates on a TDX requirement (the fixture's MRTD is all zeros).
fn tdx_set() -> PolicySet {
    let policy: PhantomPolicy = serde_yaml::from_str(
        "apiVersion: phantom.dev/v1alpha1\nkind: PhantomPolicy\nmetadata: {name: payments}\nspec:\n  match:\n    namespaceSelector: {matchLabels: {phantom.dev/inject: enabled}}\n  keyRelease:\n    attestationRequirementRef: {name: prod-tdx}\n",
    )
    .unwrap();
    let requirement: AttestationRequirement = serde_yaml::from_str(
        "apiVersion: phantom.dev/v1alpha1\nkind: AttestationRequirement\nmetadata: {name: prod-tdx}\nspec:\n  teeTypes: [tdx]\n  tdx: {mrtd: [\"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\"], acceptedTcbStatuses: [UpToDate, SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded]}\n",
    )
    .unwrap();
    compile(policy, Vec::new(), requirement)
}

fn tdx_data(file: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/tdx/dcap-qvl")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_genuine_tdx_quote_verifies_through_the_broker_and_is_refused_for_not_binding_this_release() {
    // 2025-07-01, inside the fixture collateral's window.
    const TDX_NOW: u64 = 1_751_328_000;
    let case = Case::good();
    let values = binding_values(UID);
    let decide_with = |quote: &[u8], collateral: &[u8]| {
        decide(
            &verifiers(),
            &tdx_set(),
            &Release {
                now: TDX_NOW,
                issued_at: TDX_NOW - 5,
                nonce: values.nonce,
                public_key: values.public_key,
                evidence: Evidence::Tdx { quote, collateral },
                reviewed_pod: &case.reviewed,
                reviewed_service_account: &case.service_account,
                pod: &case.pod,
                namespace: &case.namespace,
                binding: &case.binding,
                openbao: &case.openbao,
                openbao_spki_sha256: values.openbao_spki_sha256,
                paths: &PathRule::default(),
            },
        )
    };
    let quote = tdx_data("tdx_quote");
    // Verified (signature, PCK chain, collateral, TCB policy); its report_data is the fixture's.
    let err = decide_with(&quote, &tdx_data("tdx_quote_collateral.json")).unwrap_err();
    assert!(matches!(err, Refusal::ReportData { .. }), "{err}");
    // Collateral of another platform: refused as evidence, with the verifier's reason.
    let err = decide_with(&quote, &tdx_data("sgx_quote_collateral.json")).unwrap_err();
    assert_eq!(err.kind().as_str(), "evidence", "{err}");
    // A truncated quote.
    let err = decide_with(
        &quote[..quote.len() / 2],
        &tdx_data("tdx_quote_collateral.json"),
    )
    .unwrap_err();
    assert_eq!(err.kind().as_str(), "evidence", "{err}");
}

#[test]
fn a_binding_naming_another_namespaces_path_is_refused() {
    for path in [
        "payroll/db",
        "shop",
        "shop/../payroll/db",
        "shop//db",
        "shop/./db",
    ] {
        let mut case = Case::good();
        case.binding["spec"]["secrets"][0]["path"] = json!(path);
        let err = case.decide(&set(true)).unwrap_err();
        assert!(matches!(err, Refusal::PathOutside { .. }), "{path}: {err}");
        assert_eq!(err.kind().as_str(), "binding");
    }
}

#[test]
fn a_path_template_must_name_the_namespace() {
    assert_eq!(
        PathRule::parse("teams/{namespace}/tee/")
            .unwrap()
            .prefix("shop"),
        "teams/shop/tee/"
    );
    assert!(
        PathRule::parse("shared/")
            .unwrap_err()
            .contains("{namespace}")
    );
    assert!(PathRule::parse("{namespace}/{pod}/").is_err());
}
