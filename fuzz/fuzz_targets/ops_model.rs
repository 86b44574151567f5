//! Arbitrary operation sequences on a vault, checked step by step against a `BTreeMap` model:
//! put, get, delete, find (blind index), records_of, forget (crypto-shredding) and reopen.
//!
//! One vault per fuzzing process (creating one per input would spend the time in sled); every
//! input gets three fresh subjects, so the model starts empty. Values come from small alphabets so
//! that the model can predict every outcome, errors included.
#![no_main]
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use vault_core::{Durability, ForgetOptions, KdfParams, Record, RecordKey, Request, SubjectId, Vault, VaultOptions, VaultPaths, fuzz_api};
use vault_core::schema::Schema;

const SCHEMA: &str = r#"
version = 1
[purposes.account]
description = "Account"
legal_basis = "contract"
retention = "2y after last_update"
[types.note.fields.text]
type = "text"
purpose = "account"
required = true
[types.note.fields.email]
type = "email"
purpose = "account"
index = true
"#;
const LABELS: [&str; 3] = ["", "a", "b"];
const EMAILS: [&str; 3] = ["a@voorbeeld.nl", "b@voorbeeld.nl", "c@voorbeeld.nl"];
const SUBJECTS: usize = 3;
const MAX_OPS: usize = 48;

#[derive(Arbitrary, Debug)]
enum Op {
    Put {
        s: u8,
        label: u8,
        text: u8,
        email: Option<u8>,
    },
    Get {
        s: u8,
        label: u8,
    },
    Delete {
        s: u8,
        label: u8,
    },
    Find {
        email: u8,
    },
    RecordsOf {
        s: u8,
    },
    Forget {
        s: u8,
    },
    Reopen,
}

struct Fixture {
    dir: tempfile::TempDir,
    vault: Option<Vault>,
}

fn options() -> VaultOptions {
    VaultOptions::default()
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf()
        .durability(Durability::Relaxed)
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

/// Model value of a record: (text number, e-mail index).
type Value = (u8, Option<usize>);

fn text(n: u8) -> String {
    format!("notitie {n}")
}

fn run(f: &mut Fixture, ops: &[Op]) {
    let paths = VaultPaths::in_dir(f.dir.path());
    let subjects: Vec<SubjectId> = (0..SUBJECTS)
        .map(|_| {
            f.vault
                .as_ref()
                .expect("open")
                .create_subject()
                .expect("subject")
        })
        .collect();
    let mut model: BTreeMap<(usize, usize), Value> = BTreeMap::new();
    let mut forgotten = [false; SUBJECTS];
    for op in ops.iter().take(MAX_OPS) {
        let v = f.vault.as_ref().expect("open");
        match *op {
            Op::Put {
                s,
                label,
                text: t,
                email,
            } => {
                let (s, l) = (s as usize % SUBJECTS, label as usize % LABELS.len());
                let e = email.map(|e| e as usize % EMAILS.len());
                let mut r = Record::new().with("text", text(t));
                if let Some(e) = e {
                    r.set("email", EMAILS[e]);
                }
                let res = v.put(&subjects[s], RecordKey::labelled("note", LABELS[l]), &r);
                if forgotten[s] {
                    continue;
                }
                res.expect("put on a live subject");
                model.insert((s, l), (t, e));
            }
            Op::Get { s, label } => {
                let (s, l) = (s as usize % SUBJECTS, label as usize % LABELS.len());
                let res = v.get(&subjects[s], RecordKey::labelled("note", LABELS[l]));
                if forgotten[s] {
                    if let Ok(r) = res {
                        assert_eq!(
                            r.get_str("text"),
                            None,
                            "a forgotten subject's value is back"
                        );
                    }
                    continue;
                }
                match (model.get(&(s, l)), res) {
                    (Some(&(t, e)), Ok(r)) => {
                        assert_eq!(r.get_str("text"), Some(text(t).as_str()));
                        assert_eq!(r.get_str("email"), e.map(|e| EMAILS[e]));
                    }
                    (None, Err(_)) => {}
                    (m, r) => panic!("get: model {m:?}, vault {:?}", r.map(|r| r.len())),
                }
            }
            Op::Delete { s, label } => {
                let (s, l) = (s as usize % SUBJECTS, label as usize % LABELS.len());
                let res = v.delete(&subjects[s], RecordKey::labelled("note", LABELS[l]));
                if forgotten[s] {
                    continue;
                }
                assert_eq!(
                    res.is_ok(),
                    model.remove(&(s, l)).is_some(),
                    "delete: {res:?}"
                );
            }
            Op::Find { email } => {
                let e = email as usize % EMAILS.len();
                let found: BTreeSet<usize> = v
                    .find("note", "email", EMAILS[e])
                    .expect("find")
                    .iter()
                    .filter_map(|id| subjects.iter().position(|s| s == id))
                    .filter(|&s| !forgotten[s])
                    .collect();
                let expected: BTreeSet<usize> = model
                    .iter()
                    .filter(|(&(s, _), &(_, em))| em == Some(e) && !forgotten[s])
                    .map(|(&(s, _), _)| s)
                    .collect();
                assert_eq!(found, expected, "find {}", EMAILS[e]);
            }
            Op::RecordsOf { s } => {
                let s = s as usize % SUBJECTS;
                let res = v.records_of(&subjects[s]);
                if forgotten[s] {
                    continue;
                }
                let got: BTreeSet<String> = res
                    .expect("records_of")
                    .into_iter()
                    .map(|k| k.label)
                    .collect();
                let want: BTreeSet<String> = model
                    .keys()
                    .filter(|&&(ms, _)| ms == s)
                    .map(|&(_, l)| LABELS[l].to_owned())
                    .collect();
                assert_eq!(got, want, "records_of");
            }
            Op::Forget { s } => {
                let s = s as usize % SUBJECTS;
                let res = v.forget(&subjects[s], &Request::new("fuzz", "ops_model"), ForgetOptions::default());
                if forgotten[s] {
                    assert!(res.is_err(), "forgotten twice");
                    continue;
                }
                res.expect("forget");
                forgotten[s] = true;
                model.retain(|&(ms, _), _| ms != s);
            }
            Op::Reopen => {
                f.vault = None;
                f.vault =
                    Some(Vault::open(&paths, &fuzz_api::credentials(), options()).expect("reopen"));
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut guard = FIXTURE.lock().unwrap_or_else(|p| p.into_inner());
    let f = guard.get_or_insert_with(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let vault = Vault::create(
            &VaultPaths::in_dir(dir.path()),
            &fuzz_api::credentials(),
            Schema::from_toml(SCHEMA).expect("schema"),
            options(),
        )
        .expect("create vault");
        Fixture {
            dir,
            vault: Some(vault),
        }
    });
    run(f, &ops);
});
