#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const WEBSHOP: &str = include_str!("../../../examples/webshop.toml");

const MINIMAL: &str = r#"
version = 1

[purposes.shipping]
description = "Deliver the order to the customer"
legal_basis = "contract"
recipients = ["PostNL (processor)"]
retention = "30d after delivered"

[types.address]
description = "Shipping address of an order"
[types.address.fields.street]
type = "text"
purpose = "shipping"
required = true
max_len = 200
"#;

/// MINIMAL with `from` replaced by `to` (the replacement must happen).
fn variant(from: &str, to: &str) -> String {
    assert!(MINIMAL.contains(from), "{from}");
    MINIMAL.replacen(from, to, 1)
}

fn err(text: &str) -> SchemaError {
    Schema::from_toml(text).unwrap_err()
}

#[test]
fn parses_minimal() {
    let s = Schema::from_toml(MINIMAL).unwrap();
    assert_eq!(s.version(), 1);
    assert_eq!(s.source(), MINIMAL);
    let p = s.purpose("shipping").unwrap();
    assert_eq!(p.legal_basis, LegalBasis::Contract);
    assert_eq!(p.recipients, vec!["PostNL (processor)".to_owned()]);
    assert_eq!(
        p.retention,
        Retention::After {
            period: Period {
                years: 0,
                months: 0,
                days: 30
            },
            event: "delivered".into()
        }
    );
    let t = s.record_type("address").unwrap();
    assert!(!t.immutable);
    let f = t.field("street").unwrap();
    assert_eq!(
        f,
        &FieldDef {
            name: "street".into(),
            kind: FieldKind::Text,
            max_len: 200,
            required: true,
            purpose: "shipping".into(),
            index: false,
            unique: false,
            mask: None,
            country: None,
        }
    );
    assert!(t.field("nope").is_none());
    assert!(s.purpose("nope").is_none());
    assert!(s.record_type("nope").is_none());
}

#[test]
fn parses_webshop_example() {
    let s = Schema::from_toml(WEBSHOP).unwrap();
    assert_eq!(s.version(), 1);
    let purposes: Vec<&str> = s.purposes().map(|p| p.name.as_str()).collect();
    assert_eq!(purposes, ["account", "invoicing", "marketing", "shipping"]);
    let types: Vec<&str> = s.record_types().map(|t| t.name.as_str()).collect();
    assert_eq!(
        types,
        ["address", "customer", "invoice", "marketing_consent"]
    );

    let bases: Vec<LegalBasis> = s.purposes().map(|p| p.legal_basis).collect();
    assert_eq!(
        bases,
        [
            LegalBasis::Contract,
            LegalBasis::LegalObligation,
            LegalBasis::Consent,
            LegalBasis::Contract
        ]
    );
    let retention = |p: &str| s.purpose(p).unwrap().retention.to_string();
    assert_eq!(retention("account"), "2y after last_order");
    assert_eq!(retention("shipping"), "30d after delivered");
    assert_eq!(retention("marketing"), "until consent_withdrawn");
    assert_eq!(retention("invoicing"), "7y after invoiced");
    let ceiling = |p: &str| s.purpose(p).unwrap().at_most.as_ref().unwrap().to_string();
    assert_eq!(ceiling("account"), "5y after created");
    assert_eq!(ceiling("shipping"), "1y after created");
    assert_eq!(ceiling("marketing"), "2y after last_order");
    assert_eq!(ceiling("invoicing"), "10y after created");
    assert_eq!(
        s.events().into_iter().collect::<Vec<_>>(),
        [
            "consent_withdrawn",
            "created",
            "delivered",
            "invoiced",
            "last_order"
        ]
    );

    let customer = s.record_type("customer").unwrap();
    let email = customer.field("email").unwrap();
    assert!(email.index && email.unique && email.required);
    assert_eq!(email.kind, FieldKind::Email);
    assert_eq!(email.max_len, 254);
    let phone = customer.field("phone").unwrap();
    assert!(phone.index && !phone.unique);
    assert!(customer.field("tussenvoegsel").is_some());
    assert_eq!(customer.field("birth_date").unwrap().kind, FieldKind::Date);
    assert_eq!(
        customer.purposes().into_iter().collect::<Vec<_>>(),
        ["account"]
    );
    let names: Vec<&str> = customer.fields().map(|f| f.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);

    let address = s.record_type("address").unwrap();
    assert!(!address.field("postcode").unwrap().index);
    assert!(address.fields().all(|f| f.purpose == "shipping"));

    let invoice = s.record_type("invoice").unwrap();
    assert!(invoice.immutable);
    assert!(invoice.field("invoice_number").unwrap().index);
    assert_eq!(invoice.field("iban").unwrap().kind, FieldKind::Iban);
    assert_eq!(invoice.field("lines").unwrap().kind, FieldKind::Json);
    assert_eq!(invoice.fields_with_purpose("invoicing").count(), 8);
    assert_eq!(invoice.fields_with_purpose("shipping").count(), 0);

    let consent = s.record_type("marketing_consent").unwrap();
    assert_eq!(
        consent.purposes().into_iter().collect::<Vec<_>>(),
        ["marketing"]
    );
}

