//! The development provider: a secret `<mount>/<path>` is the JSON object in
//! `<root>/<mount>/<path>.json` (`{"password": "…"}`), its version a counter that moves when the
//! file's content changes. For laptops and demos without OpenBao.
//!
//! **Not secure.** Values sit in plain files on whatever disk `root` is on, no identity is
//! checked, nothing is revoked, and key-release conditions are the only gate. `phantom-proxy`
//! says so in its log at startup; never run it in a cluster that holds real secrets.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use phantom_crds::{BindingPlan, Engine, SecretItem};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{SecretProvider, select};
use crate::socket::Delivered;
use crate::{Error, Result};
use phantom_openbao::secret::{values_of, wipe};

/// Reads secrets from JSON files under a directory.
#[derive(Debug)]
pub struct FileProvider {
    root: PathBuf,
    /// Per secret name: digest of the content last read and the version it was given.
    seen: BTreeMap<String, ([u8; 32], u64)>,
}

impl FileProvider {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            seen: BTreeMap::new(),
        }
    }

    /// `<root>/<mount>/<path>.json`, refusing paths that would leave `root`.
    fn file_of(&self, binding: &BindingPlan, item: &SecretItem) -> Result<PathBuf> {
        let relative = Path::new(&item.mount).join(format!("{}.json", item.path));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::Delivery(format!(
                "SecretBinding {}: secret {} names {}/{}, which leaves the file provider's directory; use plain relative names",
                binding.name, item.name, item.mount, item.path
            )));
        }
        Ok(self.root.join(relative))
    }
}

impl SecretProvider for FileProvider {
    async fn read(
        &mut self,
        binding: &BindingPlan,
        item: &SecretItem,
        held: Option<&Delivered>,
    ) -> Result<Delivered> {
        if item.engine == Engine::Dynamic {
            return Err(Error::Delivery(format!(
                "SecretBinding {}: secret {} uses a dynamic engine; the file provider only serves static JSON files",
                binding.name, item.name
            )));
        }
        let path = self.file_of(binding, item)?;
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| {
            Error::Delivery(format!(
                "SecretBinding {}: secret {}: reading {}: {e}; create it as a JSON object of keys to values",
                binding.name,
                item.name,
                path.display()
            ))
        })?);
        let digest: [u8; 32] = Sha256::digest(&*bytes).into();
        let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Delivery(format!(
                "SecretBinding {}: secret {}: {} is not JSON ({}); it must be an object of keys to values",
                binding.name,
                item.name,
                path.display(),
                json_error_kind(&e)
            ))
        })?;
        let data = match parsed {
            Value::Object(map) => values_of(map),
            mut other => {
                wipe(&mut other);
                return Err(Error::Delivery(format!(
                    "SecretBinding {}: secret {}: {} must hold a JSON object of keys to values",
                    binding.name,
                    item.name,
                    path.display()
                )));
            }
        };
        let version = match (self.seen.get(&item.name), held) {
            (Some((seen, version)), Some(_)) if *seen == digest => *version,
            (Some((_, version)), _) => version + 1,
            (None, _) => 1,
        };
        self.seen.insert(item.name.clone(), (digest, version));
        Ok(Delivered {
            value: select(binding, item, &data)?,
            version,
            lease: None,
        })
    }

    async fn reset(&mut self) {}

    async fn revoke(&mut self) {}
}

/// What kind of JSON error (serde's message could quote the content; the category cannot).
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(path: &str) -> (BindingPlan, SecretItem) {
        crate::provider::tests::plan_with(serde_json::json!({"name": "db", "path": path,
            "key": "password", "delivery": [{"kind": "socket"}]}))
    }

    #[tokio::test]
    async fn versions_move_when_the_file_changes() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("secret/shop")).expect("dirs");
        let file = dir.path().join("secret/shop/db.json");
        std::fs::write(&file, r#"{"password": "first"}"#).expect("write");
        let mut provider = FileProvider::new(dir.path());
        let (b, item) = binding("shop/db");
        let one = provider.read(&b, &item, None).await.expect("read");
        assert_eq!((one.value.expose(), one.version), ("first", 1));
        let same = provider.read(&b, &item, Some(&one)).await.expect("again");
        assert_eq!(same.version, 1, "unchanged content keeps its version");
        std::fs::write(&file, r#"{"password": "second"}"#).expect("rotate");
        let two = provider
            .read(&b, &item, Some(&same))
            .await
            .expect("rotated");
        assert_eq!((two.value.expose(), two.version), ("second", 2));

        std::fs::write(&file, r#"{"password": "third""#).expect("break");
        let err = provider
            .read(&b, &item, Some(&two))
            .await
            .expect_err("broken");
        assert!(err.to_string().contains("is not JSON (truncated)"), "{err}");
        assert!(!err.to_string().contains("third"), "{err}");

        let (b, item) = binding("../../etc/passwd");
        let err = provider.read(&b, &item, None).await.expect_err("escape");
        assert!(
            err.to_string()
                .contains("leaves the file provider's directory"),
            "{err}"
        );
    }
}
