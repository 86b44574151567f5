//! The transforms a mapping applies to a cell. A transform that cannot make sense of a cell
//! refuses it with a reason that never quotes it (the row is then rejected, not stored wrongly).

use serde::Deserialize;
use vault_core::schema::PhoneCountry;

use super::address;

/// One step of a field's `transform = [...]` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// Strip surrounding white space.
    Trim,
    /// Lower case.
    Lower,
    /// Upper case.
    Upper,
    /// A country name or code to its ISO 3166-1 alpha-2 code ([`COUNTRIES`]).
    CountryIso,
    /// A date in the source's `format` (chrono) to `YYYY-MM-DD`.
    Date,
    /// Drop the `'` a spreadsheet puts before a cell it must keep as text (`'+31…`).
    StripLeadingQuote,
    /// The first word of a full name.
    SplitNameFirst,
    /// Everything after the first word of a full name.
    SplitNameLast,
    /// A phone number as typed (`06-12345678`, `(020) 123 4567`, `0032 …`, `+31 …`) to E.164,
    /// `+31612345678`; national numbers are read as the source's `default_country`'s.
    E164,
    /// The street name of a Dutch or Belgian street line ("Laan van Meerdervoort 123-bis").
    StreetName,
    /// The house number of a street line, digits only ("123").
    HouseNumber,
    /// The addition after a street line's house number ("bis", "A", "bus 3"); empty if none.
    HouseNumberAddition,
}

/// Country names (English, native, Dutch) and codes → ISO 3166-1 alpha-2, for the countries
/// web shops in the EU mostly ship to. Keys are lower case.
const COUNTRIES: &[(&str, &[&str])] = &[
    (
        "NL",
        &[
            "netherlands",
            "the netherlands",
            "nederland",
            "holland",
            "nld",
        ],
    ),
    (
        "BE",
        &["belgium", "belgië", "belgie", "belgique", "belgien", "bel"],
    ),
    (
        "DE",
        &["germany", "deutschland", "duitsland", "allemagne", "deu"],
    ),
    ("FR", &["france", "frankrijk", "frankreich", "fra"]),
    ("LU", &["luxembourg", "luxemburg", "lux"]),
    ("AT", &["austria", "österreich", "oostenrijk", "aut"]),
    (
        "CH",
        &["switzerland", "schweiz", "suisse", "zwitserland", "che"],
    ),
    (
        "GB",
        &[
            "united kingdom",
            "great britain",
            "uk",
            "verenigd koninkrijk",
            "gbr",
        ],
    ),
    ("IE", &["ireland", "ierland", "éire", "irl"]),
    ("ES", &["spain", "españa", "espana", "spanje", "esp"]),
    ("PT", &["portugal", "prt"]),
    ("IT", &["italy", "italia", "italië", "italie", "ita"]),
    ("DK", &["denmark", "danmark", "denemarken", "dnk"]),
    ("SE", &["sweden", "sverige", "zweden", "swe"]),
    ("NO", &["norway", "norge", "noorwegen", "nor"]),
    ("FI", &["finland", "suomi", "fin"]),
    ("PL", &["poland", "polska", "polen", "pol"]),
    (
        "CZ",
        &[
            "czechia",
            "czech republic",
            "česko",
            "tsjechië",
            "tsjechie",
            "cze",
        ],
    ),
    (
        "US",
        &[
            "united states",
            "united states of america",
            "usa",
            "verenigde staten",
        ],
    ),
];