#[test]
fn defaults_per_kind() {
    for &kind in FieldKind::ALL {
        let text = variant(
            "type = \"text\"\npurpose = \"shipping\"\nrequired = true\nmax_len = 200",
            &format!("type = \"{kind}\"\npurpose = \"shipping\""),
        );
        let s = Schema::from_toml(&text).unwrap();
        let f = s.record_type("address").unwrap().field("street").unwrap();
        assert_eq!(f.kind, kind);
        assert_eq!(f.max_len, kind.default_max_len());
        assert!(!f.required && !f.index);
    }
}

#[test]
fn toml_errors() {
    for bad in [
        "version = ",
        &variant("description = \"Shipping address", "colour = \"red\"\n#"),
        &variant("max_len = 200", "max_len = 200\nunique = true"),
        &variant("retention =", "retention_days = 3\nretention ="),
        &variant("version = 1", "version = 1\nname = \"x\""),
        &variant("max_len = 200", "max_len = \"200\""),
        &variant("required = true", "required = \"yes\""),
        &variant("type = \"text\"\n", ""),
        &variant("purpose = \"shipping\"\n", ""),
        &variant("legal_basis = \"contract\"\n", ""),
        &variant("retention = \"30d after delivered\"\n", ""),
        &variant("description = \"Deliver the order to the customer\"\n", ""),
    ] {
        assert!(
            matches!(err(bad), SchemaError::Toml { .. }),
            "{bad}: {:?}",
            err(bad)
        );
    }
}

#[test]
fn version_errors() {
    for v in ["0", "-1", "4294967296"] {
        assert_eq!(
            err(&variant("version = 1", &format!("version = {v}"))),
            SchemaError::InvalidVersion
        );
    }
    assert_eq!(
        err(&variant("version = 1", "")),
        SchemaError::InvalidVersion
    );
    let s = Schema::from_toml(&variant("version = 1", "version = 42")).unwrap();
    assert_eq!(s.version(), 42);
}

#[test]
fn too_large() {
    let text = format!("{MINIMAL}\n#{}", "x".repeat(MAX_SCHEMA_LEN));
    assert!(matches!(err(&text), SchemaError::TooLarge { .. }));
}

#[test]
fn name_rules() {
    assert!(is_valid_name("a"));
    assert!(is_valid_name("last_order2"));
    assert!(is_valid_name(&format!("a{}", "b".repeat(62))));
    for bad in ["", "A", "1a", "_a", "a-b", "a b", "é", &"a".repeat(64)] {
        assert!(!is_valid_name(bad), "{bad}");
    }
    let cases = [
        ("[purposes.shipping]", "[purposes.Shipping]", "purpose"),
        ("[types.address]", "[types.\"2address\"]", "record type"),
        ("fields.street]", "fields.street-name]", "field"),
    ];
    for (from, to, what) in cases {
        let e = err(&variant(from, to));
        assert!(
            matches!(&e, SchemaError::InvalidName { what: w, .. } if *w == what),
            "{e:?}"
        );
    }
}

#[test]
fn unknown_purpose() {
    let e = err(&variant("purpose = \"shipping\"", "purpose = \"shiping\""));
    assert_eq!(
        e,
        SchemaError::UnknownPurpose {
            record_type: "address".into(),
            field: "street".into(),
            purpose: "shiping".into()
        }
    );
    assert!(e.to_string().contains("shiping"));
}

#[test]
fn purpose_errors() {
    let e = err(&variant("\"contract\"", "\"contractual\""));
    assert!(matches!(e, SchemaError::InvalidLegalBasis { .. }), "{e:?}");
    for bad in ["forever", "30d after", "0d after delivered", "until Bad"] {
        let e = err(&variant("30d after delivered", bad));
        assert!(
            matches!(&e, SchemaError::InvalidRetention { purpose, .. } if purpose == "shipping"),
            "{e:?}"
        );
    }
    let e = err(&variant("Deliver the order to the customer", "  "));
    assert!(matches!(e, SchemaError::InvalidPurpose { .. }), "{e:?}");
    let e = err(&variant("\"PostNL (processor)\"", "\"\""));
    assert!(matches!(e, SchemaError::InvalidPurpose { .. }), "{e:?}");
    for &basis in LegalBasis::ALL {
        let s = Schema::from_toml(&variant("\"contract\"", &format!("\"{}\"", basis.as_str())))
            .unwrap();
        assert_eq!(s.purpose("shipping").unwrap().legal_basis, basis);
    }
}

