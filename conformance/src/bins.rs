//! Phantom's own binaries as the workspace build left them (`cargo test --workspace` and
//! `make test` build every binary of the workspace before running tests).

use std::path::PathBuf;

use crate::{Error, Result};

/// The path of the workspace binary `name` next to the running test's profile directory.
pub fn built(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(Error::io("locating the running test"))?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
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

/// `phantom-proxy` or `phantom-exec` from the static release build (`make static`), if built.
pub fn static_built(name: &str) -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(STATIC_TARGET).join("release").join(name);
    path.is_file().then_some(path)
}
