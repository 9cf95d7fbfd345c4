//! Evidence from the Confidential Containers attestation-agent, for Kata/CoCo pods: their
//! containers run inside a TEE guest whose configfs-tsm they cannot reach, and the agent serves
//! `GET <agent>/aa/evidence?runtime_data=<text>` on the guest's loopback instead.
//!
//! The sidecar only fetches the answer and forwards it untouched
//! ([`crate::protocol::EvidenceRequest::AttestationAgent`]); [`parse`] (broker side, feature
//! `verify`) turns it into the report or quote the verifiers take. `runtime_data` is the text form
//! of the binding ([`crate::report_data::Binding::runtime_data`]), because the agent passes the
//! string's bytes to the TEE as report_data.
//!
//! Answers, as guest-components' attesters write them:
//! - SEV-SNP: `{"attestation_report": <the report in the sev crate's serde form>,
//!   "cert_chain": [{"cert_type": "VCEK", "data": [..]}, ..] | null}`;
//! - TDX: `{"quote": "<base64>", "cc_eventlog": .., ..}`;
//! - agents that attest several TEEs answer a list of `[tee, evidence]` pairs (the evidence a JSON
//!   object or a string holding one); exactly one SEV-SNP or TDX entry is accepted.
//!
//! The report is re-encoded from its parsed form, so the signature verifies only if nothing was
//! lost on the way: a report whose reserved bytes are not zero, or a sev serde form of another
//! version, is refused as unverifiable rather than trusted.

/// Where the agent listens inside a CoCo pod.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8006";
/// The agent's evidence endpoint.
pub const EVIDENCE_PATH: &str = "/aa/evidence";
/// More than any answer holds (a report with AMD's whole RSA chain and a VCEK, as JSON number
/// arrays, is about 30 KiB) and less than the broker's default request limit (64 KiB); a longer
/// one is refused before it is parsed.
pub const MAX_ANSWER_LEN: usize = 48 * 1024;

/// The evidence URL for `runtime_data` under the agent at `base`. The text form is base64url, so
/// it needs no escaping.
pub fn evidence_url(base: &str, runtime_data: &str) -> String {
    format!(
        "{}{EVIDENCE_PATH}?runtime_data={runtime_data}",
        base.trim_end_matches('/')
    )
}

#[cfg(feature = "verify")]
pub use parse::parse;

#[cfg(feature = "verify")]
mod parse {
    use serde::Deserialize;
    use serde_json::Value;

    use super::MAX_ANSWER_LEN;
    use crate::snp::cert_table::{self, Entry};
    use crate::tsm::{Evidence, Provider};
    use crate::{Error, Result};

    fn malformed(reason: impl Into<String>) -> Error {
        Error::Malformed {
            what: "attestation-agent evidence",
            reason: reason.into(),
        }
    }

    #[derive(Deserialize)]
    struct SnpEvidence {
        attestation_report: sev::firmware::guest::AttestationReport,
        cert_chain: Option<Vec<sev::firmware::host::CertTableEntry>>,
    }

    #[derive(Deserialize)]
    struct TdxEvidence {
        quote: String,
    }

    /// The report or quote in an attestation-agent answer (see the module docs).
    pub fn parse(answer: &str) -> Result<Evidence> {
        if answer.len() > MAX_ANSWER_LEN {
            return Err(malformed(format!(
                "{} bytes, more than the {MAX_ANSWER_LEN} any answer needs",
                answer.len()
            )));
        }
        let value: Value =
            serde_json::from_str(answer).map_err(|e| malformed(format!("not JSON: {e}")))?;
        match value {
            Value::Array(entries) => from_list(entries),
            Value::Object(_) => from_object(value),
            other => Err(malformed(format!(
                "a JSON {}, not an object or a list of [tee, evidence] pairs",
                kind(&other)
            ))),
        }
    }

