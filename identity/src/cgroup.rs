//! Which processes belong to which pod, from the cgroup path in `/proc/<pid>/cgroup` (pure).
//!
//! Kubelets name pod cgroups after the pod UID — `pod<uid>` with cgroupfs, `…-pod<uid with
//! underscores>.slice` with systemd — and runtimes name container cgroups after the container
//! ID (`<id>`, `cri-containerd-<id>.scope`). Where the kubelet makes no pod cgroup
//! (`cgroupsPerQOS: false`) only the container ID is there, so both are matched.

/// Which cgroup hierarchy names a task's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// No cgroup-based protection (only processes userspace names).
    None,
    /// cgroup v1, the memory hierarchy (every kubelet creates a pod cgroup there).
    V1Memory,
    /// cgroup v2.
    V2,
}

/// The task's cgroup path in the hierarchy `mode` uses, from a `/proc/<pid>/cgroup` file.
pub fn parse_cgroup(cgroup: &str, mode: CgroupMode) -> Option<&str> {
    cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match mode {
            CgroupMode::None => return None,
            CgroupMode::V1Memory => controllers.split(',').any(|c| c == "memory"),
            CgroupMode::V2 => controllers.is_empty(),
        };
        wanted.then_some(path)
    })
}

/// The cgroup path a process's `cgroup` file gives for `mode`, else its unified (v2) one (hybrid
/// hosts); empty when it has neither.
pub fn cgroup_path(cgroup: &str, mode: CgroupMode) -> &str {
    parse_cgroup(cgroup, mode)
        .or_else(|| parse_cgroup(cgroup, CgroupMode::V2))
        .unwrap_or_default()
}

/// Which cgroup layout this host uses, from the mounts under `cgroup_root`.
pub fn detect_cgroup_mode(cgroup_root: &std::path::Path) -> CgroupMode {
    if cgroup_root.join("cgroup.controllers").exists() {
        CgroupMode::V2
    } else if cgroup_root.join("memory/cgroup.procs").exists() {
        CgroupMode::V1Memory
    } else {
        CgroupMode::None
    }
}

/// A pod on this node as the guard matches processes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroups {
    pub uid: String,
    /// `containerID`s from the pod's status without the `containerd://` scheme.
    pub container_ids: Vec<(String, String)>,
}

impl PodCgroups {
    /// The container IDs of a pod status (`containerStatuses`, `initContainerStatuses`,
    /// `ephemeralContainerStatuses`): `(container name, id)`.
    pub fn from_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Option<Self> {
        let uid = pod.metadata.uid.clone()?;
        let statuses = pod.status.iter().flat_map(|s| {
            [
                &s.container_statuses,
                &s.init_container_statuses,
                &s.ephemeral_container_statuses,
            ]
            .into_iter()
            .flatten()
            .flatten()
        });
        let mut container_ids = Vec::new();
        for status in statuses {
            let Some(id) = status.container_id.as_deref() else {
                continue;
            };
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            if !id.is_empty() {
                container_ids.push((status.name.clone(), id.to_owned()));
            }
        }
        Some(Self { uid, container_ids })
    }

