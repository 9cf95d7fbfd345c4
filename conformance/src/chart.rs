//! Phantom's Helm chart rendered and linted with Helm v4's SDK (`scripts/helm.py` on the
//! `helm-python-sdk` the tool script installs), and applied with the real `kubectl`.

use std::path::PathBuf;
use std::process::Command;

use crate::{Env, Error, Result, Tools};

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../chart")
}

fn helm(tools: &Tools, args: &[&str]) -> Result<std::process::Output> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/helm.py");
    Command::new(&tools.helm_python)
        .arg(&script)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            what: "the Helm SDK",
            program: tools.helm_python.clone(),
            source,
        })
}

/// The chart rendered as release `release` in `namespace` with `values` (merged over
/// values.yaml and validated against values.schema.json): one YAML stream, by template path.
pub fn render(
    tools: &Tools,
    release: &str,
    namespace: &str,
    values: Option<&serde_json::Value>,
) -> Result<String> {
    let chart = chart_dir().display().to_string();
    let values = values.map(ToString::to_string);
    let mut args = vec!["render", chart.as_str(), release, namespace];
    if let Some(v) = &values {
        args.push(v);
    }
    let out = helm(tools, &args)?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "rendering the chart failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `helm lint --strict` (for Kubernetes 1.20.2): `Ok(report)` when clean, `Err` with the report.
pub fn lint(tools: &Tools, values: Option<&serde_json::Value>) -> Result<String> {
    let chart = chart_dir().display().to_string();
    let values = values.map(ToString::to_string);
    let mut args = vec!["lint", chart.as_str()];
    if let Some(v) = &values {
        args.push(v);
    }
    let out = helm(tools, &args)?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(report)
    } else {
        Err(Error::Setup(format!(
            "helm lint --strict failed:\n{report}"
        )))
    }
}

impl Env {
    /// `kubectl apply -f -` of `manifests` as the admin; returns kubectl's output.
    pub fn kubectl_apply(&self, manifests: &str) -> Result<String> {
        use std::io::Write as _;
        let mut child = Command::new(&self.tools().kubectl)
            .args(["apply", "-f", "-"])
            .env("KUBECONFIG", self.kubeconfig())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                what: "kubectl",
                program: self.tools().kubectl.clone(),
                source,
            })?;
        child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(manifests.as_bytes()))
            .transpose()
            .map_err(Error::io("writing manifests to kubectl"))?;
        let out = child
            .wait_with_output()
            .map_err(Error::io("waiting for kubectl"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(Error::Setup(format!("kubectl apply failed:\n{text}")))
        }
    }
}
