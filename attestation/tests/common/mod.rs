//! What the suites over the synthetic chain (tests/data/synthetic) share.

use std::path::PathBuf;

use phantom_attestation::snp::{Roots, SnpVerifier};

/// 2027-01-01T00:00:00Z, inside the synthetic chain's validity.
pub const NOW: i64 = 1_798_761_600;

/// A file under tests/data.
pub fn data(path: &str) -> Vec<u8> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The chip ID the synthetic VCEK `vcek-<name>` was made for.
pub fn chip(name: &str) -> [u8; 64] {
    let bytes: Vec<u8> = format!("chip-{name}").bytes().cycle().take(64).collect();
    bytes.try_into().unwrap()
}

/// A verifier that trusts the synthetic chain only.
pub fn synthetic_verifier() -> SnpVerifier {
    let mut roots = Roots::only("milan", &data("synthetic/ark.pem")).expect("test ARK");
    roots
        .add_intermediates(&data("synthetic/ask.pem"))
        .expect("test ASK");
    SnpVerifier::new(roots)
}
