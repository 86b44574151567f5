//! The shop's own types, stored in and read from the vault with `put_as` / `get_as` (field names
//! are the schema's, `examples/webshop.toml`). Request bodies refuse unknown fields (422), so a
//! typo in a client never silently drops data.

use serde::{Deserialize, Serialize};
use vault_core::SubjectId;

/// A customer record (`customer` in the schema; every field is processed for `account`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// First name.
    pub first_name: String,
    /// Surname prefix ("van", "de", "van der").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tussenvoegsel: Option<String>,
    /// Surname.
    pub last_name: String,
    /// Log-in e-mail address: unique, found through its blind index.
    pub email: String,
    /// Phone number (indexed, for customer service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Birth date, `YYYY-MM-DD` (only for age-restricted goods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
}

/// `POST /customers`: a customer and their newsletter choice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// First name.
    pub first_name: String,
    /// Surname prefix.
    #[serde(default)]
    pub tussenvoegsel: Option<String>,
    /// Surname.
    pub last_name: String,
    /// E-mail address.
    pub email: String,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Birth date.
    #[serde(default)]
    pub birth_date: Option<String>,
    /// Opted in to the newsletter (stores a `marketing_consent` record as proof).
    pub marketing_consent: bool,
}

impl Registration {
    /// The customer record, and the newsletter consent if given.
    pub fn split(self) -> (Customer, bool) {
        (
            Customer {
                first_name: self.first_name,
                tussenvoegsel: self.tussenvoegsel,
                last_name: self.last_name,
                email: self.email,
                phone: self.phone,
                birth_date: self.birth_date,
            },
            self.marketing_consent,
        )
    }
}

/// Proof of newsletter consent (`marketing_consent`, purpose `marketing`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarketingConsent {
    /// The address that receives the newsletter.
    pub email: String,
    /// When consent was given, `YYYY-MM-DD`.
    pub consented_at: String,
    /// Where and how.
    pub consent_source: String,
}

/// The answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    /// The customer's pseudonym: the only thing the shop's own tables keep.
    pub id: SubjectId,
}

/// A shipping address (`address`, purpose `shipping`; one record per order, labelled with the
/// order number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Who receives the parcel.
    pub recipient_name: String,
    /// Street.
    pub street: String,
    /// House number.
    pub house_number: String,
    /// "A" in 12A.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub house_number_addition: Option<String>,
    /// Postcode.
    pub postcode: String,
    /// City.
    pub city: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// An invoice (`invoice`, purpose `invoicing`, immutable; labelled with its number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invoice {
    /// Invoice number (also the record's label).
    pub invoice_number: String,
    /// `YYYY-MM-DD`.
    pub invoice_date: String,
    /// Name on the invoice.
    pub billing_name: String,
    /// The billing address as printed.
    pub billing_address: String,
    /// Business customers' VAT number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_number: Option<String>,
    /// Account paid from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iban: Option<String>,
    /// Invoice lines.
    pub lines: serde_json::Value,
    /// Total including VAT, e.g. "121.00".
    pub total: String,
}

/// `POST /customers/{id}/orders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The shop's order number (the address record's label).
    pub order_number: String,
    /// Where to ship it.
    pub address: Address,
    /// Its invoice.
    pub invoice: Invoice,
}

/// The answer to an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ordered {
    /// The order number.
    pub order: String,
    /// The invoice number.
    pub invoice: String,
}

/// The answer to `.../delivered`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivered {
    /// The order number.
    pub order: String,
    /// When (RFC 3339).
    pub delivered_at: String,
    /// The purposes whose retention started counting (`shipping`: the address goes 30 days later).
    pub counted_for: Vec<String>,
}

/// The answer to an Art. 17 request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forgotten {
    /// Purposes whose keys were destroyed: their data is gone everywhere, backups included.
    pub shredded: Vec<String>,
    /// What a legal obligation keeps, and until when.
    pub kept: Vec<Kept>,
}

/// One kept purpose (of one record, for record-scoped purposes such as invoices).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    /// The purpose, e.g. `invoicing`.
    pub purpose: String,
    /// The record, e.g. `invoice/2026-0042`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Why it is kept, e.g. `legal_obligation`.
    pub legal_basis: String,
    /// Until when (RFC 3339), if the retention clock runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl From<vault_core::ForgetReport> for Forgotten {
    fn from(r: vault_core::ForgetReport) -> Self {
        Forgotten {
            shredded: r.shredded,
            kept: r
                .kept
                .into_iter()
                .map(|k| Kept {
                    purpose: k.purpose,
                    record: k.record.map(|r| format!("{}/{}", r.record_type, r.label)),
                    legal_basis: k.legal_basis,
                    until: k.until.map(|t| t.to_string()),
                })
                .collect(),
        }
    }
}

/// `GET /lookup?email=…` or `?phone=…`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// Find by e-mail (normalised: case and spacing do not matter).
    pub email: Option<String>,
    /// Find by phone number.
    pub phone: Option<String>,
}

/// The answer to a lookup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Found {
    /// The matching customers (at most one for the unique e-mail).
    pub customers: Vec<SubjectId>,
}
