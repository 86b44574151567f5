//! Deterministic generator of Dutch web-shop customers (names with tussenvoegsels, addresses with
//! postcodes, e-mail addresses, mobile and landline numbers, IBANs with valid mod-97 check digits,
//! birth dates) and invoice snapshots. The same index always gives the same record.

use serde_json::{json, Value};

/// A small deterministic PRNG (SplitMix64): benchmark data must be the same in every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Jan", "Pieter", "Sanne", "Fatima", "Daan", "Emma", "Mohammed", "Lotte", "Sem", "Julia",
    "Noah", "Tess", "Bram", "Anouk", "Youssef", "Fleur", "Lucas", "Saskia", "Kees", "Ilse",
    "Mehmet", "Femke", "Thijs", "Marloes", "Joost", "Ingrid", "Wouter", "Esther", "Ruud", "Noor",
    "Priya", "Dewi", "Gerrit", "Hanneke", "Bart", "Mila", "Stijn", "Zoë", "Rik", "Anneloes",
];
/// Tussenvoegsels, weighted: about half the names have none.
const TUSSEN: &[&str] = &[
    "", "", "", "", "", "", "", "", "", "van", "van", "de", "de", "van der", "van den", "den",
    "ter", "van 't", "in 't", "van de", "te", "op de",
];
const LAST: &[&str] = &[
    "Jansen",
    "Vries",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "Mulder",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "Dekker",
    "El Amrani",
    "Yilmaz",
    "Berg",
    "Dijk",
    "Brink",
    "Wal",
    "Hoek",
    "Graaf",
    "Kok",
    "Jacobs",
    "Veen",
    "Boer",
    "Bruijn",
    "Leeuwen",
    "Heuvel",
    "Wijk",
    "Haan",
    "Koster",
    "Bulut",
    "Sardjoe",
    "Nguyen",
    "Doorn",
    "Hof",
    "Laan",
    "Meer",
    "Velde",
    "Pol",
    "Zanden",
];
const STREET: &[&str] = &[
    "Damrak",
    "Coolsingel",
    "Oudegracht",
    "Grote Markt",
    "Kerkstraat",
    "Stationsweg",
    "Dorpsstraat",
    "Molenweg",
    "Prinsengracht",
    "Lange Voorhout",
    "Vrijthof",
    "Burgemeester de \
     Withstraat",
    "Julianalaan",
    "Wilhelminastraat",
    "Schoolstraat",
    "Nieuwe Binnenweg",
];
/// Cities with the first two digits of their postcodes.
const CITY: &[(&str, u64)] = &[
    ("Amsterdam", 10),
    ("Rotterdam", 30),
    ("Den Haag", 25),
    ("Utrecht", 35),
    ("Groningen", 97),
    ("Eindhoven", 56),
    ("Zwolle", 80),
    ("Leiden", 23),
    ("Maastricht", 62),
    ("'s-Hertogenbosch", 52),
    ("Haarlem", 20),
    ("Nijmegen", 65),
];
const ADDITION: &[&str] = &["", "", "", "", "", "", "A", "B", "bis", "-1", "-2", " hs"];
const DOMAINS: &[&str] = &[
    "gmail.com",
    "hotmail.com",
    "ziggo.nl",
    "kpnmail.nl",
    "outlook.com",
    "xs4all.nl",
    "planet.nl",
    "live.nl",
    "icloud.com",
    "voorbeeld.nl",
];
const AREA: &[&str] = &[
    "020", "010", "070", "030", "050", "040", "038", "071", "043", "073",
];
const BANKS: &[&str] = &[
    "ABNA", "INGB", "RABO", "SNSB", "TRIO", "ASNB", "KNAB", "BUNQ",
];
const PRODUCTS: &[(&str, u64)] = &[
    ("Koffiebonen 1 kg", 1_895),
    ("Stroopwafels (doos)", 499),
    ("Fietslamp LED", 2_450),
    ("Regenjas", 8_995),
    ("Drop assortiment", 375),
    ("Theedoek set", 1_250),
];

/// The ISO 13616 mod-97 remainder of an IBAN (letters as 10..35, the first 4 characters moved to
/// the end). A valid IBAN gives 1.
pub fn iban_mod97(iban: &str) -> u32 {
    let s: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() < 5 {
        return 0;
    }
    let (head, tail) = s.split_at(4);
    let mut rem = 0u32;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return 0,
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem
}

/// A valid Dutch IBAN (mod-97 check digits) for a random account.
pub fn iban(rng: &mut Rng) -> String {
    let bank = rng.pick(BANKS);
    let account = format!("{:010}", rng.below(10_000_000_000));
    let bban = format!("{bank}{account}");
    let rem = iban_mod97(&format!("NL00{bban}"));
    format!("NL{:02}{bban}", 98 - rem)
}

fn rng_for(i: u64, salt: u64) -> Rng {
    Rng::new(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ salt)
}

