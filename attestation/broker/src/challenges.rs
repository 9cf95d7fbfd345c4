//! Single-use, short-lived challenges.
//!
//! Reports carry no clock, so the age of evidence is the age of the challenge it binds: the
//! broker remembers when it issued each one, refuses a second use, and forgets it once it has
//! expired. Outstanding challenges are bounded, so a flood of `challenge` calls cannot grow the
//! broker without limit; when full, new challenges are refused until old ones expire.
//!
//! The store is per broker process: with several replicas, a sidecar's release must reach the
//! replica that issued its challenge (the chart runs one replica, or sticky sessions).

use std::collections::HashMap;

use ring::rand::{SecureRandom, SystemRandom};

/// A challenge handed to a sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub nonce: [u8; 32],
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// Why a challenge was not issued or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error(
        "{outstanding} challenges are outstanding, the most this broker keeps; retry in a few seconds"
    )]
    Full { outstanding: usize },
    #[error("the system random number generator failed")]
    Random,
    #[error(
        "nonce unknown to this broker (never issued here, or expired and forgotten); ask for a new challenge"
    )]
    Unknown,
    #[error("nonce already used; ask for a new challenge")]
    AlreadyUsed,
    #[error(
        "nonce expired: issued {age_seconds}s ago, challenges live {ttl_seconds}s; ask for a new challenge"
    )]
    Expired { age_seconds: u64, ttl_seconds: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    issued_at: u64,
    used: bool,
}

/// The outstanding challenges of one broker.
#[derive(Debug)]
pub struct Challenges {
    ttl_seconds: u64,
    capacity: usize,
    entries: HashMap<[u8; 32], Entry>,
    rng: SystemRandom,
}

impl Challenges {
    pub fn new(ttl_seconds: u64, capacity: usize) -> Self {
        Self {
            ttl_seconds,
            capacity,
            entries: HashMap::new(),
            rng: SystemRandom::new(),
        }
    }

    /// How many challenges are remembered (issued or used, not yet expired).
    pub fn outstanding(&self) -> usize {
        self.entries.len()
    }

    /// Issues a fresh challenge at `now` (unix seconds).
    pub fn issue(&mut self, now: u64) -> Result<Challenge, ChallengeError> {
        self.forget_expired(now);
        if self.entries.len() >= self.capacity {
            return Err(ChallengeError::Full {
                outstanding: self.entries.len(),
            });
        }
        let mut nonce = [0u8; 32];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| ChallengeError::Random)?;
        self.entries.insert(
            nonce,
            Entry {
                issued_at: now,
                used: false,
            },
        );
        Ok(Challenge {
            nonce,
            expires_at: now + self.ttl_seconds,
        })
    }

    /// Uses `nonce` at `now`: returns when it was issued; it is refused from then on.
    pub fn redeem(&mut self, nonce: &[u8; 32], now: u64) -> Result<u64, ChallengeError> {
        let ttl_seconds = self.ttl_seconds;
        let entry = self.entries.get_mut(nonce).ok_or(ChallengeError::Unknown)?;
        if entry.used {
            return Err(ChallengeError::AlreadyUsed);
        }
        let age_seconds = now.saturating_sub(entry.issued_at);
        // Used either way: an expired nonce must not be retried either.
        entry.used = true;
        if age_seconds > ttl_seconds {
            return Err(ChallengeError::Expired {
                age_seconds,
                ttl_seconds,
            });
        }
        Ok(entry.issued_at)
    }

    fn forget_expired(&mut self, now: u64) {
        let ttl = self.ttl_seconds;
        self.entries
            .retain(|_, e| now.saturating_sub(e.issued_at) <= ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_used_once() {
        let mut c = Challenges::new(60, 10);
        let challenge = c.issue(1000).unwrap();
        assert_eq!(challenge.expires_at, 1060);
        assert_eq!(c.redeem(&challenge.nonce, 1010), Ok(1000));
        assert_eq!(
            c.redeem(&challenge.nonce, 1011),
            Err(ChallengeError::AlreadyUsed)
        );
        assert_eq!(
            ChallengeError::AlreadyUsed.to_string(),
            "nonce already used; ask for a new challenge"
        );
    }

    #[test]
    fn unknown_and_expired_nonces_are_refused() {
        let mut c = Challenges::new(60, 10);
        assert_eq!(c.redeem(&[0; 32], 1000), Err(ChallengeError::Unknown));
        let challenge = c.issue(1000).unwrap();
        assert_eq!(
            c.redeem(&challenge.nonce, 1061),
            Err(ChallengeError::Expired {
                age_seconds: 61,
                ttl_seconds: 60
            })
        );
        assert_eq!(
            c.redeem(&challenge.nonce, 1061),
            Err(ChallengeError::AlreadyUsed)
        );
    }

    #[test]
    fn outstanding_challenges_are_bounded_and_forgotten_when_expired() {
        let mut c = Challenges::new(60, 3);
        let nonces: Vec<_> = (0..3).map(|_| c.issue(1000).unwrap().nonce).collect();
        assert_eq!(c.issue(1001), Err(ChallengeError::Full { outstanding: 3 }));
        // A used challenge still counts until it expires (it must keep refusing a replay).
        c.redeem(&nonces[0], 1002).unwrap();
        assert!(c.issue(1003).is_err());
        assert!(
            c.issue(1061).is_ok(),
            "the first three expired and were forgotten"
        );
        assert_eq!(c.outstanding(), 1);
        assert_ne!(nonces[1], nonces[2], "nonces are random");
    }
}
