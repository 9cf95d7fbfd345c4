//! Reading Phantom resources, pods and namespaces from YAML files and directories (or a git
//! revision), the way they sit in a GitOps repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use phantom_policies::Sources;
use serde_json::Value;

/// Everything found in a set of files.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sources: Sources,
    /// Pods (Deployments, ReplicaSets, StatefulSets, DaemonSets and Jobs contribute their pod template).
    pub pods: Vec<(String, Value)>,
    /// Namespace objects by name.
    pub namespaces: BTreeMap<String, Value>,
}

/// Every YAML file under `path` (itself if it is a file), sorted.
pub fn yaml_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let p = entry?.path();
        if p.is_dir() {
            out.extend(yaml_files(&p)?);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

impl Loaded {
    /// The CREATE admission request for `pod`, with its Namespace from these resources (or
    /// `namespace` when given, or a bare one) and `username` as the requester.
    pub fn admission_input(
        &self,
        pod: &Value,
        namespace: Option<Value>,
        username: &str,
    ) -> phantom_policies::AdmissionInput {
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let namespace = namespace
            .or_else(|| self.namespaces.get(ns).cloned())
            .unwrap_or_else(|| serde_json::json!({"metadata": {"name": ns}}));
        phantom_policies::AdmissionInput {
            object: pod.clone(),
            old_object: None,
            namespace_object: Some(namespace),
            request: phantom_policies::RequestInfo {
                operation: "CREATE".into(),
                namespace: ns.to_owned(),
                user_info: phantom_policies::UserInfo {
                    username: username.to_owned(),
                    groups: vec![],
                },
                ..Default::default()
            },
        }
    }

    /// Adds every document of `text` (from `origin`, for messages).
    pub fn add_text(&mut self, origin: &str, text: &str) -> anyhow::Result<()> {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{origin}: document {} is not YAML", i + 1))?;
            if value.is_null() {
                continue;
            }
            self.add(origin, value)?;
        }
        Ok(())
    }

    fn add(&mut self, origin: &str, value: Value) -> anyhow::Result<()> {
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_owned();
        let what = || format!("{origin}: {kind} {name}");
        match kind.as_str() {
            "PhantomPolicy" => self
                .sources
                .policies
                .push(serde_json::from_value(value).with_context(what)?),
            "SecretBinding" => self
                .sources
                .bindings
                .push(serde_json::from_value(value).with_context(what)?),
            "AttestationRequirement" => self
                .sources
                .requirements
                .push(serde_json::from_value(value).with_context(what)?),
            "Namespace" => {
                self.namespaces.insert(name, value);
            }
            "Pod" => {
                let ns = value
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_owned();
                self.pods.push((format!("{ns}/Pod/{name}"), value));
            }
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => {
                let ns = value
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_owned();
                let mut pod = value
                    .pointer("/spec/template")
                    .cloned()
                    .with_context(|| format!("{}: no spec.template", what()))?;
                pod["apiVersion"] = "v1".into();
                pod["kind"] = "Pod".into();
                pod["metadata"]["namespace"] = ns.clone().into();
                if pod["metadata"]["name"].is_null() {
                    pod["metadata"]["generateName"] = format!("{name}-").into();
                }
                pod["metadata"]["ownerReferences"] =
                    serde_json::json!([{"kind": kind, "name": name, "controller": true}]);
                self.pods.push((format!("{ns}/{kind}/{name}"), pod));
            }
            "" => bail!("{origin}: a document has no kind"),
            _ => {} // Other resources (Services, ConfigMaps...) sit beside workloads; ignore them.
        }
        Ok(())
    }

    /// Loads files and directories from the working tree.
    pub fn from_paths(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let mut loaded = Self::default();
        for path in paths {
            for file in yaml_files(path)? {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                loaded.add_text(&file.display().to_string(), &text)?;
            }
        }
        Ok(loaded)
    }

    /// Loads the YAML files under `dir` as they were at git revision `rev`.
    pub fn from_git(rev: &str, dir: &Path) -> anyhow::Result<Self> {
        let git = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new("git")
                .args(args)
                .output()
                .context("running git")?;
            if !out.status.success() {
                bail!(
                    "git {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let prefix = git(&["rev-parse", "--show-prefix"])?;
        let dir_in_repo = Path::new(prefix.trim()).join(dir);
        let dir_in_repo = dir_in_repo.to_string_lossy();
        let mut loaded = Self::default();
        for file in git(&[
            "ls-tree",
            "-r",
            "--name-only",
            rev,
            "--",
            dir_in_repo.trim_end_matches('/'),
        ])?
        .lines()
        {
            if file.ends_with(".yaml") || file.ends_with(".yml") {
                loaded.add_text(
                    &format!("{rev}:{file}"),
                    &git(&["show", &format!("{rev}:{file}")])?,
                )?;
            }
        }
        Ok(loaded)
    }
}