#[test]
fn field_errors() {
    let field_err = |from: &str, to: &str| {
        let e = err(&variant(from, to));
        assert!(
            matches!(&e, SchemaError::InvalidField { record_type, field, .. }
                if record_type == "address" && field == "street"),
            "{to}: {e:?}"
        );
    };
    field_err("type = \"text\"", "type = \"string\"");
    field_err("max_len = 200", "max_len = 0");
    field_err("max_len = 200", "max_len = -5");
    field_err("max_len = 200", "max_len = 1048577");
    field_err(
        "type = \"text\"\npurpose = \"shipping\"\nrequired = true\nmax_len = 200",
        "type = \"date\"\npurpose = \"shipping\"\nmax_len = 9",
    );
    field_err("type = \"text\"", "type = \"json\"\nindex = true");
    field_err("type = \"text\"", "type = \"bytes\"\nindex = true");
    field_err("type = \"text\"", "type = \"json\"\nindex = \"unique\"");
    for bad in ["\"yes\"", "\"Unique\"", "1", "[]"] {
        field_err("max_len = 200", &format!("max_len = 200\nindex = {bad}"));
    }
    let ok = variant("max_len = 200", "max_len = 1048576\nindex = true");
    let s = Schema::from_toml(&ok).unwrap();
    assert_eq!(
        s.record_type("address")
            .unwrap()
            .field("street")
            .unwrap()
            .max_len,
        MAX_FIELD_LEN
    );
}

#[test]
fn index_unique_is_an_index_too() {
    let field = |index: &str| {
        let s =
            Schema::from_toml(&variant("max_len = 200", &format!("max_len = 200{index}"))).unwrap();
        let f = s.record_type("address").unwrap().field("street").unwrap();
        (f.index, f.unique)
    };
    assert_eq!(field(""), (false, false));
    assert_eq!(field("\nindex = false"), (false, false));
    assert_eq!(field("\nindex = true"), (true, false));
    assert_eq!(field("\nindex = \"unique\""), (true, true));
}

#[test]
fn no_fields() {
    let text = r#"
version = 1
[purposes.p]
description = "d"
legal_basis = "consent"
retention = "none"
[types.empty]
description = "nothing"
"#;
    assert_eq!(
        err(text),
        SchemaError::NoFields {
            record_type: "empty".into()
        }
    );
    let text = text.replace("[types.empty]\ndescription = \"nothing\"\n", "");
    let s = Schema::from_toml(&text).unwrap();
    assert_eq!(s.record_types().count(), 0);
    assert!(s.purpose("p").unwrap().recipients.is_empty());
    assert_eq!(s.purpose("p").unwrap().retention, Retention::None);
}

