use std::collections::BTreeMap;

use kube::ResourceExt as _;
use phantom_crds::wellknown::SEAL_ANNOTATION;
use phantom_crds::{Injection, KeyReleasePolicyPlan};
use phantom_policies::{BindingRef, CanaryOutcome, MonitoringScope, PolicyOutcome};
use serde_json::{Value, json};

use super::*;

const SEALED_AT: i64 = 1_800_000_000;

fn seal_key() -> std::sync::Arc<phantom_seal::Key> {
    static KEY: std::sync::OnceLock<std::sync::Arc<phantom_seal::Key>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| std::sync::Arc::new(phantom_seal::Key::generate(0).expect("random")))
        .clone()
}

fn sealing() -> Sealing {
    Sealing {
        key: seal_key(),
        namespace: "shop".into(),
        purpose: phantom_seal::Purpose::Stored,
        now: SEALED_AT,
    }
}

fn decision(mode: InjectionMode) -> Decision {
    Decision {
        allowed: true,
        inject: true,
        injection: Some(Injection {
            mode,
            ..Default::default()
        }),
        deciding_policy: Some("payments".into()),
        matched: vec![PolicyOutcome {
            policy: "payments".into(),
            enforcement: Default::default(),
            canary: Some(CanaryOutcome {
                percent: 30,
                key: "shop/Deployment/web".into(),
                bucket: 12,
                selected: true,
            }),
            denials: vec![],
            warnings: vec![],
            hints: Default::default(),
            declined_by: None,
        }],
        denials: vec![],
        would_deny: vec![],
        would_inject: false,
        bindings: vec![BindingRef {
            namespace: "shop".into(),
            name: "db".into(),
        }],
        monitoring: MonitoringScope::default(),
        key_release_policies: vec![],
        warnings: vec![],
        policy_digest: "sha256:abc".into(),
    }
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("pod")
}

fn web() -> Pod {
    pod(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"containers": [
            {"name": "app", "image": "shop/web:1", "command": ["/web"], "args": ["--port", "80"],
             "securityContext": {"runAsUser": 1000}},
            {"name": "metrics", "image": "exporter:1", "command": ["/exporter"]}
        ]}
    }))
}

fn apply(original: &Pod, patch: &Patch) -> Pod {
    let mut value = serde_json::to_value(original).expect("json");
    json_patch::patch(&mut value, patch).expect("the patch applies");
    serde_json::from_value(value).expect("a pod")
}

/// `original` as `decision` injects it (default configuration), with no binding plan.
fn injected_by(original: &Pod, decision: &Decision) -> Pod {
    let patch = mutate(
        original,
        decision,
        &[],
        None,
        &InjectConfig::default(),
        &sealing(),
    )
    .expect("injects");
    apply(original, &patch)
}

/// `original` as admission injects it in `mode`, with no binding plan.
fn injected(original: &Pod, mode: InjectionMode) -> Pod {
    injected_by(original, &decision(mode))
}

