//! Masks: what a masked read (`Scoped::get_masked`) shows of a field instead of its value,
//! declared per field in the schema (`mask = "email"`).
//!
//! Each rule shows a fixed, small part of the value and nothing else; what it hides is replaced
//! by a fixed `***` (or one `*` per hidden character for `last4`, where the length is part of
//! what customer service checks against). A value that does not have the shape its rule expects
//! (data stored under an older schema, a field whose kind changed) is shown as `***`: a mask
//! never falls back to showing more. No function here panics, on any input.

use serde_json::Value;

use super::FieldKind;

/// What every rule shows for what it hides.
const HIDDEN: &str = "***";

/// A field's mask (`mask = "..."` in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Mask {
    /// An e-mail address: the first character of the local part (only when it has at least
    /// three) and the whole domain, `j***@voorbeeld.nl`.
    Email,
    /// The last four letters or digits (phone numbers, IBANs, customer numbers), one `*` per
    /// other letter or digit: `******5678`. Values of fewer than eight are shown as `***`.
    Last4,
    /// The initial of a name, upper-cased: `J.`.
    Initial,
    /// Nothing of the value: `***` (allowed on every kind).
    Redact,
    /// The year of a date: `1985`.
    Year,
}

impl Mask {
    /// All masks.
    pub const ALL: [Mask; 5] = [
        Mask::Email,
        Mask::Last4,
        Mask::Initial,
        Mask::Redact,
        Mask::Year,
    ];

    /// The schema spelling, e.g. `"last4"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mask::Email => "email",
            Mask::Last4 => "last4",
            Mask::Initial => "initial",
            Mask::Redact => "redact",
            Mask::Year => "year",
        }
    }

    /// Parses the schema spelling.
    pub fn from_name(name: &str) -> Option<Mask> {
        Mask::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether the mask may be declared on a field of `kind` (checked at schema load: a rule
    /// that cannot understand the kind's values would only ever show `***`).
    pub fn fits(self, kind: FieldKind) -> bool {
        match self {
            Mask::Redact => true,
            Mask::Email => kind == FieldKind::Email,
            Mask::Last4 => matches!(kind, FieldKind::Phone | FieldKind::Iban | FieldKind::Text),
            Mask::Initial => kind == FieldKind::Text,
            Mask::Year => kind == FieldKind::Date,
        }
    }

    /// The kinds the mask fits, for error messages (schema spellings).
    pub fn kinds(self) -> Vec<&'static str> {
        FieldKind::ALL
            .into_iter()
            .filter(|k| self.fits(*k))
            .map(FieldKind::as_str)
            .collect()
    }

    /// The masked form of a decoded field value (always a JSON string).
    pub fn apply(self, value: &Value) -> Value {
        let shown = match (self, value) {
            (Mask::Redact, _) => None,
            (_, Value::String(s)) => match self {
                Mask::Email => email(s),
                Mask::Last4 => last4(s),
                Mask::Initial => initial(s),
                Mask::Year => year(s),
                Mask::Redact => None,
            },
            _ => None,
        };
        Value::String(shown.unwrap_or_else(|| HIDDEN.to_owned()))
    }
}

