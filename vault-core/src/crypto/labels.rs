//! Key-derivation and domain-separation labels.
//!
//! Every HKDF `info`, every AAD prefix and every MAC domain in kluis is one of these constants, so a
//! key or a ciphertext made for one purpose can never be taken for another. The `v1` is the
//! cryptographic format version; changing any label is a format change (see `docs/format.md`).

/// HKDF info for the root key when only a passphrase unseals the vault.
pub const ROOT_PASSPHRASE: &[u8] = b"kluis/v1/root/passphrase";
/// HKDF info for the root key when only a key file unseals the vault.
pub const ROOT_KEY_FILE: &[u8] = b"kluis/v1/root/key-file";
/// HKDF info for the root key when passphrase and key file together unseal the vault.
pub const ROOT_BOTH: &[u8] = b"kluis/v1/root/passphrase+key-file";
/// HKDF info of the key that seals the key store body (derived from the root key).
pub const KEY_STORE_SEAL: &[u8] = b"kluis/v1/key-store/seal";
/// HKDF info of the key whose MAC over the header tells a wrong credential from a damaged file.
pub const KEY_STORE_CHECK: &[u8] = b"kluis/v1/key-store/check";
/// AAD prefix of a wrapped data key.
pub const DEK_WRAP: &[u8] = b"kluis/v1/dek";
/// AAD prefix of a field ciphertext.
pub const FIELD: &[u8] = b"kluis/v1/field";
/// HKDF info prefix of a per-(record type, field) blind-index key.
pub const INDEX_FIELD: &[u8] = b"kluis/v1/index";
/// HKDF info of a KEK's blind-index subkey (index tags die with the KEK that wraps their data key).
pub const INDEX_KEK: &[u8] = b"kluis/v1/index-kek";
/// MAC domain of a per-(record type, field, KEK) blind-index tag key.
pub const INDEX_TAG_KEY: &[u8] = b"kluis/v1/index-tag-key";
/// HKDF info of the key that authenticates the stored schema.
pub const SCHEMA_MAC: &[u8] = b"kluis/v1/schema";
/// HKDF info of the key that authenticates stored rows (record envelopes, subject entries) as a whole.
pub const ROW_MAC: &[u8] = b"kluis/v1/row-mac";
/// HKDF info of the key that chains the audit log.
pub const AUDIT_MAC: &[u8] = b"kluis/v1/audit";
/// HKDF info of the key that authenticates the erasure ledger file (header and record chain).
pub const LEDGER: &[u8] = b"kluis/v1/ledger";
/// MAC domain of the erasure ledger's header (its MAC is the start of the record chain).
pub const LEDGER_HEADER: &[u8] = b"kluis/v1/ledger/header";
/// MAC domain of one erasure ledger record, chained to the one before.
pub const LEDGER_RECORD: &[u8] = b"kluis/v1/ledger/record";
/// HKDF info of the key that authenticates the data directory's `WITNESS` file.
pub const WITNESS: &[u8] = b"kluis/v1/witness";
/// MAC domain of the witness's commitment to an audit head.
pub const WITNESS_HEAD: &[u8] = b"kluis/v1/witness/head";
/// MAC domain of one slot of the witness file.
pub const WITNESS_SLOT: &[u8] = b"kluis/v1/witness/slot";
/// HKDF info prefix of an [`Authenticator`](crate::admin::Authenticator) key (followed by the
/// caller's domain, e.g. `kluis-serve/tokens`): MACs for files kept beside the vault by its tools.
pub const APP_MAC: &[u8] = b"kluis/v1/app-mac";
