//! Coalescing ("single flight"): concurrent requests for the same key share one in-flight call,
//! so a burst of asks for one secret — every container of a pod starting at once, or a refresh
//! racing a first read — reaches OpenBao once. Nothing is cached here: once the call finishes,
//! the next request starts a new one (caching with a TTL is the cache's job).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::Result;

type Flight<V> = Shared<BoxFuture<'static, Result<Arc<V>>>>;

/// In-flight calls by key.
pub struct Coalescer<K, V> {
    flights: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

impl<K, V> std::fmt::Debug for Coalescer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.flights.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Coalescer").field("in_flight", &n).finish()
    }
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::default(),
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Send + Sync + 'static,
{
    /// Runs `call` for `key` unless a call for `key` is in flight, in which case its result is
    /// shared. Errors are shared too (every waiter learns why).
    pub async fn run<F>(&self, key: K, call: F) -> Result<Arc<V>>
    where
        F: std::future::Future<Output = Result<V>> + Send + 'static,
    {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(&key) {
                Some(flight) => flight.clone(),
                None => {
                    let registry = self.flights.clone();
                    let done_key = key.clone();
                    let flight = async move {
                        let result = call.await.map(Arc::new);
                        registry
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&done_key);
                        result
                    }
                    .boxed()
                    .shared();
                    flights.insert(key, flight.clone());
                    flight
                }
            }
        };
        flight.await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::Error;

    #[tokio::test]
    async fn concurrent_requests_for_one_key_share_one_call() {
        let coalescer: Arc<Coalescer<String, usize>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let asks = (0..50).map(|_| {
            let (coalescer, calls) = (coalescer.clone(), calls.clone());
            tokio::spawn(async move {
                coalescer
                    .run("secret/app".into(), async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(calls.fetch_add(1, Ordering::SeqCst))
                    })
                    .await
            })
        });
        for ask in futures::future::join_all(asks).await {
            assert_eq!(*ask.expect("task").expect("value"), 0);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Finished calls are not cached: the next request calls again.
        let calls2 = calls.clone();
        let again = coalescer
            .run("secret/app".into(), async move {
                Ok(calls2.fetch_add(1, Ordering::SeqCst))
            })
            .await
            .expect("value");
        assert_eq!(*again, 1);
    }

    #[tokio::test]
    async fn errors_reach_every_waiter() {
        let coalescer: Coalescer<&'static str, ()> = Coalescer::default();
        let err = coalescer
            .run("k", async {
                Err(Error::Unreachable {
                    addr: "https://bao".into(),
                    cause: "refused".into(),
                    source: None,
                })
            })
            .await
            .expect_err("fails");
        assert!(err.to_string().contains("https://bao"));
    }
}
