//! Credentials that unseal a vault: a passphrase (Argon2id), a 32-byte key file, or both.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;

use secrecy::{ExposeSecret, SecretBox};

use crate::crypto;
use crate::crypto::labels;
use crate::crypto::secret::{Passphrase, SecretKey, KEY_LEN};
use crate::error::{KdfError, KeyFileError};

/// Longest accepted passphrase in bytes (a crafted huge input must not cost unbounded memory).
pub const MAX_PASSPHRASE_LEN: usize = 4096;

/// Argon2id cost parameters, stored in the key store header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// Floor for memory (OWASP's minimum for Argon2id, 19 MiB).
    pub const MIN_M_KIB: u32 = 19 * 1024;
    /// Floor for iterations.
    pub const MIN_T: u32 = 2;
    /// Ceiling for memory (4 GiB).
    pub const MAX_M_KIB: u32 = 4 * 1024 * 1024;
    /// Ceiling for iterations.
    pub const MAX_T: u32 = 64;
    /// Ceiling for lanes.
    pub const MAX_P: u32 = 64;

    /// Tiny parameters that make tests fast. **Insecure**: a vault made with them is refused unless
    /// the opener also passes [`crate::VaultOptions::danger_allow_weak_kdf`].
    pub const fn danger_insecure_for_tests() -> Self {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    /// Checks the floor (unless `allow_weak`) and the ceiling (always).
    pub fn check(&self, allow_weak: bool) -> Result<(), KdfError> {
        if self.p == 0 || self.t == 0 || self.m_kib < self.p.saturating_mul(8) {
            return Err(KdfError::Invalid {
                m_kib: self.m_kib,
                t: self.t,
                p: self.p,
            });
        }
        if self.m_kib > Self::MAX_M_KIB || self.t > Self::MAX_T || self.p > Self::MAX_P {
            return Err(KdfError::TooStrong {
                m_kib: self.m_kib,
                t: self.t,
                p: self.p,
            });
        }
        if !allow_weak && (self.m_kib < Self::MIN_M_KIB || self.t < Self::MIN_T) {
            return Err(KdfError::TooWeak {
                m_kib: self.m_kib,
                t: self.t,
                p: self.p,
                min_m_kib: Self::MIN_M_KIB,
                min_t: Self::MIN_T,
            });
        }
        Ok(())
    }
}

impl Default for KdfParams {
    /// m = 64 MiB, t = 3, p = 4.
    fn default() -> Self {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 4,
        }
    }
}

/// The secret a key file holds.
pub struct KeyFile(SecretBox<[u8; KEY_LEN]>);

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFile([REDACTED])")
    }
}

impl KeyFile {
    /// Creates a new random key file at `path` with mode 0600. Refuses to overwrite anything.
    pub fn generate(path: &Path) -> Result<KeyFile, KeyFileError> {
        let shown = path.display().to_string();
        let key = SecretKey::generate().map_err(|_| KeyFileError::Io {
            path: shown.clone(),
            kind: std::io::ErrorKind::Other,
        })?;
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: shown.clone(),
                }
            } else {
                KeyFileError::Io {
                    path: shown.clone(),
                    kind: e.kind(),
                }
            }
        })?;
        f.write_all(key.expose())
            .and_then(|_| f.sync_all())
            .map_err(|e| KeyFileError::Io {
                path: shown.clone(),
                kind: e.kind(),
            })?;
        if let Some(dir) = path.parent() {
            crate::storage::fsutil::sync_dir(dir).map_err(|e| KeyFileError::Io {
                path: shown.clone(),
                kind: e.kind(),
            })?;
        }
        Ok(KeyFile(SecretBox::init_with_mut(
            |k: &mut [u8; KEY_LEN]| k.copy_from_slice(key.expose()),
        )))
    }

    /// Reads a key file: exactly 32 bytes.
    pub fn read(path: &Path) -> Result<KeyFile, KeyFileError> {
        let shown = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| KeyFileError::Io {
            path: shown.clone(),
            kind: e.kind(),
        })?;
        let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
        f.take(KEY_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| KeyFileError::Io {
                path: shown.clone(),
                kind: e.kind(),
            })?;
        if buf.len() != KEY_LEN {
            return Err(KeyFileError::WrongLength { path: shown });
        }
        Ok(KeyFile(SecretBox::init_with_mut(
            |k: &mut [u8; KEY_LEN]| k.copy_from_slice(&buf),
        )))
    }

    /// A key file secret from raw bytes (for callers that keep the key elsewhere, e.g. an HSM export).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> KeyFile {
        KeyFile(SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| {
            k.copy_from_slice(bytes)
        }))
    }
}

