//! Prometheus metrics of the sidecar, `phantom_proxy_*`, and a small plain-HTTP endpoint for
//! them and for the kubelet's probes (`/healthz` live, `/readyz` secrets delivered and not
//! degraded). Labels carry operations, outcomes and policy names: never a path's value, never a
//! secret.

use std::net::SocketAddr;
use std::sync::Arc;

use phantom_openbao::{Observer, Operation, RequestOutcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::socket::SocketState;
use crate::{Error, Result};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `login`, `renew` (token or lease), `revoke` or `read`.
    pub operation: Operation,
    /// `ok` (2xx), `refused` (4xx), `error` (5xx or no answer).
    pub result: RequestOutcome,
}

phantom_process::label_enum! {
    /// How a refresh round ended.
    pub enum RefreshResult {
        Ok => "ok",
        Error => "error",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: RefreshResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// The sidecar's metrics and their registry.
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Registry,
    /// Requests that reached OpenBao (coalesced reads count once), by operation and result.
    pub openbao_requests: Family<RequestLabels, Counter>,
    /// Refresh rounds by result (`ok`, `error`).
    pub refreshes: Family<ResultLabels, Counter>,
    /// Secrets whose new version was delivered.
    pub rotations: Counter,
    /// 1 while OpenBao has been unreachable for longer than the grace period.
    pub degraded: Gauge,
    /// Secrets currently held.
    pub secrets: Gauge,
    /// Unix time of the last successful fetch.
    pub last_success_seconds: Gauge,
    /// Releases refused by a key-release condition, by policy.
    pub key_release_refusals: Family<PolicyLabels, Counter>,
    /// 1 when `mlockall` succeeded (secret pages never swapped).
    pub memory_locked: Gauge,
    /// Rounds in which a secret file could not be written (retried within seconds).
    pub file_write_failures: Counter,
    /// Times the pod's secrets were withdrawn (refused, or unreachable beyond the grace period).
    pub withdrawals: Counter,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("phantom_proxy");
        let metrics = Self {
            registry: Registry::default(),
            openbao_requests: Family::default(),
            refreshes: Family::default(),
            rotations: Counter::default(),
            degraded: Gauge::default(),
            secrets: Gauge::default(),
            last_success_seconds: Gauge::default(),
            key_release_refusals: Family::default(),
            memory_locked: Gauge::default(),
            file_write_failures: Counter::default(),
            withdrawals: Counter::default(),
        };
        registry.register(
            "openbao_requests",
            "Requests that reached OpenBao, by operation and result",
            metrics.openbao_requests.clone(),
        );
        registry.register(
            "refreshes",
            "Refresh rounds by result",
            metrics.refreshes.clone(),
        );
        registry.register(
            "rotations",
            "Secrets whose new version was delivered",
            metrics.rotations.clone(),
        );
        registry.register(
            "degraded",
            "1 while OpenBao has been unreachable beyond the grace period",
            metrics.degraded.clone(),
        );
        registry.register("secrets", "Secrets held", metrics.secrets.clone());
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful fetch",
            metrics.last_success_seconds.clone(),
        );
        registry.register(
            "key_release_refusals",
            "Releases refused by a key-release condition, by policy",
            metrics.key_release_refusals.clone(),
        );
        registry.register(
            "memory_locked",
            "1 when mlockall succeeded",
            metrics.memory_locked.clone(),
        );
        registry.register(
            "file_write_failures",
            "Rounds in which a secret file could not be written",
            metrics.file_write_failures.clone(),
        );
        registry.register(
            "withdrawals",
            "Times the pod's secrets were withdrawn from the socket and the volume",
            metrics.withdrawals.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl ProxyMetrics {
    /// Records a successful fetch of `secrets` values.
    pub fn fetched(&self, secrets: usize) {
        self.refreshes
            .get_or_create(&ResultLabels {
                result: RefreshResult::Ok,
            })
            .inc();
        self.secrets.set(secrets as i64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        self.last_success_seconds.set(now);
    }

    /// Records a failed fetch; `refusal_policy` when a key-release condition refused.
    pub fn failed(&self, refusal_policy: Option<&str>) {
        self.refreshes
            .get_or_create(&ResultLabels {
                result: RefreshResult::Error,
            })
            .inc();
        if let Some(policy) = refusal_policy {
            self.key_release_refusals
                .get_or_create(&PolicyLabels {
                    policy: policy.into(),
                })
                .inc();
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Observer for ProxyMetrics {
    fn request(&self, operation: Operation, result: RequestOutcome) {
        self.openbao_requests
            .get_or_create(&RequestLabels { operation, result })
            .inc();
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` (plain HTTP: nothing secret is on it);
/// ready once the secrets are delivered and while OpenBao serves them (not degraded, not
/// withdrawn).
pub fn serve_status(
    addr: SocketAddr,
    metrics: Arc<ProxyMetrics>,
    state: Arc<SocketState>,
) -> Result<phantom_process::StatusServer> {
    let readiness = move || {
        if let Some(reason) = state.contents().withdrawn.clone() {
            Err(format!("withdrawn: {reason}\n"))
        } else if state.is_degraded() {
            Err("degraded: OpenBao unreachable; the last good values are served for the grace period\n".to_owned())
        } else if !state.is_published() {
            Err("secrets not delivered yet\n".to_owned())
        } else {
            Ok("ok\n".to_owned())
        }
    };
    phantom_process::serve_status(
        addr,
        Arc::new(move || metrics.encode()),
        Arc::new(readiness),
    )
    // The shared error already names the address and the cure; only the variable is ours.
    .map_err(|e| Error::Config(format!("{e} (PHANTOM_STATUS_ADDR)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled_by_operation_and_result() {
        let metrics = ProxyMetrics::default();
        metrics.request(Operation::Login, RequestOutcome::Ok);
        metrics.request(Operation::Renew, RequestOutcome::Refused);
        metrics.request(Operation::Renew, RequestOutcome::Ok);
        metrics.request(Operation::Revoke, RequestOutcome::Ok);
        metrics.request(Operation::Read, RequestOutcome::Error);
        metrics.fetched(3);
        metrics.failed(Some("payments"));
        let text = metrics.encode();
        for line in [
            r#"phantom_proxy_openbao_requests_total{operation="login",result="ok"} 1"#,
            r#"phantom_proxy_openbao_requests_total{operation="renew",result="refused"} 1"#,
            r#"phantom_proxy_openbao_requests_total{operation="renew",result="ok"} 1"#,
            r#"phantom_proxy_openbao_requests_total{operation="revoke",result="ok"} 1"#,
            r#"phantom_proxy_openbao_requests_total{operation="read",result="error"} 1"#,
            r#"phantom_proxy_refreshes_total{result="ok"} 1"#,
            r#"phantom_proxy_key_release_refusals_total{policy="payments"} 1"#,
            "phantom_proxy_secrets 3",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
