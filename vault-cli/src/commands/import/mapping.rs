//! Mapping files: how one row of a foreign CSV export (a shop system's customer export) becomes
//! the kluis records of one new subject. Parsed from TOML into typed structs; every unknown key
//! is an error, so a typo never silently drops a column.
//!
//! Reasons for a rejected cell name the column and the rule, never the cell's value.

use std::collections::BTreeMap;

use serde::Deserialize;

use vault_core::schema::PhoneCountry;

use super::transform::Transform;

/// A whole mapping file: the records each row becomes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The shop's own customer id: rows with one id are one subject.
    pub id: Option<IdMap>,
    /// One entry per record the row becomes (a record type at most once per label).
    pub records: Vec<RecordMap>,
}

/// `[id]`: the column holding the shop's own id of the customer, and the unique field that
/// keeps it in the vault. Rows with the same id become one subject; an id the vault already
/// holds is that subject (re-runs are idempotent); the id map pairs each id with its subject.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    /// The column, by its header name.
    pub column: String,
    /// Transforms applied in order (those without a parameter).
    #[serde(default)]
    pub transform: Vec<Transform>,
    /// `record_type.field`: an `index = "unique"` field of a record every row makes; the
    /// importer fills it with the id (the record must not map it itself).
    pub field: String,
}

impl IdMap {
    /// (record type, field) of [`IdMap::field`].
    pub fn target(&self) -> (&str, &str) {
        self.field.split_once('.').unwrap_or((&self.field, ""))
    }

    /// The id of a row, or why there is none (never quoting the cell).
    pub fn resolve(&self, cell: Option<&str>) -> Result<String, String> {
        let mut v = cell.unwrap_or_default().to_owned();
        for t in &self.transform {
            v = t
                .apply(&v, "")
                .map_err(|why| format!("id column {:?}: {why} ({})", self.column, t.name()))?;
        }
        if v.trim().is_empty() {
            return Err(format!("id column {:?} is empty", self.column));
        }
        Ok(v)
    }

    fn check(&self, records: &[RecordMap]) -> Result<(), String> {
        let (rt, field) = self.target();
        if field.is_empty() {
            return Err(format!(
                "[id] field {:?}: write it as record_type.field",
                self.field
            ));
        }
        if let Some(t) = self.transform.iter().find(|t| t.param_key().is_some()) {
            return Err(format!("[id]: the {} transform is not for ids", t.name()));
        }
        let every_row = records
            .iter()
            .find(|r| r.record_type == rt && r.when.is_none());
        let Some(record) = every_row else {
            return Err(format!(
                "[id] field {:?}: no [[records]] of type {rt:?} without a `when` (the id needs \
                 a record every row makes)",
                self.field
            ));
        };
        if record.fields.contains_key(field) {
            return Err(format!(
                "[id] field {:?}: the importer fills it with the id; remove it from the record's fields",
                self.field
            ));
        }
        Ok(())
    }
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
    /// The country (ISO 3166-1 alpha-2, e.g. `NL`) whose national numbers the `e164`
    /// transform reads.
    pub default_country: Option<String>,
}

/// A condition on a column: its cell, trimmed, equals `equals` or one of `one_of` (ASCII case
/// ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The column tested.
    pub column: String,
    /// The value that makes the condition true.
    pub equals: Option<String>,
    /// The values that make the condition true (e.g. the order statuses of unshipped orders).
    pub one_of: Option<Vec<String>>,
}

impl Condition {
    /// Whether `cell` satisfies the condition.
    pub fn holds(&self, cell: &str) -> bool {
        let cell = cell.trim();
        let is = |v: &String| cell.eq_ignore_ascii_case(v.trim());
        self.equals
            .iter()
            .chain(self.one_of.iter().flatten())
            .any(is)
    }