fn names(containers: &Option<Vec<Container>>) -> Vec<&str> {
    containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn sidecar_mode_wraps_every_container_and_adds_the_proxy() {
    let original = web();
    let out = injected(&original, InjectionMode::Sidecar);
    let spec = out.spec.as_ref().expect("spec");
    assert_eq!(
        names(&Some(spec.containers.clone())),
        ["app", "metrics", "phantom-proxy"]
    );
    assert_eq!(names(&spec.init_containers), ["phantom-init"]);
    let app = &spec.containers[0];
    assert_eq!(
        app.command.as_deref().expect("command"),
        [
            "/phantom/bin/phantom-exec",
            "--container",
            "app",
            "--",
            "/web"
        ]
    );
    assert_eq!(
        app.args.as_deref().expect("args"),
        ["--port", "80"],
        "args untouched"
    );
    let secrets = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == SECRETS_VOLUME)
        .and_then(|v| v.empty_dir.clone())
        .expect("secrets emptyDir");
    assert_eq!(secrets.medium.as_deref(), Some("Memory"));
    assert_eq!(secrets.size_limit, Some(Quantity("1Mi".into())));
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == TOKEN_VOLUME)
        .and_then(|v| v.projected.clone())
        .expect("projected token");
    let projection = token.sources.expect("sources")[0]
        .service_account_token
        .clone()
        .expect("token");
    assert_eq!(projection.audience.as_deref(), Some("openbao"));
    let proxy = &spec.containers[2];
    assert_eq!(
        proxy.security_context.as_ref().and_then(|s| s.run_as_user),
        Some(1000),
        "the proxy runs as the application's user so that 0400 files are readable"
    );
    assert!(
        proxy
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == TOKEN_VOLUME),
        "only the proxy mounts the token"
    );
    assert!(
        !app.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == TOKEN_VOLUME),
        "the application never sees the OpenBao token"
    );
    let annotations = out.metadata.annotations.expect("annotations");
    assert_eq!(annotations[INJECTED_ANNOTATION], "true");
    assert_eq!(annotations[POLICY_DIGEST_ANNOTATION], "sha256:abc");
    assert_eq!(annotations[BINDINGS_ANNOTATION], "db");
    assert_eq!(annotations[CANARY_ANNOTATION], "payments:30%:bucket=12:in");
    let summary: Value = serde_json::from_str(&annotations[DECISION_ANNOTATION]).expect("json");
    assert_eq!(summary["policy"], "payments");
    assert_eq!(summary["mode"], "sidecar");
}

#[test]
fn native_sidecar_and_init_only_place_the_proxy_among_init_containers() {
    let original = web();
    let native = injected(&original, InjectionMode::NativeSidecar);
    let spec = native.spec.expect("spec");
    assert_eq!(
        names(&spec.init_containers),
        ["phantom-init", "phantom-proxy"]
    );
    assert_eq!(
        spec.init_containers.expect("inits")[1]
            .restart_policy
            .as_deref(),
        Some("Always")
    );
    assert_eq!(names(&Some(spec.containers)), ["app", "metrics"]);

    let once = injected(&original, InjectionMode::InitOnly);
    let spec = once.spec.expect("spec");
    let inits = spec.init_containers.expect("inits");
    assert_eq!(names(&Some(inits.clone())), [PROXY_CONTAINER]);
    assert_eq!(inits[0].args.as_deref(), Some(&["--once".to_owned()][..]));
    assert_eq!(inits[0].restart_policy, None, "init-only runs once");
    assert_eq!(
        spec.containers[0].command.as_deref(),
        Some(&["/web".to_owned()][..]),
        "nothing to wrap: the application reads files"
    );

    let env_binding: phantom_crds::SecretBindingSpec = serde_json::from_value(json!({
        "selector": {"podSelector": {}}, "openbao": {"role": "shop"},
        "secrets": [{"name": "pw", "path": "shop/db", "key": "password",
                     "delivery": [{"kind": "file", "path": "pw"}, {"kind": "env", "name": "PW"}]}]
    }))
    .expect("spec");
    let err = mutate(
        &original,
        &decision(InjectionMode::InitOnly),
        &[BindingPlan {
            name: "db".into(),
            spec: env_binding,
        }],
        None,
        &InjectConfig::default(),
        &sealing(),
    )
    .expect_err("env needs the running sidecar");
    assert!(
        err.to_string()
            .contains("SecretBinding db delivers secret pw as Env"),
        "{err}"
    );
}

fn binding(delivery: Value) -> Vec<BindingPlan> {
    vec![BindingPlan {
        name: "db".into(),
        spec: serde_json::from_value(json!({
            "selector": {"podSelector": {}}, "openbao": {"role": "shop"},
            "secrets": [{"name": "pw", "path": "shop/db", "key": "password", "delivery": [delivery]}]
        }))
        .expect("spec"),
    }]
}

