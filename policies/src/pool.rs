//! Evaluation off the async runtime: CEL and WASM evaluation is CPU-bound and synchronous, so an
//! async server (the admission webhook) hands decisions to the blocking thread pool, at most
//! `concurrency` at a time. A request that cannot get a slot within `queue_timeout` is refused
//! with [`Error::Overloaded`] (the webhook answers deny: fail closed) instead of queueing forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::{AdmissionInput, Decision, Error, PolicySet, Result};

/// A bounded pool of decision slots.
#[derive(Debug, Clone)]
pub struct DecisionPool {
    slots: Arc<Semaphore>,
    concurrency: usize,
    queue_timeout: Duration,
}

impl DecisionPool {
    /// A pool running at most `concurrency` decisions at once, waiting at most `queue_timeout`
    /// for a slot.
    pub fn new(concurrency: usize, queue_timeout: Duration) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            queue_timeout,
        }
    }

    /// Decides on the blocking pool.
    pub async fn decide(&self, set: &PolicySet, input: AdmissionInput) -> Result<Decision> {
        let permit = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                Error::Overloaded(format!(
                    "all {} evaluation slots stayed busy for {:?}",
                    self.concurrency, self.queue_timeout
                ))
            })?
            .map_err(|_| Error::Overloaded("the evaluation pool is shut down".into()))?;
        let set = set.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            set.decide(&input)
        })
        .await
        .map_err(|e| Error::Overloaded(format!("the evaluation thread failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wasm::PluginHost;
    use crate::{Modules, RequestInfo, Sources};

    fn input() -> AdmissionInput {
        AdmissionInput {
            object: json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
            request: RequestInfo {
                operation: "CREATE".into(),
                namespace: "n".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decides_off_the_runtime_and_refuses_when_saturated() {
        let host = PluginHost::new().expect("host");
        let (set, _) = PolicySet::compile(&Sources::default(), &host, &Modules::default());
        let pool = DecisionPool::new(1, Duration::from_millis(50));
        let decision = pool.decide(&set, input()).await.expect("decides");
        assert!(decision.allowed && !decision.inject);

        // Hold the only slot: the next request is refused after the queue timeout, not queued forever.
        let held = pool.slots.clone().acquire_owned().await.expect("slot");
        let err = pool.decide(&set, input()).await.expect_err("saturated");
        assert!(
            matches!(err, Error::Overloaded(_)) && err.to_string().contains("1 evaluation slots"),
            "{err}"
        );
        drop(held);
        assert!(
            pool.decide(&set, input()).await.is_ok(),
            "the pool recovers once a slot frees up"
        );
    }
}
