//! Field definitions and field values: validation, canonical plaintext bytes
//! (what gets encrypted) and the normalised form used for blind indexes.
//!
//! Nothing in this module ever puts a value, or any part of one, into an error.

use std::fmt;
use std::io;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use phonenumber::metadata::DATABASE;
use phonenumber::{country, Mode, PhoneNumber, Type as PhoneType};
use serde_json::Value;
use zeroize::Zeroizing;

/// Hard ceiling on any field's `max_len`: 1 MiB.
pub const MAX_FIELD_LEN: usize = 1_048_576;

/// The type of a field (`type = "..."` in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FieldKind {
    /// Free text (UTF-8, no control characters other than newline and tab).
    Text,
    /// An e-mail address.
    Email,
    /// A telephone number.
    Phone,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A moment in time: RFC 3339 with an offset, stored in UTC as `YYYY-MM-DDTHH:MM:SSZ`.
    DateTime,
    /// An IBAN (ISO 13616), stored compact and upper-case.
    Iban,
    /// Any JSON value, stored as compact JSON.
    Json,
    /// Binary data, given as standard base64 or an array of bytes.
    Bytes,
}

impl FieldKind {
    /// All kinds.
    pub const ALL: &'static [FieldKind] = &[
        FieldKind::Text,
        FieldKind::Email,
        FieldKind::Phone,
        FieldKind::Date,
        FieldKind::DateTime,
        FieldKind::Iban,
        FieldKind::Json,
        FieldKind::Bytes,
    ];

    /// The schema spelling, e.g. `"email"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::Email => "email",
            FieldKind::Phone => "phone",
            FieldKind::Date => "date",
            FieldKind::DateTime => "datetime",
            FieldKind::Iban => "iban",
            FieldKind::Json => "json",
            FieldKind::Bytes => "bytes",
        }
    }

    /// Parse the schema spelling.
    pub fn from_name(name: &str) -> Option<FieldKind> {
        FieldKind::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// `max_len` used when the schema gives none.
    pub fn default_max_len(self) -> usize {
        match self {
            FieldKind::Text => 1024,
            FieldKind::Email => 254,
            FieldKind::Phone => 32,
            FieldKind::Date => 10,
            FieldKind::DateTime => DATETIME_LEN,
            FieldKind::Iban => 34,
            FieldKind::Json | FieldKind::Bytes => 65_536,
        }
    }

    /// Smallest `max_len` the schema may set (below it no valid value would fit).
    pub fn min_max_len(self) -> usize {
        match self {
            FieldKind::Date => 10,
            FieldKind::DateTime => DATETIME_LEN,
            FieldKind::Iban => 15,
            FieldKind::Email => 5,
            FieldKind::Phone => 6,
            FieldKind::Text | FieldKind::Json | FieldKind::Bytes => 1,
        }
    }

    /// Whether `index = true` is allowed (a blind index makes sense).
    pub fn indexable(self) -> bool {
        !matches!(self, FieldKind::Json | FieldKind::Bytes)
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Length of a canonical `datetime` value, `YYYY-MM-DDTHH:MM:SSZ`.
const DATETIME_LEN: usize = 20;

/// Longest `datetime` input looked at (a full RFC 3339 time with nanoseconds and an offset is 35
/// bytes); the parser never sees more.
const MAX_DATETIME_INPUT: usize = 64;

/// The country whose national phone numbers a `phone` field reads (`default_country` in the
/// schema): `06-12345678` under `NL` is `+31612345678`. A number typed with its country code
/// (`+32 …`, `0032 …`) keeps its own country.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhoneCountry(country::Id);

impl PhoneCountry {
    /// The country of an ISO 3166-1 alpha-2 code in upper case (e.g. `"NL"`), if the phone
    /// metadata knows it.
    pub fn from_code(code: &str) -> Option<PhoneCountry> {
        let shape_ok = code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase());
        let id: country::Id = code.parse().ok().filter(|_| shape_ok)?;
        DATABASE.by_id(code).map(|_| PhoneCountry(id))
    }

    /// The ISO 3166-1 alpha-2 code, e.g. `"NL"`.
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    /// A phone number as people type it (spaces, `-`, `(`, `)`, `.`, a leading `+` or this
    /// country's international prefix such as `00`) in E.164, `+31612345678`, if it is a
    /// possible number: national numbers are read as this country's, numbers with a country
    /// code keep theirs. `None` for anything else (letters, too few or too many digits, an
    /// unknown country code). The same rules a `phone` field of a schema with this
    /// `default_country` stores and indexes by; `kluis import`'s `e164` transform uses it.
    pub fn to_e164(self, s: &str) -> Option<Zeroizing<String>> {
        // The same floor a phone field's own check has: a shorter "number" is a typo.
        let digits = s.bytes().filter(u8::is_ascii_digit).count();
        if !FieldDef::phone_chars_ok(s) || digits < 6 {
            return None;
        }
        let bytes = self.e164(s.trim())?;
        std::str::from_utf8(&bytes)
            .ok()
            .map(|t| Zeroizing::new(t.to_owned()))
    }

    /// `s` in E.164 (`+` and digits), if it is a possible number (a known country code and a
    /// length its numbers can have) whose E.164 form reads back as itself. `s` holds only what
    /// [`FieldDef::phone_chars_ok`] allows. The parser's own temporary strings are not wiped; the
    /// result is.
    ///
    /// The parser is only ever given a leading `+` and digits, which keeps clear of its
    /// separator quirks (it refuses `+316-1234-5678` as written). A number with a country code is parsed a second
    /// time on its own, as `+<code>…`: given a default country, the parser strips that country's
    /// trunk prefix from foreign numbers too (`+39 06 …`, Rome, would lose its 0 under `NL`).
    fn e164(self, s: &str) -> Option<Zeroizing<Vec<u8>>> {
        let digits: Zeroizing<String> =
            Zeroizing::new(s.chars().filter(char::is_ascii_digit).collect());
        let plus = |rest: &str| Zeroizing::new(format!("+{rest}"));
        let international = if s.trim_start().starts_with('+') {
            plus(&digits)
        } else {
            let number = phonenumber::parse(Some(self.0), digits.as_str()).ok()?;
            match number.code().source() {
                country::Source::Default => return checked_e164(&number),
                country::Source::Number => plus(&digits),
                country::Source::Idd => plus(self.strip_idd(&digits)?),
                country::Source::Plus => return None,
            }
        };
        let number = phonenumber::parse(None, international.as_str()).ok()?;
        checked_e164(&number)
    }

    /// `digits` without the international call prefix this country dials (`00` in most of
    /// Europe), if they start with it.
    fn strip_idd(self, digits: &str) -> Option<&str> {
        let idd = DATABASE.by_id(self.as_str())?.international_prefix()?;
        let m = idd.find(digits).filter(|m| m.start() == 0)?;
        digits.get(m.end()..)
    }
}

/// The E.164 form of `number` if it is possible and reads back as the same number: the parser
/// keeps a national number's leading 0 in some odd spellings (`00010000` under `NL` gives
/// `+31010000`, which reads back as `+3110000`). Such a value is no number anyone dials, and a
/// stored form must index as itself, so it is refused.
fn checked_e164(number: &PhoneNumber) -> Option<Zeroizing<Vec<u8>>> {
    if !is_possible(number) {
        return None;
    }
    let formatted = Zeroizing::new(number.format().mode(Mode::E164).to_string());
    let again = phonenumber::parse(None, formatted.as_str()).ok()?;
    let again = Zeroizing::new(again.format().mode(Mode::E164).to_string());
    (again == formatted).then(|| Zeroizing::new(formatted.as_bytes().to_vec()))
}

/// The number types whose lengths make a number possible: libphonenumber's union for its
/// "general" description (which the metadata of the `phonenumber` crate leaves empty), without
/// emergency and short codes, which have no E.164 form.
const DIALLABLE: [PhoneType; 10] = [
    PhoneType::FixedLine,
    PhoneType::Mobile,
    PhoneType::TollFree,
    PhoneType::PremiumRate,
    PhoneType::SharedCost,
    PhoneType::PersonalNumber,
    PhoneType::Voip,
    PhoneType::Pager,
    PhoneType::Uan,
    PhoneType::Voicemail,
];

/// libphonenumber's "possible number", minus local-only lengths: the national number has a length
/// that complete numbers of its country code can have. Deliberately not `is_valid` (which matches
/// the allocated ranges): a customer's new number must not be refused because the metadata
/// compiled in is older.
fn is_possible(number: &PhoneNumber) -> bool {
    let national = Zeroizing::new(number.national().to_string());
    let Ok(len) = u16::try_from(national.len()) else {
        return false;
    };
    let fits = |m: &&phonenumber::Metadata| {
        let d = m.descriptors();
        DIALLABLE
            .iter()
            .filter_map(|t| d.get(*t))
            .any(|desc| desc.possible_length().contains(&len))
    };
    DATABASE
        .by_code(&number.code().value())
        .is_some_and(|metas| metas.iter().any(fits))
}

/// The blind-index form of a phone number before countries (and still without one): `+` if the
/// value starts with one, then its ASCII digits. Old vaults' index entries were made with it.
fn legacy_phone_form(plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let trimmed = plaintext.trim_ascii();
    let mut out = Zeroizing::new(Vec::with_capacity(trimmed.len()));
    if trimmed.first() == Some(&b'+') {
        out.push(b'+');
    }
    out.extend(trimmed.iter().copied().filter(u8::is_ascii_digit));
    out
}

/// A field of a record type, as declared under `[types.<type>.fields.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FieldDef {
    /// Field name.
    pub name: String,
    /// Value type.
    pub kind: FieldKind,
    /// Maximum length in bytes of the canonical plaintext.
    pub max_len: usize,
    /// Whether every record of the type must have this field.
    pub required: bool,
    /// The purpose this field is processed for (declared in the schema).
    pub purpose: String,
    /// Whether a blind index is kept so records can be found by this field (`index = true`, or
    /// `index = "unique"`).
    pub index: bool,
    /// Whether no two subjects may hold the same value (after normalisation) in this field
    /// (`index = "unique"`; implies `index`). Enforced on every write, see `Vault::transaction`.
    pub unique: bool,
    /// What a masked read shows of the field (`mask = "..."`); `None`: a masked read leaves the
    /// field out.
    pub mask: Option<super::Mask>,
    /// For `phone` fields of a schema with a `default_country`: values are parsed as phone
    /// numbers of that country, stored and indexed in E.164. `None` (other kinds, or no
    /// `default_country`) keeps the original rules, so old vaults' index entries still match.
    pub country: Option<PhoneCountry>,
}

