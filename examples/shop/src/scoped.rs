//! Stand-in for kluis's purpose-bound handles (`Vault::scoped`, branch `i15-scoped`, not merged
//! yet): the same method names and the same rule (a handle reads only the fields of its purposes,
//! and is refused any other), checked here against the schema. When `i15-scoped` lands this module
//! goes: [`crate::components::Shop::handle`] calls `vault.scoped(purposes, actor)` instead, and the
//! masks move into `examples/webshop.toml` (`mask = "email"` on `customer.email`, ...).
//!
//! What the stand-in does not do that the real handle does: audit each read (`read` /
//! `masked_read` entries), and skip decrypting out-of-scope fields on `get` (it asks only for the
//! in-scope ones, so it does not decrypt them either).

use serde::de::DeserializeOwned;
use serde_json::Value;
use vault_core::schema::Schema;
use vault_core::{Record, RecordKey, SubjectId, Vault};

use crate::error::AppError;
use vault_core::ErrorKind;

/// A handle restricted to some purposes.
pub struct Scoped<'v> {
    vault: &'v Vault,
    schema: &'v Schema,
    purposes: &'static [&'static str],
    actor: &'static str,
}

impl std::fmt::Debug for Scoped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped")
            .field("purposes", &self.purposes)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// The masks the schema will declare (`mask = ...`), until it can.
fn mask_of(record_type: &str, field: &str) -> Option<fn(&str) -> Option<String>> {
    match (record_type, field) {
        ("customer", "email") | ("marketing_consent", "email") => Some(mask_email),
        ("customer", "phone") | ("invoice", "iban") => Some(mask_last4),
        ("customer", "first_name") | ("customer", "last_name") => Some(mask_initial),
        ("customer", "birth_date") => Some(mask_year),
        _ => None,
    }
}

fn mask_email(s: &str) -> Option<String> {
    let (local, domain) = s.trim().rsplit_once('@')?;
    if domain.is_empty() {
        return None;
    }
    let first = match local.chars().count() {
        n if n >= 3 => local.chars().next()?.to_string(),
        _ => String::new(),
    };
    Some(format!("{first}***@{domain}"))
}

fn mask_last4(s: &str) -> Option<String> {
    let kept: Vec<char> = s.chars().filter(|c| c.is_alphanumeric()).collect();
    if kept.len() < 8 {
        return None;
    }
    let (hidden, shown) = kept.split_at(kept.len() - 4);
    let mut out = "*".repeat(hidden.len());
    out.extend(shown);
    Some(out)
}

fn mask_initial(s: &str) -> Option<String> {
    let c = s.chars().find(|c| c.is_alphabetic())?;
    let mut out: String = c.to_uppercase().collect();
    out.push('.');
    Some(out)
}

fn mask_year(s: &str) -> Option<String> {
    let y = s.get(..4)?;
    let shaped = y.bytes().all(|b| b.is_ascii_digit()) && s.as_bytes().get(4) == Some(&b'-');
    shaped.then(|| y.to_owned())
}

impl<'v> Scoped<'v> {
    /// A handle on `vault` for `purposes`, acting as `actor`.
    pub fn new(
        vault: &'v Vault,
        schema: &'v Schema,
        purposes: &'static [&'static str],
        actor: &'static str,
    ) -> Result<Self, AppError> {
        if purposes.is_empty() || purposes.iter().any(|p| schema.purpose(p).is_none()) {
            return Err(AppError::new(ErrorKind::InvalidInput, "unknown purpose"));
        }
        Ok(Scoped {
            vault,
            schema,
            purposes,
            actor,
        })
    }

    /// The actor its reads are made for.
    pub fn actor(&self) -> &str {
        self.actor
    }

    fn in_scope(&self, purpose: &str) -> bool {
        self.purposes.contains(&purpose)
    }

    /// The in-scope fields of `record_type`; refuses a type none of whose fields is in scope.
    fn fields_in_scope(&self, record_type: &str) -> Result<Vec<&'v str>, AppError> {
        let rt = self
            .schema
            .record_type(record_type)
            .ok_or_else(|| AppError::new(ErrorKind::InvalidInput, "unknown record type"))?;
        let names: Vec<&'v str> = rt
            .fields()
            .filter(|f| self.in_scope(&f.purpose))
            .map(|f| f.name.as_str())
            .collect();
        if names.is_empty() {
            return Err(AppError::new(
                ErrorKind::InvalidInput,
                format!(
                    "no field of {record_type:?} is processed for a purpose this handle may read"
                ),
            ));
        }
        Ok(names)
    }

    /// Refuses `field` of `record_type` if it lies outside the scope.
    fn check(&self, record_type: &str, field: &str) -> Result<(), AppError> {
        let def = self
            .schema
            .record_type(record_type)
            .and_then(|rt| rt.field(field))
            .ok_or_else(|| {
                AppError::new(ErrorKind::InvalidInput, "unknown record type or field")
            })?;
        if self.in_scope(&def.purpose) {
            Ok(())
        } else {
            Err(AppError::new(
                ErrorKind::InvalidInput,
                format!(
                    "field {field:?} is processed for purpose {:?}, which this handle may not read",
                    def.purpose
                ),
            ))
        }
    }

    /// Reads the in-scope fields of the `key` record.
    pub fn get(&self, subject: &SubjectId, key: impl Into<RecordKey>) -> Result<Record, AppError> {
        let key = key.into();
        let fields = self.fields_in_scope(&key.record_type)?;
        Ok(self.vault.get_fields(subject, key, &fields)?)
    }

    /// Reads only the named fields; a field outside the scope is refused.
    pub fn get_fields(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        fields: &[&str],
    ) -> Result<Record, AppError> {
        let key = key.into();
        for f in fields {
            self.check(&key.record_type, f)?;
        }
        Ok(self.vault.get_fields(subject, key, fields)?)
    }

    /// Reads the in-scope fields into the shop's own type; a shredded record is `Gone`.
    pub fn get_as<T: DeserializeOwned>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<T, AppError> {
        let rec = self.get(subject, key)?;
        if rec.has_shredded() {
            return Err(AppError::new(
                ErrorKind::Gone,
                "the record was shredded (its retention ended or the customer was forgotten)",
            ));
        }
        // serde's messages quote values: say only that it did not fit.
        rec.deserialize().map_err(|_| {
            AppError::new(ErrorKind::InvalidInput, "the record could not be converted")
        })
    }

    /// The in-scope fields that have a mask, masked; the others are left out. A shredded record
    /// is `Gone`.
    pub fn get_masked(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<Record, AppError> {
        let key = key.into();
        let masked: Vec<&str> = self
            .fields_in_scope(&key.record_type)?
            .into_iter()
            .filter(|f| mask_of(&key.record_type, f).is_some())
            .collect();
        let plain = self.vault.get_fields(subject, key.clone(), &masked)?;
        if plain.has_shredded() {
            return Err(AppError::new(ErrorKind::Gone, "the record was shredded"));
        }
        let mut out = Record::new();
        for (name, value) in plain.iter() {
            let shown = match (mask_of(&key.record_type, name), value) {
                (Some(mask), Value::String(s)) => mask(s),
                _ => None,
            };
            out.set(name, shown.unwrap_or_else(|| "***".to_owned()));
        }
        Ok(out)
    }

    /// Subjects whose `record_type` record holds `value` in the indexed, in-scope `field`.
    pub fn find(
        &self,
        record_type: &str,
        field: &str,
        value: &str,
    ) -> Result<Vec<SubjectId>, AppError> {
        self.check(record_type, field)?;
        Ok(self.vault.find(record_type, field, value)?)
    }
}
