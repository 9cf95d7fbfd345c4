//! Evidence collection through Linux configfs-tsm (`Documentation/ABI/testing/configfs-tsm-report`).
//!
//! One report is one directory under `<root>/report/`: create it, write the 64 bytes of
//! report_data to `inblob`, read `generation`, read `outblob` (the report or quote; the kernel asks
//! the TEE when it is read), read `generation` again — a different value means another writer
//! changed `inblob` in between and the report may carry their data, so it is discarded — then
//! read `auxblob` (SEV-SNP's certificate table, when the host supplies one) and `provider`, and
//! remove the directory. The root is a parameter (`/sys/kernel/config/tsm` on a guest) so tests
//! can point the collector at a tree a test emulator serves.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where configfs-tsm is mounted on a TEE guest.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm";

/// Which TEE produced a report (`provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `sev_guest`: `outblob` is an SEV-SNP attestation report.
    SevGuest,
    /// `tdx_guest`: `outblob` is a TDX quote.
    TdxGuest,
}

/// What one collection produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub provider: Provider,
    /// The report (SEV-SNP) or quote (TDX).
    pub outblob: Vec<u8>,
    /// SEV-SNP's certificate table, when the host supplies one.
    pub auxblob: Option<Vec<u8>>,
}

/// The file operations collection needs; [`System`] is the real filesystem.
pub trait Fs {
    fn create_dir(&self, path: &Path) -> std::io::Result<()>;
    fn write(&self, path: &Path, contents: &[u8]) -> std::io::Result<()>;
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    fn remove_dir(&self, path: &Path) -> std::io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct System;

impl Fs for System {
    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }
    fn write(&self, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        std::fs::write(path, contents)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
}

/// Collects reports under one configfs-tsm root.
#[derive(Debug, Clone)]
pub struct Collector<F = System> {
    root: PathBuf,
    fs: F,
}

impl Collector<System> {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            fs: System,
        }
    }
}

impl<F: Fs> Collector<F> {
    pub fn with_fs(root: impl Into<PathBuf>, fs: F) -> Self {
        Self {
            root: root.into(),
            fs,
        }
    }

    /// Collects one report binding `report_data`, in an entry named `name` (unique per caller,
    /// e.g. `phantom-<pid>-<n>`: configfs refuses a second directory of the same name).
    pub fn collect(&self, name: &str, report_data: &[u8; 64]) -> Result<Evidence> {
        let entry = self.root.join("report").join(name);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| Error::Tsm { path, source }
        };
        self.fs.create_dir(&entry).map_err(io(&entry))?;
        let result = self.read_entry(&entry, report_data);
        // Remove the entry even when reading failed, so entries do not pile up in the kernel.
        let removed = self.fs.remove_dir(&entry).map_err(io(&entry));
        let evidence = result?;
        removed?;
        Ok(evidence)
    }

    fn read_entry(&self, entry: &Path, report_data: &[u8; 64]) -> Result<Evidence> {
        let file = |name: &str| entry.join(name);
        let io = |path: PathBuf| {
            move |source| Error::Tsm {
                path: path.display().to_string(),
                source,
            }
        };
        self.fs
            .write(&file("inblob"), report_data)
            .map_err(io(file("inblob")))?;
        let before = self.generation(&file("generation"))?;
        let outblob = self
            .fs
            .read(&file("outblob"))
            .map_err(io(file("outblob")))?;
        let after = self.generation(&file("generation"))?;
        if before != after {
            return Err(Error::TsmRace {
                path: entry.display().to_string(),
                expected: before,
                found: after,
            });
        }
        let auxblob = match self.fs.read(&file("auxblob")) {
            Ok(aux) if aux.is_empty() => None,
            Ok(aux) => Some(aux),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(file("auxblob"))(e)),
        };
        let provider = self
            .fs
            .read(&file("provider"))
            .map_err(io(file("provider")))?;
        let provider = match String::from_utf8_lossy(&provider).trim() {
            "sev_guest" => Provider::SevGuest,
            "tdx_guest" => Provider::TdxGuest,
            other => {
                return Err(Error::Malformed {
                    what: "configfs-tsm provider",
                    reason: format!("{other:?} is neither sev_guest nor tdx_guest"),
                });
            }
        };
        if outblob.is_empty() {
            return Err(Error::Malformed {
                what: "configfs-tsm outblob",
                reason: "empty: the TEE produced no report".into(),
            });
        }
        Ok(Evidence {
            provider,
            outblob,
            auxblob,
        })
    }

    fn generation(&self, path: &Path) -> Result<u64> {
        let raw = self.fs.read(path).map_err(|source| Error::Tsm {
            path: path.display().to_string(),
            source,
        })?;
        String::from_utf8_lossy(&raw)
            .trim()
            .parse()
            .map_err(|e| Error::Malformed {
                what: "configfs-tsm generation",
                reason: format!("{}: {e}", path.display()),
            })
    }
}

#[cfg(test)]
mod tests;