/// A field value was rejected. Messages name the field and the rule, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The JSON type is wrong (including `null`, which callers treat as "absent").
    #[error("field `{field}`: wrong type, expected {expected}")]
    WrongType {
        /// Field name.
        field: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The canonical value is longer than the field's `max_len`.
    #[error("field `{field}`: value is {len} bytes, at most {max} allowed")]
    TooLong {
        /// Field name.
        field: String,
        /// The field's `max_len`.
        max: usize,
        /// Length of the rejected value in bytes.
        len: usize,
    },
    /// The value breaks a rule of its kind.
    #[error("field `{field}`: invalid value: {reason}")]
    Invalid {
        /// Field name.
        field: String,
        /// The rule that was broken.
        reason: &'static str,
    },
}

const EXPECT_STRING: &str = "a JSON string";
const EXPECT_JSON: &str = "any JSON value other than null";
const EXPECT_BYTES: &str = "a standard base64 JSON string or an array of byte values";

impl FieldDef {
    /// Validate `value` and return its canonical plaintext bytes (what gets encrypted). Never include the value in the error.
    pub fn encode(&self, value: &Value) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        match self.kind {
            FieldKind::Text => self.encode_text(self.expect_str(value)?),
            FieldKind::Email => self.encode_email(self.expect_str(value)?),
            FieldKind::Phone => self.encode_phone(self.expect_str(value)?),
            FieldKind::Date => self.encode_date(self.expect_str(value)?),
            FieldKind::DateTime => self.encode_datetime(self.expect_str(value)?),
            FieldKind::Iban => self.encode_iban(self.expect_str(value)?),
            FieldKind::Json => self.encode_json(value),
            FieldKind::Bytes => self.encode_bytes(value),
        }
    }

    /// Inverse of encode: plaintext bytes back to a JSON value (text kinds -> JSON string; json -> parsed JSON; bytes -> base64 (standard, padded) JSON string).
    ///
    /// Only well-formedness is checked (UTF-8, JSON), not the kind's rules: data
    /// stored under an older schema version must stay readable.
    pub fn decode(&self, plaintext: &[u8]) -> Result<Value, FieldError> {
        match self.kind {
            FieldKind::Json => serde_json::from_slice(plaintext)
                .map_err(|_| self.invalid("stored plaintext is not valid JSON")),
            FieldKind::Bytes => Ok(Value::String(STANDARD.encode(plaintext))),
            _ => std::str::from_utf8(plaintext)
                .map(|s| Value::String(s.to_owned()))
                .map_err(|_| self.invalid("stored plaintext is not valid UTF-8")),
        }
    }

    /// The normalised form used for the blind index (only for indexable kinds): email: trimmed +
    /// lower-cased; phone: E.164 when the field has a country (see [`FieldDef::country`]), else
    /// (and for a stored value that does not parse) a leading '+' if present and the digits;
    /// iban: upper-cased, spaces removed; text: trimmed; date, datetime: as is (already
    /// canonical). Input is the canonical plaintext bytes from encode, or a value stored by an
    /// older schema version (a phone typed before its field had a country is parsed here, so a
    /// re-index makes it findable by every spelling).
    ///
    /// For `json` and `bytes` (not indexable) the plaintext is returned unchanged.
    pub fn index_form(&self, plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
        match self.kind {
            FieldKind::Email => match std::str::from_utf8(plaintext) {
                Ok(s) => Zeroizing::new(s.trim().to_lowercase().into_bytes()),
                Err(_) => Zeroizing::new(plaintext.trim_ascii().to_ascii_lowercase()),
            },
            FieldKind::Text => match std::str::from_utf8(plaintext) {
                Ok(s) => Zeroizing::new(s.trim().as_bytes().to_vec()),
                Err(_) => Zeroizing::new(plaintext.trim_ascii().to_vec()),
            },
            FieldKind::Phone => {
                let e164 = self.country.and_then(|c| {
                    let s = std::str::from_utf8(plaintext).ok()?;
                    Self::phone_chars_ok(s).then(|| c.e164(s)).flatten()
                });
                e164.unwrap_or_else(|| legacy_phone_form(plaintext))
            }
            FieldKind::Iban => {
                let mut out = Zeroizing::new(Vec::with_capacity(plaintext.len()));
                out.extend(
                    plaintext
                        .iter()
                        .filter(|b| !b.is_ascii_whitespace())
                        .map(u8::to_ascii_uppercase),
                );
                out
            }
            FieldKind::Date | FieldKind::DateTime | FieldKind::Json | FieldKind::Bytes => {
                Zeroizing::new(plaintext.to_vec())
            }
        }
    }

    fn wrong_type(&self, expected: &'static str) -> FieldError {
        FieldError::WrongType {
            field: self.name.clone(),
            expected,
        }
    }

    fn invalid(&self, reason: &'static str) -> FieldError {
        FieldError::Invalid {
            field: self.name.clone(),
            reason,
        }
    }

    fn check_len(&self, len: usize) -> Result<(), FieldError> {
        if len > self.max_len {
            return Err(FieldError::TooLong {
                field: self.name.clone(),
                max: self.max_len,
                len,
            });
        }
        Ok(())
    }

    fn expect_str<'v>(&self, value: &'v Value) -> Result<&'v str, FieldError> {
        match value {
            Value::String(s) => Ok(s),
            _ => Err(self.wrong_type(EXPECT_STRING)),
        }
    }

    fn encode_text(&self, s: &str) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        self.check_len(s.len())?;
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(self.invalid("contains a control character other than newline or tab"));
        }
        Ok(Zeroizing::new(s.as_bytes().to_vec()))
    }

    fn encode_email(&self, s: &str) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        let s = s.trim();
        self.check_len(s.len())?;
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.invalid("an e-mail address must not contain whitespace"));
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err(self.invalid("an e-mail address must contain an '@'"));
        };
        if domain.contains('@') {
            return Err(self.invalid("an e-mail address must contain exactly one '@'"));
        }
        if local.is_empty() {
            return Err(self.invalid("the part before the '@' is empty"));
        }
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return Err(
                self.invalid("the domain must be dot-separated non-empty labels, e.g. example.nl")
            );
        }
        Ok(Zeroizing::new(s.as_bytes().to_vec()))
    }

    /// Whether `s` (trimmed) holds only what a typed phone number does. Also the guard in front
    /// of the phone parser: it only ever sees these characters, so none of its other syntax
    /// (`tel:` URIs, extensions, letters) is in play.
    fn phone_chars_ok(s: &str) -> bool {
        let s = s.trim();
        let body = s.strip_prefix('+').unwrap_or(s);
        body.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.'))
    }

    fn encode_phone(&self, s: &str) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        let s = s.trim();
        self.check_len(s.len())?;
        if !Self::phone_chars_ok(s) {
            return Err(self.invalid(
                "a phone number may only contain digits, spaces, '-', '(', ')', '.' and a leading '+'",
            ));
        }
        if s.bytes().filter(u8::is_ascii_digit).count() < 6 {
            return Err(self.invalid("a phone number needs at least 6 digits"));
        }
        let Some(country) = self.country else {
            return Ok(Zeroizing::new(s.as_bytes().to_vec()));
        };
        // With a country the E.164 form is what is stored, not the spelling typed: every read and
        // export shows one form, and it is the index form, so what `get` shows is what `find`
        // matches. The spelling carries nothing the number does not.
        let e164 = country.e164(s).ok_or_else(|| {
            self.invalid(
                "not a possible phone number (a national number of the schema's \
                 default_country, or one with its country code)",
            )
        })?;
        self.check_len(e164.len())?;
        Ok(e164)
    }

    fn encode_datetime(&self, s: &str) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        if s.len() > MAX_DATETIME_INPUT {
            return Err(self.invalid("a date-time is at most 64 characters"));
        }
        let parsed = DateTime::parse_from_rfc3339(s).map_err(|_| {
            self.invalid(
                "a date-time must be RFC 3339 with an offset, e.g. 2026-12-06T13:05:00+01:00",
            )
        })?;
        // Sub-seconds are dropped (truncated, so a moment never moves into the next second, day
        // or year): one fixed-length, sortable form, in which two spellings of the same second
        // index alike; a consent or contract time is kept to the second. A leap second becomes
        // :59 of its minute.
        let utc = parsed.with_timezone(&Utc);
        let utc = utc.with_nanosecond(0).unwrap_or(utc);
        if !(1000..=9999).contains(&utc.year()) {
            return Err(self.invalid("the year in UTC must be between 1000 and 9999"));
        }
        let out = Zeroizing::new(utc.format("%Y-%m-%dT%H:%M:%SZ").to_string().into_bytes());
        self.check_len(out.len())?;
        Ok(out)
    }

    fn encode_date(&self, s: &str) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        self.check_len(s.len())?;
        let b = s.as_bytes();
        let shape_ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape_ok {
            return Err(self.invalid("a date must be written YYYY-MM-DD"));
        }
        let num = |r: std::ops::Range<usize>| {
            b[r].iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
        };
        let (year, month, day) = (num(0..4), num(5..7), num(8..10));
        if !(1000..=9999).contains(&year) {
            return Err(self.invalid("the year must be between 1000 and 9999"));
        }
        if !(1..=12).contains(&month) {
            return Err(self.invalid("the month must be between 01 and 12"));
        }
        if day < 1 || day > days_in_month(year, month) {
            return Err(self.invalid("the day does not exist in that month"));
        }
        Ok(Zeroizing::new(b.to_vec()))
    }

    fn encode_iban(&self, s: &str) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        let mut compact = Zeroizing::new(Vec::with_capacity(s.len()));
        compact.extend(
            s.bytes()
                .filter(|b| *b != b' ')
                .map(|b| b.to_ascii_uppercase()),
        );
        self.check_len(compact.len())?;
        if !(15..=34).contains(&compact.len()) {
            return Err(self.invalid("an IBAN has 15 to 34 characters"));
        }
        let shape_ok = compact[..2].iter().all(u8::is_ascii_uppercase)
            && compact[2..4].iter().all(u8::is_ascii_digit)
            && compact[4..].iter().all(u8::is_ascii_alphanumeric);
        if !shape_ok {
            return Err(
                self.invalid("an IBAN is a country code, two check digits and letters or digits")
            );
        }
        // ISO 13616 / ISO 7064 mod 97-10: move the first four characters to the
        // end, letters count as 10..=35, the number modulo 97 must be 1.
        let remainder = compact[4..]
            .iter()
            .chain(&compact[..4])
            .fold(0u32, |rem, c| {
                if c.is_ascii_digit() {
                    (rem * 10 + u32::from(c - b'0')) % 97
                } else {
                    (rem * 100 + u32::from(c - b'A') + 10) % 97
                }
            });
        if remainder != 1 {
            return Err(self.invalid("the IBAN check digits are wrong"));
        }
        Ok(compact)
    }

    fn encode_json(&self, value: &Value) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        if value.is_null() {
            return Err(self.wrong_type(EXPECT_JSON));
        }
        // Measure first, then write into an exactly sized buffer, so no
        // reallocation leaves un-wiped copies of the plaintext behind.
        let mut counter = ByteCounter(0);
        serde_json::to_writer(&mut counter, value)
            .map_err(|_| self.invalid("cannot be serialised as JSON"))?;
        self.check_len(counter.0)?;
        let mut out = Zeroizing::new(Vec::with_capacity(counter.0));
        serde_json::to_writer(&mut *out, value)
            .map_err(|_| self.invalid("cannot be serialised as JSON"))?;
        Ok(out)
    }

    fn encode_bytes(&self, value: &Value) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        match value {
            Value::String(s) => {
                let decoded = Zeroizing::new(
                    STANDARD
                        .decode(s)
                        .map_err(|_| self.invalid("not valid standard base64 (with padding)"))?,
                );
                self.check_len(decoded.len())?;
                Ok(decoded)
            }
            Value::Array(items) => {
                self.check_len(items.len())?;
                let mut out = Zeroizing::new(Vec::with_capacity(items.len()));
                for item in items {
                    let byte = item
                        .as_u64()
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or_else(|| self.invalid("array elements must be integers 0..=255"))?;
                    out.push(byte);
                }
                Ok(out)
            }
            _ => Err(self.wrong_type(EXPECT_BYTES)),
        }
    }
}

/// Number of days in `month` (1..=12) of `year` (proleptic Gregorian calendar).
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An `io::Write` that only counts bytes.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
