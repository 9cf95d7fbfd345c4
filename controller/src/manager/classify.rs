//! What the manager should do, decided from what it observed and what it wants (pure; the
//! manager's loop only acts on these outcomes, like kube-runtime's finalizer).

use serde_json::Value;

use crate::certs::Renewal;
use crate::metrics::Cause;
use crate::webhooks;

/// What to do with one webhook configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigurationAction {
    /// It is as desired: nothing to apply.
    Unchanged,
    /// It never existed (or this controller never applied it): create it.
    Create,
    /// It differs because of our own change (breaker, certificate): apply the new version.
    Update,
    /// Someone else deleted or altered it: put it back, and say so.
    Restore { cause: Cause, paths: Vec<String> },
}

/// Compares the observed configuration with the desired one and with what was applied last: a
/// difference that what we applied last does not explain was made by someone else.
pub fn configuration(
    observed: Option<&Value>,
    desired: &Value,
    last_applied: Option<&Value>,
) -> ConfigurationAction {
    match observed {
        None if last_applied.is_some() => ConfigurationAction::Restore {
            cause: Cause::Deleted,
            paths: Vec::new(),
        },
        None => ConfigurationAction::Create,
        Some(observed) => {
            let paths = webhooks::drift(desired, observed);
            if paths.is_empty() {
                return ConfigurationAction::Unchanged;
            }
            match last_applied {
                None => ConfigurationAction::Update,
                Some(last) if webhooks::drift(last, observed).is_empty() => {
                    ConfigurationAction::Update
                }
                Some(_) => ConfigurationAction::Restore {
                    cause: Cause::Altered,
                    paths,
                },
            }
        }
    }
}

/// Where this pass's certificate material comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaterialSource {
    /// The Secrets hold readable material: they are the truth (a previous leader may have
    /// rotated).
    Stored,
    /// The Secrets are gone or damaged, but this leader holds the material: write it back, like
    /// a deleted configuration, rather than start a CA the running admission replicas do not
    /// serve yet.
    WriteBack,
    /// Nothing anywhere: generate a CA and a serving certificate.
    Fresh,
}

/// Classifies the certificate Secrets from whether they were readable and whether this leader
/// holds material.
pub fn material_source(stored_readable: bool, held: bool) -> MaterialSource {
    match (stored_readable, held) {
        (true, _) => MaterialSource::Stored,
        (false, true) => MaterialSource::WriteBack,
        (false, false) => MaterialSource::Fresh,
    }
}

/// Why a certificate Secret is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretWrite {
    /// New material (counted as a rotation).
    Rotated,
    /// The same material, written back after the Secret was deleted.
    WrittenBack,
}

/// Which certificate Secrets a pass writes. The CA Secret is written before the configurations
/// are updated, the serving Secret only after they trust its CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretWrites {
    pub ca: Option<SecretWrite>,
    pub serving: Option<SecretWrite>,
}

/// The writes a renewal and the material's source call for.
pub fn secret_writes(source: MaterialSource, renewal: Renewal) -> SecretWrites {
    let write = |rotated: bool| match (rotated, source) {
        (true, _) => Some(SecretWrite::Rotated),
        (false, MaterialSource::WriteBack) => Some(SecretWrite::WrittenBack),
        (false, _) => None,
    };
    SecretWrites {
        ca: write(renewal.ca_rotated),
        // A new seal key alone is no certificate rotation: the same pair is written with it.
        serving: write(renewal.serving_issued).or(renewal
            .decision_key_made
            .then_some(SecretWrite::WrittenBack)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn desired() -> Value {
        json!({"webhooks": [{"name": "inject.phantom.dev", "failurePolicy": "Fail"}]})
    }

    #[test]
    fn a_missing_configuration_is_created_the_first_time_and_restored_afterwards() {
        assert_eq!(
            configuration(None, &desired(), None),
            ConfigurationAction::Create
        );
        assert_eq!(
            configuration(None, &desired(), Some(&desired())),
            ConfigurationAction::Restore {
                cause: Cause::Deleted,
                paths: Vec::new()
            }
        );
    }

    #[test]
    fn fields_set_by_others_do_not_count_as_drift() {
        let mut observed = desired();
        observed["metadata"] = json!({"resourceVersion": "7"});
        observed["webhooks"][0]["sideEffects"] = json!("None");
        assert_eq!(
            configuration(Some(&observed), &desired(), Some(&desired())),
            ConfigurationAction::Unchanged
        );
    }

    #[test]
    fn an_edit_by_someone_else_is_restored_naming_the_field() {
        let mut observed = desired();
        observed["webhooks"][0]["failurePolicy"] = json!("Ignore");
        assert_eq!(
            configuration(Some(&observed), &desired(), Some(&desired())),
            ConfigurationAction::Restore {
                cause: Cause::Altered,
                paths: vec![".webhooks[0].failurePolicy".into()]
            }
        );
    }

    #[test]
    fn our_own_change_is_an_update() {
        // The breaker opened: we now want Ignore; the observed object is what we applied last.
        let mut open = desired();
        open["webhooks"][0]["failurePolicy"] = json!("Ignore");
        assert_eq!(
            configuration(Some(&desired()), &open, Some(&desired())),
            ConfigurationAction::Update
        );
        // A configuration this process never applied (a new leader) is taken over quietly.
        assert_eq!(
            configuration(Some(&desired()), &open, None),
            ConfigurationAction::Update
        );
    }

    #[test]
    fn certificate_secrets_are_written_back_only_when_they_vanished() {
        assert_eq!(material_source(true, true), MaterialSource::Stored);
        assert_eq!(material_source(false, true), MaterialSource::WriteBack);
        assert_eq!(material_source(false, false), MaterialSource::Fresh);
        let quiet = Renewal {
            ca_rotated: false,
            serving_issued: false,
            decision_key_made: false,
        };
        assert_eq!(
            secret_writes(MaterialSource::Stored, quiet),
            SecretWrites {
                ca: None,
                serving: None
            }
        );
        assert_eq!(
            secret_writes(MaterialSource::WriteBack, quiet),
            SecretWrites {
                ca: Some(SecretWrite::WrittenBack),
                serving: Some(SecretWrite::WrittenBack)
            }
        );
        let serving_due = Renewal {
            ca_rotated: false,
            serving_issued: true,
            decision_key_made: false,
        };
        assert_eq!(
            secret_writes(MaterialSource::Stored, serving_due),
            SecretWrites {
                ca: None,
                serving: Some(SecretWrite::Rotated)
            }
        );
        let fresh = Renewal {
            ca_rotated: true,
            serving_issued: true,
            decision_key_made: false,
        };
        assert_eq!(
            secret_writes(MaterialSource::Fresh, fresh),
            SecretWrites {
                ca: Some(SecretWrite::Rotated),
                serving: Some(SecretWrite::Rotated)
            }
        );
        // A Secret from before decision seals: the same pair is written with the new key.
        let key_made = Renewal {
            decision_key_made: true,
            ..quiet
        };
        assert_eq!(
            secret_writes(MaterialSource::Stored, key_made),
            SecretWrites {
                ca: None,
                serving: Some(SecretWrite::WrittenBack)
            }
        );
    }
}
