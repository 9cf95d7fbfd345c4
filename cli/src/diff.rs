//! `phantomctl policy diff`: the decisions a policy change changes, ready for a pull request.

use std::path::Path;

use phantom_policies::{Decision, PolicySet};
use serde::Serialize;
use serde_json::Value;

use crate::load::Loaded;

#[derive(Debug, Serialize, PartialEq)]
struct Change {
    resource: String,
    before: String,
    after: String,
}

#[derive(Debug, Serialize)]
struct Report {
    base_digest: String,
    head_digest: String,
    resources: usize,
    changes: Vec<Change>,
}

/// One line summary of a decision.
fn summary(d: &Decision) -> String {
    if !d.allowed {
        let reasons: Vec<String> = d
            .denials
            .iter()
            .map(|x| format!("{}/{}: {}", x.policy, x.rule, x.message))
            .collect();
        return format!("denied ({})", reasons.join("; "));
    }
    let mut s = if d.inject {
        let mode = d
            .injection
            .as_ref()
            .map(|i| serde_json::to_value(i.mode).unwrap_or_default())
            .unwrap_or_default();
        format!(
            "inject {} via {}",
            mode.as_str().unwrap_or("?"),
            d.deciding_policy.as_deref().unwrap_or("?")
        )
    } else {
        "no injection".to_owned()
    };
    if !d.would_deny.is_empty() {
        s.push_str(&format!(
            " (monitor would deny: {})",
            d.would_deny
                .iter()
                .map(|x| format!("{}/{}", x.policy, x.rule))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s
}

fn decide(set: &PolicySet, resources: &Loaded, pod: &Value) -> Decision {
    set.decide(&resources.admission_input(pod, None, ""))
}

/// Prints the report; `Ok(true)` always (a diff is information, not a failure).
pub fn run(base: &str, head: &Path, resources: &Path, json_output: bool) -> anyhow::Result<bool> {
    let base_path = Path::new(base);
    let base_loaded = if base_path.exists() {
        Loaded::from_paths(&[base_path.to_owned()])?
    } else {
        Loaded::from_git(base, head)?
    };
    let head_loaded = Loaded::from_paths(&[head.to_owned()])?;
    let corpus = Loaded::from_paths(&[resources.to_owned()])?;
    let base_dir = base_path.exists().then(|| base_path.to_owned());
    let base_set = crate::compile_all("base", &base_loaded.sources, base_dir)?;
    let head_set = crate::compile_all("head", &head_loaded.sources, Some(head.to_owned()))?;
    let mut report = Report {
        base_digest: base_set.digest().to_owned(),
        head_digest: head_set.digest().to_owned(),
        resources: corpus.pods.len(),
        changes: Vec::new(),
    };
    for (key, pod) in &corpus.pods {
        let (before, after) = (
            summary(&decide(&base_set, &corpus, pod)),
            summary(&decide(&head_set, &corpus, pod)),
        );
        if before != after {
            report.changes.push(Change {
                resource: key.clone(),
                before,
                after,
            });
        }
    }
    if json_output {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(true);
    }
    println!("### Phantom policy diff\n");
    println!(
        "`{}` → `{}` over {} resource(s): **{} decision(s) change**\n",
        short(&report.base_digest),
        short(&report.head_digest),
        report.resources,
        report.changes.len()
    );
    if !report.changes.is_empty() {
        println!("| resource | before | after |\n| --- | --- | --- |");
        for c in &report.changes {
            println!(
                "| `{}` | {} | {} |",
                c.resource,
                escape(&c.before),
                escape(&c.after)
            );
        }
    }
    Ok(true)
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}
