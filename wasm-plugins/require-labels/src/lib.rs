//! Refuses secret injection into pods that lack ownership labels (default: `team`), so every
//! pod holding secrets can be traced to a team. Settings: `{"labels": ["team", "cost-center"]}`.

use phantom_plugin_sdk::{AdmissionRequest, Plugin, Verdict, export_plugin};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            labels: default_labels(),
        }
    }
}

fn default_labels() -> Vec<String> {
    vec!["team".to_owned()]
}

pub struct RequireLabels;

impl Plugin for RequireLabels {
    type Settings = Settings;

    fn evaluate(request: &AdmissionRequest, settings: Settings) -> Verdict {
        let missing: Vec<&str> = settings
            .labels
            .iter()
            .map(String::as_str)
            .filter(|l| request.label(l).is_none_or(|v| v.trim().is_empty()))
            .collect();
        if missing.is_empty() {
            Verdict::allow()
        } else {
            Verdict::deny(format!(
                "pod {} receives secrets and must carry the label(s) {}: add them to the pod template",
                request.pod_name(),
                missing.join(", ")
            ))
        }
    }
}

export_plugin!(RequireLabels);
