//! The AEAD, MAC and KDF layer: AES-256-GCM (ring), HMAC-SHA256, HKDF-SHA256.
//!
//! **Nonces never come from callers.** A `Sealer` draws 96 random bits from the operating system
//! once, when it is made (one per vault operation), and derives the nonce of its i-th seal by
//! XOR-ing `i` into the last four bytes. Nonces within one sealer are distinct by construction;
//! across sealers they collide only if two random 96-bit draws land within 2^32 of each other,
//! which at the usage limit of 2^32 seals per key stays far below NIST SP 800-38D's 2^-32 bound.
//! One OS draw per operation (≈0.5 µs) instead of one per field keeps the syscall off the per-field
//! path without a userspace RNG whose state a `fork()` could duplicate.
//!
//! **Field nonces.** A record write reserves one counter value `i` of its operation's sealer
//! ([`Sealer::record_nonces`]): the base `B ^ i` (at bytes 8..12) is stored once per group of the
//! record's envelope, and the field with id `f` (≥ 1) is sealed under that base with `u32_le(f)`
//! XOR-ed into bytes 4..8 ([`field_nonce`]). Every other seal of the sealer has zeros there, and no
//! two writes of one sealer share an `i`, so all nonces of one operation stay distinct; the
//! envelope stores 12 bytes per group instead of 12 per field.
//!
//! **Key schedules.** Keys are kept as raw bytes in zeroizing boxes ([`SecretKey`]); ring's expanded
//! AES key schedule (`AeadKey`) is built per operation (≈200 ns) and dropped at its end. ring does
//! not wipe that schedule, so it lives only for the duration of one operation.

pub mod labels;
pub mod secret;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use zeroize::Zeroizing;

use crate::crypto::secret::{SecretKey, KEY_LEN};
pub use crate::error::{IntegrityError, RngError};

/// Bytes of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext (nonce + tag).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Fills `out` from the operating system's CSPRNG.
pub(crate) fn fill_random(out: &mut [u8]) -> Result<(), RngError> {
    SystemRandom::new().fill(out).map_err(|_| RngError)
}

/// An AES-256-GCM key expanded for one operation. Built from a [`SecretKey`]; not stored anywhere.
pub(crate) struct AeadKey(LessSafeKey);

impl AeadKey {
    pub(crate) fn new(key: &SecretKey) -> Self {
        Self::from_bytes(key.expose())
    }

    fn from_bytes(key: &[u8; KEY_LEN]) -> Self {
        // AES_256_GCM takes exactly KEY_LEN (32) bytes, which the array type guarantees.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("AES-256 key is 32 bytes"); // invariant: [u8; KEY_LEN] is 32 bytes
        AeadKey(LessSafeKey::new(unbound))
    }

    /// Opens `nonce || ciphertext || tag` with `aad`; any failure is the one opaque [`IntegrityError`].
    pub(crate) fn open(
        &self,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(IntegrityError);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| IntegrityError)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
            .map_err(|_| IntegrityError)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens a field: `ct_and_tag` sealed under `nonce` (derived by [`field_nonce`]) and `aad`.
    pub(crate) fn open_field(
        &self,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        ct_and_tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        if ct_and_tag.len() < TAG_LEN {
            return Err(IntegrityError);
        }
        let mut buf = Zeroizing::new(ct_and_tag.to_vec());
        let len = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                buf.as_mut_slice(),
            )
            .map_err(|_| IntegrityError)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// `nonce || ciphertext || tag`; `None` only for plaintexts over ring's 2^36-byte limit, which
    /// kluis's value caps keep far away.
    fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }
}

/// Seals values for one operation with nonces it makes itself (see the module docs).
pub(crate) struct Sealer {
    base: [u8; NONCE_LEN],
    counter: u32,
}

/// A sealer ran out of nonces (2^32 seals in one operation). Never happens in practice; checked anyway.
#[derive(Debug, thiserror::Error)]
#[error("too many values sealed in one operation")]
pub struct SealerExhausted;

impl Sealer {
    /// Draws this operation's random nonce base from the OS.
    pub(crate) fn new() -> Result<Self, RngError> {
        let mut base = [0u8; NONCE_LEN];
        fill_random(&mut base)?;
        Ok(Sealer { base, counter: 0 })
    }

    fn next_nonce(&mut self) -> Result<[u8; NONCE_LEN], SealerExhausted> {
        let i = self.counter;
        self.counter = self.counter.checked_add(1).ok_or(SealerExhausted)?;
        let mut nonce = self.base;
        for (b, c) in nonce[NONCE_LEN - 4..].iter_mut().zip(i.to_le_bytes()) {
            *b ^= c;
        }
        Ok(nonce)
    }

