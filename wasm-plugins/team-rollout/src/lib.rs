//! Rolls a policy out team by team: each team (pod label `team`) gets its own percentage, and a
//! workload's answer is stable (hashed from namespace + workload). Pods outside the rollout are
//! allowed but not injected (hint `{"inject": false}`). Settings:
//! `{"teams": {"payments": 100, "search": 25}, "defaultPercent": 0}`.

use std::collections::BTreeMap;

use phantom_plugin_sdk::{AdmissionRequest, Plugin, Verdict, export_plugin, serde_json::json};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    #[serde(default)]
    pub teams: BTreeMap<String, u8>,
    #[serde(default)]
    pub default_percent: u8,
}

/// FNV-1a: tiny, deterministic, no dependencies (plugins have no randomness anyway).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The workload a pod belongs to: its controller owner, else its name.
fn workload(request: &AdmissionRequest) -> String {
    let meta = &request.object["metadata"];
    let owner = meta["ownerReferences"]
        .as_array()
        .and_then(|o| o.iter().find(|r| r["controller"] == true));
    let name = owner
        .and_then(|o| o["name"].as_str())
        .unwrap_or_else(|| request.pod_name());
    let hash = request.label("pod-template-hash").map(|h| format!("-{h}"));
    let name = hash
        .as_deref()
        .and_then(|h| name.strip_suffix(h))
        .unwrap_or(name);
    format!(
        "{}/{name}",
        meta["namespace"]
            .as_str()
            .or(request.request["namespace"].as_str())
            .unwrap_or_default()
    )
}

pub struct TeamRollout;

impl Plugin for TeamRollout {
    type Settings = Settings;

    fn evaluate(request: &AdmissionRequest, settings: Settings) -> Verdict {
        let team = request.label("team").unwrap_or("");
        let percent = settings
            .teams
            .get(team)
            .copied()
            .unwrap_or(settings.default_percent)
            .min(100);
        let key = workload(request);
        let bucket = (fnv1a(key.as_bytes()) % 100) as u8;
        let inject = bucket < percent;
        Verdict::allow().with_hints(
            json!({"inject": inject, "team": team, "percent": percent, "bucket": bucket}),
        )
    }
}

export_plugin!(TeamRollout);
