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

    /// Revokes and forgets identities after a refused round (the next round logs in again).
    fn reset(&mut self) -> impl Future<Output = ()> + Send;

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

    async fn reset(&mut self) {
        match self {
            Self::OpenBao(p) => p.reset().await,
            Self::File(p) => p.reset().await,
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
        None => Ok(SecretValue::new(json_object(data))),
    }
}

/// `data` as a compact JSON object, written into one buffer sized up front: growing a `String`
/// would free (unwiped) copies of the values on every reallocation, and serde_json would build
/// intermediate strings.
fn json_object(data: &BTreeMap<String, SecretValue>) -> String {
    // At most 6 bytes per input byte (`\u00XX`), plus quotes, colon and comma per entry.
    let bound = 2 + data
        .iter()
        .map(|(k, v)| 6 * (k.len() + v.expose().len()) + 6)
        .sum::<usize>();
    let mut out = String::with_capacity(bound);
    out.push('{');
    for (i, (key, value)) in data.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, key);
        out.push(':');
        push_json_string(&mut out, value.expose());
    }
    out.push('}');
    debug_assert!(out.len() <= bound, "the buffer never reallocated");
    out
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[(c as usize) >> 4]));
                out.push(char::from(HEX[(c as usize) & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_whole_secret_is_json_that_parses_back_to_its_values() {
        let data: BTreeMap<String, SecretValue> = [
            ("password", "p\"a\\s\ns\u{1}w\u{7f}ö🔑"),
            ("username", "v-app-1"),
            ("empty", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), SecretValue::new(v.to_owned())))
        .collect();
        let text = json_object(&data);
        let parsed: BTreeMap<String, String> = serde_json::from_str(&text).expect("valid JSON");
        for (k, v) in &data {
            assert_eq!(parsed[k], v.expose(), "{k}");
        }
        assert_eq!(json_object(&BTreeMap::new()), "{}");
    }

    /// A binding `b` with the one secret `secret` (JSON of a `spec.secrets[]` entry).
    pub(crate) fn plan_with(secret: serde_json::Value) -> (BindingPlan, SecretItem) {
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
        let whole: serde_json::Value =
            serde_json::from_str(select(&b, &item, &data).expect("all").expose()).expect("JSON");
        assert_eq!(whole["username"], "v-app-1");
        let (b, item) = binding(Some("token"));
        let err = select(&b, &item, &data).expect_err("no such key");
        assert!(err.to_string().contains("has no key \"token\""), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
