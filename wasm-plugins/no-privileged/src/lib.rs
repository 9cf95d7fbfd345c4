//! Refuses secret injection into pods that can read other processes' memory: privileged
//! containers, `hostPID`, `hostIPC`, and containers adding `SYS_PTRACE` or `SYS_ADMIN`. A pod
//! like that could read any secret on the node, so it must not hold any itself.
//! Settings: `{"allowHostPID": false}` (the default refuses).

use phantom_plugin_sdk::{AdmissionRequest, Plugin, Verdict, export_plugin};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    #[serde(default)]
    pub allow_host_pid: bool,
}

const DANGEROUS_CAPABILITIES: &[&str] = &[
    "SYS_PTRACE",
    "SYS_ADMIN",
    "CAP_SYS_PTRACE",
    "CAP_SYS_ADMIN",
    "ALL",
];

pub struct NoPrivileged;

impl Plugin for NoPrivileged {
    type Settings = Settings;

    fn evaluate(request: &AdmissionRequest, settings: Settings) -> Verdict {
        let spec = &request.object["spec"];
        let mut problems = Vec::new();
        if spec["hostPID"] == true && !settings.allow_host_pid {
            problems.push("hostPID".to_owned());
        }
        if spec["hostIPC"] == true {
            problems.push("hostIPC".to_owned());
        }
        for c in request.containers() {
            let name = c["name"].as_str().unwrap_or("?");
            let sc = &c["securityContext"];
            if sc["privileged"] == true {
                problems.push(format!("container {name} is privileged"));
            }
            let added = sc["capabilities"]["add"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default();
            for cap in added.iter().filter_map(|c| c.as_str()) {
                if DANGEROUS_CAPABILITIES.contains(&cap.to_ascii_uppercase().as_str()) {
                    problems.push(format!("container {name} adds {cap}"));
                }
            }
        }
        if problems.is_empty() {
            Verdict::allow()
        } else {
            Verdict::deny(format!(
                "pod {} could read other processes' memory ({}); Phantom does not inject secrets into such pods",
                request.pod_name(),
                problems.join(", ")
            ))
        }
    }
}

export_plugin!(NoPrivileged);
