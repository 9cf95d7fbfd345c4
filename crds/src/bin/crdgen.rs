//! Writes the CRD YAML generated from the Rust types into `crds/yaml/` and the chart's `crds/`
//! (or only into the given directory).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dirs = match std::env::args_os().nth(1) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![manifest.join("yaml"), manifest.join("../chart/crds")],
    };
    for dir in dirs {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("crdgen: cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        if let Err(code) = write_all(&dir) {
            return code;
        }
    }
    ExitCode::SUCCESS
}

fn write_all(dir: &std::path::Path) -> Result<(), ExitCode> {
    for file in phantom_crds::all_crds() {
        let path = dir.join(file.file_name);
        let written = phantom_crds::render_crd_yaml(&file.crd)
            .map_err(|e| e.to_string())
            .and_then(|yaml| std::fs::write(&path, yaml).map_err(|e| e.to_string()));
        match written {
            Ok(()) => println!("crdgen: wrote {}", path.display()),
            Err(e) => {
                eprintln!("crdgen: {}: {e}", path.display());
                return Err(ExitCode::FAILURE);
            }
        }
    }
    Ok(())
}
