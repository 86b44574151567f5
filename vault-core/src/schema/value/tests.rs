#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;
use serde_json::json;

/// Distinctive text that must never show up in an error message.
const CANARY: &str = "CANARYzq7x";

fn def(kind: FieldKind) -> FieldDef {
    FieldDef {
        name: "f".into(),
        kind,
        max_len: kind.default_max_len(),
        required: false,
        purpose: "p".into(),
        index: kind.indexable(),
        unique: false,
        mask: None,
        country: None,
    }
}

fn with_max(kind: FieldKind, max_len: usize) -> FieldDef {
    FieldDef {
        max_len,
        ..def(kind)
    }
}

fn enc(kind: FieldKind, v: Value) -> Result<Vec<u8>, FieldError> {
    def(kind).encode(&v).map(|z| z.to_vec())
}

fn ok(kind: FieldKind, v: Value) -> Vec<u8> {
    enc(kind, v.clone()).unwrap_or_else(|e| panic!("{kind} rejected {v}: {e}"))
}

fn invalid(kind: FieldKind, v: Value) {
    match enc(kind, v.clone()) {
        Err(FieldError::Invalid { field, .. }) => assert_eq!(field, "f"),
        other => panic!("{kind} {v}: {other:?}"),
    }
}

fn index(kind: FieldKind, v: &str) -> Vec<u8> {
    let d = def(kind);
    let plain = d.encode(&json!(v)).unwrap();
    d.index_form(&plain).to_vec()
}

#[test]
fn kind_names() {
    for &k in FieldKind::ALL {
        assert_eq!(FieldKind::from_name(k.as_str()), Some(k));
        assert_eq!(k.to_string(), k.as_str());
        assert!(k.default_max_len() >= k.min_max_len());
        assert!(k.default_max_len() <= MAX_FIELD_LEN);
    }
    assert_eq!(FieldKind::from_name("Text"), None);
    assert!(!FieldKind::Json.indexable() && !FieldKind::Bytes.indexable());
}

#[test]
fn null_and_wrong_types() {
    for &k in FieldKind::ALL {
        assert!(
            matches!(enc(k, Value::Null), Err(FieldError::WrongType { .. })),
            "{k}"
        );
    }
    for k in [
        FieldKind::Text,
        FieldKind::Email,
        FieldKind::Phone,
        FieldKind::Date,
        FieldKind::Iban,
    ] {
        for v in [json!(1), json!(true), json!([]), json!({"a": "b"})] {
            assert!(
                matches!(enc(k, v), Err(FieldError::WrongType { .. })),
                "{k}"
            );
        }
    }
    for v in [json!(1), json!(true), json!({"a": 1})] {
        assert!(matches!(
            enc(FieldKind::Bytes, v),
            Err(FieldError::WrongType { .. })
        ));
    }
}

#[test]
fn text() {
    let d = def(FieldKind::Text);
    for s in ["", "Jansen", "ĳsselmeer 🚲", "line\nnext\ttab"] {
        let p = d.encode(&json!(s)).unwrap();
        assert_eq!(&*p, s.as_bytes());
        assert_eq!(d.decode(&p).unwrap(), json!(s));
    }
    invalid(FieldKind::Text, json!("a\u{0}b"));
    invalid(FieldKind::Text, json!("a\rb"));
    invalid(FieldKind::Text, json!("a\u{7f}"));
    invalid(FieldKind::Text, json!("a\u{85}"));
    let short = with_max(FieldKind::Text, 4);
    assert!(short.encode(&json!("abcd")).is_ok());
    // Length counts UTF-8 bytes: "éé" is 4 bytes, "ééé" 6.
    assert!(short.encode(&json!("éé")).is_ok());
    assert_eq!(
        short.encode(&json!("ééé")).unwrap_err(),
        FieldError::TooLong {
            field: "f".into(),
            max: 4,
            len: 6
        }
    );
    assert_eq!(index(FieldKind::Text, "  Jansen \n"), b"Jansen");
    assert!(d.decode(&[0xff, 0xfe]).is_err());
}

