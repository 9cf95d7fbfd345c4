//! OCI images without a registry: a root filesystem directory becomes a one-layer OCI layout,
//! tarred for `ctr images import`. Used for the pause image, the demo app (busybox-static) and,
//! later, Phantom's own static binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::process::run_checked;
use crate::{Error, Result};

/// An image to build: files copied into an empty root filesystem.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Repository, e.g. `phantom.local/pause`.
    pub name: String,
    pub tag: String,
    /// (source file on this machine, destination path inside the image, mode).
    pub files: Vec<(PathBuf, String, u32)>,
    /// Extra symlinks (link path inside the image, target).
    pub symlinks: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
}

impl ImageSpec {
    /// `name:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let bytes = std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
    Ok((hex::encode(Sha256::digest(&bytes)), bytes.len() as u64))
}

/// Tars the contents of `dir` into `out` with fixed owners and times, so equal inputs give
/// byte-identical tarballs (and image digests).
fn deterministic_tar(dir: &Path, out: &Path, what: &str) -> Result<()> {
    let mut tar = Command::new("tar");
    tar.args([
        "--sort=name",
        "--mtime=@0",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "-C",
    ])
    .arg(dir)
    .arg("-cf")
    .arg(out)
    .arg(".");
    run_checked(&mut tar, what).map(drop)
}

/// Builds `spec` as an OCI layout tarball at `out` (deterministic file times).
pub fn build_oci_tar(spec: &ImageSpec, work: &Path, out: &Path) -> Result<()> {
    let rootfs = work.join("rootfs");
    let layout = work.join("layout");
    let blobs = layout.join("blobs/sha256");
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(&blobs).map_err(Error::io("creating the OCI layout"))?;
    std::fs::create_dir_all(rootfs.join("tmp")).map_err(Error::io("creating the rootfs"))?;
    for (src, dest, mode) in &spec.files {
        let to = rootfs.join(dest.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("a file path has a parent"))
            .map_err(Error::io("creating a rootfs dir"))?;
        std::fs::copy(src, &to).map_err(Error::io(format!(
            "copying {} into the image",
            src.display()
        )))?;
        run_checked(
            Command::new("chmod").arg(format!("{mode:o}")).arg(&to),
            "chmod",
        )?;
    }
    for (link, target) in &spec.symlinks {
        let at = rootfs.join(link.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().expect("a link path has a parent"))
            .map_err(Error::io("creating a rootfs dir"))?;
        std::os::unix::fs::symlink(target, &at).map_err(Error::io(format!("linking {link}")))?;
    }
    let layer = work.join("layer.tar");
    deterministic_tar(&rootfs, &layer, "tar (layer)")?;
    let (layer_digest, layer_size) = sha256_file(&layer)?;
    std::fs::rename(&layer, blobs.join(&layer_digest))
        .map_err(Error::io("moving the layer blob"))?;

    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": spec.entrypoint, "Env": ["PATH=/bin:/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    })
    .to_string();
    let config_digest = hex::encode(Sha256::digest(config.as_bytes()));
    std::fs::write(blobs.join(&config_digest), &config)
        .map_err(Error::io("writing the config blob"))?;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer_size}],
    })
    .to_string();
    let manifest_digest = hex::encode(Sha256::digest(manifest.as_bytes()));
    std::fs::write(blobs.join(&manifest_digest), &manifest)
        .map_err(Error::io("writing the manifest blob"))?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"),
                       "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": spec.tag}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string())
        .map_err(Error::io("writing index.json"))?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(Error::io("writing oci-layout"))?;
    deterministic_tar(&layout, out, "tar (layout)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_valid_deterministic_oci_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hello");
        std::fs::write(&file, "#!/bin/sh\necho hi\n").expect("write");
        let spec = ImageSpec {
            name: "phantom.local/test".into(),
            tag: "1".into(),
            files: vec![(file, "/bin/hello".into(), 0o755)],
            symlinks: vec![("/bin/hi".into(), "hello".into())],
            entrypoint: vec!["/bin/hello".into()],
        };
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        build_oci_tar(&spec, &dir.path().join("w1"), &a).expect("build a");
        build_oci_tar(&spec, &dir.path().join("w2"), &b).expect("build b");
        assert_eq!(
            std::fs::read(&a).expect("a"),
            std::fs::read(&b).expect("b"),
            "builds are not deterministic"
        );

        let out = dir.path().join("x");
        std::fs::create_dir(&out).expect("mkdir");
        assert!(
            Command::new("tar")
                .arg("-xf")
                .arg(&a)
                .arg("-C")
                .arg(&out)
                .status()
                .expect("tar")
                .success()
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index"))
                .expect("json");
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "1"
        );
        // Every blob is stored under its own digest.
        for blob in std::fs::read_dir(out.join("blobs/sha256")).expect("blobs") {
            let path = blob.expect("blob").path();
            let (digest, _) = sha256_file(&path).expect("hash");
            assert_eq!(
                path.file_name().and_then(|n| n.to_str()),
                Some(digest.as_str())
            );
        }
        assert!(out.join("oci-layout").exists());
    }
}
