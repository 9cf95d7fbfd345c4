//! Polling with a deadline: every wait in the environment and the suites goes through here, so a
//! hang becomes an error naming what was awaited and the last failure seen.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Polls `check` every `interval` until it returns `Ok(Some(v))`, or fails with
/// [`Error::Timeout`] after `timeout`. `Ok(None)` and `Err` both mean "not yet"; the last error
/// is reported on timeout.
pub async fn until<T, E, F, Fut>(
    what: impl Into<String>,
    timeout: Duration,
    interval: Duration,
    check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, E>>,
    E: std::fmt::Display,
{
    until_guarded(what, timeout, interval, || Ok(()), check).await
}

/// Like [`until`], but gives up at once when `guard` fails (for example because the process
/// being waited for has died: waiting longer cannot help).
pub async fn until_guarded<T, E, G, F, Fut>(
    what: impl Into<String>,
    timeout: Duration,
    interval: Duration,
    guard: G,
    mut check: F,
) -> Result<T>
where
    G: Fn() -> Result<()>,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        guard()?;
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e.to_string()),
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.into(),
                after: timeout,
                last_error,
            });
        }
        tokio::time::sleep(interval).await;
    }
}
