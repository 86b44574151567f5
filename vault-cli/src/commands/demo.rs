//! `kluis demo`: a guided tour on a fresh vault with generated Dutch shop customers.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::{bail, Context};
use vault_core::admin::{AuditFilter, KekState};
use vault_core::schema::Schema;
use vault_core::{
    Clock, Credentials, Error, FieldState, ForgetOptions, KdfParams, OpenError, Record, RecordKey,
    Request, Vault, VaultOptions, VaultPaths,
};

/// Arguments of `kluis demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the demo vault (must not exist or be empty); a temporary one if omitted.
    pub dir: Option<PathBuf>,
}

const CUSTOMERS: [(&str, &str, &str, &str, &str); 5] = [
    (
        "Jan",
        "van der",
        "Berg",
        "jan.vanderberg@voorbeeld.nl",
        "06-12345678",
    ),
    (
        "Fatima",
        "",
        "El Amrani",
        "fatima.elamrani@voorbeeld.nl",
        "06-23456789",
    ),
    (
        "Sanne",
        "de",
        "Vries",
        "sanne.devries@voorbeeld.nl",
        "+31 20 123 4567",
    ),
    (
        "Pieter",
        "",
        "Jansen",
        "p.jansen@voorbeeld.nl",
        "06 3456 7890",
    ),
    (
        "Anouk",
        "van",
        "Dijk",
        "anouk@vandijk.example",
        "010-7654321",
    ),
];

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