impl std::fmt::Display for Mask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `j***@voorbeeld.nl`; a local part of one or two characters shows none of them (its first
/// character would be half of it or all of it).
fn email(s: &str) -> Option<String> {
    let (local, domain) = s.trim().rsplit_once('@')?;
    if domain.is_empty() {
        return None;
    }
    let first = match local.chars().count() {
        n if n >= 3 => local.chars().next()?.to_string(),
        _ => String::new(),
    };
    Some(format!("{first}{HIDDEN}@{domain}"))
}

/// The last four letters or digits, the others as `*`; separators are left out.
fn last4(s: &str) -> Option<String> {
    let kept: Vec<char> = s.chars().filter(|c| c.is_alphanumeric()).collect();
    if kept.len() < 8 {
        return None;
    }
    let (hidden, shown) = kept.split_at(kept.len() - 4);
    let mut out = "*".repeat(hidden.len());
    out.extend(shown);
    Some(out)
}

/// The first letter, upper-cased, and a dot; nothing (`***`) for a value of one letter, whose
/// initial would be all of it.
fn initial(s: &str) -> Option<String> {
    let mut letters = s.chars().filter(|c| c.is_alphabetic());
    let c = letters.next()?;
    letters.next()?;
    let mut out: String = c.to_uppercase().collect();
    out.push('.');
    Some(out)
}

/// The year of a `YYYY-MM-DD` date (or anything starting with four digits and a dash).
fn year(s: &str) -> Option<String> {
    let y = s.get(..4)?;
    let shaped = y.bytes().all(|b| b.is_ascii_digit()) && s.as_bytes().get(4) == Some(&b'-');
    shaped.then(|| y.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn m(mask: Mask, v: &str) -> String {
        mask.apply(&json!(v)).as_str().unwrap().to_owned()
    }

    #[test]
    fn each_rule_shows_only_its_part() {
        assert_eq!(m(Mask::Email, "jan@voorbeeld.nl"), "j***@voorbeeld.nl");
        assert_eq!(
            m(Mask::Email, " Jan.Smit@voorbeeld.nl "),
            "J***@voorbeeld.nl"
        );
        assert_eq!(m(Mask::Last4, "06 1234 5678"), "******5678");
        assert_eq!(m(Mask::Last4, "NL91ABNA0417164300"), "**************4300");
        assert_eq!(m(Mask::Initial, "jan van der Berg"), "J.");
        assert_eq!(m(Mask::Redact, "Kerkstraat 1"), "***");
        assert_eq!(m(Mask::Year, "1985-07-04"), "1985");
    }

    /// Short values show nothing: a rule never shows most (or all) of a value.
    #[test]
    fn short_values_are_hidden_whole() {
        assert_eq!(m(Mask::Email, "j@voorbeeld.nl"), "***@voorbeeld.nl");
        assert_eq!(m(Mask::Email, "jo@voorbeeld.nl"), "***@voorbeeld.nl");
        // A one-letter value: its initial would be all of it.
        assert_eq!(m(Mask::Initial, "Q"), "***");
        assert_eq!(m(Mask::Initial, " Q. "), "***");
        assert_eq!(m(Mask::Last4, "1234567"), "***");
        assert_eq!(m(Mask::Last4, "+31 6-12"), "***");
    }

    /// Values without the expected shape, and values that are not strings, become `***`.
    #[test]
    fn unexpected_shapes_are_hidden_whole() {
        assert_eq!(m(Mask::Email, "no at sign"), "***");
        assert_eq!(m(Mask::Email, "jan@"), "***");
        assert_eq!(m(Mask::Year, "85-07-04"), "***");
        assert_eq!(m(Mask::Year, "19é5-07-04"), "***");
        assert_eq!(m(Mask::Initial, "1234 !"), "***");
        for mask in Mask::ALL {
            assert_eq!(mask.apply(&json!({"a": 1})), json!("***"));
            assert_eq!(mask.apply(&json!(12345678)), json!("***"));
            assert_eq!(m(mask, ""), "***");
        }
    }

    #[test]
    fn non_ascii_text_is_cut_at_character_boundaries() {
        assert_eq!(m(Mask::Email, "élodie@exemple.fr"), "é***@exemple.fr");
        assert_eq!(m(Mask::Initial, "  Ölaf"), "Ö.");
        assert_eq!(m(Mask::Initial, "ßen"), "SS.");
        assert_eq!(m(Mask::Last4, "١٢٣٤٥٦٧٨٩"), "*****٦٧٨٩");
        assert_eq!(m(Mask::Email, "😀😀😀@x.nl"), "😀***@x.nl");
    }

    #[test]
    fn masks_fit_only_the_kinds_they_understand() {
        assert!(Mask::Email.fits(FieldKind::Email));
        assert!(!Mask::Email.fits(FieldKind::Text));
        assert!(!Mask::Year.fits(FieldKind::Text));
        assert!(!Mask::Initial.fits(FieldKind::Bytes));
        assert!(!Mask::Last4.fits(FieldKind::Json));
        assert!(FieldKind::ALL.into_iter().all(|k| Mask::Redact.fits(k)));
        assert_eq!(Mask::Last4.kinds(), ["text", "phone", "iban"]);
        for mask in Mask::ALL {
            assert_eq!(Mask::from_name(mask.as_str()), Some(mask));
        }
        assert_eq!(Mask::from_name("Email"), None);
    }

    proptest! {
        /// No rule panics, and what a rule shows of a value is never more than its part: at most
        /// one character of an e-mail's local part, at most four letters or digits, at most one
        /// letter, four digits.
        #[test]
        fn no_rule_panics_or_shows_more(s in "\\PC{0,40}") {
            for mask in Mask::ALL {
                let out = m(mask, &s);
                let alnum = out.chars().filter(|c| c.is_alphanumeric()).count();
                match mask {
                    Mask::Last4 => prop_assert!(alnum <= 4),
                    Mask::Initial => prop_assert!(out.chars().count() <= 4),
                    Mask::Year => prop_assert!(out == "***" || out.len() == 4),
                    Mask::Redact => prop_assert_eq!(out.as_str(), "***"),
                    Mask::Email => {
                        let local = out.split_once('@').map_or(out.as_str(), |(l, _)| l);
                        prop_assert!(local.chars().count() <= 4);
                    }
                }
            }
        }
    }
}