#[test]
fn daemonset_mode_asks_the_node_agent_with_no_sidecar() {
    let original = web();
    let plan = binding(json!({"kind": "env", "name": "PW"}));
    let d = decision(InjectionMode::Daemonset);
    let patch = mutate(
        &original,
        &d,
        &plan,
        None,
        &InjectConfig::default(),
        &sealing(),
    )
    .expect("injects");
    let out = apply(&original, &patch);
    assert!(is_injected(&out), "judged injected on UPDATE too");
    let spec = out.spec.as_ref().expect("spec");
    assert_eq!(names(&Some(spec.containers.clone())), ["app", "metrics"]);
    assert_eq!(names(&spec.init_containers), ["phantom-init"]);
    let init = &spec.init_containers.as_ref().expect("init")[0];
    assert_eq!(
        init.command.as_deref().expect("command")[3..],
        ["--agent", AGENT_SOCKET_PATH]
    );
    let init_env: BTreeMap<&str, &str> = init
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default()))
        .collect();
    let handed: Vec<BindingPlan> = serde_json::from_str(init_env[PLAN_ENV]).expect("plan");
    assert_eq!(handed[0].name, "db");
    assert_eq!(init_env[WRAPPED_ENV], "app,metrics");
    let init_mounts: Vec<&str> = init
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(init_mounts, [BIN_VOLUME, TOKEN_VOLUME, AGENT_VOLUME]);
    let app = &spec.containers[0];
    let app_mounts: Vec<(&str, bool)> = app
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.read_only == Some(true)))
        .collect();
    assert_eq!(
        app_mounts,
        [
            (BIN_VOLUME, true),
            (AGENT_VOLUME, true),
            (AGENT_TOKEN_VOLUME, true)
        ],
        "never the OpenBao token: the agent reads it from the kubelet"
    );
    let app_env: BTreeMap<&str, &str> = app
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default()))
        .collect();
    assert_eq!(app_env["PHANTOM_SOCKET"], AGENT_SOCKET_PATH);
    assert_eq!(
        app_env[AGENT_TOKEN_ENV],
        "/var/run/secrets/phantom.dev/agent/token"
    );
    let volumes = spec.volumes.as_ref().expect("volumes");
    let host = volumes
        .iter()
        .find(|v| v.name == AGENT_VOLUME)
        .and_then(|v| v.host_path.as_ref())
        .expect("the agent's directory");
    assert_eq!(host.path, "/var/run/phantom-agent");
    let agent_token = volumes
        .iter()
        .find(|v| v.name == AGENT_TOKEN_VOLUME)
        .and_then(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s[0].service_account_token.as_ref())
        .expect("the agent token");
    assert_eq!(agent_token.audience.as_deref(), Some("phantom-agent"));
    assert!(volumes.iter().all(|v| v.name != SECRETS_VOLUME));
}

#[test]
fn daemonset_mode_refuses_what_the_agent_cannot_deliver_yet() {
    let err = mutate(
        &web(),
        &decision(InjectionMode::Daemonset),
        &binding(json!({"kind": "file", "path": "pw"})),
        None,
        &InjectConfig::default(),
        &sealing(),
    )
    .expect_err("files need the sidecar");
    assert!(
        err.to_string()
            .contains("SecretBinding db delivers secret pw as a file")
            && err.to_string().contains("injection mode sidecar"),
        "{err}"
    );
    let gated: KeyReleasePlan = serde_json::from_value(json!({
        "policyDigest": "d",
        "policies": [{"name": "p", "keyRelease": {"attestationRequirementRef": {"name": "prod-snp"}}}],
        "requirements": [{"name": "prod-snp", "spec": {"teeTypes": ["sev-snp"]}}],
        "pod": {}
    }))
    .expect("plan");
    let err = mutate(
        &web(),
        &decision(InjectionMode::Daemonset),
        &binding(json!({"kind": "env", "name": "PW"})),
        Some(&gated),
        &InjectConfig::default(),
        &sealing(),
    )
    .expect_err("attestation needs the sidecar");
    assert!(err.to_string().contains("prod-snp"), "{err}");
}

