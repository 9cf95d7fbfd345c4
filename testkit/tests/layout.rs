//! The workspace's layout rules (docs/architecture.md, "Crates and their dependencies"), checked
//! against `cargo metadata`: which Phantom crate may depend on which, what the types-only and
//! leaf crates must not pull in, and one `rust-version` for all.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Each Phantom crate and the Phantom crates its normal (shipped) dependencies may include.
/// Dev-dependencies are free: tests may use anything. A crate missing from this table is an
/// error, so a new crate has to be placed deliberately.
const ALLOWED: &[(&str, &[&str])] = &[
    ("phantom-crds", &[]),
    ("phantom-process", &[]),
    ("phantom-openbao", &[]),
    ("phantom-testkit", &[]),
    // Who is asking (cgroups, socket peers, reviewed tokens): the guard, the broker and the
    // node agent share it.
    ("phantom-identity", &[]),
    ("phantom-policies", &["phantom-crds"]),
    ("phantom-seal", &["phantom-crds"]),
    ("phantom-attestation", &["phantom-crds"]),
    // The relying party next to OpenBao; its OpenBao client and process support will come from
    // phantom-openbao and phantom-process.
    (
        "phantom-broker",
        &[
            "phantom-attestation",
            "phantom-crds",
            "phantom-identity",
            "phantom-policies",
            "phantom-openbao",
            "phantom-process",
        ],
    ),
    (
        "phantom-admission",
        &[
            "phantom-crds",
            "phantom-policies",
            "phantom-process",
            "phantom-seal",
        ],
    ),
    (
        "phantom-controller",
        &[
            "phantom-crds",
            "phantom-policies",
            "phantom-process",
            "phantom-seal",
        ],
    ),
    (
        "phantom-runtime-proxy",
        &[
            "phantom-crds",
            "phantom-policies",
            "phantom-openbao",
            "phantom-process",
            "phantom-attestation",
            "phantom-identity",
        ],
    ),
    // The guard decides which pods it protects with the policy engine's MonitoringSet.
    (
        "phantom-probes",
        &[
            "phantom-crds",
            "phantom-identity",
            "phantom-policies",
            "phantom-openbao",
            "phantom-process",
        ],
    ),
    (
        "phantomctl",
        &[
            "phantom-crds",
            "phantom-policies",
            "phantom-controller",
            "phantom-seal",
        ],
    ),
    // The test environment drives every component.
    (
        "phantom-conformance",
        &[
            "phantom-crds",
            "phantom-policies",
            "phantom-admission",
            "phantom-controller",
            "phantom-runtime-proxy",
            "phantom-openbao",
            "phantom-process",
            "phantom-seal",
            "phantom-attestation",
            "phantom-identity",
        ],
    ),
    ("phantom-plugin-sdk", &[]),
    ("phantom-plugin-require-labels", &["phantom-plugin-sdk"]),
    ("phantom-plugin-no-privileged", &["phantom-plugin-sdk"]),
    ("phantom-plugin-team-rollout", &["phantom-plugin-sdk"]),
];

/// External crates a crate must not depend on (normal, non-optional or optional alike).
const FORBIDDEN_EXTERNAL: &[(&str, &[&str])] = &[
    // Types only: no runtime, no I/O stack, no CLI.
    (
        "phantom-crds",
        &["tokio", "hyper", "reqwest", "clap", "tracing-subscriber"],
    ),
    // The OpenBao client knows no Kubernetes and no policy engine.
    (
        "phantom-openbao",
        &["kube", "k8s-openapi", "cel", "wasmtime"],
    ),
    // Identity knows no policy engine, no OpenBao and no CLI.
    (
        "phantom-identity",
        &["cel", "wasmtime", "reqwest", "clap", "tracing-subscriber"],
    ),
    // The seal is pure: no runtime, no client.
    (
        "phantom-seal",
        &[
            "tokio",
            "hyper",
            "reqwest",
            "kube",
            "clap",
            "tracing-subscriber",
        ],
    ),
    // Verification is pure and offline: no runtime, no HTTP client (collateral is never fetched).
    (
        "phantom-attestation",
        &[
            "tokio",
            "hyper",
            "reqwest",
            "kube",
            "clap",
            "tracing-subscriber",
            "openssl",
        ],
    ),
    // Process support knows no Phantom API.
    ("phantom-process", &["kube", "k8s-openapi"]),
];

/// Runs cargo with `args` in the workspace and returns what it printed; fails the test otherwise.
fn cargo(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn metadata() -> Value {
    let out = cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]);
    serde_json::from_slice(&out).expect("cargo metadata prints JSON")
}

fn packages(meta: &Value) -> Vec<&Value> {
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .collect()
}

fn name(package: &Value) -> &str {
    package["name"].as_str().expect("package name")
}