    /// The segment of `cgroup_path` that is this pod's cgroup, if the path is below it.
    pub fn pod_segment<'p>(&self, cgroup_path: &'p str) -> Option<&'p str> {
        let underscored = self.uid.replace('-', "_");
        cgroup_path.split('/').find(|segment| {
            segment.strip_prefix("pod") == Some(self.uid.as_str())
                || segment.split('-').any(|part| {
                    part.strip_prefix("pod").is_some_and(|rest| {
                        rest.strip_suffix(".slice").unwrap_or(rest) == underscored
                    })
                })
        })
    }

    /// The container (by name) whose cgroup `cgroup_path` is, if it is one of this pod's.
    pub fn container<'s>(&'s self, cgroup_path: &str) -> Option<&'s str> {
        let last = cgroup_path.rsplit('/').find(|s| !s.is_empty())?;
        let bare = last
            .strip_suffix(".scope")
            .map(|s| s.rsplit_once('-').map_or(s, |(_, id)| id))
            .unwrap_or(last);
        self.container_ids
            .iter()
            .find(|(_, id)| id == bare)
            .map(|(name, _)| name.as_str())
    }

    /// Whether a process with this cgroup path belongs to the pod.
    pub fn owns(&self, cgroup_path: &str) -> bool {
        self.pod_segment(cgroup_path).is_some() || self.container(cgroup_path).is_some()
    }

    /// The cgroup directory (relative to the hierarchy's root) whose execs the kernel side
    /// should protect: the pod's, where there is one, else the container's own.
    pub fn protected_dir(&self, cgroup_path: &str) -> Option<String> {
        if let Some(segment) = self.pod_segment(cgroup_path) {
            let end = cgroup_path.find(segment)? + segment.len();
            return Some(cgroup_path[..end].to_owned());
        }
        self.container(cgroup_path).map(|_| cgroup_path.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c9a52-3e1b-4bd0-9d55-6a1f0e1a2b3c";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn pod_object(value: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(value).expect("a pod")
    }

    fn pod() -> PodCgroups {
        PodCgroups::from_pod(&pod_object(serde_json::json!({
            "metadata": {"uid": UID},
            "status": {
                "containerStatuses": [{"name": "app", "containerID": format!("containerd://{ID}")}],
                "initContainerStatuses": [{"name": "phantom-init"}]
            }
        })))
        .unwrap()
    }

    #[test]
    fn container_ids_come_from_the_status_without_their_scheme() {
        assert_eq!(pod().container_ids, vec![("app".to_owned(), ID.to_owned())]);
        assert_eq!(
            PodCgroups::from_pod(&pod_object(serde_json::json!({}))),
            None
        );
    }

    #[test]
    fn cgroupfs_systemd_and_podless_layouts_are_matched() {
        let pod = pod();
        let cgroupfs = format!("/kubepods/burstable/pod{UID}/{ID}");
        assert!(pod.owns(&cgroupfs));
        assert_eq!(
            pod.protected_dir(&cgroupfs),
            Some(format!("/kubepods/burstable/pod{UID}"))
        );
        assert_eq!(pod.container(&cgroupfs), Some("app"));
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert!(pod.owns(&systemd));
        assert_eq!(pod.container(&systemd), Some("app"));
        assert!(pod.protected_dir(&systemd).unwrap().ends_with(".slice"));
        let podless = format!("/k8s.io/{ID}");
        assert!(pod.owns(&podless));
        assert_eq!(pod.protected_dir(&podless), Some(podless.clone()));
    }

    #[test]
    fn the_cgroup_line_of_the_mode_is_picked() {
        let v1 = "12:pids:/pod1/c1\n4:memory:/pod1/c1\n1:name=systemd:/pod1/c1\n";
        assert_eq!(parse_cgroup(v1, CgroupMode::V1Memory), Some("/pod1/c1"));
        let joined = "3:cpu,memory:/kubepods/pod2/c2\n";
        assert_eq!(
            parse_cgroup(joined, CgroupMode::V1Memory),
            Some("/kubepods/pod2/c2")
        );
        let v2 = "0::/kubepods.slice/kubepods-pod3.slice/cri-containerd-c3.scope\n";
        assert_eq!(
            parse_cgroup(v2, CgroupMode::V2),
            Some("/kubepods.slice/kubepods-pod3.slice/cri-containerd-c3.scope")
        );
        assert_eq!(parse_cgroup(v2, CgroupMode::V1Memory), None);
        assert_eq!(parse_cgroup(v1, CgroupMode::None), None);
        assert_eq!(
            cgroup_path(v2, CgroupMode::V1Memory),
            "/kubepods.slice/kubepods-pod3.slice/cri-containerd-c3.scope"
        );
    }

    #[test]
    fn other_pods_and_host_processes_are_not_matched() {
        let pod = pod();
        assert!(!pod.owns("/user.slice/user-0.slice/session-1.scope"));
        assert!(!pod.owns("/kubepods/burstable/pod11111111-2222-3333-4444-555555555555/abc"));
        assert!(!pod.owns(&format!("/kubepods/pod{UID}x/abc")));
        assert!(!pod.owns("/"));
    }
}
