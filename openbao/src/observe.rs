//! Requests reported to the caller. The client counts nothing itself: a component passes an
//! [`Observer`] (its metrics) and learns of every request that reached, or failed to reach,
//! OpenBao — coalesced reads once.

/// What a request to OpenBao was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A login (`auth/<mount>/login`).
    Login,
    /// A token or lease renewal.
    Renew,
    /// A token revocation (and with it, its leases).
    Revoke,
    /// A read: secrets, health, roles.
    Read,
}

impl Operation {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Renew => "renew",
            Self::Revoke => "revoke",
            Self::Read => "read",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// 2xx.
    Ok,
    /// 4xx: OpenBao refused.
    Refused,
    /// 5xx or no answer at all.
    Error,
}

impl RequestOutcome {
    /// The outcome of an HTTP status (`None`: no answer).
    pub fn of_status(status: Option<u16>) -> Self {
        match status {
            Some(200..=299) => Self::Ok,
            Some(400..=499) => Self::Refused,
            _ => Self::Error,
        }
    }

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }
}

/// Learns of every request the client makes.
pub trait Observer: Send + Sync + std::fmt::Debug {
    fn request(&self, operation: Operation, outcome: RequestOutcome);
}

#[cfg(feature = "metrics")]
mod labels {
    use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
    use std::fmt::Write as _;

    impl EncodeLabelValue for super::Operation {
        fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
            encoder.write_str(self.as_str())
        }
    }

    impl EncodeLabelValue for super::RequestOutcome {
        fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
            encoder.write_str(self.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(RequestOutcome::of_status(Some(204)), RequestOutcome::Ok);
        assert_eq!(
            RequestOutcome::of_status(Some(403)),
            RequestOutcome::Refused
        );
        assert_eq!(RequestOutcome::of_status(Some(503)), RequestOutcome::Error);
        assert_eq!(RequestOutcome::of_status(None), RequestOutcome::Error);
    }
}