#[test]
fn a_pod_that_arrives_injected_is_refused_not_passed_through() {
    let original = web();
    let d = decision(InjectionMode::Sidecar);
    let once = injected_by(&original, &d);
    assert!(is_injected(&once));
    let err =
        mutate(&once, &d, &[], None, &InjectConfig::default(), &sealing()).expect_err("a copy");
    assert!(
        err.to_string().contains("annotation phantom.dev/"),
        "a copied injection is named: {err}"
    );
}

#[test]
fn a_container_without_command_needs_the_annotation() {
    let bare = pod(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "app", "image": "shop/web:1", "args": ["-v"]}]}
    }));
    let d = decision(InjectionMode::Sidecar);
    let err =
        mutate(&bare, &d, &[], None, &InjectConfig::default(), &sealing()).expect_err("no command");
    let message = err.to_string();
    assert!(
        message.contains("container app has no command")
            && message.contains("phantom.dev/command.app")
            && message.contains("spec.containers[app].command"),
        "the message says exactly what to add: {message}"
    );

    for key in ["phantom.dev/command", "phantom.dev/command.app"] {
        let mut annotated = bare.clone();
        annotated.metadata.annotations = Some(BTreeMap::from([(
            key.to_owned(),
            r#"["/entry", "serve"]"#.to_owned(),
        )]));
        let out = apply(
            &annotated,
            &mutate(
                &annotated,
                &d,
                &[],
                None,
                &InjectConfig::default(),
                &sealing(),
            )
            .expect(key),
        );
        let app = &out.spec.expect("spec").containers[0];
        assert_eq!(
            app.command.as_deref().expect("command")[3..],
            ["--", "/entry", "serve"]
        );
        assert_eq!(app.args.as_deref(), Some(&["-v".to_owned()][..]));
    }

    let mut broken = bare;
    broken.metadata.annotations = Some(BTreeMap::from([(
        "phantom.dev/command".to_owned(),
        "/entry serve".to_owned(),
    )]));
    let err =
        mutate(&broken, &d, &[], None, &InjectConfig::default(), &sealing()).expect_err("not JSON");
    assert!(err.to_string().contains("JSON array"), "{err}");
}

#[test]
fn listed_containers_only_and_clear_errors_for_clashes() {
    let mut d = decision(InjectionMode::Sidecar);
    d.injection.as_mut().expect("injection").containers = Some(vec!["app".into()]);
    let original = web();
    let out = injected_by(&original, &d);
    let spec = out.spec.expect("spec");
    assert_eq!(
        spec.containers[1].command.as_deref(),
        Some(&["/exporter".to_owned()][..])
    );

    d.injection.as_mut().expect("injection").containers = Some(vec!["api".into()]);
    let err = mutate(
        &original,
        &d,
        &[],
        None,
        &InjectConfig::default(),
        &sealing(),
    )
    .expect_err("no such container");
    assert!(
        err.to_string().contains("spec.injection.containers"),
        "{err}"
    );

    let clash = pod(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "app", "command": ["/web"]}],
                 "volumes": [{"name": "phantom-secrets", "emptyDir": {}}]}
    }));
    let err = mutate(
        &clash,
        &decision(InjectionMode::Sidecar),
        &[],
        None,
        &InjectConfig::default(),
        &sealing(),
    )
    .expect_err("clash");
    assert!(err.to_string().contains("phantom-secrets"), "{err}");
}

#[test]
fn annotate_records_a_decision_without_touching_the_spec() {
    let original = web();
    let mut d = decision(InjectionMode::Sidecar);
    d.inject = false;
    let patch = annotate(
        &original,
        decision_annotations(&d, crate::metrics::Outcome::NotSelected),
        &sealing(),
    )
    .expect("annotates");
    let out = apply(&original, &patch);
    assert_eq!(out.spec, original.spec);
    let summary: Value =
        serde_json::from_str(&out.metadata.annotations.expect("annotations")[DECISION_ANNOTATION])
            .expect("json");
    assert_eq!(summary["outcome"], "not-selected");
}