/// Runs the tour.
pub fn run(args: Args) -> anyhow::Result<()> {
    let keep_dir = args.dir.is_some();
    let temp;
    let root = match args.dir {
        Some(d) => d,
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let paths = VaultPaths::in_dir(&root);
    // A random demo passphrase, never printed (with DIR, kept in a 0600 file for later commands);
    // a real vault reads it from a TTY or file.
    let passphrase = random_passphrase()?;
    let creds = Credentials::passphrase(passphrase.as_str());

    step(
        1,
        "Create a vault with the example web-shop schema (Argon2id m=64 MiB, t=3, p=4)",
    );
    let schema =
        Schema::from_toml(include_str!("../../../examples/webshop.toml")).map_err(Error::from)?;
    for p in schema.purposes() {
        let ceiling = p
            .at_most
            .as_ref()
            .map_or_else(String::new, |c| format!(", at most {c}"));
        println!(
            "    purpose {:<10} {:<42} retention: {}{ceiling}",
            p.name,
            p.legal_basis.to_string(),
            p.retention
        );
    }
    let vault = Vault::create(
        &paths,
        &creds,
        schema,
        VaultOptions::default().kdf(KdfParams::default()),
    )
    .map_err(Error::from)?;
    println!("    data:      {}", paths.data);
    println!(
        "    key store: {} (back it up separately from the data)",
        paths.key_store.display()
    );

    step(2, "Store five customers and the shipping address of one order each; every field sealed under its own purpose's key");
    let mut ids = Vec::new();
    for (first, tv, last, email, phone) in CUSTOMERS {
        let s = vault.create_subject().map_err(Error::from)?;
        let mut rec = Record::new()
            .with("first_name", first)
            .with("last_name", last)
            .with("email", email)
            .with("phone", phone);
        if !tv.is_empty() {
            rec.set("tussenvoegsel", tv);
        }
        vault.put(&s, "customer", &rec).map_err(Error::from)?;
        let addr = Record::new()
            .with(
                "recipient_name",
                format!("{first} {tv} {last}").replace("  ", " "),
            )
            .with("street", "Damrak")
            .with("house_number", "1")
            .with("postcode", "1012 LG")
            .with("city", "Amsterdam")
            .with("country", "NL");
        // Shipping is kept per order (`scope = "record"`): the address is labelled with the order.
        vault
            .put(&s, order_of(ids.len()), &addr)
            .map_err(Error::from)?;
        println!("    subject {s}  (the shop's order table stores only this pseudonym)");
        ids.push(s);
    }

    step(
        3,
        "Find a customer by e-mail through the blind index (normalised: case and spaces ignored)",
    );
    let found = vault
        .find("customer", "email", "  Sanne.DeVries@Voorbeeld.NL ")
        .map_err(Error::from)?;
    println!("    find(customer.email = \"  Sanne.DeVries@Voorbeeld.NL \") -> {found:?}");
    if found != vec![ids[2]] {
        bail!("blind-index lookup returned the wrong subject");
    }

    step(4, "Read two fields only (the others stay sealed)");
    let rec = vault
        .get_fields(
            &ids[2],
            "customer",
            &["first_name", "tussenvoegsel", "last_name"],
        )
        .map_err(Error::from)?;
    let tv = rec
        .get_str("tussenvoegsel")
        .map(|t| format!("{t} "))
        .unwrap_or_default();
    println!(
        "    {} {tv}{}",
        rec.get_str("first_name").unwrap_or("?"),
        rec.get_str("last_name").unwrap_or("?")
    );

    step(
        5,
        "An invoice snapshot is immutable (tax law: keep the original 7 years)",
    );
    let inv = Record::new()
        .with("invoice_number", "2026-0001")
        .with("invoice_date", "2026-11-23")
        .with("billing_name", "Sanne de Vries")
        .with("billing_address", "Damrak 1, 1012 LG Amsterdam");
    let inv = complete_invoice(&vault, inv);
    vault
        .put(&ids[2], RecordKey::labelled("invoice", "2026-0001"), &inv)
        .map_err(Error::from)?;
    match vault.update(
        &ids[2],
        RecordKey::labelled("invoice", "2026-0001"),
        &Record::new().with("billing_name", "X"),
    ) {
        Err(e) => println!("    update refused: {e}"),
        Ok(()) => bail!("an immutable invoice was updated"),
    }

    step(6, "Look at the raw files: no plaintext anywhere on disk");
    vault.admin().sync()?;
    let leaks = scan_for(
        &root,
        &["jan.vanderberg@voorbeeld.nl", "El Amrani", "Damrak"],
    )?;
    println!(
        "    files scanned under {}: plaintext hits = {leaks}",
        root.display()
    );
    if leaks != 0 {
        bail!("plaintext found on disk");
    }
    println!(
        "    data on disk: {} bytes",
        vault.admin().data_size_on_disk()?
    );
    drop(vault);

    step(7, "A wrong passphrase is refused and changes nothing");
    match Vault::open(
        &paths,
        &Credentials::passphrase("not the passphrase"),
        VaultOptions::default(),
    ) {
        Err(OpenError::WrongCredentials) => println!("    refused: wrong credentials"),
        Err(e) => bail!("unexpected error: {e}"),
        Ok(_) => bail!("a wrong passphrase opened the vault"),
    }

    step(
        8,
        "Rotate the passphrase: the key store is re-sealed, no record is touched (O(1))",
    );
    let vault = Vault::open(&paths, &creds, VaultOptions::default()).map_err(Error::from)?;
    let new_pass = random_passphrase()?;
    vault
        .admin()
        .change_credentials(
            &Credentials::passphrase(new_pass.as_str()),
            KdfParams::default(),
        )
        .map_err(Error::from)?;
    drop(vault);
    let vault = Vault::open(
        &paths,
        &Credentials::passphrase(new_pass.as_str()),
        VaultOptions::default(),
    )
    .map_err(Error::from)?;
    let rec = vault
        .get_fields(&ids[0], "customer", &["email"])
        .map_err(Error::from)?;
    println!(
        "    reopened with the new passphrase; customer 1 e-mail readable: {}",
        rec.get("email").is_some()
    );

    retention_tour(&vault, &ids)?;
    if keep_dir {
        // Leave the vault usable for the other subcommands: its passphrase in a 0600 file beside it.
        let file = root.join("demo-passphrase.txt");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write as _;
        opts.open(&file)
            .and_then(|mut f| f.write_all(new_pass.as_bytes()))
            .with_context(|| format!("writing {}", file.display()))?;
        println!("\nThe vault stays in {}. Check it with:", root.display());
        println!(
            "    kluis --vault {} --passphrase-file {} verify",
            root.display(),
            file.display()
        );
    }
    Ok(())
}

/// A passphrase for the demo vault: 24 bytes from the operating system's CSPRNG, base64url (32
/// characters, 192 bits), wiped on drop. (It was `demo-<pid>`, which anyone on the host could
/// guess for a vault the demo leaves behind.)
fn random_passphrase() -> anyhow::Result<zeroize::Zeroizing<String>> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = zeroize::Zeroizing::new([0u8; 24]);
    ring::rand::SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| anyhow::anyhow!("the operating system's random number generator failed"))?;
    Ok(zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()),
    ))
}

const DAY: u64 = 86_400;

/// A Unix time as an ISO date (UTC).
fn date(t: vault_core::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.unix_seconds(), 0)
        .map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