impl Transform {
    /// The transform's name as written in a mapping (for reasons).
    pub fn name(self) -> &'static str {
        match self {
            Transform::Trim => "trim",
            Transform::Lower => "lower",
            Transform::Upper => "upper",
            Transform::CountryIso => "country_iso",
            Transform::Date => "date",
            Transform::StripLeadingQuote => "strip_leading_quote",
            Transform::SplitNameFirst => "split_name_first",
            Transform::SplitNameLast => "split_name_last",
            Transform::E164 => "e164",
            Transform::StreetName => "street_name",
            Transform::HouseNumber => "house_number",
            Transform::HouseNumberAddition => "house_number_addition",
        }
    }

    /// Applies the transform; `param` is the source's parameter for it: the `format` of
    /// `date`, the `default_country` of `e164`. An empty cell stays empty (the field is then
    /// left out), so no transform refuses it; so does one of white space only.
    pub fn apply(self, cell: &str, param: &str) -> Result<String, &'static str> {
        if cell.trim().is_empty() {
            return Ok(String::new());
        }
        match self {
            Transform::Trim => Ok(cell.trim().to_owned()),
            Transform::Lower => Ok(cell.to_lowercase()),
            Transform::Upper => Ok(cell.to_uppercase()),
            Transform::CountryIso => country_iso(cell),
            Transform::Date => date(cell, param),
            Transform::StripLeadingQuote => Ok(cell.strip_prefix('\'').unwrap_or(cell).to_owned()),
            Transform::SplitNameFirst => Ok(split_name(cell).0.to_owned()),
            Transform::SplitNameLast => Ok(split_name(cell).1.to_owned()),
            Transform::E164 => e164(cell, param),
            // Each of the three refuses a line it cannot split, so a row is never stored with a
            // street but without its number.
            Transform::StreetName => address::split(cell).map(|s| s.street),
            Transform::HouseNumber => address::split(cell).map(|s| s.number),
            Transform::HouseNumberAddition => address::split(cell).map(|s| s.addition),
        }
    }

    /// The name of the source key that gives this transform its parameter, if it takes one.
    pub fn param_key(self) -> Option<&'static str> {
        match self {
            Transform::Date => Some("format"),
            Transform::E164 => Some("default_country"),
            _ => None,
        }
    }
}

/// The phone number in E.164; `country` (ISO 3166-1 alpha-2) reads national numbers. The
/// mapping's check made sure `country` is one the phone metadata knows.
fn e164(cell: &str, country: &str) -> Result<String, &'static str> {
    let country =
        PhoneCountry::from_code(country).ok_or("default_country is not a known country")?;
    let cell = cell.trim();
    let cell = cell.strip_prefix('\'').unwrap_or(cell);
    country
        .to_e164(cell)
        .map(|n| n.as_str().to_owned())
        .ok_or("not a phone number (digits, spaces, - ( ) . and a leading + or 00 only, a possible length for its country)")
}

fn country_iso(cell: &str) -> Result<String, &'static str> {
    let key = cell.trim().to_lowercase();
    COUNTRIES
        .iter()
        .find(|(code, names)| key.eq_ignore_ascii_case(code) || names.contains(&key.as_str()))
        .map(|(code, _)| (*code).to_owned())
        .ok_or("not a country kluis knows")
}

fn date(cell: &str, format: &str) -> Result<String, &'static str> {
    chrono::NaiveDate::parse_from_str(cell.trim(), format)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| "not a date in the mapping's format")
}