#[test]
fn the_sidecar_receives_the_bindings_specs_never_values() {
    let spec: phantom_crds::SecretBindingSpec = serde_json::from_value(json!({
        "selector": {"podSelector": {}}, "openbao": {"role": "shop"},
        "secrets": [{"name": "pw", "path": "shop/db", "key": "password",
                     "delivery": [{"kind": "env", "name": "DB_PASSWORD"}]}]
    }))
    .expect("spec");
    let plan = vec![BindingPlan {
        name: "db".into(),
        spec,
    }];
    let key_release = KeyReleasePlan {
        policy_digest: "sha256:00".into(),
        policies: vec![KeyReleasePolicyPlan {
            name: "payments".into(),
            key_release: serde_json::from_value(json!({"conditions": [
                {"name": "same-namespace", "expression": "binding.metadata.namespace == pod.metadata.namespace"}
            ]}))
            .expect("keyRelease"),
        }],
        requirements: vec![],
        pod: json!({"metadata": {"namespace": "shop"}}),
    };
    let original = web();
    let proxy_env = |key_release: Option<&KeyReleasePlan>| {
        let out = apply(
            &original,
            &mutate(
                &original,
                &decision(InjectionMode::Sidecar),
                &plan,
                key_release,
                &InjectConfig::default(),
                &sealing(),
            )
            .expect("injects"),
        );
        let proxy = out
            .spec
            .expect("spec")
            .containers
            .into_iter()
            .find(|c| c.name == PROXY_CONTAINER)
            .expect("proxy");
        proxy
            .env
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect::<BTreeMap<_, _>>()
    };
    let env = proxy_env(Some(&key_release));
    let handed: Vec<BindingPlan> = serde_json::from_str(&env[PLAN_ENV]).expect("plan JSON");
    assert_eq!(handed, plan);
    let conditions: KeyReleasePlan =
        serde_json::from_str(&env[KEY_RELEASE_ENV]).expect("key-release JSON");
    assert_eq!(conditions, key_release);
    let without = proxy_env(Some(&KeyReleasePlan::default()));
    assert!(
        !without.contains_key(KEY_RELEASE_ENV),
        "no policies, no variable"
    );
}

#[test]
fn openbao_trust_client_certificate_and_status_port_reach_the_sidecar() {
    let config = InjectConfig {
        openbao_ca_pem: Some(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        ),
        openbao_spki_pins: vec!["sha256//a".into(), "sha256//b".into()],
        openbao_client_cert_secret: Some("phantom-openbao-client".into()),
        ..InjectConfig::default()
    };
    let inject = |pod: &Pod| {
        let out = apply(
            pod,
            &mutate(
                pod,
                &decision(InjectionMode::Sidecar),
                &[],
                None,
                &config,
                &sealing(),
            )
            .expect("injects"),
        );
        let spec = out.spec.expect("spec");
        let proxy = spec
            .containers
            .iter()
            .find(|c| c.name == PROXY_CONTAINER)
            .cloned()
            .expect("proxy");
        (spec, proxy)
    };
    let (spec, proxy) = inject(&web());
    let env: BTreeMap<String, String> = proxy
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    assert!(env["PHANTOM_OPENBAO_CA_PEM"].contains("BEGIN CERTIFICATE"));
    assert_eq!(env["PHANTOM_OPENBAO_SPKI_SHA256"], "sha256//a,sha256//b");
    assert_eq!(
        env["PHANTOM_OPENBAO_CLIENT_CERT"],
        format!("{CLIENT_CERT_DIR}/tls.crt")
    );
    assert_eq!(env["PHANTOM_STATUS_ADDR"], "0.0.0.0:9102");
    let secret_volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == CLIENT_CERT_VOLUME)
        .and_then(|v| v.secret.clone())
        .expect("client certificate volume");
    assert_eq!(
        secret_volume.secret_name.as_deref(),
        Some("phantom-openbao-client")
    );
    let app_mounts: Vec<&str> = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .collect();
    assert!(
        !app_mounts.contains(&CLIENT_CERT_VOLUME),
        "only the sidecar mounts the client certificate"
    );
    assert_eq!(
        proxy
            .liveness_probe
            .and_then(|p| p.http_get)
            .and_then(|h| h.path)
            .as_deref(),
        Some("/healthz")
    );

    let mut on_host = web();
    on_host.spec.as_mut().expect("spec").host_network = Some(true);
    let (_, proxy) = inject(&on_host);
    assert!(proxy.ports.is_none() && proxy.liveness_probe.is_none());
    assert!(
        !proxy
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "PHANTOM_STATUS_ADDR"),
        "no status port on hostNetwork pods"
    );
}

