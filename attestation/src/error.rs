use std::error::Error as StdError;

/// Why evidence could not be collected or verified. A policy refusal of evidence that verified
/// is a [`crate::Refusal`] instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The evidence's bytes are not what the format says.
    #[error("{what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// The report parser refused the bytes.
    #[error("SEV-SNP report cannot be parsed: {source}")]
    SnpParse {
        #[source]
        source: std::io::Error,
    },
    /// A certificate could not be parsed.
    #[cfg(feature = "verify")]
    #[error("{what} certificate cannot be parsed: {source}")]
    Certificate {
        what: String,
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    /// A PEM bundle holds something other than certificates.
    #[error("{what} is not a PEM certificate bundle: {reason}")]
    Pem { what: String, reason: String },
    /// The report says it is signed in a way this verifier does not accept.
    #[error(
        "SEV-SNP report version {version} is not accepted: versions 2 and later carry the fields key release checks"
    )]
    ReportVersion { version: u32 },
    /// Only ECDSA P-384 with SHA-384 is defined for SEV-SNP reports.
    #[error(
        "SEV-SNP report signature algorithm {algorithm} is not accepted (only 1, ECDSA P-384 with SHA-384)"
    )]
    SignatureAlgorithm { algorithm: u32 },
    /// The report's key_info says which key signed it; the certificate supplied is another kind.
    #[error(
        "SEV-SNP report is signed by its {expected} but the certificate supplied is a {supplied}; supply the {expected} of this chip"
    )]
    EndorsementKind {
        expected: &'static str,
        supplied: String,
    },
    /// The report is not signed by a key the AMD chain can vouch for.
    #[error(
        "SEV-SNP report's key_info says it is not signed (signing_key={0}); it cannot be verified"
    )]
    Unsigned(u32),
    /// No pinned root has an intermediate that issued the certificate.
    #[error(
        "{what} was issued by \"{issuer}\", which is no pinned AMD root's intermediate (pinned: {pinned}); supply its ASK/ASVK in the collateral bundle"
    )]
    UnknownIssuer {
        what: String,
        issuer: String,
        pinned: String,
    },
    /// A signature did not verify.
    #[error("{what}: signature does not verify")]
    BadSignature { what: String },
    /// A certificate is outside its validity window at verification time.
    #[error(
        "{what} is not valid at {now} (unix seconds): valid from {not_before} to {not_after}; supply current collateral"
    )]
    NotValidAt {
        what: String,
        now: i64,
        not_before: i64,
        not_after: i64,
    },
    /// A certificate uses an algorithm AMD's chain never uses.
    #[error("{what} uses {found}; AMD's chain uses {expected}")]
    Algorithm {
        what: String,
        found: String,
        expected: &'static str,
    },
    /// The endorsement key's certificate was made for another TCB than the report states.
    #[error(
        "VCEK/VLEK certificate is for {component} SVN {certificate} but the report's reported_tcb has {report}; supply the certificate for this TCB"
    )]
    TcbMismatch {
        component: &'static str,
        certificate: u8,
        report: u8,
    },
    /// The VCEK belongs to another chip.
    #[error("VCEK certificate's HW_ID is another chip's than the report's chip_id")]
    ChipMismatch,
    /// A required extension is missing from the endorsement key's certificate.
    #[error("VCEK/VLEK certificate lacks extension {oid} ({name})")]
    MissingExtension {
        oid: &'static str,
        name: &'static str,
    },
    /// The report's CPU generation and the chain that endorses it disagree.
    #[error(
        "SEV-SNP report comes from a {report} processor but its key is endorsed by the {chain} chain"
    )]
    ProductMismatch { report: String, chain: String },
    /// dcap-qvl refused the quote or its collateral, or the policy refused its claims.
    #[error("TDX quote does not verify: {source}")]
    Tdx {
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The quote is of a TEE other than TDX.
    #[error("quote is of TEE type {tee_type:#x}, not TDX (0x81)")]
    NotTdx { tee_type: u32 },
    /// The collateral bundle holds no certificate for the key that signed a report.
    #[error(
        "the collateral bundle has no {needed}; add it (AMD KDS serves VCEKs at https://kdsintf.amd.com/vcek/v1/<product>/<chip id>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..; VLEKs come from the cloud provider)"
    )]
    NoEndorsement { needed: String },
    /// The collateral bundle holds no TDX collateral for a quote's platform.
    #[error(
        "the collateral bundle has no TDX collateral for FMSPC {fmspc}; add a current QuoteCollateralV3 document for it (from Intel PCS or your PCCS)"
    )]
    NoTdxCollateral { fmspc: String },
    /// The collateral document is not what dcap-qvl expects.
    #[error("TDX collateral is malformed: {source}")]
    TdxCollateral {
        #[source]
        source: serde_json::Error,
    },
    /// configfs-tsm failed.
    #[error("configfs-tsm {path}: {source}")]
    Tsm {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Someone else wrote the report entry between our write and our read.
    #[error(
        "configfs-tsm entry {path} was written concurrently (generation {expected} expected, {found} found); retry"
    )]
    TsmRace {
        path: String,
        expected: u64,
        found: u64,
    },
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
