//! The key admission seals its decision records with (see `phantom-seal`): read from the file
//! the controller writes into the serving certificate's Secret (`decision.key`), re-read when it
//! changes, and the sealing of one answer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use phantom_crds::wellknown::SEAL_ANNOTATION;
use phantom_seal::{Key, Purpose};

use crate::metrics::Metrics;
use crate::tls::modified;
use crate::{Error, Result};

/// The seal key read from a file and re-read when the file changes.
#[derive(Debug)]
pub struct ReloadingSealKey {
    /// `None` for a key held in memory only.
    path: Option<PathBuf>,
    current: RwLock<Arc<Key>>,
    stamp: Mutex<Option<SystemTime>>,
}

fn read(path: &Path) -> Result<Key> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        Error::SealKeyFile {
            path: path.display().to_string(),
            source,
        }
    })?);
    Ok(Key::decode(
        &text,
        &format!("file {} (--decision-key)", path.display()),
    )?)
}

impl ReloadingSealKey {
    /// Reads the key; fails when the file is missing or is not a key.
    pub fn load(path: &Path) -> Result<Arc<Self>> {
        let stamp = modified(path);
        let key = read(path)?;
        Ok(Arc::new(Self {
            path: Some(path.to_owned()),
            current: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// A key held in memory only (unit tests and in-process harnesses that have no file).
    pub fn fixed(key: Key) -> Arc<Self> {
        Arc::new(Self {
            path: None,
            current: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(None),
        })
    }

    /// The key in use.
    pub fn current(&self) -> Arc<Key> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the file if its modification time changed; `Ok(true)` when a new key is in use.
    /// On error the previous key stays.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let stamp = modified(path);
        let mut seen = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == stamp {
            return Ok(false);
        }
        let key = read(path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *seen = stamp;
        Ok(true)
    }

    /// Checks the file every `interval` until the task is dropped.
    pub fn watch(
        self: Arc<Self>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        let what = match &self.path {
            Some(path) => format!("decision-seal key {}", path.display()),
            None => "decision-seal key (in memory)".to_owned(),
        };
        crate::tls::watch_file(
            interval,
            what,
            metrics.seal_key_reloads.clone(),
            move || self.reload_if_changed(),
        )
    }
}

/// How one answer's decision record is sealed.
#[derive(Debug, Clone)]
pub struct Sealing {
    pub key: Arc<Key>,
    /// The request's namespace (a pod being created may not carry it yet).
    pub namespace: String,
    pub purpose: Purpose,
    /// Unix seconds.
    pub now: i64,
}

impl Sealing {
    /// Sealing for a request in `namespace` now.
    pub fn now(key: Arc<Key>, namespace: &str, dry_run: bool) -> Self {
        Self {
            key,
            namespace: namespace.to_owned(),
            purpose: if dry_run {
                Purpose::DryRun
            } else {
                Purpose::Stored
            },
            now: k8s_openapi::jiff::Timestamp::now().as_second(),
        }
    }

    /// Writes the seal over `out`'s decision record (already written) into `out`.
    pub fn seal(&self, out: &mut Pod) -> Result<()> {
        let seal = phantom_seal::seal(&self.key, out, &self.namespace, self.purpose, self.now)?;
        out.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(SEAL_ANNOTATION.to_owned(), seal);
        Ok(())
    }
}
