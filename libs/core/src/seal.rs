//! Secrets at rest: the dispatcher's profile secrets (`dispatcher.secrets_key`) and the PBX
//! sources' signing and API secrets (`sources.secrets_key`) are stored sealed (AES-256-GCM, a
//! fresh random nonce per seal, the nonce written before the ciphertext), so that a database dump
//! or a replica's backup does not hand out every CRM's and PBX's credentials. The key is SHA-256
//! of the configured text, so any text of at least 32 bytes is a valid setting.
//!
//! Input: plaintext. Output: `nonce || ciphertext || tag`. Opening fails on any change to the
//! sealed bytes, and on the wrong key. During a key rotation a sealer also opens what the
//! previous key sealed ([`Sealer::with_previous`]); it always seals with the current one.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the system's random number generator failed")]
    Random,
    #[error("the sealed value is damaged or was sealed with another dispatcher.secrets_key")]
    Open,
    #[error("cannot build the sealing key")]
    Key,
}

/// Seals with one key, and opens with it or the previous one. Never shown by `Debug`.
pub struct Sealer {
    key: LessSafeKey,
    previous: Option<LessSafeKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    pub fn new(secret: &str) -> Result<Self, SealError> {
        Ok(Self { key: key(secret)?, previous: None, random: SystemRandom::new() })
    }

    /// A sealer that also opens what `previous` sealed (an empty `previous`: none), while the
    /// stored secrets are sealed again with the current key.
    pub fn with_previous(secret: &str, previous: &str) -> Result<Self, SealError> {
        let previous = if previous.is_empty() { None } else { Some(key(previous)?) };
        Ok(Self { previous, ..Self::new(secret)? })
    }

    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut sealed)
            .map_err(|_| SealError::Key)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        open_with(&self.key, sealed).or_else(|error| match &self.previous {
            Some(previous) => open_with(previous, sealed),
            None => Err(error),
        })
    }

    /// A random u32, for the retry schedule's jitter.
    pub fn random_u32(&self) -> u32 {
        let mut bytes = [0u8; 4];
        // A failing system RNG only loses the jitter.
        let _ = self.random.fill(&mut bytes);
        u32::from_le_bytes(bytes)
    }
}

fn key(secret: &str) -> Result<LessSafeKey, SealError> {
    let digest = Sha256::digest(secret.as_bytes());
    Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &digest).map_err(|_| SealError::Key)?))
}

fn open_with(key: &LessSafeKey, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN).ok_or(SealError::Open)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
    let mut buffer = ciphertext.to_vec();
    let plain = key.open_in_place(nonce, Aad::empty(), &mut buffer).map_err(|_| SealError::Open)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_the_same_key_only() {
        let sealer = Sealer::new("a-secrets-key-of-at-least-thirty-two-bytes").expect("key");
        let sealed = sealer.seal(b"whsec_abc").expect("seal");
        assert_ne!(&sealed[NONCE_LEN..], b"whsec_abc");
        assert_eq!(sealer.open(&sealed).expect("open"), b"whsec_abc");
        assert_ne!(sealer.seal(b"whsec_abc").expect("seal"), sealed, "a fresh nonce each time");
        let other = Sealer::new("another-key-of-at-least-thirty-two-bytes!!").expect("key");
        assert!(other.open(&sealed).is_err());
        let mut damaged = sealed.clone();
        if let Some(last) = damaged.last_mut() {
            *last ^= 1;
        }
        assert!(sealer.open(&damaged).is_err());
        assert!(sealer.open(b"short").is_err());
    }

    #[test]
    fn during_a_rotation_the_previous_key_still_opens_and_the_new_one_seals() {
        let (old, new) =
            ("the-old-key-of-at-least-thirty-two-bytes", "the-new-key-of-at-least-thirty-two-bytes");
        let sealed_before = Sealer::new(old).expect("key").seal(b"salt").expect("seal");
        let rotating = Sealer::with_previous(new, old).expect("keys");
        assert_eq!(rotating.open(&sealed_before).expect("the previous key opens"), b"salt");
        let sealed_now = rotating.seal(b"salt").expect("seal");
        assert!(Sealer::new(old).expect("key").open(&sealed_now).is_err(), "sealed with the new key");
        assert_eq!(Sealer::new(new).expect("key").open(&sealed_now).expect("open"), b"salt");
        assert!(Sealer::with_previous(new, "").expect("key").open(&sealed_before).is_err(), "once unset");
    }
}