    /// Seals `plaintext` under `key` and `aad`: returns `nonce || ciphertext || tag`.
    pub(crate) fn seal(
        &mut self,
        key: &AeadKey,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealerExhausted> {
        let nonce = self.next_nonce()?;
        key.seal_with_nonce(nonce, aad, plaintext)
            .ok_or(SealerExhausted)
    }
}

/// The nonce of field `field_id` in a group whose stored base is `base`: `u32_le(field_id)`
/// XOR-ed into bytes 4..8. Its own inverse: applied to a field's nonce it gives the base back.
pub(crate) fn field_nonce(base: &[u8; NONCE_LEN], field_id: u32) -> [u8; NONCE_LEN] {
    let mut nonce = *base;
    for (b, c) in nonce[4..8].iter_mut().zip(field_id.to_le_bytes()) {
        *b ^= c;
    }
    nonce
}

/// The nonces of one record write's fields (see the module docs): one reserved counter value of
/// the operation's sealer, and the field ids already sealed under it (each at most once).
pub(crate) struct RecordNonces {
    base: [u8; NONCE_LEN],
    used: Vec<u32>,
}

/// A field sealed by [`Sealer::seal_field`].
pub(crate) struct SealedParts {
    /// The field's nonce (stored as a group base, see [`field_nonce`]).
    pub(crate) nonce: [u8; NONCE_LEN],
    /// ciphertext ‖ tag.
    pub(crate) ct: Vec<u8>,
}

impl Sealer {
    /// Reserves the nonce base of one record write's fields.
    pub(crate) fn record_nonces(&mut self) -> Result<RecordNonces, SealerExhausted> {
        Ok(RecordNonces {
            base: self.next_nonce()?,
            used: Vec::new(),
        })
    }

