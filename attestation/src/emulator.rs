//! Test-only SEV-SNP report emulation: reports laid out as the firmware writes them, signed with a
//! test VCEK key. Behind the `emulator` feature, which no production binary enables; such a report
//! verifies only where a test trusts the test chain (`Roots::only`).

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};

use crate::snp::REPORT_LEN;

/// A report under construction (field offsets from AMD's SEV-SNP ABI, table "ATTESTATION_REPORT").
#[derive(Debug, Clone)]
pub struct SnpReportBuilder {
    bytes: Vec<u8>,
}

impl SnpReportBuilder {
    /// A version-3 Milan report: VMPL 0, debug off, TCB bootloader 3, tee 0, snp 8, microcode 209
    /// (the test chain's VCEKs), signed by the VCEK.
    pub fn milan(chip_id: [u8; 64]) -> Self {
        let mut b = Self {
            bytes: vec![0; REPORT_LEN],
        };
        b.put(0x00, &3u32.to_le_bytes());
        b.put(0x34, &1u32.to_le_bytes());
        b.put(0x188, &[0x19, 0x01, 0x01]);
        // Guest policy: ABI 0.0, SMT allowed (bit 16), the reserved bit 17 that must be one.
        b.put(0x08, &((1u64 << 16) | (1 << 17)).to_le_bytes());
        for offset in [0x38, 0x180, 0x1e0, 0x1f0] {
            b.put(offset, &milan_tcb(3, 0, 8, 209));
        }
        b.put(0x1a0, &chip_id);
        b
    }

    fn put(&mut self, offset: usize, value: &[u8]) {
        self.bytes[offset..offset + value.len()].copy_from_slice(value);
    }

    pub fn version(mut self, version: u32) -> Self {
        self.put(0x00, &version.to_le_bytes());
        self
    }

    pub fn signature_algorithm(mut self, algorithm: u32) -> Self {
        self.put(0x34, &algorithm.to_le_bytes());
        self
    }

    pub fn report_data(mut self, data: [u8; 64]) -> Self {
        self.put(0x50, &data);
        self
    }

    pub fn measurement(mut self, measurement: [u8; 48]) -> Self {
        self.put(0x90, &measurement);
        self
    }

    pub fn host_data(mut self, host_data: [u8; 32]) -> Self {
        self.put(0xc0, &host_data);
        self
    }

    pub fn vmpl(mut self, vmpl: u32) -> Self {
        self.put(0x30, &vmpl.to_le_bytes());
        self
    }

    fn policy_bit(mut self, bit: u32, on: bool) -> Self {
        let mut policy = u64::from_le_bytes(self.bytes[0x08..0x10].try_into().expect("8 bytes"));
        policy = if on {
            policy | (1 << bit)
        } else {
            policy & !(1 << bit)
        };
        self.put(0x08, &policy.to_le_bytes());
        self
    }

    /// Guest policy bit 19.
    pub fn debug(self, on: bool) -> Self {
        self.policy_bit(19, on)
    }

    /// Guest policy bit 18.
    pub fn migrate_ma(self, on: bool) -> Self {
        self.policy_bit(18, on)
    }

    /// The reported TCB (what the VCEK must be for); the other TCB fields are left alone.
    pub fn reported_tcb(mut self, bootloader: u8, tee: u8, snp: u8, microcode: u8) -> Self {
        self.put(0x180, &milan_tcb(bootloader, tee, snp, microcode));
        self
    }

    /// key_info's signing_key field (0 VCEK, 1 VLEK, 7 none).
    pub fn signing_key(mut self, key: u32) -> Self {
        self.put(0x48, &(key << 2).to_le_bytes());
        self
    }

    /// Signs with the VCEK's PKCS#8 private key (ECDSA P-384, SHA-384) and returns the report.
    pub fn sign(mut self, vcek_pkcs8: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, vcek_pkcs8, &rng)
            .expect("a P-384 PKCS#8 key");
        let signature = key.sign(&rng, &self.bytes[..0x2a0]).expect("signing");
        let (r, s) = signature.as_ref().split_at(48);
        let mut r_le: Vec<u8> = r.to_vec();
        r_le.reverse();
        let mut s_le: Vec<u8> = s.to_vec();
        s_le.reverse();
        self.put(0x2a0, &r_le);
        self.put(0x2a0 + 72, &s_le);
        self.bytes
    }
}

/// A Milan TCB_VERSION: bootloader, tee, four reserved bytes, snp, microcode.
fn milan_tcb(bootloader: u8, tee: u8, snp: u8, microcode: u8) -> [u8; 8] {
    [bootloader, tee, 0, 0, 0, 0, snp, microcode]
}

/// What a CoCo attestation-agent answers for an SEV-SNP `report` with `certs` as its certificate
/// chain (the shape [`crate::aa`] documents), for the test-only agent emulator.
pub fn attestation_agent_answer(
    report: &[u8],
    certs: &[(crate::snp::cert_table::Entry, &[u8])],
) -> String {
    use crate::snp::cert_table::Entry;
    use sev::firmware::guest::AttestationReport;
    use sev::firmware::host::{CertTableEntry, CertType};
    use sev::parser::ByteParser as _;
    let report = AttestationReport::from_bytes(report).expect("an emulated report parses");
    let chain: Vec<CertTableEntry> = certs
        .iter()
        .map(|(entry, data)| CertTableEntry {
            cert_type: match entry {
                Entry::Ark => CertType::ARK,
                Entry::Ask => CertType::ASK,
                Entry::Vcek => CertType::VCEK,
                Entry::Vlek => CertType::VLEK,
            },
            data: data.to_vec(),
        })
        .collect();
    serde_json::json!({
        "attestation_report": report,
        "cert_chain": (!chain.is_empty()).then_some(chain),
    })
    .to_string()
}