/// Steps 9-14: retention, crypto-shredding, forgetting, KEK retirement, audit.
fn retention_tour(vault: &Vault, ids: &[vault_core::SubjectId]) -> anyhow::Result<()> {
    let req = Request::new("demo", "guided tour");
    let now = vault_core::SystemClock.now();

    step(
        9,
        "Record deliveries: shipping addresses now expire 30 days after delivery",
    );
    for (i, s) in ids[..3].iter().enumerate() {
        vault
            .record_event_for(s, &order_of(i), "delivered", now, &req)
            .map_err(Error::from)?;
    }
    println!(
        "    delivered: the orders of customers 1-3 (customers 4-5 still waiting for their parcel)"
    );

    step(
        10,
        "Run expiry with the clock 31 days ahead: their address keys are destroyed",
    );
    let report = vault
        .admin()
        .expire(
            now.saturating_add(std::time::Duration::from_secs(31 * DAY)),
            &req,
        )
        .map_err(Error::from)?;
    println!("    shredded per purpose: {:?}", report.shredded);
    let addr = vault.get(&ids[0], order_of(0)).map_err(Error::from)?;
    match addr.field_state("street") {
        FieldState::Shredded(sh) => println!(
            "    customer 1 address.street -> shredded (purpose {}, at {})",
            sh.purpose,
            date(sh.at)
        ),
        _ => bail!("an expired address is still readable"),
    }
    let kept = vault
        .get_fields(&ids[3], order_of(3), &["city"])
        .map_err(Error::from)?;
    println!(
        "    customer 4 address.city   -> {} (not delivered yet: kept)",
        kept.get_str("city").unwrap_or("?")
    );

    step(
        11,
        "Sanne asks to be forgotten (Art. 17): everything goes except what tax law keeps",
    );
    vault
        .record_event_for(
            &ids[2],
            &RecordKey::labelled("invoice", "2026-0001"),
            "invoiced",
            now,
            &req,
        )
        .map_err(Error::from)?;
    let f = vault
        .forget(
            &ids[2],
            &Request::new("dpo", "Art. 17 request by e-mail"),
            ForgetOptions::default(),
        )
        .map_err(Error::from)?;
    println!("    shredded purposes: {:?}", f.shredded);
    for k in &f.kept {
        let until = k.until.map_or("its retention starts".to_owned(), date);
        println!("    kept: {} ({}) until {until}", k.purpose, k.legal_basis);
    }
    let found = vault
        .find("customer", "email", "sanne.devries@voorbeeld.nl")
        .map_err(Error::from)?;
    println!("    find(customer.email = sanne.devries@...) -> {found:?}");
    if !found.is_empty() {
        bail!("a forgotten customer is still findable");
    }

    step(
        12,
        "Retire every key-encryption key: rewrap surviving data keys, destroy the old KEKs",
    );
    println!(
        "    (after this, even a data backup taken before the forget cannot yield Sanne's data)"
    );
    let live: Vec<u32> = vault
        .admin()
        .keks()
        .iter()
        .filter(|k| k.state != KekState::Destroyed)
        .map(|k| k.id)
        .collect();
    for id in live {
        let r = vault
            .admin()
            .retire_kek(id, &req, &mut |_| {})
            .map_err(Error::from)?;
        println!(
            "    KEK {} retired, {} data keys rewrapped",
            r.kek_id, r.rewrapped
        );
    }
    let rec = vault
        .get_fields(&ids[0], "customer", &["first_name"])
        .map_err(Error::from)?;
    println!(
        "    customer 1 still readable: {}",
        rec.get_str("first_name").unwrap_or("?")
    );

    step(
        13,
        "Verify the audit log: every change above is in a keyed hash chain",
    );
    let audit = vault.admin().verify_audit()?;
    println!(
        "    {} entries, chain intact: {}",
        audit.entries,
        audit.is_intact()
    );
    if !audit.is_intact() {
        bail!("audit chain broken: {:?}", audit.problem);
    }
    for e in vault.admin().audit_entries(&AuditFilter {
        subject: Some(ids[2]),
        ..Default::default()
    })? {
        println!(
            "    #{:<3} {}  {:<15} {:<12} {:<10} {}",
            e.seq,
            date(e.at),
            e.op.to_string(),
            e.record_type,
            e.purpose,
            e.reason
        );
    }

    println!("\nDone.");
    Ok(())
}

fn complete_invoice(vault: &Vault, mut inv: Record) -> Record {
    // Fill the remaining required invoice fields with plausible values of their declared type.
    let schema = vault.schema();
    if let Some(rt) = schema.record_type("invoice") {
        let missing: Vec<_> = rt
            .fields()
            .filter(|f| f.required && inv.get(&f.name).is_none())
            .collect();
        for f in missing {
            let v = match f.kind {
                vault_core::schema::FieldKind::Json => {
                    serde_json::json!([{"sku": "TRAMP-305", "qty": 1, "price_cents": 24900}])
                }
                vault_core::schema::FieldKind::Date => "2026-11-23".into(),
                vault_core::schema::FieldKind::Iban => "NL91ABNA0417164300".into(),
                _ => "24900".into(),
            };
            inv.set(&f.name, v);
        }
    }
    inv
}

fn scan_for(root: &std::path::Path, needles: &[&str]) -> anyhow::Result<usize> {
    let mut hits = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else {
            let bytes = std::fs::read(&p)?;
            hits += needles
                .iter()
                .filter(|n| bytes.windows(n.len()).any(|w| w == n.as_bytes()))
                .count();
        }
    }
    Ok(hits)
}

/// The address record of the demo order of customer `i` (order numbers 1001, 1002, ...).
fn order_of(i: usize) -> RecordKey {
    RecordKey::labelled("address", &(1001 + i).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::random_passphrase;

    /// Not `demo-<pid>` any more: 32 base64url characters, different on every call.
    #[test]
    fn demo_passphrases_are_random_and_long() {
        let a = random_passphrase().unwrap();
        let b = random_passphrase().unwrap();
        assert_ne!(*a, *b);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
