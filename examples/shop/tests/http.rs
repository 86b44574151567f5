//! The example shop over real HTTP: the app on `127.0.0.1:0`, a temp-dir vault (tiny Argon2id,
//! relaxed durability: correctness, not speed, is tested here), and the crate's own small HTTP/1.1
//! client. No timing assertions.
// Helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use kluis_example_shop::client::Conn;

use kluis_example_shop::model::{Address, Customer};
use kluis_example_shop::{spawn_shop, Shop, SCHEMA};
use serde_json::{json, Value};
use vault_core::schema::Schema;
use vault_core::{
    Credentials, Durability, ErrorKind, KdfParams, SubjectId, Vault, VaultOptions, VaultPaths,
};

struct TestShop {
    _dir: tempfile::TempDir,
    shop: Arc<Shop>,
    addr: SocketAddr,
}

async fn start() -> TestShop {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::create(
        &VaultPaths::in_dir(dir.path()),
        &Credentials::passphrase("correct horse battery staple"),
        Schema::from_toml(SCHEMA).unwrap(),
        VaultOptions::default()
            .kdf(KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf()
            .durability(Durability::Relaxed)
            .actor("shop-tests"),
    )
    .unwrap();
    let shop = Shop::new(vault).unwrap();
    let (addr, _task) = spawn_shop(shop.clone()).await.unwrap();
    TestShop {
        _dir: dir,
        shop,
        addr,
    }
}

const EMAIL: &str = "Jan.Berg@Voorbeeld.nl";

fn jan() -> Value {
    json!({
        "first_name": "Jan",
        "tussenvoegsel": "van der",
        "last_name": "Berg",
        "email": EMAIL,
        "phone": "06 1234 5678",
        "birth_date": "1985-07-04",
        "marketing_consent": true
    })
}

fn order(number: &str, invoice: &str) -> Value {
    json!({
        "order_number": number,
        "address": {
            "recipient_name": "J. van der Berg",
            "street": "Kerkstraat",
            "house_number": "12",
            "house_number_addition": "A",
            "postcode": "1234 AB",
            "city": "Utrecht",
            "country": "NL"
        },
        "invoice": {
            "invoice_number": invoice,
            "invoice_date": "2026-12-06",
            "billing_name": "Jan van der Berg",
            "billing_address": "Kerkstraat 12A\n1234 AB Utrecht",
            "lines": [{"description": "Fiets", "quantity": 1, "unit_price": "100.00", "vat_rate": "21"}],
            "total": "121.00"
        }
    })
}

async fn register(c: &mut Conn, body: &Value) -> String {
    let r = c.post("/customers", body).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

/// An error body names the kind and carries a message, and never the value sent.
fn assert_error(r: &kluis_example_shop::client::Response, status: u16, secret: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert!(
        body["error"].is_string() && body["message"].is_string(),
        "{body}"
    );
    let text = r.text().to_lowercase();
    assert!(
        secret.is_empty() || !text.contains(&secret.to_lowercase()),
        "value in error body: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_profile_masked_lookup_and_duplicates() {
    let t = start().await;
    let mut c = Conn::connect(t.addr).await.unwrap();
    let id = register(&mut c, &jan()).await;

    let r = c.get(&format!("/customers/{id}")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let profile: Customer = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(profile.email, EMAIL);
    assert_eq!(profile.tussenvoegsel.as_deref(), Some("van der"));

    // Customer service's masked view: the domain and an initial, never the whole address.
    let r = c.get(&format!("/customers/{id}/masked")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let masked = r.json();
    assert_eq!(masked["email"], "J***@Voorbeeld.nl");
    assert_eq!(masked["last_name"], "B.");
    assert_eq!(masked["phone"], "******5678");
    assert_eq!(masked["birth_date"], "1985");
    let text = r.text().to_lowercase();
    for whole in ["jan.berg@", "berg\"", "1234 5678", "07-04"] {
        assert!(!text.contains(whole), "{whole} in the masked view: {text}");
    }

    // Found by e-mail in another case and spacing, and by phone in another notation.
    for q in [
        "email=%20JAN.berg@VOORBEELD.nl%20",
        "email=jan.berg%40voorbeeld.nl",
        "phone=06-12345678",
    ] {
        let r = c.get(&format!("/lookup?{q}")).await.unwrap();
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(r.json()["customers"], json!([id]), "{q}");
    }
    let r = c.get("/lookup?email=nobody@voorbeeld.nl").await.unwrap();
    assert_eq!(r.json()["customers"], json!([]));
    assert_error(&c.get("/lookup").await.unwrap(), 400, "");
    assert_error(&c.get("/lookup?name=Jan").await.unwrap(), 400, "Jan");

    // The e-mail is unique (after normalisation): a second registration is 409, and creates
    // nobody (the lookup still finds one customer).
    let mut twin = jan();
    twin["email"] = json!("  jan.berg@voorbeeld.NL ");
    twin["first_name"] = json!("Janneke");
    let r = c.post("/customers", &twin).await.unwrap();
    assert_error(&r, 409, "jan.berg@voorbeeld");
    let r = c.get("/lookup?email=jan.berg@voorbeeld.nl").await.unwrap();
    assert_eq!(r.json()["customers"], json!([id]));

    // Unknown customers: a well-formed id nobody has, and something that is not an id.
    let nobody = "AAAAAAAAAAAAAAAAAAAAAA";
    assert!(nobody.parse::<SubjectId>().is_ok());
    for path in [
        format!("/customers/{nobody}"),
        format!("/customers/{nobody}/masked"),
        format!("/customers/{nobody}/export"),
        format!("/warehouse/orders/{nobody}/order-1"),
        "/customers/not-an-id".to_owned(),
    ] {
        assert_error(&c.get(&path).await.unwrap(), 404, "");
    }
    assert_error(
        &c.delete(&format!("/customers/{nobody}")).await.unwrap(),
        404,
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_without_echoing_values() {
    let t = start().await;
    let mut c = Conn::connect(t.addr).await.unwrap();

    // Not JSON: 400.
    let r = c
        .request("POST", "/customers", Some(b"{\"first_name\": \"Geheim"))
        .await
        .unwrap();
    assert_error(&r, 400, "Geheim");
    // JSON of the wrong shape (an unknown field, a missing one, a wrong type): 422.
    let mut extra = jan();
    extra["password"] = json!("hunter2-secret");
    assert_error(&c.post("/customers", &extra).await.unwrap(), 422, "hunter2");
    let mut missing = jan();
    missing.as_object_mut().unwrap().remove("email");
    assert_error(&c.post("/customers", &missing).await.unwrap(), 422, EMAIL);
    let mut wrong = jan();
    wrong["marketing_consent"] = json!("yes-please-secret");
    assert_error(
        &c.post("/customers", &wrong).await.unwrap(),
        422,
        "yes-please",
    );
    // Well-formed, but kluis refuses the value (not an e-mail; a phone with letters): 422 with
    // kluis's message, which names the field and never the value.
    let mut bad_email = jan();
    bad_email["email"] = json!("geheim-adres-zonder-apenstaart");
    let r = c.post("/customers", &bad_email).await.unwrap();
    assert_error(&r, 422, "geheim-adres");
    assert_eq!(r.json()["error"], "invalid_input");
    assert!(r.json()["message"].as_str().unwrap().contains("email"));
    let mut bad_phone = jan();
    bad_phone["phone"] = json!("bel-me-GEHEIM");
    assert_error(
        &c.post("/customers", &bad_phone).await.unwrap(),
        422,
        "GEHEIM",
    );
    // No body type: 415.
    let r = c.request("POST", "/customers", None).await.unwrap();
    assert_eq!(r.status, 415, "{}", r.text());

    // An order body with an unknown field: 422; an order for nobody: 404.
    let id = register(&mut c, &jan()).await;
    let mut o = order("order-1", "2026-0001");
    o["address"]["floor"] = json!("3");
    assert_error(
        &c.post(&format!("/customers/{id}/orders"), &o)
            .await
            .unwrap(),
        422,
        "",
    );
    assert_error(
        &c.post(
            "/customers/AAAAAAAAAAAAAAAAAAAAAA/orders",
            &order("order-1", "2026-0001"),
        )
        .await
        .unwrap(),
        404,
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_delivery_and_the_warehouse_sees_only_the_address() {
    let t = start().await;
    let mut c = Conn::connect(t.addr).await.unwrap();
    let id = register(&mut c, &jan()).await;

    let r = c
        .post(
            &format!("/customers/{id}/orders"),
            &order("order-1001", "2026-0042"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"order": "order-1001", "invoice": "2026-0042"})
    );

    // The invoice is immutable: an order reusing its number is refused as a whole.
    let r = c
        .post(
            &format!("/customers/{id}/orders"),
            &order("order-1002", "2026-0042"),
        )
        .await
        .unwrap();
    assert_error(&r, 409, "Kerkstraat");
    assert_error(
        &c.get(&format!("/warehouse/orders/{id}/order-1002"))
            .await
            .unwrap(),
        404,
        "",
    );

    // The warehouse reads the shipping address, and nothing of the account.
    let r = c
        .get(&format!("/warehouse/orders/{id}/order-1001"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let address: Address = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(address.city, "Utrecht");
    assert_eq!(address.house_number_addition.as_deref(), Some("A"));
    let text = r.text().to_lowercase();
    assert!(
        !text.contains("voorbeeld.nl") && !text.contains("5678"),
        "{text}"
    );
    // Its handle is bound to `shipping`: the e-mail and the customer record are refused to it.
    let s: SubjectId = id.parse().unwrap();
    let warehouse = t.shop.warehouse();
    let refused = warehouse
        .get_fields(&s, "customer", &["email"])
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Forbidden);
    assert!(!refused.to_string().contains("voorbeeld"), "{refused}");
    assert_eq!(
        kluis_example_shop::error::AppError::from(refused).status(),
        403
    );
    let whole = warehouse
        .get_as::<Customer>(&s, "customer")
        .await
        .unwrap_err();
    assert_eq!(whole.kind(), ErrorKind::Forbidden, "{whole}");
    let search = warehouse
        .find("customer", "email", EMAIL)
        .await
        .unwrap_err();
    assert_eq!(search.kind(), ErrorKind::Forbidden, "{search}");

    // Delivered: the address's 30 days start counting (for that order's address only).
    let r = c
        .post(
            &format!("/customers/{id}/orders/order-1001/delivered"),
            &json!(null),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["counted_for"], json!(["shipping"]));
    assert_error(
        &c.post(
            &format!("/customers/{id}/orders/order-9999/delivered"),
            &json!(null),
        )
        .await
        .unwrap(),
        404,
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_forget_keeps_only_the_invoice() {
    let t = start().await;
    let mut c = Conn::connect(t.addr).await.unwrap();
    let id = register(&mut c, &jan()).await;
    let r = c
        .post(
            &format!("/customers/{id}/orders"),
            &order("order-7", "2026-0007"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    // Art. 15: everything about the customer, their own data included.
    let r = c.get(&format!("/customers/{id}/export")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let export = r.json();
    assert_eq!(export["subject"], json!(id));
    let records = export["records"].as_array().unwrap();
    let types: Vec<&str> = records
        .iter()
        .map(|r| r["record_type"].as_str().unwrap())
        .collect();
    for t in ["customer", "marketing_consent", "address", "invoice"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    assert!(r.text().contains(EMAIL));

    // Art. 17: the account, marketing and shipping keys are destroyed; the invoice is kept
    // under the 7-year obligation, and the answer says until when.
    let r = c.delete(&format!("/customers/{id}")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    let shredded: Vec<&str> = report["shredded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for p in ["account", "marketing", "shipping"] {
        assert!(shredded.contains(&p), "{p} not shredded: {report}");
    }
    let kept = report["kept"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{report}");
    assert_eq!(kept[0]["purpose"], "invoicing");
    assert_eq!(kept[0]["record"], "invoice/2026-0007");
    assert!(kept[0]["legal_basis"]
        .as_str()
        .unwrap()
        .contains("legal obligation"));
    let until = kept[0]["until"].as_str().unwrap();
    assert!(until.starts_with("203"), "{until}");

    // The profile, its masked view and the address are gone for good: 410.
    for path in [
        format!("/customers/{id}"),
        format!("/customers/{id}/masked"),
        format!("/warehouse/orders/{id}/order-7"),
    ] {
        assert_error(&c.get(&path).await.unwrap(), 410, EMAIL);
    }
    // Nobody finds them any more; a second erasure request is a conflict.
    let r = c.get("/lookup?email=jan.berg@voorbeeld.nl").await.unwrap();
    assert_eq!(r.json()["customers"], json!([]));
    assert_error(
        &c.delete(&format!("/customers/{id}")).await.unwrap(),
        409,
        "",
    );
    // New orders for a forgotten customer: 410.
    assert_error(
        &c.post(
            &format!("/customers/{id}/orders"),
            &order("order-8", "2026-0008"),
        )
        .await
        .unwrap(),
        410,
        "",
    );

    // The export now shows the invoice and nothing readable of the rest.
    let r = c.get(&format!("/customers/{id}/export")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("2026-0007") && text.contains("121.00"),
        "{text}"
    );
    assert!(
        !text.contains(EMAIL) && !text.contains("Kerkstraat\""),
        "{text}"
    );
    assert!(r.json()["forgotten_at"].is_number());

    // And the e-mail is free again: the same person may register anew.
    register(&mut c, &jan()).await;
}
