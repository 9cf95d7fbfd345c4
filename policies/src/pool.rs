//! Evaluation off the async runtime: CEL and WASM evaluation is CPU-bound and synchronous, so an
//! async server (the admission webhook) hands decisions to the blocking thread pool, at most
//! `concurrency` at a time. A request that cannot get a slot within `queue_timeout` is refused
//! with [`Error::Overloaded`] (the webhook answers deny: fail closed) instead of queueing forever.
//!
//! Decisions are memoised: `decide` is a pure function of the policy set (by digest) and the
//! input — CEL has no clock or randomness, and plugins have no imports, so no way to observe
//! anything but their input. The replicas of one ReplicaSet reach admission as identical pods
//! (names are generated after admission), so a rollout of N replicas evaluates once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::{AdmissionInput, Decision, Error, PolicySet, Result};

/// A bounded pool of decision slots.
#[derive(Debug, Clone)]
pub struct DecisionPool {
    slots: Arc<Semaphore>,
    concurrency: usize,
    queue_timeout: Duration,
    memo: Arc<Mutex<Memo>>,
}

/// Recent decisions by `sha256(digest, input)`, oldest evicted first.
#[derive(Debug, Default)]
struct Memo {
    capacity: usize,
    entries: HashMap<[u8; 32], Decision>,
    order: VecDeque<[u8; 32]>,
    hits: u64,
}

impl Memo {
    fn get(&mut self, key: &[u8; 32]) -> Option<Decision> {
        let found = self.entries.get(key).cloned();
        self.hits += u64::from(found.is_some());
        found
    }

    fn insert(&mut self, key: [u8; 32], decision: Decision) {
        if self.capacity == 0 || self.entries.contains_key(&key) {
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(key);
        self.entries.insert(key, decision);
    }
}

fn memo_key(set: &PolicySet, input: &AdmissionInput) -> Option<[u8; 32]> {
    let input = serde_json::to_vec(input).ok()?;
    Some(
        Sha256::new()
            .chain_update(set.digest().as_bytes())
            .chain_update([0])
            .chain_update(&input)
            .finalize()
            .into(),
    )
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
            memo: Arc::new(Mutex::new(Memo {
                capacity: 512,
                ..Memo::default()
            })),
        }
    }

    /// Keeps at most `entries` recent decisions (0 turns memoisation off).
    pub fn with_memo_capacity(self, entries: usize) -> Self {
        if let Ok(mut memo) = self.memo.lock() {
            memo.capacity = entries;
            memo.entries.clear();
            memo.order.clear();
        }
        self
    }

    /// Decisions answered from the memo so far.
    pub fn memo_hits(&self) -> u64 {
        self.memo.lock().map(|m| m.hits).unwrap_or(0)
    }

    /// Decides on the blocking pool, within `deadline`: the wait for a slot ends there, and so
    /// does the evaluation (checked between expressions and plugins: see
    /// [`PolicySet::decide_within`]), which then frees its slot and says where it stopped.
    pub async fn decide(
        &self,
        set: &PolicySet,
        input: AdmissionInput,
        deadline: Instant,
    ) -> Result<Decision> {
        let key = memo_key(set, &input);
        if let Some(found) = key.and_then(|k| self.memo.lock().ok()?.get(&k)) {
            return Ok(found);
        }
        let queue = self
            .queue_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let permit = tokio::time::timeout(queue, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                Error::Overloaded(format!(
                    "all {} evaluation slots stayed busy for {queue:?}",
                    self.concurrency
                ))
            })?
            .map_err(|_| Error::Overloaded("the evaluation pool is shut down".into()))?;
        let set = set.clone();
        let decided = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            let decided = set.decide_within(&input, Some(deadline));
            let late = Instant::now().saturating_duration_since(deadline);
            match &decided {
                Err(stopped) => {
                    tracing::warn!(policy = %stopped.policy, "policy evaluation stopped at its deadline; the pod is refused");
                }
                // Past the deadline inside one expression or plugin: the answer went out at the
                // deadline, the work ended only now.
                Ok(_) if late > LATE => {
                    tracing::warn!(?late, "policy evaluation finished after its deadline (one expression or plugin ran long)");
                }
                Ok(_) => {}
            }
            decided
        })
        .await
        .map_err(|e| Error::Overloaded(format!("the evaluation thread failed: {e}")))?;
        let decision = decided.map_err(|stopped| Error::Deadline {
            policy: stopped.policy,
        })?;
        if let (Some(key), Ok(mut memo)) = (key, self.memo.lock()) {
            memo.insert(key, decision.clone());
        }
        Ok(decision)
    }
}

