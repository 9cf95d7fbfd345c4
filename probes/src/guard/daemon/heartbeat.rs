//! The guard's heartbeat: a Lease per node saying that it runs, on which path and how many pods
//! it protects, renewed every third of its duration (`phantomctl status` reads them; a stale one
//! means nothing detects on that node).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use phantom_crds::wellknown::guard;

/// The Lease's name for `node` (within the 253 characters of a name).
pub fn lease_name(node: &str) -> String {
    let name = format!("{}{node}", guard::LEASE_PREFIX);
    name[..name.len().min(253)].to_owned()
}

/// The Lease as the guard applies it.
pub fn lease(
    node: &str,
    mode: &str,
    lsm: &str,
    protected_pods: usize,
    now: k8s_openapi::jiff::Timestamp,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(node)),
            labels: Some([(guard::LEASE_LABEL.to_owned(), "true".to_owned())].into()),
            annotations: Some(
                [
                    (guard::MODE_ANNOTATION.to_owned(), mode.to_owned()),
                    // Annotation values have no length limit of their own, but keep it readable.
                    (
                        guard::LSM_ANNOTATION.to_owned(),
                        lsm.chars().take(512).collect(),
                    ),
                    (
                        guard::PROTECTED_PODS_ANNOTATION.to_owned(),
                        protected_pods.to_string(),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_owned()),
            lease_duration_seconds: Some(guard::LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_names_the_node_and_says_how_the_guard_runs() {
        let now = k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap();
        let lease = lease("node1", "tracepoint-kill", "EPERM", 3, now);
        assert_eq!(lease.metadata.name.as_deref(), Some("phantom-guard-node1"));
        let annotations = lease.metadata.annotations.unwrap();
        assert_eq!(annotations[guard::MODE_ANNOTATION], "tracepoint-kill");
        assert_eq!(annotations[guard::PROTECTED_PODS_ANNOTATION], "3");
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node1"));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(lease_name(&"n".repeat(300)).len(), 253);
    }
}
