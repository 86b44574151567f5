//! Shared helpers for the kluis benchmarks: a deterministic generator of realistic Dutch web-shop
//! customers, and the plaintext baseline store.
#![forbid(unsafe_code)]

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
    /// Uniform in `0..n`.
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
    "Mehmet", "Femke", "Thijs", "Marloes",
];
const TUSSEN: &[&str] = &[
    "", "", "", "van", "de", "van der", "van den", "den", "ter", "van 't", "in 't",
];
const LAST: &[&str] = &[
    "Jansen",
    "de Vries",
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
];
const CITY: &[&str] = &[
    "Amsterdam",
    "Rotterdam",
    "Utrecht",
    "Groningen",
    "Eindhoven",
    "Zwolle",
    "Leiden",
    "Maastricht",
];
const BANKS: &[&str] = &["ABNA", "INGB", "RABO", "SNSB", "TRIO", "ASNB"];

/// A valid Dutch IBAN (ISO 13616 mod-97 check digits) for a random account.
pub fn iban(rng: &mut Rng) -> String {
    let bank = rng.pick(BANKS);
    let account = format!("{:010}", rng.below(10_000_000_000));
    let bban = format!("{bank}{account}");
    let digits: String = format!("{bban}NL00")
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                c.to_string()
            } else {
                (c as u32 - 'A' as u32 + 10).to_string()
            }
        })
        .collect();
    let rem = digits
        .bytes()
        .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97);
    format!("NL{:02}{bban}", 98 - rem)
}

/// The `customer` record of subject number `i` (6 fields, as in `examples/webshop.toml`).
pub fn customer(i: u64) -> Value {
    let mut rng = Rng::new(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x00C0_FFEE);
    let first = rng.pick(FIRST);
    let tv = rng.pick(TUSSEN);
    let last = rng.pick(LAST);
    let email = format!(
        "{}.{}{}@voorbeeld{}.nl",
        first.to_lowercase(),
        last.to_lowercase().replace(' ', ""),
        i,
        i % 7
    );
    let phone = format!("06-{:08}", rng.below(100_000_000));
    let birth = format!(
        "{}-{:02}-{:02}",
        1940 + rng.below(66),
        1 + rng.below(12),
        1 + rng.below(28)
    );
    let mut v = json!({
        "first_name": first, "last_name": last, "email": email, "phone": phone, "birth_date": birth,
    });
    if !tv.is_empty() {
        v["tussenvoegsel"] = json!(tv);
    }
    v
}

/// The `address` record of subject number `i`.
pub fn address(i: u64) -> Value {
    let mut rng = Rng::new(i ^ 0x0ADD_2E55);
    json!({
        "recipient_name": format!("{} {}", rng.pick(FIRST), rng.pick(LAST)),
        "street": rng.pick(STREET),
        "house_number": format!("{}", 1 + rng.below(300)),
        "postcode": format!("{} {}{}", 1000 + rng.below(9000), (b'A' + rng.below(26) as u8) as char, (b'A' + rng.below(26) as u8) as char),
        "city": rng.pick(CITY),
        "country": "NL",
    })
}

/// The e-mail address of customer `i` (for lookups).
pub fn email_of(i: u64) -> String {
    customer(i)["email"].as_str().unwrap_or_default().to_owned()
}

/// The honest "what a shop does today" baseline: records as JSON in sled, no crypto, with the same
/// secondary index on e-mail, both written in one atomic batch.
pub struct PlainStore {
    tree: sled::Tree,
    _db: sled::Db,
}

impl PlainStore {
    /// Opens a plaintext store in `dir` with the same sled settings kluis uses.
    pub fn open(dir: &std::path::Path) -> sled::Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let tree = db.open_tree(b"plain")?;
        Ok(PlainStore { tree, _db: db })
    }
    /// Stores a record and its e-mail index entry.
    pub fn put(&self, id: &[u8; 16], record: &Value) -> sled::Result<()> {
        let mut b = sled::Batch::default();
        let email = record["email"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        let mut ik = vec![b'i'];
        ik.extend_from_slice(email.as_bytes());
        ik.extend_from_slice(id);
        b.insert(ik, &[][..]);
        let mut rk = vec![b'r'];
        rk.extend_from_slice(id);
        b.insert(rk, serde_json::to_vec(record).unwrap_or_default());
        self.tree.apply_batch(b)
    }
    /// Reads and parses a record.
    pub fn get(&self, id: &[u8; 16]) -> sled::Result<Option<Value>> {
        let mut rk = vec![b'r'];
        rk.extend_from_slice(id);
        Ok(self
            .tree
            .get(rk)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }
    /// Subjects with this e-mail.
    pub fn find(&self, email: &str) -> sled::Result<Vec<Vec<u8>>> {
        let mut p = vec![b'i'];
        p.extend_from_slice(email.trim().to_lowercase().as_bytes());
        self.tree
            .scan_prefix(p)
            .map(|r| r.map(|(k, _)| k[k.len() - 16..].to_vec()))
            .collect()
    }
    /// Bytes on disk.
    pub fn size_on_disk(&self) -> sled::Result<u64> {
        self._db.size_on_disk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_records_are_valid_for_the_example_schema() {
        let schema =
            vault_core::Schema::from_toml(include_str!("../../examples/webshop.toml")).unwrap();
        let rt = schema.record_type("customer").unwrap();
        let at = schema.record_type("address").unwrap();
        for i in 0..2000 {
            for (rt, v) in [(rt, customer(i)), (at, address(i))] {
                for (k, val) in v.as_object().unwrap() {
                    rt.field(k)
                        .unwrap()
                        .encode(val)
                        .unwrap_or_else(|e| panic!("{k}: {e}"));
                }
            }
            let ib = iban(&mut Rng::new(i));
            let f = vault_core::schema::FieldDef {
                name: "iban".into(),
                kind: vault_core::schema::FieldKind::Iban,
                max_len: 34,
                required: true,
                purpose: "x".into(),
                index: false,
            };
            f.encode(&json!(ib)).unwrap();
        }
        assert_eq!(customer(7), customer(7), "deterministic");
    }
}
