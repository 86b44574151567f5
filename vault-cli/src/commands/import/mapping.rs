//! Mapping files: how one row of a foreign CSV export (a shop system's customer export) becomes
//! the kluis records of one new subject. Parsed from TOML into typed structs; every unknown key
//! is an error, so a typo never silently drops a column.
//!
//! Reasons for a rejected cell name the column and the rule, never the cell's value.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::transform::Transform;

/// A whole mapping file: the records each row becomes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// One entry per record the row becomes (a record type at most once per label).
    pub records: Vec<RecordMap>,
}

/// One record made from a row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordMap {
    /// The kluis record type (a type of the vault's schema).
    pub record_type: String,
    /// The record's label (stored unencrypted: only a pseudonymous id such as an order number).
    pub label: Option<Source>,
    /// Only make this record when the condition holds (e.g. the customer opted in).
    pub when: Option<Condition>,
    /// kluis field name → where its value comes from.
    pub fields: BTreeMap<String, Source>,
}

/// Where a value comes from: exactly one of `column`, `value` or `import_date`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A column of the export, by its header name.
    pub column: Option<String>,
    /// A constant.
    pub value: Option<String>,
    /// The date of the import run (`YYYY-MM-DD`, UTC), e.g. when a consent was carried over.
    #[serde(default)]
    pub import_date: bool,
    /// Transforms applied in order to the column's cell.
    #[serde(default)]
    pub transform: Vec<Transform>,
    /// The chrono format of the `date` transform's input, e.g. `%d-%m-%Y`.
    pub format: Option<String>,
}

/// A condition on a column: its cell, trimmed, equals `equals` (ASCII case ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The column tested.
    pub column: String,
    /// The value that makes the condition true.
    pub equals: String,
}

impl Condition {
    /// Whether `cell` satisfies the condition.
    pub fn holds(&self, cell: &str) -> bool {
        cell.trim().eq_ignore_ascii_case(self.equals.trim())
    }
}

impl Mapping {
    /// Parses and checks a mapping file's text. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Mapping, String> {
        let m: Mapping =
            toml::from_str(text).map_err(|e| format!("mapping {origin}: {}", e.message()))?;
        m.check().map_err(|e| format!("mapping {origin}: {e}"))?;
        Ok(m)
    }

    /// Rules serde cannot express: one source per value, a format for each date transform.
    fn check(&self) -> Result<(), String> {
        if self.records.is_empty() {
            return Err("no [[records]]".into());
        }
        for r in &self.records {
            if let Some(l) = &r.label {
                l.check(&format!("{} label", r.record_type))?;
            }
            for (field, s) in &r.fields {
                s.check(&format!("{}.{field}", r.record_type))?;
            }
        }
        Ok(())
    }

    /// Every column the mapping reads, with what it feeds: `Some((type, field))` for a field,
    /// `None` for a label or a condition.
    pub fn columns(&self) -> Vec<(&str, Use<'_>)> {
        let mut out = Vec::new();
        for r in &self.records {
            let rt = r.record_type.as_str();
            if let Some(c) = r.label.as_ref().and_then(|l| l.column.as_deref()) {
                out.push((c, Use::Label(rt)));
            }
            if let Some(w) = &r.when {
                out.push((w.column.as_str(), Use::Condition(rt)));
            }
            for (f, s) in &r.fields {
                if let Some(c) = s.column.as_deref() {
                    out.push((c, Use::Field(rt, f)));
                }
            }
        }
        out
    }
}

