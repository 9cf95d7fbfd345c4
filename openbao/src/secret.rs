//! A secret value in memory: zeroized when dropped, and impossible to print by accident (its
//! `Debug` says how long it is, not what it is; there is no `Display`, no `Serialize`).

use zeroize::{Zeroize, Zeroizing};

/// A secret value. Read it with [`SecretValue::expose`], only where it is handed to the
/// application.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Takes ownership of `value`; it is zeroized when the last copy is dropped.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The plaintext, for delivery to the application only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> serde::Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

/// Zeroizes a JSON value's strings in place (OpenBao answers are parsed into `serde_json::Value`
/// before the secret data is moved into [`SecretValue`]s; this wipes what remains).
pub fn wipe(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe),
        serde_json::Value::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

/// The keys of a JSON object as [`SecretValue`]s (strings as they are, other values as JSON
/// text), wiping the parsed copies.
pub fn values_of(
    map: serde_json::Map<String, serde_json::Value>,
) -> std::collections::BTreeMap<String, SecretValue> {
    map.into_iter()
        .map(|(k, mut v)| {
            let text = match &v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            wipe(&mut v);
            (k, SecretValue::new(text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_value() {
        let secret = SecretValue::new("hunter2-correct-horse".into());
        let printed = format!("{secret:?} {:?}", vec![secret.clone()]);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("21 bytes"), "{printed}");
        assert_eq!(secret.expose(), "hunter2-correct-horse");
    }

    #[test]
    fn wipe_zeroizes_every_string() {
        let mut v = serde_json::json!({"data": {"password": "s3cret", "list": ["a1"]}});
        wipe(&mut v);
        let text = v.to_string();
        assert!(!text.contains("s3cret") && !text.contains("a1"), "{text}");
    }
}