/// What unseals a vault: a passphrase, a key file, or both (two-factor).
#[derive(Debug, Default)]
pub struct Credentials {
    passphrase: Option<Passphrase>,
    key_file: Option<KeyFile>,
}

/// Bit flags for which factors a key store needs (stored in its header).
pub(crate) const FACTOR_PASSPHRASE: u8 = 1;
pub(crate) const FACTOR_KEY_FILE: u8 = 2;

impl Credentials {
    /// A passphrase only.
    pub fn passphrase(p: impl Into<Passphrase>) -> Self {
        Credentials {
            passphrase: Some(p.into()),
            key_file: None,
        }
    }
    /// A key file only.
    pub fn key_file(k: KeyFile) -> Self {
        Credentials {
            passphrase: None,
            key_file: Some(k),
        }
    }
    /// Adds a key file to a passphrase (two-factor unseal).
    pub fn with_key_file(mut self, k: KeyFile) -> Self {
        self.key_file = Some(k);
        self
    }
    /// Adds a passphrase.
    pub fn with_passphrase(mut self, p: impl Into<Passphrase>) -> Self {
        self.passphrase = Some(p.into());
        self
    }

    pub(crate) fn factors(&self) -> u8 {
        (if self.passphrase.is_some() {
            FACTOR_PASSPHRASE
        } else {
            0
        }) | (if self.key_file.is_some() {
            FACTOR_KEY_FILE
        } else {
            0
        })
    }

    /// Checks what can be checked without running the KDF (passphrase length).
    pub(crate) fn check(&self) -> Result<(), KdfError> {
        match &self.passphrase {
            Some(p) if p.is_empty() || p.len() > MAX_PASSPHRASE_LEN => {
                Err(KdfError::PassphraseLength {
                    max: MAX_PASSPHRASE_LEN,
                })
            }
            _ => Ok(()),
        }
    }

    /// Derives the root key. Argon2id runs only when a passphrase is present.
    pub(crate) fn derive_root(
        &self,
        params: &KdfParams,
        salt: &[u8; 16],
    ) -> Result<SecretKey, KdfError> {
        let mut ikm = zeroize::Zeroizing::new(Vec::with_capacity(2 * KEY_LEN));
        if let Some(p) = &self.passphrase {
            if p.is_empty() || p.len() > MAX_PASSPHRASE_LEN {
                return Err(KdfError::PassphraseLength {
                    max: MAX_PASSPHRASE_LEN,
                });
            }
            let stretched = argon2id(p, params, salt)?;
            ikm.extend_from_slice(stretched.expose());
        }
        if let Some(k) = &self.key_file {
            ikm.extend_from_slice(k.0.expose_secret());
        }
        let label = match self.factors() {
            FACTOR_PASSPHRASE => labels::ROOT_PASSPHRASE,
            FACTOR_KEY_FILE => labels::ROOT_KEY_FILE,
            _ => labels::ROOT_BOTH,
        };
        Ok(crypto::hkdf(salt, &ikm, &[label]))
    }
}

pub(crate) fn factors_name(f: u8) -> &'static str {
    match f {
        FACTOR_PASSPHRASE => "a passphrase",
        FACTOR_KEY_FILE => "a key file",
        _ => "a passphrase and a key file",
    }
}

fn argon2id(p: &Passphrase, params: &KdfParams, salt: &[u8; 16]) -> Result<SecretKey, KdfError> {
    use argon2::{Algorithm, Argon2, Params, Version};
    let too_strong = || KdfError::TooStrong {
        m_kib: params.m_kib,
        t: params.t,
        p: params.p,
    };
    let ap =
        Params::new(params.m_kib, params.t, params.p, Some(KEY_LEN)).map_err(|_| too_strong())?;
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, ap);
    let mut failed = false;
    let key = SecretKey::init_with(|out| {
        failed = a.hash_password_into(p.expose(), salt, out).is_err();
    });
    if failed {
        return Err(too_strong());
    }
    Ok(key)
}
