//! Record types: named groups of fields stored together for one data subject.

use std::collections::{BTreeMap, BTreeSet};

use super::FieldDef;

/// A record type declared under `[types.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordType {
    /// Name (the key under `[types]`).
    pub name: String,
    /// What records of this type hold (may be empty).
    pub description: String,
    /// When true, records of this type cannot be updated after creation
    /// (they can still be erased), e.g. invoices.
    pub immutable: bool,
    pub(super) fields: BTreeMap<String, FieldDef>,
}

impl RecordType {
    /// The field called `name`, if declared.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.get(name)
    }

    /// All fields, sorted by name (never empty).
    pub fn fields(&self) -> impl Iterator<Item = &FieldDef> + '_ {
        self.fields.values()
    }

    /// The fields processed for `purpose`, sorted by name.
    pub fn fields_with_purpose<'a>(
        &'a self,
        purpose: &'a str,
    ) -> impl Iterator<Item = &'a FieldDef> + 'a {
        self.fields.values().filter(move |f| f.purpose == purpose)
    }

    /// The purposes used by this type's fields.
    pub fn purposes(&self) -> BTreeSet<&str> {
        self.fields.values().map(|f| f.purpose.as_str()).collect()
    }

    /// Check the names of the fields present in a record: every name must be
    /// declared, and every required field must be present.
    pub fn check_fields<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
    ) -> Result<(), RecordError> {
        let mut present = BTreeSet::new();
        for name in names {
            if !self.fields.contains_key(name) {
                return Err(RecordError::UnknownField {
                    record_type: self.name.clone(),
                    // Caller-supplied: only a name's shape is shown (it may be a value).
                    field: crate::schema::name_for_error(name),
                });
            }
            present.insert(name);
        }
        match self
            .fields
            .values()
            .find(|f| f.required && !present.contains(f.name.as_str()))
        {
            Some(missing) => Err(RecordError::MissingRequired {
                record_type: self.name.clone(),
                field: missing.name.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// A record's set of fields does not match its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record has a field its type does not declare.
    #[error("record type `{record_type}` has no field `{field}`")]
    UnknownField {
        /// The record type.
        record_type: String,
        /// The undeclared field name (a schema-level name, not a value).
        field: String,
    },
    /// A required field is absent.
    #[error("record type `{record_type}`: required field `{field}` is missing")]
    MissingRequired {
        /// The record type.
        record_type: String,
        /// The missing field.
        field: String,
    },
}