#[test]
fn each_wrapped_container_mounts_its_own_socket_directory_and_the_files_only() {
    let spec = injected(&web(), InjectionMode::Sidecar).spec.expect("spec");
    for name in ["app", "metrics"] {
        let c = spec
            .containers
            .iter()
            .find(|c| c.name == name)
            .expect("container");
        let secrets: Vec<(String, Option<String>)> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == SECRETS_VOLUME)
            .map(|m| (m.mount_path.clone(), m.sub_path.clone()))
            .collect();
        assert_eq!(
            secrets,
            [
                (SECRETS_DIR.to_owned(), Some(FILES_SUBPATH.to_owned())),
                (
                    SOCKET_DIR.to_owned(),
                    Some(format!("{SOCKETS_SUBPATH}/{name}"))
                ),
            ],
            "{name} mounts the files and its own socket directory, nothing else of the volume"
        );
    }
    let proxy = spec
        .containers
        .iter()
        .find(|c| c.name == PROXY_CONTAINER)
        .expect("sidecar");
    assert!(
        proxy
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == SECRETS_VOLUME
                && m.mount_path == VOLUME_DIR
                && m.sub_path.is_none()),
        "the sidecar mounts the whole volume"
    );
    let init = &spec.init_containers.as_ref().expect("inits")[0];
    assert_eq!(init.name, INIT_CONTAINER);
    let command = init.command.clone().expect("command");
    assert_eq!(
        command[command.len() - 4..],
        ["--volume", VOLUME_DIR, "app", "metrics"].map(String::from),
        "phantom-init lays out the volume for the wrapped containers"
    );
    assert_eq!(
        init.security_context.as_ref().and_then(|s| s.run_as_user),
        Some(1000),
        "as the sidecar's user, so the sidecar may bind its sockets there"
    );
}

#[test]
fn the_decision_record_is_sealed_over_the_pod_as_stored() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let original = web();
    for out in [
        injected(&original, InjectionMode::Sidecar),
        apply(
            &original,
            &annotate(
                &original,
                decision_annotations(
                    &decision(InjectionMode::Sidecar),
                    crate::metrics::Outcome::NotInjected,
                ),
                &sealing(),
            )
            .expect("annotates"),
        ),
    ] {
        assert!(out.annotations().contains_key(SEAL_ANNOTATION));
        let mut stored = out.clone();
        stored.metadata.namespace = Some("shop".into());
        stored.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(SEALED_AT + 2).unwrap(),
        ));
        phantom_seal::check(&seal_key(), &stored).expect("admission's seal verifies");
        // The record on another namespace's pod does not.
        stored.metadata.namespace = Some("other".into());
        assert_eq!(
            phantom_seal::check(&seal_key(), &stored),
            Err(phantom_seal::Broken::Mismatch)
        );
    }
}