/// (dependency name, kind: null = normal, "dev", "build"; the dependency record).
fn dependencies(package: &Value) -> impl Iterator<Item = (&str, Option<&str>, &Value)> {
    package["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| (d["name"].as_str().expect("dep name"), d["kind"].as_str(), d))
}

#[test]
fn phantom_crates_depend_only_on_what_the_layout_allows() {
    let meta = metadata();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    let members: BTreeSet<&str> = packages(&meta).into_iter().map(name).collect();
    let mut wrong = Vec::new();
    for package in packages(&meta) {
        let crate_name = name(package);
        let Some(allowed) = allowed.get(crate_name) else {
            wrong.push(format!(
                "{crate_name} is not in the layout table (testkit/tests/layout.rs and docs/architecture.md): place it"
            ));
            continue;
        };
        for (dep, kind, _) in dependencies(package) {
            if kind == Some("dev") || !members.contains(dep) {
                continue;
            }
            if !allowed.contains(dep) {
                wrong.push(format!("{crate_name} may not depend on {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layout rules broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn leaf_crates_keep_out_of_heavy_dependencies() {
    let meta = metadata();
    let mut wrong = Vec::new();
    for package in packages(&meta) {
        let crate_name = name(package);
        let Some((_, forbidden)) = FORBIDDEN_EXTERNAL.iter().find(|(n, _)| *n == crate_name) else {
            continue;
        };
        for (dep, kind, _) in dependencies(package) {
            if kind != Some("dev") && forbidden.contains(&dep) {
                wrong.push(format!("{crate_name} may not depend on {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layout rules broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn phantomctl_reads_status_without_the_controller_server() {
    let meta = metadata();
    let cli = packages(&meta)
        .into_iter()
        .find(|p| name(p) == "phantomctl")
        .expect("phantomctl is a member");
    let (_, _, controller) = dependencies(cli)
        .find(|(dep, kind, _)| *dep == "phantom-controller" && kind.is_none())
        .expect("phantomctl depends on phantom-controller");
    assert_eq!(
        controller["uses_default_features"],
        Value::Bool(false),
        "phantomctl must take phantom-controller without its default `server` feature"
    );
    let features = controller["features"].as_array().expect("features");
    assert!(
        !features.iter().any(|f| f == "server"),
        "phantomctl must not enable phantom-controller/server"
    );
}

#[test]
fn testkit_is_never_shipped() {
    let meta = metadata();
    for package in packages(&meta) {
        for (dep, kind, _) in dependencies(package) {
            assert!(
                dep != "phantom-testkit" || kind == Some("dev"),
                "{} takes phantom-testkit as a normal dependency; it is for tests only",
                name(package)
            );
        }
    }
}

/// The declared rust-version must not promise less than the code needs: let-chains
/// (`if let … && let …`) need Rust 1.88, and clippy's `incompatible_msrv` (denied in `make
/// check`) refuses standard-library items newer than the declared version (`File::try_lock`
/// made it 1.89).
#[test]
fn every_crate_declares_the_workspace_rust_version() {
    let meta = metadata();
    let mut versions = BTreeSet::new();
    for package in packages(&meta) {
        let version = package["rust_version"].as_str().unwrap_or_else(|| {
            panic!(
                "{} declares no rust-version: add `rust-version.workspace = true`",
                name(package)
            )
        });
        versions.insert(version.to_owned());
    }
    assert_eq!(versions.len(), 1, "one rust-version for all: {versions:?}");
    let declared = versions.pop_first().expect("a version");
    let (major, minor) = declared
        .split_once('.')
        .map(|(a, b)| {
            let minor = b.split('.').next().unwrap_or(b);
            (
                a.parse::<u32>().expect("major"),
                minor.parse::<u32>().expect("minor"),
            )
        })
        .expect("x.y");
    assert!(
        (major, minor) >= (1, 88),
        "the code uses let-chains (Rust 1.88); rust-version {declared} promises less"
    );
}

/// serde_json's `preserve_order` changes the key order of every map Phantom serialises (CRD YAML,
/// the rendered chart, policy digests), and features unify across the workspace: one dependency
/// turning it on would make a binary built alone disagree with one built in the workspace.
#[test]
fn no_dependency_turns_on_serde_json_preserve_order() {
    // `cargo tree` resolves for the host only, so it needs no crate of another platform offline.
    let out = cargo(&[
        "tree",
        "--offline",
        "--workspace",
        "-e",
        "features",
        "-i",
        "serde_json",
        "--prefix",
        "none",
    ]);
    let tree = String::from_utf8_lossy(&out);
    assert!(
        tree.contains("serde_json feature \"std\""),
        "unexpected cargo tree output: {tree}"
    );
    assert!(
        !tree.contains("serde_json feature \"preserve_order\""),
        "serde_json is built with preserve_order; find the dependency that enables it (`cargo tree -e features -i serde_json`) and turn that feature off"
    );
}
