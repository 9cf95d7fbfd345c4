//! Where secret values come from. [`SecretProvider`] is what the sidecar's refresh rounds ask:
//! one item of a binding at a time, with what is held already (for versions and leases), plus a
//! reset after failures and a revocation when the pod stops.
//!
//! - [`openbao::OpenBaoProvider`]: OpenBao (or Vault) with the pod's ServiceAccount — the
//!   product.
//! - [`file::FileProvider`]: JSON files in a directory, for development without OpenBao. **Not
//!   secure**: the values sit in plain files and nobody's identity is checked.

pub mod file;
pub mod openbao;

use std::collections::BTreeMap;
use std::future::Future;

use phantom_crds::{BindingPlan, SecretItem};
use serde_json::Value;

use crate::socket::Delivered;
use crate::{Error, Result, SecretValue};

/// A source of secret values.
pub trait SecretProvider: Send {
    /// The current value of `item` of `binding`; `held` is what is delivered now (the same
    /// version is returned when nothing changed, so files and watchers stay quiet).
    fn read(
        &mut self,
        binding: &BindingPlan,
        item: &SecretItem,
        held: Option<&Delivered>,
    ) -> impl Future<Output = Result<Delivered>> + Send;

    /// Forgets identities after a failed round (the next round logs in again).
    fn reset(&mut self);

    /// The pod is stopping: revoke whatever outlives it (tokens, leases).
    fn revoke(&mut self) -> impl Future<Output = ()> + Send;
}

/// The providers a sidecar can run with.
#[derive(Debug)]
pub enum Provider {
    OpenBao(openbao::OpenBaoProvider),
    File(file::FileProvider),
}

impl SecretProvider for Provider {
    async fn read(
        &mut self,
        binding: &BindingPlan,
        item: &SecretItem,
        held: Option<&Delivered>,
    ) -> Result<Delivered> {
        match self {
            Self::OpenBao(p) => p.read(binding, item, held).await,
            Self::File(p) => p.read(binding, item, held).await,
        }
    }

    fn reset(&mut self) {
        match self {
            Self::OpenBao(p) => p.reset(),
            Self::File(p) => p.reset(),
        }
    }

    async fn revoke(&mut self) {
        match self {
            Self::OpenBao(p) => p.revoke().await,
            Self::File(p) => p.revoke().await,
        }
    }
}

/// The value a binding item delivers: one key, or every key as a JSON object.
pub(crate) fn select(
    binding: &BindingPlan,
    item: &SecretItem,
    data: &BTreeMap<String, SecretValue>,
) -> Result<SecretValue> {
    match &item.key {
        Some(k) => data.get(k).cloned().ok_or_else(|| {
            Error::Delivery(format!(
                "SecretBinding {}: secret {} at {}/{} has no key {k:?}; fix spec.secrets[].key or the secret in OpenBao",
                binding.name, item.name, item.mount, item.path
            ))
        }),
        None => {
            let mut map: serde_json::Map<String, Value> = data
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.expose().to_owned())))
                .collect();
            let text = Value::Object(map.clone()).to_string();
            for value in map.values_mut() {
                crate::secret::wipe(value);
            }
            Ok(SecretValue::new(text))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A binding `b` with the one secret `secret` (JSON of a `spec.secrets[]` entry).
    pub(crate) fn plan_with(secret: Value) -> (BindingPlan, SecretItem) {
        let spec: phantom_crds::SecretBindingSpec = serde_json::from_value(serde_json::json!({
            "selector": {"podSelector": {}}, "openbao": {"role": "r"}, "secrets": [secret]
        }))
        .expect("spec");
        let item = spec.secrets[0].clone();
        (
            BindingPlan {
                name: "b".into(),
                spec,
            },
            item,
        )
    }

    fn binding(key: Option<&str>) -> (BindingPlan, SecretItem) {
        plan_with(
            serde_json::json!({"name": "db", "path": "creds/app", "mount": "database",
            "engine": "dynamic", "key": key, "delivery": [{"kind": "socket"}]}),
        )
    }

    #[test]
    fn one_key_or_every_key_as_json() {
        let data: BTreeMap<String, SecretValue> = [
            (
                "username".to_owned(),
                SecretValue::new("v-app-1".to_owned()),
            ),
            ("password".to_owned(), SecretValue::new("pw".to_owned())),
        ]
        .into();
        let (b, item) = binding(Some("password"));
        assert_eq!(select(&b, &item, &data).expect("key").expose(), "pw");
        let (b, item) = binding(None);
        let whole: Value =
            serde_json::from_str(select(&b, &item, &data).expect("all").expose()).expect("JSON");
        assert_eq!(whole["username"], "v-app-1");
        let (b, item) = binding(Some("token"));
        let err = select(&b, &item, &data).expect_err("no such key");
        assert!(err.to_string().contains("has no key \"token\""), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