/// What a column is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use<'a> {
    /// The value of a field (record type, field).
    Field(&'a str, &'a str),
    /// The label of a record of this type.
    Label(&'a str),
    /// Only tested by a record's condition; its value is not stored.
    Condition(&'a str),
}

impl Source {
    fn check(&self, what: &str) -> Result<(), String> {
        let sources = [
            self.column.is_some(),
            self.value.is_some(),
            self.import_date,
        ];
        if sources.iter().filter(|&&s| s).count() != 1 {
            return Err(format!(
                "{what}: give exactly one of column, value or import_date = true"
            ));
        }
        if self.column.is_none() && !self.transform.is_empty() {
            return Err(format!("{what}: transforms apply to a column only"));
        }
        let dates = self.transform.contains(&Transform::Date);
        match (dates, self.format.is_some()) {
            (true, false) => Err(format!("{what}: the date transform needs a format")),
            (false, true) => Err(format!("{what}: format is only for the date transform")),
            _ => Ok(()),
        }
    }

    /// The value for a row: `None` when empty after the transforms; `Err` names the column and
    /// the transform that refused the cell.
    pub fn resolve(&self, cell: Option<&str>, today: &str) -> Result<Option<String>, String> {
        if let Some(v) = &self.value {
            return Ok(Some(v.clone()).filter(|v| !v.is_empty()));
        }
        if self.import_date {
            return Ok(Some(today.to_owned()));
        }
        let column = self.column.as_deref().unwrap_or_default();
        let mut v = cell.unwrap_or_default().to_owned();
        for t in &self.transform {
            v = t
                .apply(&v, self.format.as_deref().unwrap_or_default())
                .map_err(|why| format!("column {column:?}: {why} ({})", t.name()))?;
        }
        Ok(Some(v).filter(|v| !v.trim().is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_parses_with_columns_constants_and_conditions() {
        let m = Mapping::parse(
            r#"
[[records]]
record_type = "customer"
[records.fields]
email = { column = "Email", transform = ["trim", "lower"] }
country = { value = "NL" }

[[records]]
record_type = "marketing_consent"
when = { column = "Opt In", equals = "yes" }
[records.fields]
consented_at = { import_date = true }
"#,
            "t",
        )
        .unwrap();
        assert_eq!(m.records.len(), 2);
        assert!(m.records[1].when.as_ref().unwrap().holds(" YES "));
        let cols = m.columns();
        assert!(cols.contains(&("Email", Use::Field("customer", "email"))));
        assert!(cols.contains(&("Opt In", Use::Condition("marketing_consent"))));
        let email = &m.records[0].fields["email"];
        assert_eq!(
            email.resolve(Some(" A@B.NL "), "2026-01-01").unwrap(),
            Some("a@b.nl".into())
        );
        assert_eq!(email.resolve(Some("  "), "x").unwrap(), None);
        let at = &m.records[1].fields["consented_at"];
        assert_eq!(
            at.resolve(None, "2026-01-01").unwrap(),
            Some("2026-01-01".into())
        );
    }

    #[test]
    fn the_shopify_preset_parses() {
        let m = Mapping::parse(include_str!("presets/shopify.toml"), "shopify").unwrap();
        let cols: Vec<&str> = m.columns().into_iter().map(|(c, _)| c).collect();
        assert!(cols.contains(&"Accepts Email Marketing") && !cols.contains(&"Note"));
    }

    #[test]
    fn unknown_keys_and_bad_sources_are_errors() {
        let typo = "[[records]]\nrecord_type = \"c\"\n[records.fields]\ne = { colum = \"E\" }\n";
        let e = Mapping::parse(typo, "t").unwrap_err();
        assert!(e.contains("unknown field `colum`"), "{e}");
        let unknown = "[[records]]\nrecord_type = \"c\"\nlable = \"x\"\n[records.fields]\n";
        assert!(Mapping::parse(unknown, "t").unwrap_err().contains("lable"));
        let both = "[[records]]\nrecord_type = \"c\"\n[records.fields]\ne = { column = \"E\", value = \"v\" }\n";
        assert!(Mapping::parse(both, "t")
            .unwrap_err()
            .contains("exactly one"));
        let no_format =
            "[[records]]\nrecord_type = \"c\"\n[records.fields]\nd = { column = \"D\", transform = [\"date\"] }\n";
        assert!(Mapping::parse(no_format, "t")
            .unwrap_err()
            .contains("needs a format"));
        let bad_transform =
            "[[records]]\nrecord_type = \"c\"\n[records.fields]\nd = { column = \"D\", transform = [\"reverse\"] }\n";
        assert!(Mapping::parse(bad_transform, "t")
            .unwrap_err()
            .contains("reverse"));
        assert!(Mapping::parse("records = []", "t")
            .unwrap_err()
            .contains("no [[records]]"));
    }

    #[test]
    fn a_refused_cell_names_the_column_and_transform_not_the_value() {
        let m = Mapping::parse(
            "[[records]]\nrecord_type = \"a\"\n[records.fields]\ncountry = { column = \"Land\", transform = [\"country_iso\"] }\n",
            "t",
        )
        .unwrap();
        let e = m.records[0].fields["country"]
            .resolve(Some("Atlantis"), "x")
            .unwrap_err();
        assert!(e.contains("\"Land\"") && e.contains("country_iso"), "{e}");
        assert!(!e.contains("Atlantis"), "{e}");
    }
}