    fn kind(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "list",
            Value::Object(_) => "object",
        }
    }

    fn from_list(entries: Vec<Value>) -> Result<Evidence> {
        let mut chosen = Vec::new();
        for entry in entries {
            let Value::Array(mut pair) = entry else {
                return Err(malformed("a list entry is not a [tee, evidence] pair"));
            };
            if pair.len() != 2 {
                return Err(malformed(format!(
                    "a list entry has {} elements, not [tee, evidence]",
                    pair.len()
                )));
            }
            let evidence = pair.pop().expect("two elements");
            let tee = pair.pop().expect("two elements");
            let Some(tee) = tee.as_str() else {
                return Err(malformed("a list entry's tee is not a string"));
            };
            if matches!(tee, "snp" | "tdx") {
                chosen.push((tee.to_owned(), evidence));
            }
        }
        let (tee, evidence) = match chosen.len() {
            1 => chosen.pop().expect("one entry"),
            0 => return Err(malformed("no SEV-SNP (snp) or TDX (tdx) entry in the list")),
            n => {
                return Err(malformed(format!(
                    "{n} SEV-SNP/TDX entries in the list; one release is bound to one TEE"
                )));
            }
        };
        let evidence = match evidence {
            Value::String(text) => serde_json::from_str(&text)
                .map_err(|e| malformed(format!("the {tee} entry's evidence is not JSON: {e}")))?,
            other => other,
        };
        let parsed = from_object(evidence)?;
        let expected = if tee == "snp" {
            Provider::SevGuest
        } else {
            Provider::TdxGuest
        };
        if parsed.provider != expected {
            return Err(malformed(format!(
                "the {tee} entry holds evidence of another TEE"
            )));
        }
        Ok(parsed)
    }

    fn from_object(value: Value) -> Result<Evidence> {
        let Value::Object(fields) = &value else {
            return Err(malformed(format!(
                "the evidence is a JSON {}, not an object",
                kind(&value)
            )));
        };
        if fields.contains_key("attestation_report") {
            let evidence: SnpEvidence = serde_json::from_value(value)
                .map_err(|e| malformed(format!("the SEV-SNP evidence: {e}")))?;
            snp(evidence)
        } else if fields.contains_key("quote") {
            let evidence: TdxEvidence = serde_json::from_value(value)
                .map_err(|e| malformed(format!("the TDX evidence: {e}")))?;
            use base64::Engine as _;
            let quote = base64::engine::general_purpose::STANDARD
                .decode(evidence.quote.trim())
                .map_err(|e| malformed(format!("the TDX quote is not base64: {e}")))?;
            Ok(Evidence {
                provider: Provider::TdxGuest,
                outblob: quote,
                auxblob: None,
            })
        } else {
            Err(malformed(
                "neither an SEV-SNP attestation_report nor a TDX quote",
            ))
        }
    }

    fn snp(evidence: SnpEvidence) -> Result<Evidence> {
        use sev::parser::ByteParser as _;
        let report = evidence
            .attestation_report
            .to_bytes()
            .map_err(|e| malformed(format!("the SEV-SNP report cannot be encoded: {e}")))?;
        let auxblob = evidence.cert_chain.map(|chain| {
            use sev::firmware::host::CertType;
            let entries: Vec<(Entry, &[u8])> = chain
                .iter()
                .filter_map(|cert| {
                    let entry = match cert.cert_type {
                        CertType::ARK => Entry::Ark,
                        CertType::ASK => Entry::Ask,
                        CertType::VCEK => Entry::Vcek,
                        CertType::VLEK => Entry::Vlek,
                        // CRLs and vendor entries: nothing the verifier reads.
                        _ => return None,
                    };
                    Some((entry, cert.data.as_slice()))
                })
                .collect();
            cert_table::build(&entries)
        });
        Ok(Evidence {
            provider: Provider::SevGuest,
            outblob: report.to_vec(),
            auxblob,
        })
    }
}

#[cfg(all(test, feature = "emulator"))]
mod tests;
