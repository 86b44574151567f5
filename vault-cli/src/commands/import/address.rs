//! Splitting a Dutch or Belgian street line ("Kerkstraat 12", "Laan van Meerdervoort 123-bis",
//! "Rue de la Loi 16 bus 3") into the street name, the house number and its addition, as the
//! example schema stores them. Shop systems export the whole line in one cell (WooCommerce's
//! `shipping_address_1`, Magento's `Street Address`).
//!
//! The house number is the last word that starts with a digit and has a street name before it,
//! so a street name may itself hold numbers ("2e Hugo de Grootstraat 4", "Plein 1940-1945 3").
//! A line kluis cannot read with confidence is refused, never guessed: a parcel sent to a wrong
//! number is worse than a row to fix by hand. Reasons never quote the line.

/// A street line in its three parts.
#[derive(Debug, PartialEq, Eq)]
pub struct StreetLine {
    /// The street name ("Laan van Meerdervoort").
    pub street: String,
    /// The house number, digits only ("123").
    pub number: String,
    /// The addition ("bis", "A", "hs", "bus 3"); empty when there is none.
    pub addition: String,
}

/// Words after which a number is not the house number but belongs to the addition: Belgian box
/// words (in "Rue de la Loi 16 bus 3" the 3 is the box, 16 the house number) and a spaced range
/// or floor ("Kerkstraat 12 - 14", "Kerkstraat 12 / 2").
const JOINERS: &[&str] = &["bus", "bte", "boîte", "boite", "box", "-", "/"];

/// More words than this after the house number are not an addition but a misread line
/// ("Kerkstraat 12 achter de kerk"); "bus 3" is two.
const MAX_ADDITION_WORDS: usize = 2;

/// Splits `line`; `Err` says why not, without quoting it.
pub fn split(line: &str) -> Result<StreetLine, &'static str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = number_position(&words)?;
    let street = words[..at].join(" ");
    let street = street.trim_end_matches(',').trim();
    if !street.chars().any(char::is_alphabetic) {
        return Err("no street name before the house number");
    }
    let token = words[at];
    let digits = token.len() - token.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, glued) = token.split_at(digits);
    let rest = &words[at + 1..];
    if rest.len() > MAX_ADDITION_WORDS {
        return Err("more after the house number than an addition");
    }
    let addition = std::iter::once(glued)
        .chain(rest.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let addition = addition
        .trim_start_matches(['-', '/', ',', ' '])
        .trim()
        .to_owned();
    Ok(StreetLine {
        street: street.to_owned(),
        number: number.to_owned(),
        addition,
    })
}

/// The index of the house number's word: the last word starting with a digit after the first
/// word, skipping a number that follows a [`JOINERS`] word.
fn number_position(words: &[&str]) -> Result<usize, &'static str> {
    let starts_with_digit = |w: &&str| w.starts_with(|c: char| c.is_ascii_digit());
    let mut candidates = (1..words.len())
        .rev()
        .filter(|&i| starts_with_digit(&words[i]));
    let last = candidates
        .next()
        .ok_or("no house number after the street name")?;
    let joined = JOINERS
        .iter()
        .any(|j| words[last - 1].eq_ignore_ascii_case(j));
    if !joined {
        return Ok(last);
    }
    candidates
        .next()
        .ok_or("no house number before the addition")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(line: &str) -> (String, String, String) {
        let s = split(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        (s.street, s.number, s.addition)
    }

    fn ok(street: &str, number: &str, addition: &str) -> (String, String, String) {
        (street.into(), number.into(), addition.into())
    }

    #[test]
    fn dutch_street_lines_split_into_street_number_and_addition() {
        assert_eq!(parts("Kerkstraat 12"), ok("Kerkstraat", "12", ""));
        assert_eq!(
            parts("Laan van Meerdervoort 123-bis"),
            ok("Laan van Meerdervoort", "123", "bis")
        );
        assert_eq!(parts("Dorpsstraat 5 A"), ok("Dorpsstraat", "5", "A"));
        assert_eq!(parts("Hoofdweg 7a"), ok("Hoofdweg", "7", "a"));
        assert_eq!(
            parts("2e Hugo de Grootstraat 4 hs"),
            ok("2e Hugo de Grootstraat", "4", "hs")
        );
        assert_eq!(parts("  Kerkstraat   12  "), ok("Kerkstraat", "12", ""));
        assert_eq!(parts("Kerkstraat, 12"), ok("Kerkstraat", "12", ""));
        assert_eq!(parts("Kerkstraat 12 - 14"), ok("Kerkstraat", "12", "14"));
        assert_eq!(parts("Kerkstraat 12/2"), ok("Kerkstraat", "12", "2"));
        assert_eq!(parts("Plein 1940-1945 3"), ok("Plein 1940-1945", "3", ""));
    }

    #[test]
    fn belgian_box_numbers_are_the_addition() {
        assert_eq!(
            parts("Rue de la Loi 16 bus 3"),
            ok("Rue de la Loi", "16", "bus 3")
        );
        assert_eq!(parts("Meir 50 Bte 12"), ok("Meir", "50", "Bte 12"));
    }

    #[test]
    fn lines_without_a_readable_number_are_refused_without_quoting_them() {
        for (line, why) in [
            ("Straat zonder nummer", "no house number"),
            ("12", "no house number"),
            ("Kerkstraat12", "no house number"),
            ("- 12", "no house number"),
            (", 12", "no street name"),
            (
                "Kerkstraat 12 achter de oude kerk",
                "more after the house number",
            ),
            ("bus 3", "no house number"),
        ] {
            let e = split(line).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
            assert!(!line.split_whitespace().any(|w| e.contains(w)), "{e}");
        }
    }
}
