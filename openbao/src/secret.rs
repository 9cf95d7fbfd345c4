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

/// `value` as JSON in one exactly sized buffer that is wiped when the last reference to it is
/// dropped, with `value`'s own strings wiped too: the body of a request or an answer that carries
/// a secret. Exactly sized because a buffer that grows while it is written frees its earlier,
/// unwiped copies. What the HTTP stack copies out of it (hyper's write buffer when it flattens,
/// rustls' records) is out of reach; see the threat model.
pub fn wiping_json(mut value: serde_json::Value) -> bytes::Bytes {
    let buffer = exact_json(&value);
    wipe(&mut value);
    bytes::Bytes::from_owner(buffer)
}

fn exact_json(value: &serde_json::Value) -> Zeroizing<Vec<u8>> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // Serialising a `Value` cannot fail (its keys are strings), so both passes agree.
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    let mut buffer = Zeroizing::new(Vec::with_capacity(count.0));
    let _ = serde_json::to_writer(&mut *buffer, value);
    buffer
}

/// `secret` as an HTTP header value (marked sensitive: kept out of HPACK tables and `Debug`)
/// over bytes wiped when the last reference drops; `None` when it is not a valid header value.
pub fn wiping_header(secret: &SecretValue) -> Option<reqwest::header::HeaderValue> {
    let bytes = bytes::Bytes::from_owner(Zeroizing::new(secret.expose().as_bytes().to_vec()));
    let mut value = reqwest::header::HeaderValue::from_maybe_shared(bytes).ok()?;
    value.set_sensitive(true);
    Some(value)
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
    fn wiping_json_is_written_once_into_an_exact_buffer_and_wipes_its_source() {
        let value = serde_json::json!({"env": {"DB_PASSWORD": "hunter2 \"quoted\" é"}, "n": 1});
        let expected = value.to_string();
        let exact = exact_json(&value);
        assert_eq!(exact.capacity(), exact.len(), "never reallocated");
        let bytes = wiping_json(value);
        assert_eq!(bytes, expected.as_bytes());
        let header = wiping_header(&SecretValue::new("s.token".into())).expect("a header value");
        assert!(header.is_sensitive());
        assert_eq!(header.as_bytes(), b"s.token");
        assert!(format!("{header:?}").contains("Sensitive"), "{header:?}");
        assert!(wiping_header(&SecretValue::new("bad\nvalue".into())).is_none());
    }

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
