//! Secret-holding types: keys and passphrases that wipe themselves, never clone, never print.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox};

/// Length in bytes of every symmetric key in kluis (AES-256, HMAC-SHA256 keys, KEKs, DEKs).
pub const KEY_LEN: usize = 32;

/// A 256-bit secret key.
///
/// Lives in a zeroizing heap box (`secrecy::SecretBox`), is not `Clone`, not `Serialize`, and its
/// `Debug` prints `[REDACTED]`. Only this crate can read the bytes.
pub struct SecretKey(SecretBox<[u8; KEY_LEN]>);

impl SecretKey {
    /// Fresh random key from the operating system's CSPRNG.
    pub(crate) fn generate() -> Result<Self, crate::error::RngError> {
        let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
        crate::crypto::fill_random(secrecy::ExposeSecretMut::expose_secret_mut(&mut key))?;
        Ok(SecretKey(key))
    }

    /// Builds a key by letting `fill` write the bytes straight into the zeroizing box.
    pub(crate) fn init_with(fill: impl FnOnce(&mut [u8; KEY_LEN])) -> Self {
        SecretKey(SecretBox::init_with_mut(fill))
    }

    /// Builds a key from a slice of exactly [`KEY_LEN`] bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        Some(Self::init_with(|k| k.copy_from_slice(bytes)))
    }

    /// The raw key bytes, for the crypto layer only.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// A passphrase. Zeroized on drop, never printed, never cloned.
pub struct Passphrase(secrecy::SecretString);

impl Passphrase {
    /// Wraps a passphrase. The `String` is moved into a zeroizing box.
    pub fn new(passphrase: String) -> Self {
        Passphrase(secrecy::SecretString::from(passphrase))
    }

    pub(crate) fn expose(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }

    /// Length in bytes (for validation messages; never the content).
    pub fn len(&self) -> usize {
        self.0.expose_secret().len()
    }

    /// True when the passphrase is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Passphrase {
    fn from(s: String) -> Self {
        Passphrase::new(s)
    }
}

impl From<&str> for Passphrase {
    fn from(s: &str) -> Self {
        Passphrase::new(s.to_owned())
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_material() {
        let key = SecretKey::init_with(|k| k.fill(0xAB));
        let shown = format!("{key:?}");
        assert_eq!(shown, "SecretKey([REDACTED])");
        assert!(!shown.to_lowercase().contains("ab"));
        let p = Passphrase::from("correct horse battery staple");
        assert!(!format!("{p:?}").contains("horse"));
    }
}