/// How far past its deadline an evaluation may finish before that is logged.
const LATE: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wasm::PluginHost;
    use crate::{Modules, RequestInfo, Sources};

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

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
        let pool = DecisionPool::new(1, Duration::from_millis(50)).with_memo_capacity(0);
        let decision = pool.decide(&set, input(), far()).await.expect("decides");
        assert!(decision.allowed && !decision.inject);

        // Hold the only slot: the next request is refused after the queue timeout, not queued forever.
        let held = pool.slots.clone().acquire_owned().await.expect("slot");
        let err = pool
            .decide(&set, input(), far())
            .await
            .expect_err("saturated");
        assert!(
            matches!(err, Error::Overloaded(_)) && err.to_string().contains("1 evaluation slots"),
            "{err}"
        );
        drop(held);
        assert!(
            pool.decide(&set, input(), far()).await.is_ok(),
            "the pool recovers once a slot frees up"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_evaluation_past_its_deadline_stops_names_its_policy_and_frees_its_slot() {
        let host = PluginHost::new().expect("host");
        let policy: phantom_crds::PhantomPolicy = serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy", "metadata": {"name": "slow"},
            "spec": {"rules": {"validations": [{"name": "r", "expression": "true"}]}}
        }))
        .expect("policy");
        let (set, _) = PolicySet::compile(
            &Sources {
                policies: vec![policy],
                ..Default::default()
            },
            &host,
            &Modules::default(),
        );
        let pool = DecisionPool::new(1, Duration::from_secs(1));
        let err = pool
            .decide(&set, input(), Instant::now())
            .await
            .expect_err("the deadline has passed");
        assert!(
            matches!(&err, Error::Deadline { policy } if policy == "slow"),
            "{err}"
        );
        assert_eq!(
            pool.slots.available_permits(),
            1,
            "the work ended with the answer"
        );
        let decision = pool.decide(&set, input(), far()).await.expect("decides");
        assert!(decision.allowed, "a stopped evaluation is not memoised");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identical_questions_are_answered_from_the_memo_until_the_set_changes() {
        let host = PluginHost::new().expect("host");
        let (empty, _) = PolicySet::compile(&Sources::default(), &host, &Modules::default());
        let pool = DecisionPool::new(1, Duration::from_millis(50)).with_memo_capacity(2);
        let first = pool.decide(&empty, input(), far()).await.expect("decides");
        // Hold the only slot: a memoised answer needs none.
        let held = pool.slots.clone().acquire_owned().await.expect("slot");
        assert_eq!(
            pool.decide(&empty, input(), far()).await.expect("memo"),
            first
        );
        assert_eq!(pool.memo_hits(), 1);
        let mut other = input();
        other.request.dry_run = true;
        assert!(
            pool.decide(&empty, other, far()).await.is_err(),
            "another input is evaluated"
        );
        drop(held);

        let policy: phantom_crds::PhantomPolicy = serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy", "metadata": {"name": "deny"},
            "spec": {"rules": {"validations": [{"name": "no", "expression": "false"}]}}
        }))
        .expect("policy");
        let (strict, _) = PolicySet::compile(
            &Sources {
                policies: vec![policy],
                ..Default::default()
            },
            &host,
            &Modules::default(),
        );
        let decision = pool.decide(&strict, input(), far()).await.expect("decides");
        assert!(
            !decision.allowed,
            "a new policy set is never answered from the old one's memo"
        );
        for i in 0..5 {
            let mut distinct = input();
            distinct.request.name = format!("p{i}");
            pool.decide(&strict, distinct, far())
                .await
                .expect("decides");
        }
        assert!(
            pool.memo.lock().expect("memo").entries.len() <= 2,
            "bounded"
        );
    }
}
