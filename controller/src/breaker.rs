//! The circuit breaker in front of admission: consecutive failed probes open it, consecutive
//! good ones close it. The state machine is pure; [`probe`] is the one I/O piece (an HTTPS GET of
//! admission's `/readyz` through the same route and CA the API server uses).

use std::time::Duration;

use crate::{Error, Result};

phantom_process::label_enum! {
    /// Open or closed.
    pub enum State {
        /// Admission answers: the configurations fail closed.
        Closed => "closed",
        /// Admission is down: non-critical namespaces fail open.
        Open => "open",
    }
}

/// Counts consecutive probe results.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    failures: u32,
    successes: u32,
    failures_to_open: u32,
    successes_to_close: u32,
}

impl Breaker {
    /// A closed breaker (thresholds of 0 count as 1).
    pub fn new(failures_to_open: u32, successes_to_close: u32) -> Self {
        Self {
            state: State::Closed,
            failures: 0,
            successes: 0,
            failures_to_open: failures_to_open.max(1),
            successes_to_close: successes_to_close.max(1),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Records a probe; returns the new state when this probe changed it.
    pub fn observe(&mut self, healthy: bool) -> Option<State> {
        if healthy {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let next = match self.state {
            State::Closed if self.failures >= self.failures_to_open => State::Open,
            State::Open if self.successes >= self.successes_to_close => State::Closed,
            same => same,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

/// An HTTPS client trusting `ca_bundle_pem` only.
pub fn client(ca_bundle_pem: &str, timeout: Duration) -> Result<reqwest::Client> {
    let what = "the probe's trust anchors";
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(timeout)
        .connect_timeout(timeout);
    for cert in reqwest::Certificate::from_pem_bundle(ca_bundle_pem.as_bytes())
        .map_err(|e| Error::certificate(what, e))?
    {
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| Error::certificate(what, e))
}

/// One probe: `Ok(())` when `<base>/readyz` answers 200, else what went wrong (for the log).
pub async fn probe(client: &reqwest::Client, base_url: &str) -> Result<(), String> {
    let url = format!("{base_url}/readyz");
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(format!("GET {url}: {status}: {}", body.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_consecutive_failures_and_closes_after_m_successes() {
        let mut b = Breaker::new(3, 2);
        assert_eq!(b.observe(false), None);
        assert_eq!(b.observe(false), None);
        assert_eq!(b.observe(true), None, "a success resets the count");
        assert_eq!(b.observe(false), None);
        assert_eq!(b.observe(false), None);
        assert_eq!(b.observe(false), Some(State::Open));
        assert_eq!(b.observe(false), None, "already open");
        assert_eq!(b.observe(true), None);
        assert_eq!(b.observe(false), None, "a failure resets the successes");
        assert_eq!(b.observe(true), None);
        assert_eq!(b.observe(true), Some(State::Closed));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn zero_thresholds_mean_one() {
        let mut b = Breaker::new(0, 0);
        assert_eq!(b.observe(false), Some(State::Open));
        assert_eq!(b.observe(true), Some(State::Closed));
    }
}
