//! Policy test suites in the style of `kyverno test` / `kwctl run`:
//!
//! ```yaml
//! # payments.test.yaml
//! name: payments injection
//! policies: [../policies]            # files or directories, relative to this file
//! resources: [pods]                  # pods/workloads/namespaces the cases refer to by name
//! cases:
//!   - name: labelled pod is injected
//!     pod: shop/Deployment/web       # a pod key (namespace/Kind/name) from `resources`
//!     namespace: {name: shop, labels: {phantom.dev/inject: enabled}}  # or a Namespace in resources
//!     expect: {allowed: true, inject: true, mode: sidecar}
//!   - name: unlabelled pod is refused
//!     pod: shop/Pod/debug
//!     expect: {allowed: false, denials: [team-label]}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use phantom_crds::InjectionMode;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    name: String,
    policies: Vec<PathBuf>,
    #[serde(default)]
    resources: Vec<PathBuf>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    pod: String,
    #[serde(default)]
    namespace: Option<NamespaceSpec>,
    #[serde(default)]
    user: Option<String>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceSpec {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    #[serde(default)]
    allowed: Option<bool>,
    #[serde(default)]
    inject: Option<bool>,
    #[serde(default)]
    mode: Option<InjectionMode>,
    /// Names of the rules/plugins expected to refuse (exactly these).
    #[serde(default)]
    denials: Option<Vec<String>>,
    #[serde(default)]
    would_deny: Option<Vec<String>>,
    #[serde(default)]
    bindings: Option<Vec<String>>,
}

fn suites(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let files = crate::load::yaml_files(path)?;
    Ok(files
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".test.yaml"))
        .collect())
}

/// Runs every suite under `path`; `Ok(false)` when a case failed.
pub fn run(path: &Path) -> anyhow::Result<bool> {
    let files = suites(path)?;
    if files.is_empty() {
        bail!("no *.test.yaml suites under {}", path.display());
    }
    let (mut passed, mut failed) = (0, 0);
    println!("{:<28} {:<44} {:<6} DETAIL", "SUITE", "CASE", "RESULT");
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let suite: Suite = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: not a test suite", file.display()))?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let policies = crate::load::Loaded::from_paths(
            &suite
                .policies
                .iter()
                .map(|p| dir.join(p))
                .collect::<Vec<_>>(),
        )?;
        let resources = crate::load::Loaded::from_paths(
            &suite
                .resources
                .iter()
                .map(|p| dir.join(p))
                .collect::<Vec<_>>(),
        )?;
        let set = crate::compile_all(
            &format!("suite {}'s", file.display()),
            &policies.sources,
            Some(dir.to_owned()),
        )?;
        for case in &suite.cases {
            let outcome = run_case(&set, &resources, case);
            let (result, detail) = match &outcome {
                Ok(()) => ("pass", String::new()),
                Err(e) => ("FAIL", e.to_string()),
            };
            if outcome.is_ok() {
                passed += 1
            } else {
                failed += 1
            }
            println!(
                "{:<28} {:<44} {:<6} {detail}",
                suite.name, case.name, result
            );
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn run_case(
    set: &phantom_policies::PolicySet,
    resources: &crate::load::Loaded,
    case: &Case,
) -> anyhow::Result<()> {
    let pod = resources
        .pods
        .iter()
        .find(|(key, _)| key == &case.pod)
        .map(|(_, p)| p.clone())
        .with_context(|| format!("no pod {} in the suite's resources", case.pod))?;
    let namespace = case.namespace.as_ref().map(|ns| {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name, "labels": ns.labels}})
    });
    let input =
        resources.admission_input(&pod, namespace, case.user.as_deref().unwrap_or_default());
    let d = set.decide(&input);
    let mut problems = Vec::new();
    let mut check = |what: &str, expected: Option<String>, actual: String| {
        if let Some(expected) = expected
            && expected != actual
        {
            problems.push(format!("{what}: expected {expected}, got {actual}"));
        }
    };
    check(
        "allowed",
        case.expect.allowed.map(|b| b.to_string()),
        d.allowed.to_string(),
    );
    check(
        "inject",
        case.expect.inject.map(|b| b.to_string()),
        d.inject.to_string(),
    );
    let mode = |m: Option<InjectionMode>| {
        m.map(|m| {
            serde_json::to_value(m)
                .unwrap_or_default()
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
    };
    check(
        "mode",
        case.expect.mode.and_then(|m| mode(Some(m))),
        mode(d.injection.as_ref().map(|i| i.mode)).unwrap_or_else(|| "none".into()),
    );
    let names = |v: &[phantom_policies::Denial]| {
        v.iter()
            .map(|x| x.rule.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    check(
        "denials",
        case.expect.denials.as_ref().map(|v| v.join(",")),
        names(&d.denials),
    );
    check(
        "wouldDeny",
        case.expect.would_deny.as_ref().map(|v| v.join(",")),
        names(&d.would_deny),
    );
    check(
        "bindings",
        case.expect.bindings.as_ref().map(|v| v.join(",")),
        d.bindings
            .iter()
            .map(|b| b.name.clone())
            .collect::<Vec<_>>()
            .join(","),
    );
    if problems.is_empty() {
        return Ok(());
    }
    // Why the pod was decided so: what refused it is the first thing an author needs.
    for denial in &d.denials {
        problems.push(format!(
            "refused by {}/{}: {}",
            denial.policy, denial.rule, denial.message
        ));
    }
    bail!("{}", problems.join("; "))
}
