//! The webhook's CA and serving certificate: generated with rcgen, kept in two Secrets in the
//! controller's namespace, rotated when a third of their lifetime is left.
//!
//! The CA key only ever signs admission's serving certificate, so it is not a customer secret:
//! whoever reads it can impersonate the webhook to the API server (and so change what gets
//! injected), but no secret value passes through admission. It lives in its own Secret that only
//! the controller's ServiceAccount may read; admission mounts the serving Secret, which holds the
//! serving pair and the CA certificate, never the CA key.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// A PEM certificate and its PEM key (wiped on drop, never printed).
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn cert_error(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::certificate(what, e)
}

fn window(now: i64, validity: Duration) -> Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| Error::certificate("validity", e))
    };
    // Backdated a little (clocks of the API server and the controller's node differ), by at most
    // a tenth of the validity so that short-lived certificates are not born due.
    let validity_secs = i64::try_from(validity.as_secs()).unwrap_or(i64::MAX / 2);
    Ok((
        at(now - (validity_secs / 10).min(300))?,
        at(now + validity_secs)?,
    ))
}

/// A new self-signed CA valid for `validity` from `now` (unix seconds).
pub fn new_authority(now: i64, validity: Duration) -> Result<Pair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error("CA"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("phantom-webhook-ca-{now}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.not_before, params.not_after) = window(now, validity)?;
    let key = KeyPair::generate().map_err(cert_error("CA key"))?;
    let cert = params.self_signed(&key).map_err(cert_error("CA"))?;
    pair(cert.pem(), Zeroizing::new(key.serialize_pem()))
}

/// A serving certificate for `dns`/`ips` signed by `ca`, valid for `validity` from `now`.
pub fn issue_serving(
    ca: &Pair,
    dns: &[String],
    ips: &[IpAddr],
    now: i64,
    validity: Duration,
) -> Result<Pair> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(cert_error("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(cert_error("CA"))?;
    let mut params = CertificateParams::new(dns.to_vec()).map_err(cert_error("serving"))?;
    params.distinguished_name.push(
        DnType::CommonName,
        dns.first()
            .cloned()
            .unwrap_or_else(|| "phantom-admission".into()),
    );
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = window(now, validity)?;
    let key = KeyPair::generate().map_err(cert_error("serving key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(cert_error("serving"))?;
    pair(cert.pem(), Zeroizing::new(key.serialize_pem()))
}

/// A pair from PEM, with the validity read from the certificate.
pub fn pair(cert_pem: String, key_pem: Zeroizing<String>) -> Result<Pair> {
    let (not_before, not_after) = validity(&cert_pem)?;
    Ok(Pair {
        cert_pem,
        key_pem,
        not_before,
        not_after,
    })
}

/// `(notBefore, notAfter)` in unix seconds of the first certificate in `pem`.
pub fn validity(pem: &str) -> Result<(i64, i64)> {
    let what = "reading a certificate";
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::certificate(what, e))?;
    let cert = block
        .parse_x509()
        .map_err(|e| Error::certificate(what, e))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Whether a certificate valid from `not_before` to `not_after` should be replaced at `now`:
/// less than a third of its lifetime left (or already expired, or not yet valid).
pub fn due(not_before: i64, not_after: i64, now: i64) -> bool {
    let lifetime = (not_after - not_before).max(1);
    now >= not_after - lifetime / 3 || now < not_before
}

/// What the controller holds: the CA that signs, the previous CA while certificates it signed may
/// still be served, and the serving pair.
#[derive(Debug, Clone)]
pub struct Material {
    pub ca: Pair,
    pub previous_ca_pem: Option<String>,
    pub serving: Pair,
    /// The serving certificate's DNS names and IPs (a changed endpoint re-issues).
    pub subject: String,
    /// The key admission seals its decision records with, kept beside the serving pair (the
    /// Secret admission mounts). Made once and never rotated by time: a new key breaks the seal
    /// of every running pod. `None` only in material read from a Secret written before seals
    /// existed; [`renew`] makes one then.
    pub decision_key: Option<phantom_seal::Key>,
}

impl Material {
    /// The caBundle: the signing CA, then the previous one (the API server trusts both, so a
    /// replica still serving the old certificate keeps working through a CA rotation).
    pub fn bundle(&self) -> String {
        match &self.previous_ca_pem {
            Some(previous) => format!("{}{previous}", self.ca.cert_pem),
            None => self.ca.cert_pem.clone(),
        }
    }
}

/// What [`renew`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Renewal {
    pub ca_rotated: bool,
    pub serving_issued: bool,
    /// A decision-seal key was made (none was held or stored).
    pub decision_key_made: bool,
}

/// The subject string recorded with a serving certificate.
pub fn subject(dns: &[String], ips: &[IpAddr]) -> String {
    let mut all: Vec<String> = dns.to_vec();
    all.extend(ips.iter().map(ToString::to_string));
    all.join(",")
}

/// Brings `held` up to date at `now`: a new CA when there is none or it is due, a new serving
/// certificate when there is none, it is due, the CA changed, or the subject changed; a
/// decision-seal key when there is none.
pub fn renew(
    held: Option<Material>,
    dns: &[String],
    ips: &[IpAddr],
    now: i64,
    ca_validity: Duration,
    serving_validity: Duration,
) -> Result<(Material, Renewal)> {
    let wanted_subject = subject(dns, ips);
    let mut renewal = Renewal::default();
    let (ca, previous_ca_pem) = match &held {
        Some(m) if !due(m.ca.not_before, m.ca.not_after, now) => {
            // Drop the previous CA from the bundle once nothing it signed can still be valid.
            let previous = m.previous_ca_pem.clone().filter(|pem| {
                validity(pem).is_ok_and(|(_, not_after)| not_after > now)
                    && m.serving.not_after > now
            });
            (m.ca.clone(), previous)
        }
        Some(m) => {
            renewal.ca_rotated = true;
            (
                new_authority(now, ca_validity)?,
                Some(m.ca.cert_pem.clone()),
            )
        }
        None => {
            renewal.ca_rotated = true;
            (new_authority(now, ca_validity)?, None)
        }
    };
    let serving = match &held {
        Some(m)
            if !renewal.ca_rotated
                && m.subject == wanted_subject
                && !due(m.serving.not_before, m.serving.not_after, now) =>
        {
            m.serving.clone()
        }
        _ => {
            renewal.serving_issued = true;
            issue_serving(&ca, dns, ips, now, serving_validity)?
        }
    };
    let upgrading = held.is_some();
    let decision_key = match held.and_then(|m| m.decision_key) {
        Some(key) => key,
        None => {
            renewal.decision_key_made = true;
            // Material without a key was written by a release without seals: its admission
            // replicas keep admitting unsealed pods until the rollout replaces them.
            let grace = if upgrading {
                crate::gaps::UNSEALED_GRACE_SECONDS
            } else {
                0
            };
            phantom_seal::Key::generate(now + grace)?
        }
    };
    Ok((
        Material {
            ca,
            previous_ca_pem,
            serving,
            subject: wanted_subject,
            decision_key: Some(decision_key),
        },
        renewal,
    ))
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier as _;

    use super::*;

    const DAY: u64 = 24 * 3600;

    fn names() -> (Vec<String>, Vec<IpAddr>) {
        (vec!["localhost".into()], vec!["127.0.0.1".parse().unwrap()])
    }

    #[test]
    fn a_fresh_install_gets_a_ca_and_a_serving_certificate_it_signed() {
        let (dns, ips) = names();
        let now = 1_800_000_000;
        let (m, r) = renew(
            None,
            &dns,
            &ips,
            now,
            Duration::from_secs(365 * DAY),
            Duration::from_secs(30 * DAY),
        )
        .unwrap();
        assert!(r.ca_rotated && r.serving_issued);
        assert_eq!(m.ca.not_after, now + 365 * DAY as i64);
        assert_eq!(m.serving.not_after, now + 30 * DAY as i64);
        assert_eq!(m.bundle(), m.ca.cert_pem);
        assert!(format!("{m:?}").contains("<redacted>"));
        assert!(!format!("{m:?}").contains("PRIVATE KEY"));

        // The serving certificate verifies against the bundle (what the API server does).
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(m.bundle().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let leaf = rustls::pki_types::CertificateDer::from_pem_slice(m.serving.cert_pem.as_bytes())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let at =
            rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(now as u64 + DAY));
        verifier
            .verify_server_cert(&leaf, &[], &"127.0.0.1".try_into().unwrap(), &[], at)
            .expect("the serving certificate chains to the bundle");
    }

    #[test]
    fn material_stored_before_seals_existed_gets_a_decision_key_and_keeps_its_certificates() {
        let (dns, ips) = names();
        let now = 1_800_000_000;
        let validity = Duration::from_secs(300 * DAY);
        let (fresh, r) = renew(None, &dns, &ips, now, validity, validity).unwrap();
        assert!(r.decision_key_made);
        assert_eq!(
            fresh.decision_key.as_ref().map(|k| k.sealed_from()),
            Some(now)
        );
        let mut old = fresh.clone();
        old.decision_key = None;
        let (upgraded, r) = renew(Some(old), &dns, &ips, now + 60, validity, validity).unwrap();
        assert_eq!(
            r,
            Renewal {
                ca_rotated: false,
                serving_issued: false,
                decision_key_made: true,
            }
        );
        assert_eq!(upgraded.serving.cert_pem, fresh.serving.cert_pem);
        assert_eq!(
            upgraded.decision_key.as_ref().map(|k| k.sealed_from()),
            Some(now + 60 + crate::gaps::UNSEALED_GRACE_SECONDS),
            "an upgrade accepts unsealed records while admission rolls out"
        );
    }

    #[test]
    fn certificates_are_replaced_with_a_third_of_their_life_left_and_the_old_ca_stays_trusted() {
        let (dns, ips) = names();
        let now = 1_800_000_000;
        let ca_validity = Duration::from_secs(300 * DAY);
        let serving_validity = Duration::from_secs(30 * DAY);
        let (m, _) = renew(None, &dns, &ips, now, ca_validity, serving_validity).unwrap();

        let (same, r) = renew(
            Some(m.clone()),
            &dns,
            &ips,
            now + 10 * DAY as i64,
            ca_validity,
            serving_validity,
        )
        .unwrap();
        assert_eq!(r, Renewal::default());
        assert_eq!(same.serving.cert_pem, m.serving.cert_pem);

        let (reissued, r) = renew(
            Some(m.clone()),
            &dns,
            &ips,
            now + 21 * DAY as i64,
            ca_validity,
            serving_validity,
        )
        .unwrap();
        assert_eq!(
            r,
            Renewal {
                ca_rotated: false,
                serving_issued: true,
                decision_key_made: false,
            }
        );
        assert_eq!(reissued.ca.cert_pem, m.ca.cert_pem);

        let (moved, r) = renew(
            Some(m.clone()),
            &["admission.example".into()],
            &[],
            now + DAY as i64,
            ca_validity,
            serving_validity,
        )
        .unwrap();
        assert!(
            r.serving_issued && !r.ca_rotated,
            "a new endpoint gets a new certificate"
        );
        assert_eq!(moved.subject, "admission.example");

        let late = now + 201 * DAY as i64;
        let (rotated, r) = renew(
            Some(m.clone()),
            &dns,
            &ips,
            late,
            ca_validity,
            serving_validity,
        )
        .unwrap();
        assert!(r.ca_rotated && r.serving_issued && !r.decision_key_made);
        let key = |m: &Material| m.decision_key.as_ref().map(|k| k.encode());
        assert_eq!(
            key(&rotated),
            key(&m),
            "the decision-seal key outlives a CA rotation: a new one would break every running pod's seal"
        );
        assert_eq!(
            rotated.previous_ca_pem.as_deref(),
            Some(m.ca.cert_pem.as_str())
        );
        assert!(
            rotated.bundle().starts_with(&rotated.ca.cert_pem)
                && rotated.bundle().ends_with(&m.ca.cert_pem)
        );

        // Once the old CA has expired it leaves the bundle.
        let (after, _) = renew(
            Some(rotated),
            &dns,
            &ips,
            now + 301 * DAY as i64,
            ca_validity,
            serving_validity,
        )
        .unwrap();
        assert!(after.previous_ca_pem.is_none());
    }

    #[test]
    fn due_covers_expired_and_not_yet_valid() {
        assert!(!due(0, 300, 100));
        assert!(due(0, 300, 200));
        assert!(due(0, 300, 400));
        assert!(due(100, 400, 50));
    }
}