    /// Seals field `field_id` of the record write `rec` under `key` and `aad`. Field id 0 (the
    /// nonce of the base itself) and a second seal of one id under one `rec` are refused: either
    /// would repeat a nonce.
    pub(crate) fn seal_field(
        key: &AeadKey,
        rec: &mut RecordNonces,
        field_id: u32,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<SealedParts, SealerExhausted> {
        if field_id == 0 || rec.used.contains(&field_id) {
            return Err(SealerExhausted);
        }
        rec.used.push(field_id);
        let nonce = field_nonce(&rec.base, field_id);
        let mut sealed = key
            .seal_with_nonce(nonce, aad, plaintext)
            .ok_or(SealerExhausted)?;
        Ok(SealedParts {
            nonce,
            ct: sealed.split_off(NONCE_LEN),
        })
    }
}

/// HMAC-SHA256 of `parts` (concatenated) under `key`.
pub(crate) fn hmac_sha256(key: &SecretKey, parts: &[&[u8]]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The shortest MAC tag kluis stores or accepts: 128 bits (HMAC-SHA-256-128, RFC 4868 §2.6).
pub(crate) const MIN_TAG_LEN: usize = 16;

/// HMAC-SHA256 of `parts` under `key`, truncated to its leftmost 128 bits (RFC 4868's
/// HMAC-SHA-256-128; RFC 2104 §5): the row MACs of the data directory.
pub(crate) fn hmac_sha256_128(key: &SecretKey, parts: &[&[u8]]) -> [u8; MIN_TAG_LEN] {
    let mut out = [0u8; MIN_TAG_LEN];
    out.copy_from_slice(&hmac_sha256(key, parts)[..MIN_TAG_LEN]);
    out
}

/// Constant-time check that `tag` is the HMAC-SHA256 of `parts` under `key`, or a prefix of it of at
/// least 16 bytes (truncated tags, as in the key-store check and the row MACs).
pub(crate) fn hmac_verify(key: &SecretKey, parts: &[&[u8]], tag: &[u8]) -> bool {
    tag_matches(&hmac_sha256(key, parts), tag)
}

/// Constant-time check that `tag` is `full` or a prefix of it of at least 16 bytes (a MAC the
/// caller computed itself, e.g. an audit chain value, against the stored tag).
pub(crate) fn tag_matches(full: &[u8; 32], tag: &[u8]) -> bool {
    if tag.len() < MIN_TAG_LEN || tag.len() > full.len() {
        return false;
    }
    // Fold the differences so the time taken does not depend on where the first mismatch is.
    full.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

/// HKDF-SHA256 (RFC 5869): extract with `salt` over `ikm`, expand with `info` (concatenated parts).
pub(crate) fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> SecretKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    SecretKey::init_with(|out| {
        // Expanding to 32 bytes is far below HKDF-SHA256's limit of 255 * 32 bytes, so neither step can fail.
        #[allow(clippy::expect_used)]
        prk.expand(info, Len32)
            .expect("32-byte HKDF output is within limits") // invariant: 32 <= 255 * 32
            .fill(out)
            .expect("32-byte HKDF output is within limits"); // invariant: out is exactly Len32
    })
}

/// HKDF-Expand only, from an existing uniformly random key (used for subkeys of KEKs and roots).
pub(crate) fn derive_subkey(key: &SecretKey, info: &[&[u8]]) -> SecretKey {
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, key.expose());
    SecretKey::init_with(|out| {
        // As in `hkdf`: 32 bytes are always within HKDF-SHA256's output limit.
        #[allow(clippy::expect_used)]
        prk.expand(info, Len32)
            .expect("32-byte HKDF output is within limits") // invariant: 32 <= 255 * 32
            .fill(out)
            .expect("32-byte HKDF output is within limits"); // invariant: out is exactly Len32
    })
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Known-answer-test access to the exact AEAD and MAC code paths kluis uses.
///
/// **Danger:** these functions take caller-chosen nonces and raw key bytes, which production code
/// must never do. They exist only so Wycheproof vectors can run through kluis's own layer, and are
/// compiled only with the `danger-known-answer-tests` feature.
#[cfg(feature = "danger-known-answer-tests")]
pub mod danger {
    use super::*;

    /// AES-256-GCM seal with a caller-chosen nonce, returning `ciphertext || tag`.
    pub fn aes256gcm_seal_with_fixed_nonce(
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Option<Vec<u8>> {
        let key = SecretKey::from_slice(key)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let sealed = AeadKey::new(&key).seal_with_nonce(nonce, aad, plaintext)?;
        Some(sealed[NONCE_LEN..].to_vec())
    }

    /// AES-256-GCM open of `ciphertext || tag` under a caller-supplied nonce.
    pub fn aes256gcm_open(
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        ct_and_tag: &[u8],
    ) -> Result<Vec<u8>, IntegrityError> {
        let key = SecretKey::from_slice(key).ok_or(IntegrityError)?;
        if nonce.len() != NONCE_LEN {
            return Err(IntegrityError);
        }
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(ct_and_tag);
        AeadKey::new(&key).open(aad, &sealed).map(|p| p.to_vec())
    }

    /// Seals each `(aad, plaintext)` in turn with one real `Sealer`, as one vault operation does
    /// (one OS-drawn nonce base, the i-th seal under nonce i), and returns each sealed field
    /// `nonce || ciphertext || tag` exactly as the vault stores it. Only the key is caller-chosen.
    /// `None` if the key is not 32 bytes or the OS RNG fails.
    pub fn aes256gcm_seal_fields(key: &[u8], fields: &[(&[u8], &[u8])]) -> Option<Vec<Vec<u8>>> {
        let key = AeadKey::new(&SecretKey::from_slice(key)?);
        let mut sealer = Sealer::new().ok()?;
        fields
            .iter()
            .map(|(aad, plaintext)| sealer.seal(&key, aad, plaintext).ok())
            .collect()
    }

    /// Opens a sealed field `nonce || ciphertext || tag` with the code the vault opens fields with.
    pub fn aes256gcm_open_field(
        key: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, IntegrityError> {
        let key = SecretKey::from_slice(key).ok_or(IntegrityError)?;
        AeadKey::new(&key).open(aad, sealed).map(|p| p.to_vec())
    }

    /// HMAC-SHA256 with the same code kluis uses for blind indexes and the audit chain.
    /// Keys of any length are accepted here (Wycheproof varies them); kluis itself uses 32-byte keys.
    pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
        if let Some(k) = SecretKey::from_slice(key) {
            return super::hmac_sha256(&k, &[msg]);
        }
        let k = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&k, msg).as_ref());
        out
    }
}

/// A MAC key of the vault for one caller-named domain ([`crate::admin::Admin::authenticator`]),
/// for tools that keep a file beside the vault and must notice when someone else wrote it (the
/// server's token list). Derived from the key store's meta root, so only a process that unsealed
/// the vault can make or check a tag, and it survives credential rotation. The key never leaves:
/// not `Clone`, `Debug` redacted, wiped on drop.
pub struct Authenticator(SecretKey);

impl Authenticator {
    pub(crate) fn derive(meta_root: &SecretKey, domain: &str) -> Self {
        Authenticator(derive_subkey(
            meta_root,
            &[labels::APP_MAC, b"/", domain.as_bytes()],
        ))
    }

    /// HMAC-SHA256 of `data` under this domain's key.
    pub fn tag(&self, data: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, &[data])
    }

