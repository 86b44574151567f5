//! Purposes of processing (GDPR Art. 5(1)(b), purpose limitation; AVG: "doelbinding")
//! and their legal basis (Art. 6(1)).

use std::fmt;

use super::Retention;

/// The lawful basis for processing, GDPR Art. 6(1)(a)-(f).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LegalBasis {
    /// Art. 6(1)(a): the data subject gave consent (AVG: "toestemming").
    Consent,
    /// Art. 6(1)(b): necessary for a contract with the data subject ("overeenkomst").
    Contract,
    /// Art. 6(1)(c): necessary for a legal obligation ("wettelijke verplichting").
    LegalObligation,
    /// Art. 6(1)(d): necessary to protect vital interests ("vitale belangen").
    VitalInterests,
    /// Art. 6(1)(e): a task in the public interest ("algemeen belang").
    PublicTask,
    /// Art. 6(1)(f): legitimate interests of the controller ("gerechtvaardigd belang").
    LegitimateInterests,
}

impl LegalBasis {
    /// All legal bases, in the order of Art. 6(1).
    pub const ALL: &'static [LegalBasis] = &[
        LegalBasis::Consent,
        LegalBasis::Contract,
        LegalBasis::LegalObligation,
        LegalBasis::VitalInterests,
        LegalBasis::PublicTask,
        LegalBasis::LegitimateInterests,
    ];

    /// The schema (TOML) spelling, e.g. `"legal_obligation"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::VitalInterests => "vital_interests",
            LegalBasis::PublicTask => "public_task",
            LegalBasis::LegitimateInterests => "legitimate_interests",
        }
    }

    /// Parse the schema spelling (see [`LegalBasis::as_str`]).
    pub fn from_name(name: &str) -> Option<LegalBasis> {
        LegalBasis::ALL.iter().copied().find(|b| b.as_str() == name)
    }

    /// The article reference, e.g. `"Art. 6(1)(c)"`.
    pub fn article(self) -> &'static str {
        match self {
            LegalBasis::Consent => "Art. 6(1)(a)",
            LegalBasis::Contract => "Art. 6(1)(b)",
            LegalBasis::LegalObligation => "Art. 6(1)(c)",
            LegalBasis::VitalInterests => "Art. 6(1)(d)",
            LegalBasis::PublicTask => "Art. 6(1)(e)",
            LegalBasis::LegitimateInterests => "Art. 6(1)(f)",
        }
    }
}

impl fmt::Display for LegalBasis {
    /// Human text, e.g. `legal obligation (Art. 6(1)(c))`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal obligation",
            LegalBasis::VitalInterests => "vital interests",
            LegalBasis::PublicTask => "public task",
            LegalBasis::LegitimateInterests => "legitimate interests",
        };
        write!(f, "{text} ({})", self.article())
    }
}

/// A purpose for which personal data is processed, as declared in the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    /// Name (the key under `[purposes]`).
    pub name: String,
    /// Lawful basis of the processing.
    pub legal_basis: LegalBasis,
    /// What the data is used for, in plain language (non-empty).
    pub description: String,
    /// Recipients or categories of recipients (Art. 13(1)(e)), possibly empty.
    pub recipients: Vec<String>,
    /// How long data collected for this purpose is kept.
    pub retention: Retention,
    /// The ceiling (`at_most`): data is shredded when it ends even if `retention` has not, so a
    /// rule whose event never comes cannot keep data forever. `None`: no ceiling declared. Never
    /// `Retention::None`, and never anchored on `last_update` (the schema refuses both).
    pub at_most: Option<Retention>,
    /// The fallback (`fallback`) of a rule `<period> after <event>` on an event the shop records:
    /// while that event has not been recorded for the data, the data goes when the fallback ends
    /// (`2y after last_order`, fallback `2y after created`: a customer who never orders). Once the
    /// event is recorded, the rule counts alone, so a loyal customer's account is not cut off the
    /// way a ceiling would cut it. Same grammar and limits as `at_most`.
    pub fallback: Option<Retention>,
    /// Whose data one data key of this purpose covers: the whole customer's, or one record's.
    pub scope: Scope,
}

impl Purpose {
    /// Whether data of this purpose can be kept forever without anyone deciding so: no ceiling,
    /// no fallback, and a retention rule that is `none` or waits for an event the shop records.
    pub fn is_unbounded(&self) -> bool {
        self.at_most.is_none() && self.fallback.is_none() && self.retention.is_open_ended()
    }
}

/// What one data key of a purpose covers, and so what its retention is counted for.
///
/// `subject` (the default): one key per customer, whose retention runs from the customer's
/// events. `record`: one key per record (e.g. per order, per invoice), whose retention runs from
/// events recorded for that record only, so order 42's address expires 30 days after order 42 was
/// delivered, whatever happens to order 43.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Scope {
    /// One data key per customer (subject).
    #[default]
    Subject,
    /// One data key per record (record type and label) of the customer.
    Record,
}

impl Scope {
    /// The schema (TOML) spelling: `"subject"` or `"record"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Subject => "subject",
            Scope::Record => "record",
        }
    }

    /// Parse the schema spelling (see [`Scope::as_str`]).
    pub fn from_name(name: &str) -> Option<Scope> {
        [Scope::Subject, Scope::Record]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn legal_basis_names_round_trip() {
        for &b in LegalBasis::ALL {
            assert_eq!(LegalBasis::from_name(b.as_str()), Some(b));
            assert!(b.to_string().contains(b.article()));
        }
        assert_eq!(LegalBasis::from_name("Consent"), None);
        assert_eq!(
            LegalBasis::LegalObligation.to_string(),
            "legal obligation (Art. 6(1)(c))"
        );
        assert_eq!(LegalBasis::Consent.to_string(), "consent (Art. 6(1)(a))");
    }
}
