//! The AMD roots a report must chain to: per product line, the ARK (self-signed, pinned in the
//! binary) and the intermediates it signed (ASK for VCEKs, ASVK for VLEKs). An intermediate is
//! checked against its ARK once, when it is added; a verification only checks the VCEK/VLEK and
//! the report against the cached chain, and every certificate's validity at that moment.

use super::cert::{Cert, pem_certificates};
use crate::{Error, Result};

/// AMD's ARK and ASK of each product line, as virtee/sev ships them (AMD KDS `cert_chain`).
const PINNED: [(&str, &[u8], &[u8]); 3] = [
    (
        "milan",
        include_bytes!("../../roots/milan/ark.pem"),
        include_bytes!("../../roots/milan/ask.pem"),
    ),
    (
        "genoa",
        include_bytes!("../../roots/genoa/ark.pem"),
        include_bytes!("../../roots/genoa/ask.pem"),
    ),
    (
        "turin",
        include_bytes!("../../roots/turin/ark.pem"),
        include_bytes!("../../roots/turin/ask.pem"),
    ),
];

#[derive(Debug, Clone)]
pub(crate) struct Product {
    pub(crate) name: String,
    pub(crate) ark: Cert,
    pub(crate) intermediates: Vec<Cert>,
}

/// The trusted AMD chains.
#[derive(Debug, Clone)]
pub struct Roots {
    pub(crate) products: Vec<Product>,
}

impl Roots {
    /// AMD's pinned roots for Milan, Genoa and Turin, with their ASKs. ASVKs (for VLEK-signed
    /// reports) come from the operator's collateral through [`Roots::add_intermediates`].
    pub fn amd() -> Result<Self> {
        let mut roots = Self {
            products: Vec::new(),
        };
        for (name, ark, ask) in PINNED {
            roots.pin(name, ark)?;
            roots.add_intermediates(ask)?;
        }
        Ok(roots)
    }

    /// Only the root given: for tests, whose chains are trusted because the test configures them,
    /// never by a production binary.
    pub fn only(product: &str, ark_pem: &[u8]) -> Result<Self> {
        let mut roots = Self {
            products: Vec::new(),
        };
        roots.pin(product, ark_pem)?;
        Ok(roots)
    }

    /// Only the chain given (a PEM bundle: one self-issued ARK and its ASK/ASVK, in any order):
    /// for test chains and private labs, configured explicitly, never a production default.
    pub fn only_chain(product: &str, pem: &[u8]) -> Result<Self> {
        let what = format!("{product} chain");
        let (arks, intermediates): (Vec<_>, Vec<_>) = pem_certificates(&what, pem)?
            .into_iter()
            .map(|der| Cert::parse(&what, &der))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .partition(|cert| cert.issued_by(cert));
        let [ark] = arks.as_slice() else {
            return Err(Error::Pem {
                what,
                reason: format!(
                    "{} self-issued certificates where one ARK belongs",
                    arks.len()
                ),
            });
        };
        let mut roots = Self {
            products: Vec::new(),
        };
        roots.pin_cert(product, ark.clone())?;
        for cert in intermediates {
            roots.add_intermediate(cert)?;
        }
        Ok(roots)
    }

    fn pin(&mut self, product: &str, ark_pem: &[u8]) -> Result<()> {
        let what = format!("{product} ARK");
        let der = pem_certificates(&what, ark_pem)?;
        let [der] = der.as_slice() else {
            return Err(Error::Pem {
                what,
                reason: format!("{} certificates where one ARK belongs", der.len()),
            });
        };
        self.pin_cert(product, Cert::parse(&what, der)?)
    }

    fn pin_cert(&mut self, product: &str, ark: Cert) -> Result<()> {
        let what = format!("{product} ARK");
        if !ark.issued_by(&ark) {
            return Err(Error::Malformed {
                what: "ARK",
                reason: format!("{what} ({}) is not self-issued", ark.subject_cn),
            });
        }
        ark.check_signed_by(&what, &ark)?;
        self.products.push(Product {
            name: product.to_owned(),
            ark,
            intermediates: Vec::new(),
        });
        Ok(())
    }

    /// Adds the ASKs/ASVKs of a PEM bundle (AMD's `cert_chain` files also hold the ARK, which is
    /// skipped when it equals the pinned one). Each must be signed by a pinned ARK; anything else
    /// is refused rather than ignored, so a wrong bundle is noticed when it is loaded.
    pub fn add_intermediates(&mut self, pem: &[u8]) -> Result<()> {
        for der in pem_certificates("intermediate bundle", pem)? {
            self.add_intermediate(Cert::parse("intermediate", &der)?)?;
        }
        Ok(())
    }

    fn add_intermediate(&mut self, cert: Cert) -> Result<()> {
        let self_pinned = self
            .products
            .iter()
            .map(|p| p.ark.subject_cn.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if self.products.iter().any(|p| p.ark.der == cert.der) {
            return Ok(());
        }
        let product = self
            .products
            .iter_mut()
            .find(|p| cert.issued_by(&p.ark))
            .ok_or_else(|| Error::UnknownIssuer {
                what: format!("intermediate {}", cert.subject_cn),
                issuer: cert.issuer_cn.clone(),
                pinned: self_pinned,
            })?;
        cert.check_signed_by(&format!("{} intermediate", product.name), &product.ark)?;
        if !product.intermediates.iter().any(|c| c.der == cert.der) {
            product.intermediates.push(cert);
        }
        Ok(())
    }

    /// The product line and intermediate that issued `cert`.
    pub(crate) fn issuer_of(&self, what: &str, cert: &Cert) -> Result<(&Product, &Cert)> {
        self.products
            .iter()
            .find_map(|p| {
                p.intermediates
                    .iter()
                    .find(|i| cert.issued_by(i))
                    .map(|i| (p, i))
            })
            .ok_or_else(|| Error::UnknownIssuer {
                what: what.to_owned(),
                issuer: cert.issuer_cn.clone(),
                pinned: self.describe(),
            })
    }

    fn describe(&self) -> String {
        self.products
            .iter()
            .flat_map(|p| p.intermediates.iter().map(|i| i.subject_cn.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
