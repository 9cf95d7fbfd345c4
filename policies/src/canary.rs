//! Deterministic canary selection: the same (policy, key) always lands in the same bucket.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Bucket 0..100 of `key` for `policy`; the key is inside a canary of `percent` when the bucket
/// is below it.
pub fn bucket(policy: &str, key: &str) -> u8 {
    let digest = Sha256::new()
        .chain_update(policy.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) as u8
}

/// The default canary key: the pod's workload, so all replicas of a Deployment share one answer.
/// `namespace/Deployment/name` for pods of a ReplicaSet (the template hash stripped),
/// `namespace/Kind/name` for other controllers, `namespace/Pod/name` for bare pods.
pub fn default_key(pod: &Value, namespace: &str) -> String {
    let owner = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|owners| {
            owners
                .iter()
                .find(|o| o["controller"] == true)
                .or(owners.first())
        });
    if let Some(owner) = owner {
        let kind = owner["kind"].as_str().unwrap_or("Owner");
        let name = owner["name"].as_str().unwrap_or_default();
        let hash = pod
            .pointer("/metadata/labels/pod-template-hash")
            .and_then(Value::as_str);
        if kind == "ReplicaSet"
            && let Some(deployment) = hash
                .and_then(|h| name.strip_suffix(h))
                .and_then(|n| n.strip_suffix('-'))
        {
            return format!("{namespace}/Deployment/{deployment}");
        }
        return format!("{namespace}/{kind}/{name}");
    }
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let generate = pod
        .pointer("/metadata/generateName")
        .and_then(Value::as_str);
    format!("{namespace}/Pod/{}", name.or(generate).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replicas_of_a_deployment_share_a_key() {
        let pod = |name: &str| {
            json!({"metadata": {"name": name, "labels": {"pod-template-hash": "7d4b9c"},
                   "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d4b9c", "controller": true}]}})
        };
        assert_eq!(
            default_key(&pod("web-7d4b9c-abcde"), "shop"),
            "shop/Deployment/web"
        );
        assert_eq!(
            default_key(&pod("web-7d4b9c-fghij"), "shop"),
            "shop/Deployment/web"
        );
        let bare = json!({"metadata": {"name": "debug"}});
        assert_eq!(default_key(&bare, "shop"), "shop/Pod/debug");
        let job = json!({"metadata": {"ownerReferences": [{"kind": "Job", "name": "migrate", "controller": true}]}});
        assert_eq!(default_key(&job, "shop"), "shop/Job/migrate");
    }

    #[test]
    fn selection_is_deterministic_and_close_to_the_percentage() {
        let keys: Vec<String> = (0..10_000)
            .map(|i| format!("ns/Deployment/app-{i}"))
            .collect();
        let selected = |k: &str, percent: u8| bucket("p", k) < percent;
        let chosen = keys.iter().filter(|k| selected(k, 30)).count();
        assert!(
            (2_800..=3_200).contains(&chosen),
            "30% of 10000 selected {chosen}"
        );
        assert!(keys.iter().all(|k| selected(k, 30) == selected(k, 30)));
        assert!(keys.iter().all(|k| !selected(k, 0) && selected(k, 100)));
    }
}
