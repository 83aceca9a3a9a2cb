//! Secret values sealed at rest: AES-256-GCM with a key kept in the data directory
//! (`secret.key`, the owner's alone), each value bound to the Secret it belongs to; and the
//! keyed digest of referenced values that tells when a revision's configuration changed.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;

use crate::ControlError;

/// The key file: 32 bytes of AES key, then 32 bytes of HMAC key.
const KEY_FILE: &str = "secret.key";
const KEY_BYTES: usize = 64;

pub struct Sealer {
    aead: LessSafeKey,
    digest: hmac::Key,
}

fn crypto_error(what: &str) -> ControlError {
    ControlError::Io(std::io::Error::other(format!("{what} failed")))
}

impl Sealer {
    /// Reads `DATA/secret.key`, or creates it (mode 0600) with fresh random bytes.
    pub fn open_or_create(data_dir: &Path) -> Result<Sealer, ControlError> {
        let path = data_dir.join(KEY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; KEY_BYTES];
                SystemRandom::new().fill(&mut bytes).map_err(|_| crypto_error("generating the secret key"))?;
                use std::os::unix::fs::OpenOptionsExt;
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                bytes
            }
            Err(e) => return Err(e.into()),
        };
        if bytes.len() != KEY_BYTES {
            return Err(ControlError::Io(std::io::Error::other(format!(
                "{} holds {} bytes, not {KEY_BYTES}: it is not a serval secret key",
                path.display(),
                bytes.len()
            ))));
        }
        let aead = UnboundKey::new(&AES_256_GCM, &bytes[..32]).map_err(|_| crypto_error("loading the secret key"))?;
        Ok(Sealer { aead: LessSafeKey::new(aead), digest: hmac::Key::new(hmac::HMAC_SHA256, &bytes[32..]) })
    }

    /// `base64(nonce ‖ ciphertext ‖ tag)`; `owner` (e.g. `ns/name`) must be given again to open it.
    pub fn seal(&self, owner: &str, plaintext: &[u8]) -> Result<String, ControlError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| crypto_error("generating a nonce"))?;
        let mut sealed = plaintext.to_vec();
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(owner.as_bytes()), &mut sealed)
            .map_err(|_| crypto_error("sealing a secret"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    pub fn open(&self, owner: &str, sealed: &str) -> Result<Vec<u8>, ControlError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(sealed).map_err(|_| crypto_error("decoding"))?;
        if bytes.len() < NONCE_LEN {
            return Err(crypto_error("opening a sealed secret"));
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| crypto_error("opening a sealed secret"))?;
        let mut rest = rest.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut rest)
            .map_err(|_| crypto_error("opening a sealed secret (wrong key or damaged data)"))?;
        Ok(plain.to_vec())
    }

    /// A key for `purpose` derived from the server's (the whole HMAC-SHA256 of the purpose
    /// under the digest key): other secrets of the server without another key file.
    pub fn derived_key(&self, purpose: &str) -> Vec<u8> {
        hmac::sign(&self.digest, purpose.as_bytes()).as_ref().to_vec()
    }

    /// A keyed digest (HMAC-SHA256, 16 hex digits): equal inputs give equal digests, and
    /// the digest tells nothing about low-entropy values.
    pub fn digest(&self, data: &[u8]) -> String {
        hmac::sign(&self.digest, data).as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_owner_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = Sealer::open_or_create(dir.path()).expect("create");
        let sealed = sealer.seal("default/db", b"s3cret").expect("seal");
        assert!(!sealed.contains("s3cret"));
        assert_ne!(sealed, sealer.seal("default/db", b"s3cret").expect("seal"), "fresh nonce each time");
        assert_eq!(sealer.open("default/db", &sealed).expect("open"), b"s3cret");
        assert!(sealer.open("default/other", &sealed).is_err(), "bound to its owner");
        let again = Sealer::open_or_create(dir.path()).expect("reopen");
        assert_eq!(again.open("default/db", &sealed).expect("open with the stored key"), b"s3cret");
        assert_eq!(again.digest(b"x"), sealer.digest(b"x"));
        assert_ne!(sealer.digest(b"x"), sealer.digest(b"y"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).expect("key file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
