//! The vault schema: a versioned TOML document declaring the purposes of
//! processing (with legal basis, recipients and retention) and the record types
//! whose fields are each encrypted separately and tied to one purpose.
//!
//! The schema is stored in the vault as its TOML source text. It holds no
//! customer data, so schema errors may quote schema text freely; field-value
//! errors ([`FieldError`]) never quote values.
//!
//! ```toml
//! version = 1
//! # Optional: phone fields read national numbers as Dutch, store and index E.164 (+31612345678).
//! default_country = "NL"
//!
//! [purposes.shipping]
//! description = "Deliver the order to the customer"
//! legal_basis = "contract"
//! recipients = ["PostNL (processor)"]
//! retention = "30d after delivered"
//! at_most = "1y after ordered"
//!
//! [types.address]
//! description = "Shipping address of an order"
//! [types.address.fields.street]
//! type = "text"
//! purpose = "shipping"
//! required = true
//! max_len = 200
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

mod mask;
mod purpose;
mod record;
mod retention;
mod value;

#[cfg(test)]
mod tests;

pub use mask::Mask;
pub use purpose::{LegalBasis, Purpose, Scope};
pub use record::{RecordError, RecordType};
pub use retention::{Period, Retention, RetentionParseError, BUILTIN_EVENTS};
pub use value::{FieldDef, FieldError, FieldKind, PhoneCountry, MAX_FIELD_LEN};

/// An `index = true` field whose possible values are few enough to try them all: anyone who holds
/// the key store and its credentials (an admin, or whoever steals both) can compute the blind-index
/// tag of every candidate and so read the value back from the index of any data copy whose KEK
/// still exists. Fine for lookups the shop needs, but it should be a conscious choice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexWarning {
    /// The record type.
    pub record_type: String,
    /// The field.
    pub field: String,
    /// Why its values are enumerable, e.g. "phone numbers: about 10^8 Dutch mobile numbers".
    pub why: &'static str,
}

impl std::fmt::Display for IndexWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{} is indexed but its values can be enumerated ({}): whoever holds the key store \
             and its credentials can recover it from the blind index",
            self.record_type, self.field, self.why
        )
    }
}

/// Why an indexed field's values are enumerable, if they are.
fn low_entropy(f: &FieldDef) -> Option<&'static str> {
    let name = f.name.to_ascii_lowercase();
    match f.kind {
        FieldKind::Phone => Some("phone numbers: about 10^8 Dutch mobile numbers"),
        FieldKind::Date => Some("dates: about 36,500 per century"),
        FieldKind::DateTime => Some("date-times to the second: about 3*10^9 per century"),
        FieldKind::Text | FieldKind::Iban if f.max_len <= 16 => {
            Some("short values such as postcodes or numbers (max_len at most 16)")
        }
        FieldKind::Text
            if ["postcode", "zip", "postal", "number", "nummer", "code"]
                .iter()
                .any(|w| name.contains(w)) =>
        {
            Some("postcodes, house, order or invoice numbers follow known patterns")
        }
        _ => None,
    }
}

/// A purpose whose data can be kept forever without a word: its retention is `none` or waits for
/// an event the shop records (a customer who never orders never starts "2y after last_order"), and
/// it declares no ceiling (`at_most`). `kluis status` lists the data that is actually waiting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CeilingWarning {
    /// The purpose.
    pub purpose: String,
    /// Its retention rule (canonical schema text).
    pub retention: String,
    /// The event the rule waits for; `None` for `none`.
    pub waits_for: Option<String>,
}

impl std::fmt::Display for CeilingWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let until = match &self.waits_for {
            Some(e) => format!("if `{e}` is never recorded"),
            None => "until the subject is forgotten".to_owned(),
        };
        write!(
            f,
            "purpose `{}` has no ceiling: retention `{}` keeps its data forever {until}; add \
             `at_most = \"<period> after <event>\"` to bound it",
            self.purpose, self.retention
        )
    }
}

/// Largest accepted schema source, in bytes.
pub const MAX_SCHEMA_LEN: usize = 1_048_576;

/// Longest accepted name (purposes, record types, fields, events).
pub const MAX_NAME_LEN: usize = 63;

