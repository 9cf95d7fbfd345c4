//! The digest of a set of objects: `sha256:` over each object's kind, name and spec, so status
//! and metadata changes leave it alone and equal digests compile to the same set.

use kube::ResourceExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Sources;

/// The digest of `sources` in their given order (callers sort first).
pub(super) fn digest(sources: &Sources) -> String {
    let mut hasher = Sha256::new();
    let mut add = |kind: &str, id: String, spec: Value| {
        hasher.update(kind.as_bytes());
        hasher.update([0]);
        hasher.update(id.as_bytes());
        hasher.update([0]);
        hasher.update(spec.to_string().as_bytes());
        hasher.update([0]);
    };
    for p in &sources.policies {
        add(
            "PhantomPolicy",
            p.name_any(),
            serde_json::to_value(&p.spec).unwrap_or_default(),
        );
    }
    for b in &sources.bindings {
        add(
            "SecretBinding",
            format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any()),
            serde_json::to_value(&b.spec).unwrap_or_default(),
        );
    }
    for r in &sources.requirements {
        add(
            "AttestationRequirement",
            r.name_any(),
            serde_json::to_value(&r.spec).unwrap_or_default(),
        );
    }
    for u in &sources.unreadable {
        add(u.kind, u.name.clone(), Value::String(u.to_string()));
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}