/// The `customer` record of subject number `i`: 8 fields (first name, last name, e-mail, phone,
/// birth date, street with house number, postcode and city, IBAN) plus a tussenvoegsel for about
/// half the customers. E-mail addresses are unique per `i`.
pub fn customer(i: u64) -> Value {
    let mut rng = rng_for(i, 0x00C0_FFEE);
    let first = rng.pick(FIRST);
    let tv = rng.pick(TUSSEN);
    let last = rng.pick(LAST);
    let local_last: String = format!("{tv}{last}")
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let email = format!(
        "{}.{}{}@{}",
        first.to_lowercase().replace('ë', "e"),
        local_last,
        i,
        rng.pick(DOMAINS)
    );
    let phone = if rng.below(4) == 0 {
        format!("{}-{:07}", rng.pick(AREA), rng.below(10_000_000))
    } else if rng.below(2) == 0 {
        format!("+31 6 {:08}", rng.below(100_000_000))
    } else {
        format!("06-{:08}", rng.below(100_000_000))
    };
    let birth = format!(
        "{}-{:02}-{:02}",
        1940 + rng.below(66),
        1 + rng.below(12),
        1 + rng.below(28)
    );
    let street = format!(
        "{} {}{}",
        rng.pick(STREET),
        1 + rng.below(300),
        rng.pick(ADDITION)
    );
    let (city, pc) = CITY[rng.below(CITY.len() as u64) as usize];
    let postcode_city = format!(
        "{}{:02} {}{} {}",
        pc,
        rng.below(100),
        (b'A' + rng.below(26) as u8) as char,
        (b'A' + rng.below(26) as u8) as char,
        city
    );
    let iban = iban(&mut rng);
    let mut v = json!({
        "first_name": first, "last_name": last, "email": email, "phone": phone,
        "birth_date": birth, "street": street, "postcode_city": postcode_city, "iban": iban,
    });
    if !tv.is_empty() {
        v["tussenvoegsel"] = json!(tv);
    }
    v
}

/// An invoice snapshot for customer `i` (billing name and address copied from the customer, 1-4
/// invoice lines with Dutch VAT, amounts as decimal strings).
pub fn invoice(i: u64) -> Value {
    let c = customer(i);
    let mut rng = rng_for(i, 0x1F_AC7E);
    let name = match c.get("tussenvoegsel").and_then(Value::as_str) {
        Some(tv) => format!("{} {} {}", s(&c, "first_name"), tv, s(&c, "last_name")),
        None => format!("{} {}", s(&c, "first_name"), s(&c, "last_name")),
    };
    let mut lines = Vec::new();
    let mut total = 0u64;
    for _ in 0..1 + rng.below(4) {
        let (desc, cents) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
        let qty = 1 + rng.below(3);
        let vat = if cents < 1_000 { 9 } else { 21 };
        total += qty * cents * (100 + vat) / 100;
        lines.push(json!({
            "description": desc, "quantity": qty,
            "unit_price": format!("{}.{:02}", cents / 100, cents % 100), "vat_rate": vat.to_string(),
        }));
    }
    json!({
        "invoice_number": format!("F2026-{i:07}"),
        "invoice_date": format!("2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        "billing_name": name,
        "billing_address": format!("{}\n{}", s(&c, "street"), s(&c, "postcode_city")),
        "iban": s(&c, "iban"),
        "lines": lines,
        "total": format!("{}.{:02}", total / 100, total % 100),
    })
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The e-mail address of customer `i` (for lookups).
pub fn email_of(i: u64) -> String {
    s(&customer(i), "email").to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ibans_are_valid_mod97_and_dutch() {
        for i in 0..5_000 {
            let ib = iban(&mut Rng::new(i));
            assert_eq!(ib.len(), 18, "{ib}");
            assert!(ib.starts_with("NL"));
            assert_eq!(iban_mod97(&ib), 1, "{ib}");
        }
        // A known-good Dutch IBAN and a corrupted one.
        assert_eq!(iban_mod97("NL91ABNA0417164300"), 1);
        assert_ne!(iban_mod97("NL91ABNA0417164301"), 1);
    }

    #[test]
    fn tussenvoegsels_present_in_a_fair_share() {
        let with = (0..2_000)
            .filter(|&i| customer(i).get("tussenvoegsel").is_some())
            .count();
        assert!((600..1_400).contains(&with), "{with} of 2000");
        assert!((0..2_000).any(|i| customer(i)["tussenvoegsel"] == "van der"));
    }

    #[test]
    fn deterministic_and_emails_unique() {
        assert_eq!(customer(7), customer(7));
        assert_eq!(invoice(7), invoice(7));
        assert_ne!(customer(7), customer(8));
        let emails: std::collections::HashSet<String> = (0..2_000).map(email_of).collect();
        assert_eq!(emails.len(), 2_000);
    }

    #[test]
    fn records_are_valid_for_the_bench_schema() {
        let schema = crate::schema();
        for (ty, gen) in [
            ("customer", customer as fn(u64) -> Value),
            ("invoice", invoice),
        ] {
            let rt = schema.record_type(ty).unwrap();
            for i in 0..500 {
                let v = gen(i);
                for (k, val) in v.as_object().unwrap() {
                    rt.field(k)
                        .unwrap_or_else(|| panic!("{ty}.{k} not in schema"))
                        .encode(val)
                        .unwrap_or_else(|e| panic!("{ty}.{k} = {val}: {e}"));
                }
            }
        }
        assert!(customer(1).as_object().unwrap().len() >= 8);
    }
}