/// Whether `name` is a valid purpose, record type, field or event name:
/// `^[a-z][a-z0-9_]{0,62}$`.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// A caller-supplied record type or field name as an error shows it: itself if it has the shape
/// of a schema name, otherwise a placeholder. A name that is not one may be a value (a CSV row
/// with shifted columns puts an e-mail address where a field name belongs), and values never
/// reach an error.
pub(crate) fn name_for_error(name: &str) -> String {
    if is_valid_name(name) {
        name.to_owned()
    } else {
        "(not a schema name)".to_owned()
    }
}

/// A parsed and validated schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    source: String,
    version: u32,
    purposes: BTreeMap<String, Purpose>,
    types: BTreeMap<String, RecordType>,
}

/// The schema is invalid. Messages quote schema text only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Not valid TOML, a missing or unknown key, or a value of the wrong type.
    #[error("schema is not valid: {message}")]
    Toml {
        /// The TOML parser's message.
        message: String,
    },
    /// The schema source exceeds [`MAX_SCHEMA_LEN`].
    #[error("schema is {len} bytes, at most {max} allowed")]
    TooLarge {
        /// Source length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `version` is missing or not an integer of at least 1.
    #[error("schema `version` must be an integer of at least 1")]
    InvalidVersion,
    /// A purpose, record type or field name breaks the naming rule.
    #[error("invalid {what} name `{name}` (lower-case letters, digits and '_', starting with a letter, at most 63 characters)")]
    InvalidName {
        /// What kind of name: "purpose", "record type" or "field".
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// `legal_basis` is not one of the six of GDPR Art. 6(1).
    #[error("purpose `{purpose}`: unknown legal basis `{value}` (expected consent, contract, legal_obligation, vital_interests, public_task or legitimate_interests)")]
    InvalidLegalBasis {
        /// The purpose.
        purpose: String,
        /// The schema text given.
        value: String,
    },
    /// The `retention` clause could not be parsed.
    #[error("purpose `{purpose}`: {reason}")]
    InvalidRetention {
        /// The purpose.
        purpose: String,
        /// What is wrong.
        reason: String,
    },
    /// The `at_most` clause (the ceiling) could not be parsed or is not a ceiling.
    #[error("purpose `{purpose}`: at_most: {reason}")]
    InvalidCeiling {
        /// The purpose.
        purpose: String,
        /// What is wrong.
        reason: String,
    },
    /// The `fallback` clause could not be parsed, or its rule waits for no shop event.
    #[error("purpose `{purpose}`: fallback: {reason}")]
    InvalidFallback {
        /// The purpose.
        purpose: String,
        /// What is wrong.
        reason: String,
    },
    /// Some other property of a purpose is invalid (e.g. empty description).
    #[error("purpose `{purpose}`: {reason}")]
    InvalidPurpose {
        /// The purpose.
        purpose: String,
        /// What is wrong.
        reason: String,
    },
    /// A field refers to a purpose the schema does not declare.
    #[error("field `{record_type}.{field}` refers to undeclared purpose `{purpose}`")]
    UnknownPurpose {
        /// The record type.
        record_type: String,
        /// The field.
        field: String,
        /// The purpose named by the field.
        purpose: String,
    },
    /// A field declaration is invalid (type, max_len, index, ...).
    #[error("field `{record_type}.{field}`: {reason}")]
    InvalidField {
        /// The record type.
        record_type: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A field's `mask` is unknown, or does not fit the field's type (masks are read by
    /// `Scoped::get_masked`; `docs/design.md`, "Masks").
    #[error("field `{record_type}.{field}`: {reason}")]
    InvalidMask {
        /// The record type.
        record_type: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A record type declares no fields.
    #[error("record type `{record_type}` declares no fields")]
    NoFields {
        /// The record type.
        record_type: String,
    },
    /// `default_country` is not an upper-case ISO 3166-1 alpha-2 code the phone metadata knows.
    #[error("default_country `{value}` is not a known ISO 3166-1 alpha-2 country code in upper case (e.g. \"NL\")")]
    InvalidCountry {
        /// The schema text given.
        value: String,
    },
}

impl Schema {
    /// Parse + validate. All cross-references checked (field purpose exists, names valid, etc).
    pub fn from_toml(text: &str) -> Result<Schema, SchemaError> {
        if text.len() > MAX_SCHEMA_LEN {
            return Err(SchemaError::TooLarge {
                len: text.len(),
                max: MAX_SCHEMA_LEN,
            });
        }
        let raw: RawSchema = toml::from_str(text).map_err(|e| SchemaError::Toml {
            message: e.to_string(),
        })?;
        let version = raw
            .version
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v >= 1)
            .ok_or(SchemaError::InvalidVersion)?;
        let mut purposes = BTreeMap::new();
        for (name, raw) in raw.purposes {
            let purpose = validate_purpose(name, raw)?;
            purposes.insert(purpose.name.clone(), purpose);
        }
        let country =
            match &raw.default_country {
                None => None,
                Some(code) => Some(PhoneCountry::from_code(code).ok_or_else(|| {
                    SchemaError::InvalidCountry {
                        value: code.clone(),
                    }
                })?),
            };
        let mut types = BTreeMap::new();
        for (name, raw) in raw.types {
            let record_type = validate_type(name, raw, &purposes, country)?;
            types.insert(record_type.name.clone(), record_type);
        }
        Ok(Schema {
            source: text.to_owned(),
            version,
            purposes,
            types,
        })
    }

    /// The TOML source it was parsed from (stored verbatim in the vault).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The schema version (`version = N`, at least 1).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The purpose called `name`, if declared.
    pub fn purpose(&self, name: &str) -> Option<&Purpose> {
        self.purposes.get(name)
    }

    /// All purposes, sorted by name.
    pub fn purposes(&self) -> impl Iterator<Item = &Purpose> + '_ {
        self.purposes.values()
    }

    /// The record type called `name`, if declared.
    pub fn record_type(&self, name: &str) -> Option<&RecordType> {
        self.types.get(name)
    }

    /// Indexed fields whose values are few enough to enumerate (see [`IndexWarning`]).
    pub fn index_warnings(&self) -> Vec<IndexWarning> {
        self.record_types()
            .flat_map(|rt| rt.fields().map(move |f| (rt, f)))
            .filter(|(_, f)| f.index)
            .filter_map(|(rt, f)| {
                low_entropy(f).map(|why| IndexWarning {
                    record_type: rt.name.clone(),
                    field: f.name.clone(),
                    why,
                })
            })
            .collect()
    }

    /// Purposes whose data can be kept forever without a word (see [`CeilingWarning`]): no
    /// `at_most`, and a retention rule that is `none` or waits for an event the shop records.
    pub fn ceiling_warnings(&self) -> Vec<CeilingWarning> {
        self.purposes()
            .filter(|p| p.is_unbounded())
            .map(|p| CeilingWarning {
                purpose: p.name.clone(),
                retention: p.retention.to_string(),
                waits_for: p.retention.event().map(str::to_owned),
            })
            .collect()
    }

    /// All record types, sorted by name.
    pub fn record_types(&self) -> impl Iterator<Item = &RecordType> + '_ {
        self.types.values()
    }

    /// Every event named by a retention clause or a ceiling, including built-in ones.
    pub fn events(&self) -> BTreeSet<&str> {
        self.purposes
            .values()
            .flat_map(|p| [Some(&p.retention), p.at_most.as_ref(), p.fallback.as_ref()])
            .filter_map(|r| r?.event())
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    version: Option<i64>,
    // Optional, so schemas without it keep the original phone rules (and their stored index).
    #[serde(default)]
    default_country: Option<String>,
    #[serde(default)]
    purposes: BTreeMap<String, RawPurpose>,
    #[serde(default)]
    types: BTreeMap<String, RawType>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    description: String,
    legal_basis: String,
    #[serde(default)]
    recipients: Vec<String>,
    retention: String,
    scope: Option<String>,
    // Optional, so schemas written before ceilings existed still parse (and their stored text,
    // which is what the vault keeps and MACs, stays valid as it is).
    #[serde(default)]
    at_most: Option<String>,
    #[serde(default)]
    fallback: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawType {
    #[serde(default)]
    description: String,
    #[serde(default)]
    immutable: bool,
    #[serde(default)]
    fields: BTreeMap<String, RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(rename = "type")]
    kind: String,
    purpose: String,
    max_len: Option<i64>,
    #[serde(default)]
    required: bool,
    /// `true`, `false` or `"unique"` (read by `index_kind`).
    index: Option<toml::Value>,
    /// What a masked read shows (read by `parse_mask`).
    mask: Option<String>,
}

/// Whether a field is indexed, and whether uniquely: `index = true | false | "unique"`.
fn index_kind(raw: Option<&toml::Value>) -> Option<(bool, bool)> {
    match raw {
        None | Some(toml::Value::Boolean(false)) => Some((false, false)),
        Some(toml::Value::Boolean(true)) => Some((true, false)),
        Some(toml::Value::String(s)) if s == "unique" => Some((true, true)),
        Some(_) => None,
    }
}

/// The field's `mask`, if it declares one that exists and fits its kind.
fn parse_mask(
    record_type: &str,
    field: &str,
    kind: FieldKind,
    raw: Option<&str>,
) -> Result<Option<Mask>, SchemaError> {
    let Some(name) = raw else { return Ok(None) };
    let invalid = |reason: String| SchemaError::InvalidMask {
        record_type: record_type.to_owned(),
        field: field.to_owned(),
        reason,
    };
    let mask = Mask::from_name(name).ok_or_else(|| {
        let all: Vec<_> = Mask::ALL.iter().map(|m| m.as_str()).collect();
        invalid(format!(
            "unknown mask `{name}` (expected {})",
            all.join(", ")
        ))
    })?;
    if !mask.fits(kind) {
        return Err(invalid(format!(
            "mask `{mask}` does not fit a {kind} field (it fits {})",
            mask.kinds().join(", ")
        )));
    }
    Ok(Some(mask))
}

fn check_name(what: &'static str, name: &str) -> Result<(), SchemaError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(SchemaError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

fn validate_purpose(name: String, raw: RawPurpose) -> Result<Purpose, SchemaError> {
    check_name("purpose", &name)?;
    let invalid = |reason: &str| SchemaError::InvalidPurpose {
        purpose: name.clone(),
        reason: reason.to_owned(),
    };
    let legal_basis =
        LegalBasis::from_name(&raw.legal_basis).ok_or_else(|| SchemaError::InvalidLegalBasis {
            purpose: name.clone(),
            value: raw.legal_basis.clone(),
        })?;
    if raw.description.trim().is_empty() {
        return Err(invalid("description must not be empty"));
    }
    if raw.recipients.iter().any(|r| r.trim().is_empty()) {
        return Err(invalid("recipients must not be empty strings"));
    }
    let retention =
        raw.retention
            .parse()
            .map_err(|e: RetentionParseError| SchemaError::InvalidRetention {
                purpose: name.clone(),
                reason: e.reason().to_owned(),
            })?;
    let scope = match raw.scope.as_deref() {
        None => Scope::default(),
        Some(text) => Scope::from_name(text)
            .ok_or_else(|| invalid("scope must be \"subject\" or \"record\""))?,
    };
    let at_most = match &raw.at_most {
        Some(text) => Some(parse_ceiling(&name, text)?),
        None => None,
    };
    let fallback = match &raw.fallback {
        Some(text) => Some(parse_fallback(&name, &retention, text)?),
        None => None,
    };
    Ok(Purpose {
        name,
        legal_basis,
        description: raw.description,
        recipients: raw.recipients,
        retention,
        scope,
        at_most,
        fallback,
    })
}

/// Parses a `fallback` clause: a ceiling's grammar, for a rule that waits for a shop event.
fn parse_fallback(purpose: &str, rule: &Retention, text: &str) -> Result<Retention, SchemaError> {
    let invalid = |reason: String| SchemaError::InvalidFallback {
        purpose: purpose.to_owned(),
        reason,
    };
    let waits_for_shop_event = matches!(rule, Retention::After { event, .. }
        if !Retention::is_builtin_event(event));
    if !waits_for_shop_event {
        return Err(invalid(format!(
            "a fallback applies only to a rule `<period> after <event>` on an event the shop              records; `{rule}` does not wait for one (use `at_most` to bound it)"
        )));
    }
    parse_ceiling(purpose, text).map_err(|e| match e {
        SchemaError::InvalidCeiling { reason, .. } => {
            invalid(reason.replace("ceiling", "fallback"))
        }
        other => other,
    })
}

/// Parses an `at_most` clause: the retention grammar, minus what would not bound anything.
fn parse_ceiling(purpose: &str, text: &str) -> Result<Retention, SchemaError> {
    let invalid = |reason: &str| SchemaError::InvalidCeiling {
        purpose: purpose.to_owned(),
        reason: reason.to_owned(),
    };
    let ceiling: Retention = text
        .parse()
        .map_err(|e: RetentionParseError| invalid(e.reason()))?;
    match ceiling.event() {
        None => Err(invalid(
            "`none` is no ceiling; leave `at_most` out if the data may be kept until the subject \
             is forgotten",
        )),
        // kluis moves `last_update` only for purposes whose retention runs from it; under any other
        // rule it would stay at the key's first write and end data that is still being written.
        Some("last_update") => Err(invalid(
            "a ceiling cannot run from `last_update`; use `created` or an event the shop records",
        )),
        Some(_) => Ok(ceiling),
    }
}

fn validate_type(
    name: String,
    raw: RawType,
    purposes: &BTreeMap<String, Purpose>,
    country: Option<PhoneCountry>,
) -> Result<RecordType, SchemaError> {
    check_name("record type", &name)?;
    if raw.fields.is_empty() {
        return Err(SchemaError::NoFields { record_type: name });
    }
    let mut fields = BTreeMap::new();
    for (field_name, raw_field) in raw.fields {
        let field = validate_field(&name, field_name, raw_field, purposes, country)?;
        fields.insert(field.name.clone(), field);
    }
    Ok(RecordType {
        name,
        description: raw.description,
        immutable: raw.immutable,
        fields,
    })
}

fn validate_field(
    record_type: &str,
    name: String,
    raw: RawField,
    purposes: &BTreeMap<String, Purpose>,
    country: Option<PhoneCountry>,
) -> Result<FieldDef, SchemaError> {
    check_name("field", &name)?;
    let invalid = |reason: String| SchemaError::InvalidField {
        record_type: record_type.to_owned(),
        field: name.clone(),
        reason,
    };
    let kind = FieldKind::from_name(&raw.kind).ok_or_else(|| {
        let all: Vec<_> = FieldKind::ALL.iter().map(|k| k.as_str()).collect();
        invalid(format!(
            "unknown type `{}` (expected one of {})",
            raw.kind,
            all.join(", ")
        ))
    })?;
    if !purposes.contains_key(&raw.purpose) {
        return Err(SchemaError::UnknownPurpose {
            record_type: record_type.to_owned(),
            field: name,
            purpose: raw.purpose,
        });
    }
    let max_len = match raw.max_len {
        None => kind.default_max_len(),
        Some(n) => {
            let n = usize::try_from(n)
                .map_err(|_| invalid("max_len must not be negative".to_owned()))?;
            if n > MAX_FIELD_LEN {
                return Err(invalid(format!(
                    "max_len {n} exceeds the ceiling of {MAX_FIELD_LEN} bytes"
                )));
            }
            if n < kind.min_max_len() {
                return Err(invalid(format!(
                    "max_len {n} is below {} and no valid {kind} value would fit",
                    kind.min_max_len()
                )));
            }
            n
        }
    };
    let (index, unique) = index_kind(raw.index.as_ref())
        .ok_or_else(|| invalid("index must be true, false or \"unique\"".to_owned()))?;
    if index && !kind.indexable() {
        let ok: Vec<_> = FieldKind::ALL
            .iter()
            .filter(|k| k.indexable())
            .map(|k| k.as_str())
            .collect();
        return Err(invalid(format!(
            "an index is not allowed on {kind} fields (only {})",
            ok.join(", ")
        )));
    }
    let mask = parse_mask(record_type, &name, kind, raw.mask.as_deref())?;
    Ok(FieldDef {
        name,
        kind,
        max_len,
        required: raw.required,
        purpose: raw.purpose,
        index,
        unique,
        mask,
        country: country.filter(|_| kind == FieldKind::Phone),
    })
}