/// (first word, the rest), on white space; the rest keeps its inner spacing ("van der Berg").
fn split_name(cell: &str) -> (&str, &str) {
    let t = cell.trim();
    match t.split_once(char::is_whitespace) {
        Some((first, rest)) => (first, rest.trim_start()),
        None => (t, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::Transform::*;

    #[test]
    fn case_and_space() {
        assert_eq!(Trim.apply("  Jan \t", "").unwrap(), "Jan");
        assert_eq!(
            Lower.apply("JAN@Voorbeeld.NL", "").unwrap(),
            "jan@voorbeeld.nl"
        );
        assert_eq!(Upper.apply("nl", "").unwrap(), "NL");
    }

    #[test]
    fn country_names_and_codes_become_iso_codes() {
        for c in ["Netherlands", "nederland", "NL", "nl", " Holland ", "NLD"] {
            assert_eq!(CountryIso.apply(c, "").unwrap(), "NL", "{c}");
        }
        assert_eq!(CountryIso.apply("België", "").unwrap(), "BE");
        assert_eq!(CountryIso.apply("Deutschland", "").unwrap(), "DE");
        assert_eq!(CountryIso.apply("united kingdom", "").unwrap(), "GB");
        let e = CountryIso.apply("Atlantis", "").unwrap_err();
        assert!(!e.contains("Atlantis"));
        assert!(CountryIso.apply("XX", "").is_err());
    }

    #[test]
    fn dates_in_a_format_become_iso_dates() {
        assert_eq!(Date.apply("31-12-2025", "%d-%m-%Y").unwrap(), "2025-12-31");
        assert_eq!(Date.apply("12/31/2025", "%m/%d/%Y").unwrap(), "2025-12-31");
        assert!(Date.apply("31-02-2025", "%d-%m-%Y").is_err());
        assert!(Date.apply("yesterday", "%d-%m-%Y").is_err());
        // Magento 2's customer grid writes a date of birth as "Jan 5, 1985" (presets/magento.toml).
        assert_eq!(
            Date.apply("Jan 5, 1985", "%b %d, %Y").unwrap(),
            "1985-01-05"
        );
        assert_eq!(
            Date.apply("Dec 15, 1985", "%b %d, %Y").unwrap(),
            "1985-12-15"
        );
    }

    #[test]
    fn a_spreadsheet_quote_is_dropped_once() {
        assert_eq!(
            StripLeadingQuote.apply("'+31612345678", "").unwrap(),
            "+31612345678"
        );
        assert_eq!(
            StripLeadingQuote.apply("+31612345678", "").unwrap(),
            "+31612345678"
        );
        assert_eq!(StripLeadingQuote.apply("''x", "").unwrap(), "'x");
    }

    #[test]
    fn names_split_on_the_first_word() {
        assert_eq!(
            SplitNameFirst.apply(" Jan van der Berg", "").unwrap(),
            "Jan"
        );
        assert_eq!(
            SplitNameLast.apply("Jan  van der Berg ", "").unwrap(),
            "van der Berg"
        );
        assert_eq!(SplitNameFirst.apply("Cher", "").unwrap(), "Cher");
        assert_eq!(SplitNameLast.apply("Cher", "").unwrap(), "");
    }

    #[test]
    fn phone_numbers_become_e164_in_the_default_country() {
        assert_eq!(E164.apply("06-12345678", "NL").unwrap(), "+31612345678");
        assert_eq!(
            E164.apply(" '+31 20 123 4567", "NL").unwrap(),
            "+31201234567"
        );
        assert_eq!(E164.apply("0470 12 34 56", "BE").unwrap(), "+32470123456");
        assert_eq!(
            E164.apply("0032 470 12 34 56", "NL").unwrap(),
            "+32470123456"
        );
        let e = E164.apply("06-1234abcd", "NL").unwrap_err();
        assert!(!e.contains("1234"), "{e}");
        assert!(E164.apply("12345", "NL").is_err());
    }

    #[test]
    fn empty_cells_stay_empty() {
        for t in [
            Trim,
            Lower,
            Upper,
            CountryIso,
            Date,
            StripLeadingQuote,
            SplitNameFirst,
            SplitNameLast,
            E164,
            StreetName,
            HouseNumber,
            HouseNumberAddition,
        ] {
            assert_eq!(t.apply("", "%Y").unwrap(), "", "{}", t.name());
        }
    }

    #[test]
    fn street_lines_split_into_their_three_fields() {
        let line = "Laan van Meerdervoort 123-bis";
        assert_eq!(StreetName.apply(line, "").unwrap(), "Laan van Meerdervoort");
        assert_eq!(HouseNumber.apply(line, "").unwrap(), "123");
        assert_eq!(HouseNumberAddition.apply(line, "").unwrap(), "bis");
        assert_eq!(HouseNumberAddition.apply("Kerkstraat 12", "").unwrap(), "");
        assert_eq!(
            HouseNumberAddition
                .apply("Rue de la Loi 16 bus 3", "")
                .unwrap(),
            "bus 3"
        );
        for t in [StreetName, HouseNumber, HouseNumberAddition] {
            let e = t.apply("Straat zonder nummer", "").unwrap_err();
            assert!(e.contains("no house number"), "{}: {e}", t.name());
            assert!(!e.contains("Straat") && !e.contains("zonder"), "{e}");
        }
    }
}
