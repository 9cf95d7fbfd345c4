//! SecretBinding: a selector that selects, unique secret names, and deliveries that can work
//! (an env var per value, files inside the volume, each delivered once).

use std::collections::BTreeSet;

use phantom_crds::{CompileError, DeliveryKind, Engine, MIN_REFRESH_INTERVAL, SecretBinding};

use super::errors::Errors;
use crate::selector;

/// Checks one binding (bindings hold no expressions: nothing to compile, only to check).
pub(super) fn compile(b: &SecretBinding) -> Result<(), Vec<CompileError>> {
    let mut errors = Errors::default();
    let spec = &b.spec;
    if spec.selector.pod_selector.is_none() && spec.selector.service_account_name.is_none() {
        errors.push(
            "spec.selector",
            "name a serviceAccountName and/or a podSelector (use `podSelector: {}` to mean every pod of the namespace)",
        );
    }
    if let Some(sel) = &spec.selector.pod_selector
        && let Err(e) = selector::validate(sel)
    {
        errors.push("spec.selector.podSelector", e);
    }
    let interval = std::time::Duration::from(spec.refresh.interval);
    if interval < MIN_REFRESH_INTERVAL {
        errors.push(
            "spec.refresh.interval",
            format!(
                "{interval:?} is shorter than the minimum of {MIN_REFRESH_INTERVAL:?}: every pod would poll OpenBao in a loop; use at least 1s (the default is 4m)"
            ),
        );
    }
    let (mut names, mut envs, mut files) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (i, secret) in spec.secrets.iter().enumerate() {
        let at = format!("spec.secrets[{i}]");
        if !names.insert(secret.name.as_str()) {
            errors.push(
                format!("{at}.name"),
                format!("duplicate secret name {:?}", secret.name),
            );
        }
        if secret.engine == Engine::Dynamic && secret.version.is_some() {
            errors.push(
                format!("{at}.version"),
                "only kv-v2 secrets have versions; remove version for a dynamic engine",
            );
        }
        for (j, d) in secret.delivery.iter().enumerate() {
            let at = format!("{at}.delivery[{j}]");
            match d.kind {
                DeliveryKind::Env => {
                    match &d.name {
                        None => errors.push(
                            format!("{at}.name"),
                            "kind env needs name: the environment variable to set",
                        ),
                        Some(n) if !envs.insert(n.clone()) => errors.push(
                            format!("{at}.name"),
                            format!("environment variable {n} is delivered twice"),
                        ),
                        Some(_) => {}
                    }
                    if secret.key.is_none() {
                        errors.push(
                            format!("{at}.kind"),
                            "an environment variable holds one value: set the secret's key",
                        );
                    }
                }
                DeliveryKind::File => match &d.path {
                    None => errors.push(
                        format!("{at}.path"),
                        "kind file needs path, relative to the secrets volume",
                    ),
                    Some(p) if p.split('/').any(|s| s == "..") => {
                        errors.push(format!("{at}.path"), "the path may not contain '..'")
                    }
                    Some(p) if !files.insert(p.clone()) => {
                        errors.push(format!("{at}.path"), format!("file {p} is delivered twice"))
                    }
                    Some(_) => {}
                },
                DeliveryKind::Socket => {
                    if d.name.is_some() || d.path.is_some() {
                        errors.push(at, "kind socket takes neither name nor path");
                    }
                }
            }
        }
    }
    errors.finish(())
}