#[test]
fn email() {
    assert_eq!(
        ok(FieldKind::Email, json!("  Jan.Jansen@Example.NL ")),
        b"Jan.Jansen@Example.NL"
    );
    for good in ["a@b.nl", "x+tag@sub.domain.example", "ñ@voorbeeld.nl"] {
        ok(FieldKind::Email, json!(good));
    }
    for bad in [
        "jan.example.nl",
        "jan@@example.nl",
        "jan@ex@ample.nl",
        "@example.nl",
        "jan@",
        "jan@localhost",
        "jan@example.",
        "jan@.example.nl",
        "jan@example..nl",
        "jan jansen@example.nl",
        "jan@exa\tmple.nl",
        "",
    ] {
        invalid(FieldKind::Email, json!(bad));
    }
    let long = format!("{}@example.nl", "a".repeat(250));
    assert!(matches!(
        enc(FieldKind::Email, json!(long)),
        Err(FieldError::TooLong { max: 254, .. })
    ));
    assert_eq!(
        index(FieldKind::Email, " Jan.Jansen@Example.NL"),
        b"jan.jansen@example.nl"
    );
    let d = def(FieldKind::Email);
    assert_eq!(
        d.decode(b"Jan@Example.nl").unwrap(),
        json!("Jan@Example.nl")
    );
}

#[test]
fn phone() {
    for (given, stored, indexed) in [
        ("+31 6 1234 5678", "+31 6 1234 5678", "+31612345678"),
        ("06-12345678", "06-12345678", "0612345678"),
        (" (020) 123.4567 ", "(020) 123.4567", "0201234567"),
        ("0031 6 12345678", "0031 6 12345678", "0031612345678"),
    ] {
        assert_eq!(ok(FieldKind::Phone, json!(given)), stored.as_bytes());
        assert_eq!(index(FieldKind::Phone, given), indexed.as_bytes());
    }
    for bad in [
        "12345",
        "06 1234 567a",
        "06+12345678",
        "++31612345678",
        "06/12345678",
        "",
    ] {
        invalid(FieldKind::Phone, json!(bad));
    }
    assert!(matches!(
        enc(FieldKind::Phone, json!("1".repeat(33))),
        Err(FieldError::TooLong {
            max: 32,
            len: 33,
            ..
        })
    ));
}

fn nl_phone() -> FieldDef {
    FieldDef {
        country: PhoneCountry::from_code("NL"),
        ..def(FieldKind::Phone)
    }
}

fn nl_index(v: &str) -> Vec<u8> {
    let d = nl_phone();
    let plain = d.encode(&json!(v)).unwrap();
    d.index_form(&plain).to_vec()
}

#[test]
fn phone_with_a_country_is_e164() {
    for typed in [
        "06-12345678",
        "0612345678",
        "+31 6 1234 5678",
        "0031612345678",
        "0031 6 12345678",
        "+31 (0)6 12345678",
        " 06 12 34 56 78 ",
        "+31612345678",
    ] {
        let d = nl_phone();
        assert_eq!(
            &*d.encode(&json!(typed)).unwrap(),
            b"+31612345678",
            "{typed}"
        );
        assert_eq!(nl_index(typed), b"+31612345678", "{typed}");
    }
    // A Dutch landline, and numbers given with another country code keep their country.
    assert_eq!(nl_index("(020) 123 4567"), b"+31201234567");
    assert_eq!(nl_index("+32 470 12 34 56"), b"+32470123456");
    assert_eq!(nl_index("0032 470 12 34 56"), b"+32470123456");
    assert_eq!(nl_index("+49 30 1234567"), b"+49301234567");
    // A foreign number's leading 0 stays when it is part of the number (Italy), and goes when it
    // is that country's trunk prefix, whatever NL does with a 0.
    assert_eq!(nl_index("+39 06 1234 5678"), b"+390612345678");
    assert_eq!(nl_index("0039 06 1234 5678"), b"+390612345678");
    assert_eq!(nl_index("+44 (0)20 7946 0958"), b"+442079460958");
    assert_eq!(nl_index("001 (202) 555-0147"), b"+12025550147");
    // Separators anywhere, also right after the country code's digits.
    assert_eq!(nl_index("+316-1234-5678"), b"+31612345678");
}