    /// Whether `tag` is this domain's tag of `data` (constant time).
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        // Whole tags only: no truncated tag of a file the caller keeps is ever right.
        tag.len() == 32 && hmac_verify(&self.0, &[data], tag)
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let key = SecretKey::generate().unwrap();
        let k = AeadKey::new(&key);
        let mut s = Sealer::new().unwrap();
        let sealed = s.seal(&k, b"aad-1", b"hello").unwrap();
        assert_eq!(&*k.open(b"aad-1", &sealed).unwrap(), b"hello");
        assert_eq!(k.open(b"aad-2", &sealed), Err(IntegrityError));
        let other = AeadKey::new(&SecretKey::generate().unwrap());
        assert_eq!(other.open(b"aad-1", &sealed), Err(IntegrityError));
        assert_eq!(k.open(b"aad-1", &sealed[..10]), Err(IntegrityError));
    }

    #[test]
    fn nonces_within_a_sealer_are_distinct_and_differ_across_sealers() {
        let mut s = Sealer::new().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(s.next_nonce().unwrap()));
        }
        let mut t = Sealer::new().unwrap();
        assert!(!seen.contains(&t.next_nonce().unwrap()));
    }

    #[test]
    fn field_nonces_are_distinct_from_each_other_and_from_plain_seals() {
        let key = AeadKey::new(&SecretKey::generate().unwrap());
        let mut s = Sealer::new().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut rec = s.record_nonces().unwrap();
            for id in 1..=40u32 {
                let p = Sealer::seal_field(&key, &mut rec, id, b"aad", b"v").unwrap();
                assert!(seen.insert(p.nonce));
                assert_eq!(field_nonce(&field_nonce(&p.nonce, id), id), p.nonce);
                let opened = key.open_field(b"aad", &p.nonce, &p.ct).unwrap();
                assert_eq!(&*opened, b"v");
                assert!(key
                    .open_field(b"aad", &field_nonce(&p.nonce, 0x100), &p.ct)
                    .is_err());
            }
            assert!(
                Sealer::seal_field(&key, &mut rec, 7, b"aad", b"v").is_err(),
                "reused id"
            );
            assert!(
                Sealer::seal_field(&key, &mut rec, 0, b"aad", b"v").is_err(),
                "id 0"
            );
            assert!(
                seen.insert(s.next_nonce().unwrap()),
                "a plain seal after the fields"
            );
        }
    }

    #[test]
    fn hmac_verify_accepts_full_and_truncated_tags_only_when_right() {
        let key = SecretKey::generate().unwrap();
        let tag = hmac_sha256(&key, &[b"kluis", b"/v1"]);
        assert!(hmac_verify(&key, &[b"kluis/v1"], &tag));
        assert!(hmac_verify(&key, &[b"kluis/v1"], &tag[..16]));
        assert!(
            !hmac_verify(&key, &[b"kluis/v1"], &tag[..15]),
            "too short to count as a MAC"
        );
        assert!(!hmac_verify(&key, &[b"kluis/v2"], &tag[..16]));
        let mut bad = tag;
        bad[3] ^= 1;
        assert!(!hmac_verify(&key, &[b"kluis/v1"], &bad));
    }

    #[test]
    fn truncated_macs_are_the_leftmost_128_bits_and_a_wrong_one_is_refused() {
        let key = SecretKey::generate().unwrap();
        let full = hmac_sha256(&key, &[b"row"]);
        let short = hmac_sha256_128(&key, &[b"r", b"ow"]);
        assert_eq!(short[..], full[..16]);
        assert!(hmac_verify(&key, &[b"row"], &short));
        assert!(tag_matches(&full, &short));
        // Every single-bit change of the 16-byte tag, and a tag under another key or message.
        for i in 0..short.len() * 8 {
            let mut bad = short;
            bad[i / 8] ^= 1 << (i % 8);
            assert!(!hmac_verify(&key, &[b"row"], &bad), "bit {i}");
            assert!(!tag_matches(&full, &bad), "bit {i}");
        }
        let other = SecretKey::generate().unwrap();
        assert!(!hmac_verify(&other, &[b"row"], &short));
        assert!(!hmac_verify(&key, &[b"rov"], &short));
        // Shorter than 128 bits, or longer than the MAC, never verifies.
        assert!(!tag_matches(&full, &short[..15]));
        assert!(!tag_matches(&full, &[]));
        let mut long = full.to_vec();
        long.push(0);
        assert!(!tag_matches(&full, &long));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let key = SecretKey::generate().unwrap();
        let k = AeadKey::new(&key);
        let sealed = Sealer::new()
            .unwrap()
            .seal(&k, b"ctx", b"Jan de Vries")
            .unwrap();
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(k.open(b"ctx", &bad), Err(IntegrityError), "bit {i}");
        }
    }
}
