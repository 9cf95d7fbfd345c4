//! SEV-SNP's certificate table (configfs-tsm `auxblob`, GHCB extended guest request): entries of
//! a 16-byte GUID, a 4-byte offset and a 4-byte length (little-endian), ended by an all-zero entry;
//! offsets count from the table's start. The host fills it, so it is untrusted: a certificate taken
//! from it still has to chain to a pinned AMD root.

use crate::{Error, Result};

/// Larger than any real table (four certificates of under 2 KiB each).
pub const MAX_TABLE_LEN: usize = 64 * 1024;
const ENTRY_LEN: usize = 24;

/// What a table entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Ark,
    Ask,
    Vcek,
    Vlek,
}

/// GUIDs as the table stores them (the EFI mixed-endian layout of the UUID strings AMD publishes).
const GUIDS: [(Entry, &str); 4] = [
    (Entry::Ark, "c0b406a4-a803-4952-9743-3fb6014cd0ae"),
    (Entry::Ask, "4ab7b379-bbac-4fe4-a02f-05aef327c782"),
    (Entry::Vcek, "63da758d-e664-4564-adc5-f4b93be8accd"),
    (Entry::Vlek, "a8074bc2-a25a-483e-aae6-39c045a0b8a1"),
];

fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let raw = hex::decode(hex).expect("constant GUID");
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    out[8..].copy_from_slice(&raw[8..]);
    out
}

/// The known entries of `table`, in table order; unknown GUIDs are skipped.
pub fn parse(table: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>> {
    let malformed = |reason: String| Error::Malformed {
        what: "SEV-SNP certificate table",
        reason,
    };
    if table.len() > MAX_TABLE_LEN {
        return Err(malformed(format!(
            "{} bytes, more than the {MAX_TABLE_LEN} any real table has",
            table.len()
        )));
    }
    let known: Vec<(Entry, [u8; 16])> = GUIDS
        .iter()
        .map(|(entry, text)| (*entry, guid_bytes(text)))
        .collect();
    let mut out = Vec::new();
    let mut index = 0;
    loop {
        let start = index * ENTRY_LEN;
        let header = table.get(start..start + ENTRY_LEN).ok_or_else(|| {
            malformed(format!(
                "entry {index} runs past the end; no terminating entry"
            ))
        })?;
        if header.iter().all(|b| *b == 0) {
            return Ok(out);
        }
        let guid: [u8; 16] = header[..16].try_into().expect("16 bytes");
        let offset = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
        let length = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes")) as usize;
        let body = offset
            .checked_add(length)
            .and_then(|end| table.get(offset..end))
            .ok_or_else(|| {
                malformed(format!(
                    "entry {index} points at bytes {offset}..{} of a {}-byte table",
                    offset.saturating_add(length),
                    table.len()
                ))
            })?;
        if let Some((entry, _)) = known.iter().find(|(_, g)| *g == guid) {
            out.push((*entry, body.to_vec()));
        }
        index += 1;
    }
}

/// Builds a table (from an attestation-agent's certificate chain, and for tests).
pub fn build(entries: &[(Entry, &[u8])]) -> Vec<u8> {
    let header_len = (entries.len() + 1) * ENTRY_LEN;
    let mut headers = Vec::with_capacity(header_len);
    let mut bodies = Vec::new();
    for (entry, body) in entries {
        let text = GUIDS
            .iter()
            .find(|(e, _)| e == entry)
            .map(|(_, t)| *t)
            .expect("known entry");
        headers.extend_from_slice(&guid_bytes(text));
        headers.extend_from_slice(&((header_len + bodies.len()) as u32).to_le_bytes());
        headers.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bodies.extend_from_slice(body);
    }
    headers.extend_from_slice(&[0; ENTRY_LEN]);
    headers.extend_from_slice(&bodies);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_finds_the_vcek() {
        let table = build(&[(Entry::Ask, b"ask"), (Entry::Vcek, b"vcek-der")]);
        let entries = parse(&table).unwrap();
        assert_eq!(
            entries,
            vec![
                (Entry::Ask, b"ask".to_vec()),
                (Entry::Vcek, b"vcek-der".to_vec())
            ]
        );
        // The VCEK GUID as the kernel's sev-guest headers spell its bytes.
        assert_eq!(
            hex::encode(&table[24..40]),
            "8d75da6364e66445adc5f4b93be8accd"
        );
    }

    #[test]
    fn garbage_tables_are_refused_clearly() {
        let good = build(&[(Entry::Vcek, b"vcek")]);
        let mut out_of_range = good.clone();
        out_of_range[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        for (what, table) in [
            ("empty", Vec::new()),
            ("no terminator", good[..24].to_vec()),
            ("offset past the end", out_of_range),
            ("random", vec![0xa5; 100]),
            ("oversized", vec![0; MAX_TABLE_LEN + 1]),
        ] {
            let err = parse(&table).expect_err(what);
            assert!(
                err.to_string()
                    .starts_with("SEV-SNP certificate table is malformed"),
                "{what}: {err}"
            );
        }
    }
}
