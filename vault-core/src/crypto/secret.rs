//! Secret-holding types: keys and passphrases that wipe themselves, never clone, never print.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox};

use crate::error::PassphraseFileError;

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

/// How much of a passphrase file is read: the first line must fit.
const PASSPHRASE_FILE_READ_LIMIT: u64 = 64 << 10;

impl Passphrase {
    /// Wraps a passphrase. The `String` is moved into a zeroizing box.
    pub fn new(passphrase: String) -> Self {
        Passphrase(secrecy::SecretString::from(passphrase))
    }

    /// Reads a passphrase from the first line of a file (without its line ending), the way a
    /// service gets it from a secrets mount: read as bytes wiped on drop, at most 64 KiB (a
    /// passphrase is at most 4 KiB, and `/dev/zero` or a huge file must not exhaust memory).
    pub fn read_file(path: &std::path::Path) -> Result<Passphrase, PassphraseFileError> {
        use std::io::Read as _;
        let shown = || path.display().to_string();
        let mut bytes = zeroize::Zeroizing::new(Vec::new());
        std::fs::File::open(path)
            .and_then(|f| f.take(PASSPHRASE_FILE_READ_LIMIT).read_to_end(&mut bytes))
            .map_err(|e| PassphraseFileError::Io {
                path: shown(),
                kind: e.kind(),
            })?;
        let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line)
            .map_err(|_| PassphraseFileError::NotUtf8 { path: shown() })?;
        if line.is_empty() {
            return Err(PassphraseFileError::Empty { path: shown() });
        }
        Ok(Passphrase::new(line.to_owned()))
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

    #[test]
    fn passphrase_file_first_line_without_ending_and_typed_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "correct horse\r\nsecond line").unwrap();
        assert_eq!(
            Passphrase::read_file(&p).unwrap().expose(),
            b"correct horse"
        );
        std::fs::write(&p, "\nafter an empty first line").unwrap();
        assert!(matches!(
            Passphrase::read_file(&p),
            Err(PassphraseFileError::Empty { .. })
        ));
        std::fs::write(&p, b"\xff\xfe\n").unwrap();
        let e = Passphrase::read_file(&p).unwrap_err();
        assert!(matches!(e, PassphraseFileError::NotUtf8 { .. }), "{e:?}");
        let missing = Passphrase::read_file(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(
            missing,
            PassphraseFileError::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ));
        // A huge first line is cut at the read limit, never read to the end of memory.
        std::fs::write(&p, "a".repeat(100 << 10)).unwrap();
        assert_eq!(Passphrase::read_file(&p).unwrap().len(), 64 << 10);
    }

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
