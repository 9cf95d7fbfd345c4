//! What requests in flight may hold in memory, so that load is answered `503` early instead of
//! growing the process past its memory limit: a replica killed for memory takes its share of
//! pods down with it, and with every replica gone the circuit breaker fails open.
//!
//! A request is charged twice. Before its body is read: the body itself, at its declared length
//! (the maximum body when it declares none). Once read, before it is parsed: what parsing builds,
//! from a scan of the body that counts its JSON values ([`tree_charge`]): a JSON tree costs per
//! value, not per byte (`[0,0,0,…]` is 2 bytes of body and tens of bytes of tree per value), and
//! the review holds up to [`TREE_COPIES`] trees at once (the AdmissionReview, the pod as JSON, the
//! typed pod, the patched copy). A body with more than [`MAX_JSON_VALUES`] values is refused: no
//! pod needs that many. The constants are checked by `conformance/tests/admission.rs`, which
//! drives the real binary past its budget with the densest bodies and reads its peak memory.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most one request can be charged with bodies of at most `max_body` bytes:
/// `--max-inflight-bytes` must hold it.
pub fn largest_charge(max_body: usize) -> usize {
    max_body.saturating_add(
        TREE_COPIES.saturating_mul(
            max_body.saturating_add(MAX_JSON_VALUES.saturating_mul(BYTES_PER_VALUE)),
        ),
    )
}

/// JSON values a request body may hold (a pod with 50 containers of 40 variables each has about
/// 20,000).
pub const MAX_JSON_VALUES: usize = 200_000;

/// Trees of the body the review may hold at once.
pub const TREE_COPIES: usize = 4;

/// Bytes one JSON value takes in a tree, its share of map and vector slots included.
pub const BYTES_PER_VALUE: usize = 96;

/// The body holds more JSON values than any pod needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooComplex {
    pub values: usize,
}

/// Memory parsing `body` may take beyond the body itself: [`TREE_COPIES`] trees of its values
/// and strings. Counts values by their separators outside strings (an upper bound: every value
/// but the first follows a `,`, `[` or `:`).
pub fn tree_charge(body: &[u8]) -> Result<usize, TooComplex> {
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b',' | b'[' | b':' | b'{' => values += 1,
                _ => {}
            }
        }
    }
    if values > MAX_JSON_VALUES {
        return Err(TooComplex { values });
    }
    Ok(TREE_COPIES.saturating_mul(
        body.len()
            .saturating_add(values.saturating_mul(BYTES_PER_VALUE)),
    ))
}

/// The memory budget of requests in flight, in KiB.
#[derive(Debug, Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    total_kib: u32,
}

impl Budget {
    /// A budget of `bytes` (at least one maximal request must fit: checked by the settings).
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    fn kib(bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// Takes the charge of a body of `body_bytes` about to be read, or `None` when the budget
    /// cannot hold it now. The charge is given back when the permit drops (the answer is sent).
    pub fn try_take(&self, body_bytes: usize) -> Option<OwnedSemaphorePermit> {
        let charge = Self::kib(body_bytes).min(self.total_kib);
        self.permits.clone().try_acquire_many_owned(charge).ok()
    }

    /// Adds `bytes` (a [`tree_charge`]) to `held`, or `None` when the budget cannot hold it now.
    pub fn try_add(&self, held: &mut OwnedSemaphorePermit, bytes: usize) -> Option<()> {
        let more = self
            .permits
            .clone()
            .try_acquire_many_owned(Self::kib(bytes))
            .ok()?;
        held.merge(more);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_are_charged_by_their_values_and_strings_do_not_count_separators() {
        let dense = format!("[{}0]", "0,".repeat(999));
        assert_eq!(
            tree_charge(dense.as_bytes()),
            Ok(TREE_COPIES * (dense.len() + 1001 * BYTES_PER_VALUE))
        );
        let quoted = br#"{"a": "x,y,[z]:{\",", "b": [1]}"#;
        assert_eq!(
            tree_charge(quoted),
            // `{`, two `:`, `,`, `[` and the first value: an upper bound of its 4 values and 2 keys.
            Ok(TREE_COPIES * (quoted.len() + 6 * BYTES_PER_VALUE))
        );
        let too_many = format!("[{}0]", "0,".repeat(MAX_JSON_VALUES));
        assert!(tree_charge(too_many.as_bytes()).is_err());
    }

    #[test]
    fn requests_are_charged_until_answered_and_shed_beyond_the_budget() {
        let budget = Budget::new(24 * 1024 * 1024);
        let mut first = budget.try_take(8 * 1024 * 1024).expect("fits");
        let second = budget.try_take(8 * 1024 * 1024).expect("fits");
        assert!(
            budget.try_add(&mut first, 8 * 1024 * 1024 + 1).is_none(),
            "parsing would not fit"
        );
        budget
            .try_add(&mut first, 8 * 1024 * 1024)
            .expect("fits exactly");
        assert!(budget.try_take(1).is_none(), "the budget is spent");
        drop(first);
        assert!(
            budget.try_take(10 * 1024).is_some(),
            "answered requests give it back"
        );
        drop(second);
        assert!(
            largest_charge(8 * 1024 * 1024) < 128 * 1024 * 1024,
            "the default budget holds one request at its densest"
        );
        // A charge above the whole budget takes all of it rather than never fitting.
        assert!(Budget::new(1024 * 1024).try_take(8 * 1024 * 1024).is_some());
    }
}
