//! The collection protocol against an in-memory model of configfs-tsm's semantics (mkdir makes the
//! attribute files, a write to `inblob` bumps `generation`, reading `outblob` produces the report).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{Error as IoError, ErrorKind};
use std::path::{Path, PathBuf};

use super::*;

#[derive(Default)]
struct Configfs {
    files: RefCell<BTreeMap<PathBuf, Vec<u8>>>,
    dirs: RefCell<Vec<PathBuf>>,
    generation: Cell<u64>,
    provider: &'static str,
    /// Simulates another writer of `inblob` while `outblob` is read.
    concurrent_writer: bool,
    fail_outblob: bool,
}

impl Fs for &Configfs {
    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        let mut dirs = self.dirs.borrow_mut();
        if dirs.iter().any(|d| d == path) {
            return Err(IoError::from(ErrorKind::AlreadyExists));
        }
        dirs.push(path.to_owned());
        Ok(())
    }
    fn write(&self, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        assert!(
            path.ends_with("inblob"),
            "only inblob is written: {}",
            path.display()
        );
        assert_eq!(contents.len(), 64);
        self.generation.set(self.generation.get() + 1);
        self.files
            .borrow_mut()
            .insert(path.to_owned(), contents.to_vec());
        Ok(())
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let name = path.file_name().unwrap().to_str().unwrap();
        let inblob = path.with_file_name("inblob");
        match name {
            "generation" => Ok(self.generation.get().to_string().into_bytes()),
            "provider" => Ok(format!("{}\n", self.provider).into_bytes()),
            "auxblob" => Ok(b"certificate table".to_vec()),
            "outblob" if self.fail_outblob => Err(IoError::from(ErrorKind::ConnectionRefused)),
            "outblob" => {
                let data = self
                    .files
                    .borrow()
                    .get(&inblob)
                    .cloned()
                    .unwrap_or_default();
                if self.concurrent_writer {
                    self.generation.set(self.generation.get() + 1);
                }
                Ok([b"report:".as_slice(), &data].concat())
            }
            _ => Err(IoError::from(ErrorKind::NotFound)),
        }
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        self.dirs.borrow_mut().retain(|d| d != path);
        Ok(())
    }
}

#[test]
fn collects_the_report_for_the_given_report_data_and_removes_the_entry() {
    let fs = Configfs {
        provider: "sev_guest",
        ..Configfs::default()
    };
    let evidence = Collector::with_fs("/tsm", &fs)
        .collect("phantom-1", &[7; 64])
        .unwrap();
    assert_eq!(evidence.provider, Provider::SevGuest);
    assert_eq!(evidence.outblob, [b"report:".as_slice(), &[7; 64]].concat());
    assert_eq!(
        evidence.auxblob.as_deref(),
        Some(b"certificate table".as_slice())
    );
    assert!(fs.dirs.borrow().is_empty(), "the entry is removed");
}

#[test]
fn a_concurrent_writer_discards_the_report() {
    let fs = Configfs {
        provider: "tdx_guest",
        concurrent_writer: true,
        ..Configfs::default()
    };
    let err = Collector::with_fs("/tsm", &fs)
        .collect("phantom-1", &[7; 64])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TsmRace {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        fs.dirs.borrow().is_empty(),
        "the entry is removed after a race too"
    );
}

#[test]
fn a_failing_tee_is_reported_with_the_path_and_the_entry_removed() {
    let fs = Configfs {
        provider: "sev_guest",
        fail_outblob: true,
        ..Configfs::default()
    };
    let err = Collector::with_fs("/tsm", &fs)
        .collect("phantom-1", &[7; 64])
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("configfs-tsm /tsm/report/phantom-1/outblob"),
        "{err}"
    );
    assert!(fs.dirs.borrow().is_empty());
}

#[test]
fn an_unknown_provider_is_refused() {
    let fs = Configfs {
        provider: "arm_cca_guest",
        ..Configfs::default()
    };
    let err = Collector::with_fs("/tsm", &fs)
        .collect("phantom-1", &[7; 64])
        .unwrap_err();
    assert!(err.to_string().contains("arm_cca_guest"), "{err}");
}

#[test]
fn a_missing_configfs_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let err = Collector::new(dir.path().join("tsm"))
        .collect("phantom-1", &[0; 64])
        .unwrap_err();
    assert!(matches!(err, Error::Tsm { .. }), "{err}");
    assert!(err.to_string().contains("tsm/report/phantom-1"), "{err}");
}
