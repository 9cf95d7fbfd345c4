//! Which pod and container a container ID is, from the container runtime's own record on this
//! node. containerd's CRI plugin writes the pod's UID and the container's name into the OCI
//! bundle's annotations (`<tasks dir>/<id>/config.json`, root's) before the container's first
//! process runs — well before the kubelet reports the container's ID in the pod's status through
//! the API server, which a burst of pod starts delays by seconds. Where there is no such bundle
//! (another runtime, another state directory) callers fall back to the pod's status.

use std::path::Path;

/// The bundle annotation naming the container (as in the pod's spec).
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// The bundle annotation with the pod's UID.
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
/// The bundle annotation telling a pod's container (`container`) from its sandbox.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// A container as the runtime recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeContainer {
    pub pod_uid: String,
    pub container: String,
}

/// The container ID a cgroup path ends with (`…/<id>` with cgroupfs,
/// `…/cri-containerd-<id>.scope` with systemd): 64 lowercase hex digits, else `None`. A path
/// with a container ID above the last segment is `None` too: a container allowed to make child
/// cgroups could name one after another container and move into it, and is still only itself.
pub fn container_id(cgroup_path: &str) -> Option<&str> {
    let mut segments = cgroup_path.rsplit('/');
    let id = segment_id(segments.next()?)?;
    segments.all(|s| segment_id(s).is_none()).then_some(id)
}

fn segment_id(segment: &str) -> Option<&str> {
    let id = segment
        .strip_prefix("cri-containerd-")
        .and_then(|rest| rest.strip_suffix(".scope"))
        .unwrap_or(segment);
    (id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(id)
}

/// The pod and container of a bundle's `config.json`; `None` for a sandbox (pause) container or
/// a bundle without the CRI annotations.
pub fn from_bundle_config(text: &str) -> Option<RuntimeContainer> {
    let config: serde_json::Value = serde_json::from_str(text).ok()?;
    let annotations = config.get("annotations")?;
    let get = |key: &str| annotations.get(key)?.as_str().filter(|v| !v.is_empty());
    if get(CONTAINER_TYPE)? != "container" {
        return None;
    }
    Some(RuntimeContainer {
        pod_uid: get(SANDBOX_UID)?.to_owned(),
        container: get(CONTAINER_NAME)?.to_owned(),
    })
}

/// The runtime's record of container `id` under `tasks_dir` (containerd:
/// `/run/containerd/io.containerd.runtime.v2.task/k8s.io`), if it has one.
pub fn lookup(tasks_dir: &Path, id: &str) -> Option<RuntimeContainer> {
    let text = std::fs::read_to_string(tasks_dir.join(id).join("config.json")).ok()?;
    from_bundle_config(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_container_id_is_the_last_segment_in_either_layout() {
        assert_eq!(
            container_id(&format!("/kubepods/besteffort/pod1/{ID}")),
            Some(ID)
        );
        assert_eq!(container_id(&format!("/{ID}")), Some(ID));
        assert_eq!(
            container_id(&format!(
                "/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"
            )),
            Some(ID)
        );
        for not_an_id in [
            "/",
            "/user.slice/session-1.scope",
            "/kubepods/besteffort/pod1",
            &format!("/{}", ID.to_uppercase()),
            &format!("/{ID}0"),
            // A child cgroup of one container named after another.
            &format!("/{}/{ID}", ID.replace('0', "1")),
            &format!(
                "/kubepods.slice/cri-containerd-{}.scope/cri-containerd-{ID}.scope",
                ID.replace('0', "1")
            ),
        ] {
            assert_eq!(container_id(not_an_id), None, "{not_an_id}");
        }
    }

    #[test]
    fn a_bundle_names_its_pod_and_container_and_a_sandbox_names_none() {
        let bundle = |kind: &str| {
            serde_json::json!({"ociVersion": "1.0.2", "annotations": {
                CONTAINER_TYPE: kind, CONTAINER_NAME: "app", SANDBOX_UID: "uid-1",
                "io.kubernetes.cri.sandbox-id": "x"}})
            .to_string()
        };
        assert_eq!(
            from_bundle_config(&bundle("container")),
            Some(RuntimeContainer {
                pod_uid: "uid-1".into(),
                container: "app".into()
            })
        );
        assert_eq!(from_bundle_config(&bundle("sandbox")), None);
        assert_eq!(from_bundle_config(r#"{"annotations": {}}"#), None);
        assert_eq!(from_bundle_config("not json"), None);
        assert_eq!(
            from_bundle_config(
                &serde_json::json!({"annotations": {CONTAINER_TYPE: "container", CONTAINER_NAME: "app", SANDBOX_UID: ""}}).to_string()
            ),
            None
        );
    }

    #[test]
    fn lookup_reads_the_bundle_and_misses_quietly() {
        let dir = std::env::temp_dir().join(format!("phantom-runtime-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(ID)).expect("bundle dir");
        std::fs::write(
            dir.join(ID).join("config.json"),
            serde_json::json!({"annotations": {CONTAINER_TYPE: "container", CONTAINER_NAME: "db", SANDBOX_UID: "u"}}).to_string(),
        )
        .expect("config.json");
        assert_eq!(lookup(&dir, ID).map(|c| c.container), Some("db".into()));
        assert_eq!(lookup(&dir, &ID.replace('0', "1")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