    fn check(&self, what: &str) -> Result<(), String> {
        match (&self.equals, &self.one_of) {
            (Some(_), None) => Ok(()),
            (None, Some(v)) if !v.is_empty() => Ok(()),
            _ => Err(format!(
                "{what} when: give exactly one of equals or a non-empty one_of"
            )),
        }
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
        if let Some(id) = &self.id {
            id.check(&self.records)?;
        }
        for r in &self.records {
            if let Some(w) = &r.when {
                w.check(&r.record_type)?;
            }
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
        if let Some(id) = &self.id {
            let (rt, field) = id.target();
            out.push((id.column.as_str(), Use::Field(rt, field)));
        }
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
        self.check_param(what, Transform::Date, self.format.as_deref())?;
        self.check_param(what, Transform::E164, self.default_country.as_deref())?;
        match self.default_country.as_deref() {
            Some(c) if PhoneCountry::from_code(c).is_none() => Err(format!(
                "{what}: default_country {c:?} is not an upper-case ISO 3166-1 alpha-2 code of a \
                 country with phone numbers"
            )),
            _ => Ok(()),
        }
    }

    /// A transform that takes a parameter has it, and a parameter is given only with its
    /// transform.
    fn check_param(&self, what: &str, t: Transform, given: Option<&str>) -> Result<(), String> {
        let key = t.param_key().unwrap_or_default();
        match (self.transform.contains(&t), given.is_some()) {
            (true, false) => Err(format!("{what}: the {} transform needs a {key}", t.name())),
            (false, true) => Err(format!(
                "{what}: {key} is only for the {} transform",
                t.name()
            )),
            _ => Ok(()),
        }
    }

    /// The parameter `t` takes from this source.
    fn param(&self, t: Transform) -> &str {
        let p = match t {
            Transform::Date => self.format.as_deref(),
            Transform::E164 => self.default_country.as_deref(),
            _ => None,
        };
        p.unwrap_or_default()
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
                .apply(&v, self.param(*t))
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
    fn an_id_needs_a_record_every_row_makes_and_fills_its_field_itself() {
        let records = "[[records]]\nrecord_type = \"customer\"\n[records.fields]\nemail = { column = \"E\" }\n";
        let id = |extra: &str| format!("[id]\ncolumn = \"Id\"\n{extra}\n{records}");
        let m = Mapping::parse(&id("field = \"customer.shop_customer_id\""), "t").unwrap();
        let i = m.id.as_ref().unwrap();
        assert_eq!(i.target(), ("customer", "shop_customer_id"));
        assert_eq!(i.resolve(Some(" 42 ")).unwrap(), " 42 ");
        let e = i.resolve(Some("  ")).unwrap_err();
        assert!(e.contains("\"Id\" is empty"), "{e}");
        assert!(m
            .columns()
            .contains(&("Id", Use::Field("customer", "shop_customer_id"))));
        for (extra, why) in [
            ("field = \"shop_customer_id\"", "record_type.field"),
            ("field = \"address.shop_customer_id\"", "without a `when`"),
            (
                "field = \"customer.email\"",
                "remove it from the record's fields",
            ),
            (
                "field = \"customer.x\"\ntransform = [\"date\"]",
                "not for ids",
            ),
            ("colum = \"x\"\nfield = \"customer.x\"", "colum"),
        ] {
            let e = Mapping::parse(&id(extra), "t").unwrap_err();
            assert!(e.contains(why), "{extra}: {e}");
        }
    }

    #[test]
    fn conditions_take_one_value_or_a_list() {
        let when = |w: &str| {
            format!("[[records]]\nrecord_type = \"a\"\nwhen = {w}\n[records.fields]\nx = {{ value = \"1\" }}\n")
        };
        let m = Mapping::parse(
            &when("{ column = \"S\", one_of = [\"processing\", \"on-hold\"] }"),
            "t",
        )
        .unwrap();
        let w = m.records[0].when.as_ref().unwrap();
        assert!(w.holds(" Processing ") && w.holds("on-hold") && !w.holds("completed"));
        for bad in [
            "{ column = \"S\" }",
            "{ column = \"S\", one_of = [] }",
            "{ column = \"S\", equals = \"a\", one_of = [\"b\"] }",
        ] {
            let e = Mapping::parse(&when(bad), "t").unwrap_err();
            assert!(
                e.contains("exactly one of equals or a non-empty one_of"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn e164_needs_a_known_default_country() {
        let phone = |extra: &str| {
            format!("[[records]]\nrecord_type = \"c\"\n[records.fields]\np = {{ column = \"P\"{extra} }}\n")
        };
        let m = Mapping::parse(
            &phone(", transform = [\"e164\"], default_country = \"BE\""),
            "t",
        )
        .unwrap();
        let p = &m.records[0].fields["p"];
        assert_eq!(
            p.resolve(Some("0470 12 34 56"), "x").unwrap(),
            Some("+32470123456".into())
        );
        for (extra, why) in [
            (", transform = [\"e164\"]", "needs a default_country"),
            (", default_country = \"NL\"", "only for the e164 transform"),
            (
                ", transform = [\"e164\"], default_country = \"nl\"",
                "ISO 3166-1",
            ),
            (
                ", transform = [\"e164\"], default_country = \"XX\"",
                "ISO 3166-1",
            ),
        ] {
            let e = Mapping::parse(&phone(extra), "t").unwrap_err();
            assert!(e.contains(why), "{extra}: {e}");
        }
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
