//! The release envelope: a secret sealed to the sidecar's ephemeral X25519 key.
//!
//! The sidecar makes a fresh X25519 key pair per release ([`Recipient::generate`]) and binds its
//! public half into report_data; the broker answers with an [`Envelope`] only that private half
//! opens:
//!
//! ```text
//! shared = X25519(broker ephemeral private, sidecar public)
//! key    = HKDF-SHA256(salt = broker public || sidecar public,
//!                      ikm  = shared,
//!                      info = "phantom.dev/attestation/envelope/v1" || 0x00 || context)
//! sealed = AES-256-GCM(key, 12-byte random nonce, plaintext, aad = context)
//! ```
//!
//! `context` names what is released (binding, secret, challenge) so an envelope cannot be moved
//! to another release. The private key lives in ring's ephemeral key type, which cannot be copied
//! or exported and is consumed by the one agreement it is made for.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Sha256;
use zeroize::Zeroizing;

const INFO: &[u8] = b"phantom.dev/attestation/envelope/v1";

/// Why an envelope could not be made or opened. Never carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the system random number generator failed")]
    Random,
    #[error("the recipient's X25519 public key is not a valid key")]
    PublicKey,
    #[error(
        "the envelope does not open: it was sealed to another key or for another release, or it was altered"
    )]
    Open,
}

/// A secret sealed to one recipient key.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The broker's ephemeral X25519 public key.
    pub ephemeral_public: [u8; 32],
    pub nonce: [u8; 12],
    /// AES-256-GCM ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// The sidecar's side of one release.
pub struct Recipient {
    private: EphemeralPrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipient")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl Recipient {
    pub fn generate() -> Result<Self, EnvelopeError> {
        let rng = SystemRandom::new();
        let private =
            EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| EnvelopeError::Random)?;
        let public = private
            .compute_public_key()
            .map_err(|_| EnvelopeError::Random)?
            .as_ref()
            .try_into()
            .map_err(|_| EnvelopeError::PublicKey)?;
        Ok(Self { private, public })
    }

    /// The public key to bind into report_data and send to the broker.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Opens `envelope` made for `context`; consumes the key, so one key opens one release.
    pub fn open(
        self,
        envelope: &Envelope,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let peer = UnparsedPublicKey::new(&X25519, envelope.ephemeral_public);
        let public = self.public;
        agreement::agree_ephemeral(self.private, &peer, |shared| {
            let cipher = cipher(shared, &envelope.ephemeral_public, &public, context);
            cipher
                .decrypt(
                    Nonce::from_slice(&envelope.nonce),
                    Payload {
                        msg: &envelope.ciphertext,
                        aad: context,
                    },
                )
                .map(Zeroizing::new)
                .map_err(|_| EnvelopeError::Open)
        })
        .map_err(|_| EnvelopeError::PublicKey)?
    }
}

/// Seals `plaintext` to `recipient` (the public key the verified report_data binds) for `context`.
pub fn seal(
    recipient: &[u8; 32],
    context: &[u8],
    plaintext: &[u8],
) -> Result<Envelope, EnvelopeError> {
    let rng = SystemRandom::new();
    let private =
        EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| EnvelopeError::Random)?;
    let ephemeral_public: [u8; 32] = private
        .compute_public_key()
        .map_err(|_| EnvelopeError::Random)?
        .as_ref()
        .try_into()
        .map_err(|_| EnvelopeError::PublicKey)?;
    let mut nonce = [0u8; 12];
    rng.fill(&mut nonce).map_err(|_| EnvelopeError::Random)?;
    let peer = UnparsedPublicKey::new(&X25519, recipient);
    let ciphertext = agreement::agree_ephemeral(private, &peer, |shared| {
        cipher(shared, &ephemeral_public, recipient, context)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| EnvelopeError::Open)
    })
    .map_err(|_| EnvelopeError::PublicKey)??;
    Ok(Envelope {
        ephemeral_public,
        nonce,
        ciphertext,
    })
}

fn cipher(shared: &[u8], sender: &[u8; 32], recipient: &[u8; 32], context: &[u8]) -> Aes256Gcm {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(sender);
    salt[32..].copy_from_slice(recipient);
    let mut info = Vec::with_capacity(INFO.len() + 1 + context.len());
    info.extend_from_slice(INFO);
    info.push(0);
    info.extend_from_slice(context);
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(&info, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new_from_slice(key.as_ref()).expect("a 32-byte key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_it_and_only_for_its_context() {
        let recipient = Recipient::generate().unwrap();
        let envelope = seal(&recipient.public_key(), b"binding/db/password", b"s3cr3t").unwrap();
        assert_eq!(envelope.ciphertext.len(), 6 + 16);
        assert_eq!(
            &**recipient.open(&envelope, b"binding/db/password").unwrap(),
            b"s3cr3t"
        );

        let other = Recipient::generate().unwrap();
        let envelope = seal(&other.public_key(), b"ctx", b"s3cr3t").unwrap();
        assert_eq!(
            Recipient::generate().unwrap().open(&envelope, b"ctx"),
            Err(EnvelopeError::Open)
        );
        assert_eq!(
            other.open(&envelope, b"another ctx"),
            Err(EnvelopeError::Open)
        );
    }

    #[test]
    fn an_altered_envelope_does_not_open() {
        for alter in 0..3 {
            let recipient = Recipient::generate().unwrap();
            let mut envelope = seal(&recipient.public_key(), b"ctx", b"value").unwrap();
            match alter {
                0 => envelope.ciphertext[0] ^= 1,
                1 => envelope.nonce[0] ^= 1,
                _ => envelope.ephemeral_public[0] ^= 1,
            }
            assert!(
                recipient.open(&envelope, b"ctx").is_err(),
                "alteration {alter}"
            );
        }
    }

    #[test]
    fn debug_output_shows_no_key_or_ciphertext() {
        let recipient = Recipient::generate().unwrap();
        let envelope = seal(&recipient.public_key(), b"ctx", b"super-secret-value").unwrap();
        let text = format!("{envelope:?} {recipient:?}");
        assert!(!text.contains(&hex::encode(&envelope.ciphertext)), "{text}");
        assert!(text.contains("ciphertext_len: 34"), "{text}");
        let error = recipient.open(&envelope, b"wrong").unwrap_err();
        assert!(!error.to_string().contains("super-secret"));
    }
}
