//! Phantom's own binaries as the workspace build left them (`cargo test --workspace` and
//! `make test` build every binary of the workspace before running tests).

use std::path::PathBuf;

use crate::{Error, Result};

/// The path of the workspace binary `name` next to the running test's profile directory.
pub fn built(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(Error::io("locating the running test"))?;
    // target/<profile>/deps/<test> (a test) or target/<profile>/<bin> (the demo) →
    // target/<profile>/<name>
    let parent = exe.parent().map(PathBuf::from).unwrap_or_default();
    let profile_dir = if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().map(PathBuf::from).unwrap_or_default()
    } else {
        parent
    };
    let path = profile_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Io {
            context: format!(
                "{} is not built; run the suite through `make test` or `cargo test --workspace`, or build it first with `cargo build --bins`",
                path.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }
}

/// The target triple of Phantom's image binaries: static, so they run in an empty image.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// The cargo profile of the image binaries (`[profile.image]`: release with fat LTO).
pub const IMAGE_PROFILE: &str = "image";

/// The workspace's target directory (`CARGO_TARGET_DIR`, or `target/` beside the workspace).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A binary of the static image build (`make static` builds `phantom-proxy` and `phantom-exec`), if built.
pub fn static_built(name: &str) -> Option<PathBuf> {
    let path = target_dir()
        .join(STATIC_TARGET)
        .join(IMAGE_PROFILE)
        .join(name);
    path.is_file().then_some(path)
}

/// Runs `cargo build --release <args>` (benches measure release binaries as their own
/// processes); whether it succeeded.
pub fn build_release(args: &[&str]) -> bool {
    cargo_build(&["--release"], args)
}

/// Fails unless the static `phantom-proxy` and `phantom-exec` the node's Phantom images are
/// packed from are built (suites that inject real pods need them).
pub fn require_phantom_images() -> Result<()> {
    if static_built("phantom-proxy").is_some() && static_built("phantom-exec").is_some() {
        Ok(())
    } else {
        Err(Error::Setup(
            "Phantom's static binaries are not built: run `make static` (`make test` does)".into(),
        ))
    }
}

/// Builds the static image binaries of `package` as `make static` does; whether it succeeded.
pub fn build_static(package: &str) -> bool {
    cargo_build(
        &["--profile", IMAGE_PROFILE, "--target", STATIC_TARGET],
        &["-p", package, "--bins"],
    )
}

fn cargo_build(profile: &[&str], args: &[&str]) -> bool {
    std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("build")
        .args(profile)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`), 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A fresh copy of `binary` in `dir`, for memory measurements. The linker's output sits in the
/// page cache in large folios, and a process mapping it faults in whole folios: the same bytes
/// measured 9.7 MiB of RSS run from `target/` right after linking and 6.5 MiB from a copy (or
/// after dropping the caches), as a binary unpacked from an image starts. Benches run copies.
pub fn measured_copy(binary: &std::path::Path, dir: &std::path::Path) -> Result<PathBuf> {
    let name = binary.file_name().unwrap_or_default();
    let copy = dir.join(name);
    std::fs::copy(binary, &copy).map_err(Error::io(format!(
        "copying {} to {} for measuring",
        binary.display(),
        copy.display()
    )))?;
    Ok(copy)
}