#[test]
fn phone_with_a_country_rejects_impossible_numbers() {
    let d = nl_phone();
    for bad in [
        "06-1234567890123",
        "+31 6 123",
        "+999 123456789",
        "00010000",
        "06 1234 567a",
        "06+12345678",
        "++31612345678",
        "tel:+31612345678",
        "0612345678;ext=1",
    ] {
        match d.encode(&json!(bad)) {
            Err(FieldError::Invalid { field, reason }) => {
                assert_eq!(field, "f");
                assert!(!reason.contains(bad.trim()), "{reason}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // E.164 is longer than the national spelling: max_len applies to what is stored.
    let tight = FieldDef {
        max_len: 10,
        ..nl_phone()
    };
    assert!(matches!(
        tight.encode(&json!("0612345678")),
        Err(FieldError::TooLong {
            max: 10,
            len: 12,
            ..
        })
    ));
}

/// Values stored before the field had a country (as typed) are indexed as E.164 once it has one,
/// so a re-index makes them findable by every spelling; a stored value that does not parse keeps
/// the old form. Without a country nothing changes.
#[test]
fn phone_index_of_values_stored_before_the_country() {
    let d = nl_phone();
    assert_eq!(&*d.index_form(b"06-12345678"), b"+31612345678");
    assert_eq!(&*d.index_form(b"0031 6 12345678"), b"+31612345678");
    assert_eq!(&*d.index_form(b"+31 6 123"), b"+316123");
    assert_eq!(&*d.index_form(b"06-1234abc"), b"061234");
    assert_eq!(index(FieldKind::Phone, "06-12345678"), b"0612345678");
}

#[test]
fn phone_country_codes() {
    assert_eq!(PhoneCountry::from_code("NL").unwrap().as_str(), "NL");
    assert_eq!(PhoneCountry::from_code("BE").unwrap().as_str(), "BE");
    for bad in ["nl", "NLD", "", "XX", "001", "N"] {
        assert!(PhoneCountry::from_code(bad).is_none(), "{bad}");
    }
}

#[test]
fn phone_numbers_as_typed_to_e164() {
    let (nl, be) = (PhoneCountry::from_code("NL"), PhoneCountry::from_code("BE"));
    let (nl, be) = (nl.unwrap(), be.unwrap()); // both in the metadata: `phone_country_codes`
    for (country, typed, e164) in [
        (nl, "06-12345678", "+31612345678"),
        (nl, " (020) 123 4567 ", "+31201234567"),
        (nl, "0031 6 1234 5678", "+31612345678"),
        (nl, "+32 470 12 34 56", "+32470123456"),
        (be, "0470 12 34 56", "+32470123456"),
        (nl, "+39 06 1234 5678", "+390612345678"),
    ] {
        assert_eq!(
            country.to_e164(typed).as_deref().map(String::as_str),
            Some(e164),
            "{typed}"
        );
    }
    for bad in [
        "",
        "06-1234abc",
        "tel:0612345678",
        "12",
        "+999 123456",
        "06 12345678 90123",
    ] {
        assert!(nl.to_e164(bad).is_none(), "{bad}");
    }
}

#[test]
fn datetime() {
    for (given, stored) in [
        ("2026-12-06T13:05:00+01:00", "2026-12-06T12:05:00Z"),
        ("2026-12-06T12:05:00Z", "2026-12-06T12:05:00Z"),
        ("2026-12-06t12:05:00z", "2026-12-06T12:05:00Z"),
        ("2026-12-06T12:05:00.999999+00:00", "2026-12-06T12:05:00Z"),
        ("2026-12-06T12:05:00.5-00:00", "2026-12-06T12:05:00Z"),
        ("2027-01-01T00:30:00+02:00", "2026-12-31T22:30:00Z"),
        ("2026-12-31T23:59:60Z", "2026-12-31T23:59:59Z"),
        ("2024-02-29T20:00:00-05:00", "2024-03-01T01:00:00Z"),
    ] {
        assert_eq!(
            ok(FieldKind::DateTime, json!(given)),
            stored.as_bytes(),
            "{given}"
        );
        assert_eq!(index(FieldKind::DateTime, given), stored.as_bytes());
    }
    for bad in [
        "2026-12-06T13:05:00",
        "2026-12-06",
        "2026-12-06 13:05",
        "2026-02-30T13:05:00Z",
        "2026-12-06T24:05:00Z",
        "2026-12-06T13:05:00+25:00",
        "0999-12-31T23:00:00Z",
        "1000-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
        "",
    ] {
        invalid(FieldKind::DateTime, json!(bad));
    }
    invalid(
        FieldKind::DateTime,
        json!(format!("2026-12-06T13:05:00.{}Z", "1".repeat(60))),
    );
    assert_eq!(FieldKind::DateTime.default_max_len(), 20);
    assert_eq!(
        def(FieldKind::DateTime)
            .decode(b"2026-12-06T12:05:00Z")
            .unwrap(),
        json!("2026-12-06T12:05:00Z")
    );
}

#[test]
fn date() {
    for good in [
        "2024-02-29",
        "2000-02-29",
        "1000-01-01",
        "9999-12-31",
        "2023-04-30",
    ] {
        assert_eq!(ok(FieldKind::Date, json!(good)), good.as_bytes());
        assert_eq!(index(FieldKind::Date, good), good.as_bytes());
    }
    for bad in [
        "2023-02-29",
        "1900-02-29",
        "2023-04-31",
        "2023-13-01",
        "2023-00-10",
        "2023-01-00",
        "2023-01-32",
        "0999-01-01",
        "2023-1-01",
        "2023/01/01",
        "20230101",
        " 2023-01-01",
        "2023-01-01T00:00",
        "２０２３-01-01",
        "+023-01-01",
    ] {
        assert!(
            matches!(
                enc(FieldKind::Date, json!(bad)),
                Err(FieldError::Invalid { .. } | FieldError::TooLong { .. })
            ),
            "{bad}"
        );
    }
    invalid(FieldKind::Date, json!("2023-02-29"));
    assert_eq!(
        def(FieldKind::Date).decode(b"2024-02-29").unwrap(),
        json!("2024-02-29")
    );
}

#[test]
fn iban() {
    assert_eq!(
        ok(FieldKind::Iban, json!("NL91 ABNA 0417 1643 00")),
        b"NL91ABNA0417164300"
    );
    assert_eq!(
        ok(FieldKind::Iban, json!("nl91abna0417164300")),
        b"NL91ABNA0417164300"
    );
    ok(FieldKind::Iban, json!("DE89 3704 0044 0532 0130 00"));
    ok(FieldKind::Iban, json!("GB82 WEST 1234 5698 7654 32"));
    ok(FieldKind::Iban, json!("BE68 5390 0754 7034"));
    ok(FieldKind::Iban, json!("NO9386011117947"));
    for bad in [
        "NL92 ABNA 0417 1643 00",
        "NL91 ABNA 0417 1643 01",
        "NL91-ABNA-0417-1643-00",
        "9L91ABNA0417164300",
        "NLX1ABNA0417164300",
        "NL91ABNA04171643",
        "NL91",
        "",
        "NL91ABNA0417164300é",
    ] {
        invalid(FieldKind::Iban, json!(bad));
    }
    assert!(matches!(
        enc(FieldKind::Iban, json!(format!("NL91{}", "1".repeat(31)))),
        Err(FieldError::TooLong {
            max: 34,
            len: 35,
            ..
        })
    ));
    assert_eq!(
        index(FieldKind::Iban, "nl91 abna 0417 1643 00"),
        b"NL91ABNA0417164300"
    );
    assert_eq!(
        def(FieldKind::Iban).index_form(b"nl91 abna0417164300"),
        Zeroizing::new(b"NL91ABNA0417164300".to_vec())
    );
}

#[test]
fn json_kind() {
    let d = def(FieldKind::Json);
    for v in [
        json!({"b": [1, 2.5, "x"], "a": {"n": null}}),
        json!([]),
        json!(0),
        json!("s"),
        json!(false),
    ] {
        let p = d.encode(&v).unwrap();
        assert_eq!(&*p, serde_json::to_vec(&v).unwrap().as_slice());
        assert_eq!(d.decode(&p).unwrap(), v);
        assert_eq!(p.len(), p.capacity());
    }
    assert_eq!(
        &*d.encode(&json!({ "a" : [1, 2] })).unwrap(),
        br#"{"a":[1,2]}"#
    );
    let small = with_max(FieldKind::Json, 5);
    assert!(small.encode(&json!([1, 2])).is_ok());
    assert_eq!(
        small.encode(&json!([1, 2, 3])).unwrap_err(),
        FieldError::TooLong {
            field: "f".into(),
            max: 5,
            len: 7
        }
    );
    assert!(matches!(
        d.decode(b"{not json"),
        Err(FieldError::Invalid { .. })
    ));
}

#[test]
fn bytes_kind() {
    let d = def(FieldKind::Bytes);
    assert_eq!(&*d.encode(&json!("AAEC/w==")).unwrap(), &[0, 1, 2, 255]);
    assert_eq!(&*d.encode(&json!([0, 1, 2, 255])).unwrap(), &[0, 1, 2, 255]);
    assert_eq!(&*d.encode(&json!("")).unwrap(), b"");
    assert_eq!(d.decode(&[0, 1, 2, 255]).unwrap(), json!("AAEC/w=="));
    for bad in [json!("AAEC/w"), json!("AAEC_w=="), json!("!!!!")] {
        invalid(FieldKind::Bytes, bad);
    }
    for bad in [json!([256]), json!([-1]), json!([1.5]), json!(["1"])] {
        invalid(FieldKind::Bytes, bad);
    }
    let small = with_max(FieldKind::Bytes, 3);
    assert!(matches!(
        small.encode(&json!([1, 2, 3, 4])),
        Err(FieldError::TooLong { max: 3, len: 4, .. })
    ));
    assert!(matches!(
        small.encode(&json!("AAECAw==")),
        Err(FieldError::TooLong { max: 3, len: 4, .. })
    ));
    assert_eq!(&*d.index_form(&[9, 8]), &[9, 8]);
}

/// No error message may contain the rejected value or a part of it.
#[test]
fn errors_never_contain_the_value() {
    let cases: Vec<(FieldDef, Value)> = vec![
        (def(FieldKind::Text), json!(format!("{CANARY}\u{1}"))),
        (with_max(FieldKind::Text, 3), json!(CANARY)),
        (def(FieldKind::Email), json!(CANARY)),
        (def(FieldKind::Email), json!(format!("{CANARY}@{CANARY}"))),
        (def(FieldKind::Email), json!(format!("{CANARY} @x.nl"))),
        (def(FieldKind::Phone), json!(CANARY)),
        (def(FieldKind::Phone), json!("12345")),
        (def(FieldKind::Date), json!(CANARY)),
        (def(FieldKind::Date), json!("2023-02-29")),
        (nl_phone(), json!("+31 6 123")),
        (nl_phone(), json!("+999 123456789")),
        (def(FieldKind::DateTime), json!(CANARY)),
        (def(FieldKind::DateTime), json!("2026-12-06T14:47:00")),
        (def(FieldKind::Iban), json!(format!("NL91{CANARY}0000000"))),
        (def(FieldKind::Iban), json!("NL92ABNA0417164300")),
        (with_max(FieldKind::Json, 3), json!({ CANARY: CANARY })),
        (def(FieldKind::Bytes), json!(format!("{CANARY}!"))),
        (def(FieldKind::Bytes), json!([CANARY])),
        (def(FieldKind::Text), json!({ CANARY: 1 })),
        (def(FieldKind::Bytes), json!({ CANARY: 1 })),
    ];
    for (d, v) in cases {
        let e = d.encode(&v).unwrap_err();
        for text in [e.to_string(), format!("{e:?}")] {
            for needle in [
                CANARY,
                "12345",
                "2023-02-29",
                "NL92",
                "ABNA",
                "123",
                "999",
                "14:47",
            ] {
                assert!(!text.contains(needle), "{text}");
            }
        }
    }
    let e = def(FieldKind::Json).decode(CANARY.as_bytes()).unwrap_err();
    assert!(!e.to_string().contains(CANARY));
    let e = def(FieldKind::Text)
        .decode(&[b'C', b'A', b'N', 0xff])
        .unwrap_err();
    assert!(!format!("{e} {e:?}").contains("CAN"));
}

proptest! {
    #[test]
    fn text_round_trip(s in "[^\\p{Cc}]{0,50}") {
        let d = def(FieldKind::Text);
        let p = d.encode(&json!(s)).unwrap();
        prop_assert_eq!(d.decode(&p).unwrap(), json!(s));
    }

    #[test]
    fn bytes_round_trip(b in proptest::collection::vec(any::<u8>(), 0..100)) {
        let d = def(FieldKind::Bytes);
        let p = d.encode(&json!(b)).unwrap();
        prop_assert_eq!(&*p, b.as_slice());
        let back = d.decode(&p).unwrap();
        prop_assert_eq!(&*d.encode(&back).unwrap(), b.as_slice());
    }

    /// The phone parser only ever sees what `phone_chars_ok` lets through; on any of it, encode
    /// and index_form return (never panic), and an accepted value is E.164 and its own index form.
    #[test]
    fn phone_parser_never_panics(s in "[+]?[0-9 ().-]{0,30}") {
        let d = nl_phone();
        if let Ok(p) = d.encode(&json!(s)) {
            prop_assert_eq!(p.first(), Some(&b'+'));
            prop_assert_eq!(&*d.index_form(&p), &*p);
        }
        let _ = d.index_form(s.as_bytes());
    }

    /// Any Dutch mobile number, in national, `+31` or `0031` form, with any separators, is stored
    /// and indexed as the one E.164 form.
    #[test]
    fn dutch_mobiles_in_any_spelling(
        digits in "[1-9][0-9]{7}",
        prefix in prop::sample::select(vec!["06", "+31 6", "0031 6", "+31 (0)6", "+316"]),
        sep in prop::sample::select(vec!["", " ", "-", "."]),
    ) {
        let typed = format!("{prefix}{sep}{}{sep}{}", &digits[..4], &digits[4..]);
        let e164 = format!("+316{digits}");
        let d = nl_phone();
        prop_assert_eq!(&*d.encode(&json!(typed)).unwrap(), e164.as_bytes());
        prop_assert_eq!(nl_index(&typed), e164.as_bytes());
    }

    #[test]
    fn valid_ibans_with_any_spacing(spaces in proptest::collection::vec(0usize..18, 0..5)) {
        let mut s = "NL91ABNA0417164300".to_owned();
        for at in spaces {
            s.insert(at.min(s.len()), ' ');
        }
        prop_assert_eq!(ok(FieldKind::Iban, json!(s)), b"NL91ABNA0417164300");
    }
}