#[test]
fn check_fields() {
    let s = Schema::from_toml(WEBSHOP).unwrap();
    let t = s.record_type("customer").unwrap();
    assert_eq!(
        t.check_fields(["first_name", "last_name", "email"].into_iter()),
        Ok(())
    );
    assert_eq!(
        t.check_fields(["first_name", "last_name", "email", "phone", "birth_date"].into_iter()),
        Ok(())
    );
    assert_eq!(
        t.check_fields(["first_name", "email"].into_iter()),
        Err(RecordError::MissingRequired {
            record_type: "customer".into(),
            field: "last_name".into()
        })
    );
    let e = t
        .check_fields(["first_name", "last_name", "email", "shoe_size"].into_iter())
        .unwrap_err();
    assert_eq!(
        e,
        RecordError::UnknownField {
            record_type: "customer".into(),
            field: "shoe_size".into()
        }
    );
    assert!(e.to_string().contains("shoe_size"));
    assert!(t.check_fields(std::iter::empty()).is_err());
    // A caller's name is shown only with the shape of a schema name: a long garbage key, or a
    // value in a name's place (an e-mail address from a shifted CSV column), is not.
    let long = "x".repeat(1000);
    for given in [long.as_str(), "jan.jansen@voorbeeld.nl", "+31612345678"] {
        match t.check_fields(std::iter::once(given)) {
            Err(e @ RecordError::UnknownField { .. }) => {
                assert!(!e.to_string().contains(given), "{e}");
                assert!(e.to_string().contains("(not a schema name)"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn errors_display() {
    let e = SchemaError::InvalidField {
        record_type: "t".into(),
        field: "f".into(),
        reason: "bad".into(),
    };
    assert_eq!(e.to_string(), "field `t.f`: bad");
    assert!(SchemaError::InvalidVersion.to_string().contains("version"));
}

#[test]
fn ceilings_parse_and_old_schemas_have_none() {
    let s = Schema::from_toml(MINIMAL).unwrap();
    assert_eq!(s.purpose("shipping").unwrap().at_most, None);
    let text = variant(
        "retention = \"30d after delivered\"",
        "retention = \"30d after delivered\"\nat_most = \"1y after ordered\"",
    );
    let s = Schema::from_toml(&text).unwrap();
    let p = s.purpose("shipping").unwrap();
    assert_eq!(
        p.at_most,
        Some(Retention::After {
            period: Period {
                years: 1,
                months: 0,
                days: 0
            },
            event: "ordered".into()
        })
    );
    assert_eq!(
        s.events().into_iter().collect::<Vec<_>>(),
        ["delivered", "ordered"],
        "a ceiling's event is an event of the schema"
    );
    let s = Schema::from_toml(&text.replace("1y after ordered", "until contract_ended")).unwrap();
    assert_eq!(
        s.purpose("shipping")
            .unwrap()
            .at_most
            .as_ref()
            .map(ToString::to_string),
        Some("until contract_ended".to_owned())
    );
}

#[test]
fn ceiling_errors() {
    for (bad, why) in [
        ("none", "`none` is no ceiling"),
        ("1y after last_update", "cannot run from `last_update`"),
        ("until last_update", "cannot run from `last_update`"),
        ("forever", "expected `none`"),
        ("0d after created", "zero"),
        ("1y after Created", "invalid event name"),
    ] {
        let e = err(&variant(
            "retention = \"30d after delivered\"",
            &format!("retention = \"30d after delivered\"\nat_most = \"{bad}\""),
        ));
        assert!(
            matches!(&e, SchemaError::InvalidCeiling { purpose, reason }
                if purpose == "shipping" && reason.contains(why)),
            "{bad}: {e:?}"
        );
        assert!(
            e.to_string().starts_with("purpose `shipping`: at_most: "),
            "{e}"
        );
    }
    let e = err(&variant(
        "retention = \"30d after delivered\"",
        "retention = \"30d after delivered\"\nat_most = 5",
    ));
    assert!(matches!(e, SchemaError::Toml { .. }), "{e:?}");
}

/// Every kind of purpose, each with and without a ceiling: the warning names exactly the
/// ceiling-less purposes whose retention can wait forever.
#[test]
fn ceiling_warnings_name_exactly_the_unbounded_purposes() {
    let rules = [
        ("none", true),
        ("until consent_withdrawn", true),
        ("2y after last_order", true),
        ("7y after invoiced", true),
        ("6mo after created", false),
        ("2w after last_update", false),
    ];
    let mut text = String::from("version = 1\n");
    for (i, (rule, _)) in rules.iter().enumerate() {
        for ceiling in [None, Some("5y after created")] {
            let name = format!("p{i}_{}", if ceiling.is_some() { "capped" } else { "open" });
            text += &format!(
                "[purposes.{name}]\ndescription = \"d\"\nlegal_basis = \"contract\"\n\
                 retention = \"{rule}\"\n"
            );
            if let Some(c) = ceiling {
                text += &format!("at_most = \"{c}\"\n");
            }
        }
    }
    let s = Schema::from_toml(&text).unwrap();
    let warned: Vec<String> = s
        .ceiling_warnings()
        .into_iter()
        .map(|w| w.purpose)
        .collect();
    let want: Vec<String> = rules
        .iter()
        .enumerate()
        .filter(|(_, (_, open))| *open)
        .map(|(i, _)| format!("p{i}_open"))
        .collect();
    assert_eq!(warned, want);

    let w = &s.ceiling_warnings()[2];
    assert_eq!(w.retention, "2y after last_order");
    assert_eq!(w.waits_for.as_deref(), Some("last_order"));
    let text = w.to_string();
    assert!(text.contains("p2_open") && text.contains("last_order") && text.contains("at_most"));
    assert_eq!(s.ceiling_warnings()[0].waits_for, None);
    assert!(s.ceiling_warnings()[0].to_string().contains("forgotten"));
}

#[test]
fn webshop_example_bounds_every_purpose() {
    let s = Schema::from_toml(WEBSHOP).unwrap();
    assert_eq!(s.ceiling_warnings(), vec![]);
    assert!(s.purposes().all(|p| p.at_most.is_some()));
}

#[test]
fn a_fallback_bounds_only_a_rule_that_waits_for_a_shop_event() {
    let purpose = |rule: &str, fallback: &str| {
        format!(
            "version = 1\n[purposes.account]\ndescription = \"d\"\nlegal_basis = \"contract\"\n\
             retention = \"{rule}\"\nfallback = \"{fallback}\"\n"
        )
    };
    let s = Schema::from_toml(&purpose("2y after last_order", "2y after created")).unwrap();
    let p = s.purpose("account").unwrap();
    assert_eq!(p.fallback.as_ref().unwrap().to_string(), "2y after created");
    assert!(
        s.ceiling_warnings().is_empty(),
        "a fallback bounds the rule"
    );
    // Rules that wait for no shop event have nothing to fall back from.
    for rule in [
        "6mo after created",
        "2w after last_update",
        "until consent_withdrawn",
        "none",
    ] {
        let e = Schema::from_toml(&purpose(rule, "2y after created")).unwrap_err();
        assert!(
            matches!(e, SchemaError::InvalidFallback { .. }),
            "{rule}: {e}"
        );
    }
    // And a fallback is held to a ceiling's grammar.
    for fallback in ["none", "1y after last_update", "soon"] {
        let e = Schema::from_toml(&purpose("2y after last_order", fallback)).unwrap_err();
        assert!(
            matches!(e, SchemaError::InvalidFallback { .. }),
            "{fallback}: {e}"
        );
        assert!(e.to_string().contains("fallback"), "{e}");
    }
}

/// `default_country` gives every phone field (and only phone fields) its country; without it a
/// phone field has none and keeps the original rules.
#[test]
fn default_country_reaches_phone_fields() {
    let with_phone = variant(
        "[types.address.fields.street]",
        "[types.address.fields.phone]\ntype = \"phone\"\npurpose = \"shipping\"\nindex = true\n\
         [types.address.fields.street]",
    );
    let s = Schema::from_toml(&with_phone).unwrap();
    let rt = s.record_type("address").unwrap();
    assert_eq!(rt.field("phone").unwrap().country, None);

    let nl = with_phone.replacen("version = 1", "version = 1\ndefault_country = \"NL\"", 1);
    let s = Schema::from_toml(&nl).unwrap();
    let rt = s.record_type("address").unwrap();
    let phone = rt.field("phone").unwrap();
    assert_eq!(
        phone.country.map(|c| c.as_str().to_owned()),
        Some("NL".into())
    );
    assert_eq!(rt.field("street").unwrap().country, None);
    assert_eq!(
        &*phone.encode(&serde_json::json!("06-12345678")).unwrap(),
        b"+31612345678"
    );

    for bad in ["\"nl\"", "\"XX\"", "\"NLD\"", "\"\"", "31"] {
        let text = with_phone.replacen(
            "version = 1",
            &format!("version = 1\ndefault_country = {bad}"),
            1,
        );
        let e = Schema::from_toml(&text).unwrap_err();
        assert!(
            matches!(
                e,
                SchemaError::InvalidCountry { .. } | SchemaError::Toml { .. }
            ),
            "{bad}: {e:?}"
        );
    }
    let e = Schema::from_toml(&with_phone.replacen(
        "version = 1",
        "version = 1\ndefault_country = \"XX\"",
        1,
    ))
    .unwrap_err();
    assert!(e.to_string().contains("default_country `XX`"), "{e}");
}

#[test]
fn datetime_fields() {
    let s = Schema::from_toml(&variant(
        "type = \"text\"\npurpose = \"shipping\"\nrequired = true\nmax_len = 200",
        "type = \"datetime\"\npurpose = \"shipping\"\nindex = true",
    ))
    .unwrap();
    let f = s.record_type("address").unwrap().field("street").unwrap();
    assert_eq!(
        (f.kind, f.max_len, f.index),
        (FieldKind::DateTime, 20, true)
    );
    assert!(s
        .index_warnings()
        .iter()
        .any(|w| w.field == "street" && w.why.contains("date-times")));
    let e = err(&variant("max_len = 200", "max_len = 200\ntype2 = 1"));
    assert!(matches!(e, SchemaError::Toml { .. }));
    let e = err(&variant(
        "type = \"text\"\npurpose = \"shipping\"\nrequired = true\nmax_len = 200",
        "type = \"datetime\"\npurpose = \"shipping\"\nmax_len = 19",
    ));
    assert!(matches!(e, SchemaError::InvalidField { .. }), "{e:?}");
    let e = err(&variant("type = \"text\"", "type = \"timestamp\""));
    assert!(e.to_string().contains("datetime"), "{e}");
}