#[test]
fn a_non_root_container_without_a_uid_is_refused_and_a_pods_uid_is_the_sidecars() {
    let mut original = web();
    let spec = original.spec.as_mut().unwrap();
    spec.containers[0].security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    let err = mutate(
        &original,
        &decision(InjectionMode::Sidecar),
        &[],
        None,
        &InjectConfig::default(),
        &sealing(),
    )
    .expect_err("the sidecar's user is unknown");
    assert!(
        err.to_string()
            .contains("container app runs as non-root without a runAsUser"),
        "{err}"
    );

    // The pod's user is the application's, and so the sidecar's: it says runAsNonRoot, and
    // follows the application's seccomp confinement.
    let spec = original.spec.as_mut().unwrap();
    spec.security_context = Some(k8s_openapi::api::core::v1::PodSecurityContext {
        run_as_user: Some(65532),
        ..Default::default()
    });
    for c in &mut spec.containers {
        c.security_context
            .get_or_insert_with(Default::default)
            .seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        });
    }
    let out = injected(&original, InjectionMode::Sidecar);
    let spec = out.spec.expect("spec");
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name.starts_with("phantom-"))
    {
        let sc = c.security_context.as_ref().expect("hardened");
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{}",
            c.name
        );
    }
}

#[test]
fn a_gated_key_release_hands_the_sidecar_the_broker_and_its_own_token() {
    let spec: phantom_crds::SecretBindingSpec = serde_json::from_value(json!({
        "selector": {"podSelector": {}}, "openbao": {"role": "shop"},
        "secrets": [{"name": "pw", "path": "shop/db", "key": "password",
                     "delivery": [{"kind": "file", "path": "pw"}]}]
    }))
    .expect("spec");
    let plan = vec![BindingPlan {
        name: "db".into(),
        spec,
    }];
    let gated = KeyReleasePlan {
        policy_digest: "sha256:00".into(),
        policies: vec![KeyReleasePolicyPlan {
            name: "payments".into(),
            key_release: serde_json::from_value(
                json!({"attestationRequirementRef": {"name": "prod-snp"}}),
            )
            .expect("keyRelease"),
        }],
        requirements: vec![phantom_crds::RequirementPlan {
            name: "prod-snp".into(),
            spec: serde_json::from_value(json!({"teeTypes": ["sev-snp"]})).expect("spec"),
        }],
        pod: json!({"metadata": {"namespace": "shop"}}),
    };
    let config = InjectConfig {
        broker: Some(crate::config::BrokerConfig {
            address: "https://phantom-broker.phantom-system:8443".into(),
            spki_pins: vec!["sha256//AAAA".into()],
            audience: "phantom-broker".into(),
        }),
        ..InjectConfig::default()
    };
    let original = web();
    let inject = |key_release: &KeyReleasePlan| {
        apply(
            &original,
            &mutate(
                &original,
                &decision(InjectionMode::Sidecar),
                &plan,
                Some(key_release),
                &config,
                &sealing(),
            )
            .expect("injects"),
        )
        .spec
        .expect("spec")
    };
    let spec = inject(&gated);
    let proxy = spec
        .containers
        .iter()
        .find(|c| c.name == PROXY_CONTAINER)
        .expect("proxy");
    let env: BTreeMap<_, _> = proxy
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
        .collect();
    assert_eq!(
        env["PHANTOM_BROKER_ADDR"],
        "https://phantom-broker.phantom-system:8443"
    );
    assert_eq!(env["PHANTOM_BROKER_SPKI_SHA256"], "sha256//AAAA");
    assert_eq!(
        env["PHANTOM_BROKER_TOKEN_PATH"],
        format!("{BROKER_TOKEN_DIR}/token")
    );
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == BROKER_TOKEN_VOLUME)
        .expect("the broker token volume");
    let projection = volume
        .projected
        .as_ref()
        .expect("projected")
        .sources
        .as_ref()
        .expect("sources")[0]
        .service_account_token
        .as_ref()
        .expect("a token");
    assert_eq!(projection.audience.as_deref(), Some("phantom-broker"));
    for c in spec.containers.iter().filter(|c| c.name != PROXY_CONTAINER) {
        assert!(
            !c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == BROKER_TOKEN_VOLUME),
            "{} must not see the broker token",
            c.name
        );
    }

    let ungated = KeyReleasePlan {
        requirements: vec![],
        ..gated
    };
    let spec = inject(&ungated);
    assert!(
        !spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == BROKER_TOKEN_VOLUME),
        "no requirement, no broker token"
    );
}
