//! Secret files on the pod's memory-backed volume: written to a temporary name created with the
//! final mode (never briefly world-readable), then renamed over the old file, so a reader sees the
//! old content or the new one, never a mix. Paths are relative to the volume and cannot leave it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result, SecretValue};

/// The file's path under `root`, refusing absolute paths, `..` and the sidecar's own `.phantom`
/// directory (where the socket lives).
pub fn resolve(root: &Path, relative: &str) -> Result<PathBuf> {
    let rel = Path::new(relative);
    let clean = !relative.is_empty()
        && rel.components().all(|c| matches!(c, Component::Normal(_)))
        && rel.components().next() != Some(Component::Normal(".phantom".as_ref()));
    if !clean {
        return Err(Error::Delivery(format!(
            "secret file path {relative:?} must be relative, without `..`, and outside `.phantom/`; fix the SecretBinding's delivery path"
        )));
    }
    Ok(root.join(rel))
}

/// Writes `value` to `root/relative` with `mode` (e.g. `0o400`) by atomic rename.
pub fn write_atomic(root: &Path, relative: &str, value: &SecretValue, mode: u32) -> Result<()> {
    let path = resolve(root, relative)?;
    let fail =
        |what: &str, e: std::io::Error| Error::Delivery(format!("{what} {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| fail("creating the directory of", e))?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret")
    ));
    // Left by a sidecar killed mid-write: it may hold part of an older value.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| fail("creating a temporary file for", e))?;
    // From here on a failure removes the temporary file: a write cut short (the volume full)
    // must not leave part of a secret behind.
    let temporary = Temporary(&tmp);
    file.write_all(value.expose().as_bytes())
        .map_err(|e| fail("writing", e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| fail("replacing", e))?;
    std::mem::forget(temporary);
    Ok(())
}

/// Removes the temporary file it names when dropped (forgotten once renamed into place).
struct Temporary<'a>(&'a Path);

impl Drop for Temporary<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Parses a SecretBinding file mode (`"0400"`, `"400"`), defaulting to 0400.
pub fn parse_mode(mode: Option<&str>) -> Result<u32> {
    match mode {
        None => Ok(0o400),
        Some(m) => u32::from_str_radix(m.trim_start_matches('0'), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| Error::Delivery(format!("file mode {m:?} is not octal like \"0400\""))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_written_with_their_mode_and_replaced_atomically() {
        let dir = tempfile::tempdir().expect("dir");
        write_atomic(
            dir.path(),
            "db/password",
            &SecretValue::new("v1".into()),
            0o400,
        )
        .expect("write");
        let path = dir.path().join("db/password");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "v1");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o400
        );
        let dir_mode = std::fs::metadata(dir.path().join("db"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        // A reader holding the old file keeps reading the old content; the path shows the new one.
        let old = std::fs::File::open(&path).expect("open");
        write_atomic(
            dir.path(),
            "db/password",
            &SecretValue::new("v2".into()),
            0o440,
        )
        .expect("rotate");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "v2");
        let mut held = String::new();
        std::io::Read::read_to_string(&mut &old, &mut held).expect("old");
        assert_eq!(held, "v1");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o440
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("db"))
            .expect("ls")
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_old_content() {
        let dir = tempfile::tempdir().expect("dir");
        write_atomic(
            dir.path(),
            "db/password",
            &SecretValue::new("v1".into()),
            0o400,
        )
        .expect("write");
        // The rename fails (a directory holds the place now); the value written so far goes.
        std::fs::remove_file(dir.path().join("db/password")).expect("rm");
        std::fs::create_dir_all(dir.path().join("db/password/occupied")).expect("mkdir");
        let err = write_atomic(
            dir.path(),
            "db/password",
            &SecretValue::new("v2".into()),
            0o400,
        )
        .expect_err("cannot replace a directory");
        assert!(err.to_string().contains("replacing"), "{err}");
        let names: Vec<String> = std::fs::read_dir(dir.path().join("db"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["password"], "no .password.tmp left behind");
        // A temporary file left by a sidecar killed mid-write is replaced, not appended to.
        std::fs::remove_dir_all(dir.path().join("db/password")).expect("rm");
        std::fs::write(dir.path().join("db/.password.tmp"), "v1-partial").expect("stale");
        write_atomic(
            dir.path(),
            "db/password",
            &SecretValue::new("v3".into()),
            0o400,
        )
        .expect("write");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("db/password")).expect("read"),
            "v3"
        );
        assert!(!dir.path().join("db/.password.tmp").exists());
    }

    #[test]
    fn paths_cannot_leave_the_volume_or_touch_the_socket_directory() {
        let root = Path::new("/phantom/secrets");
        assert_eq!(resolve(root, "a/b.txt").expect("ok"), root.join("a/b.txt"));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            ".phantom/proxy.sock",
            "./a",
        ] {
            assert!(resolve(root, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn modes_are_octal_strings() {
        assert_eq!(parse_mode(None).expect("default"), 0o400);
        assert_eq!(parse_mode(Some("0440")).expect("0440"), 0o440);
        assert_eq!(parse_mode(Some("600")).expect("600"), 0o600);
        assert!(parse_mode(Some("0999")).is_err());
    }
}
