//! `kluis serve` under abuse (issue 16): bad tokens, tokens used outside their purposes, bodies
//! too large or malformed, slow and vanishing clients, and kill -9 in the middle of writes.
//! RELIABILITY.md's abuse catalogue lists each with its outcome.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::server::{customer_path, Served, SHOP_TOKENS};

fn address() -> serde_json::Value {
    json!({"recipient_name": "Ans Smit", "street": "Kerkstraat", "house_number": "1",
           "postcode": "1234AB", "city": "Utrecht", "country": "NL"})
}

#[test]
fn requests_without_a_valid_token_are_refused_alike() {
    let s = Served::start(SHOP_TOKENS);
    let subject = s.new_customer("ans@voorbeeld.nl");
    let path = customer_path(&subject);
    let shop = s.token("shop").to_owned();
    let mut wrong_secret = shop.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == 'A' { 'B' } else { 'A' });
    for bearer in [
        None,
        Some(""),
        Some("not a token"),
        Some(wrong_secret.as_str()),
        Some("kluis_AAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some(&shop[..shop.len() - 1]),
    ] {
        let r = s.raw_request("GET", &path, bearer, None);
        assert_eq!(r.status, 401, "{bearer:?}: {r:?}");
        assert_eq!(r.kind(), "unauthenticated");
        assert!(r.header("www-authenticate").is_some());
        assert!(!r.body.contains("Ans"), "no value in a refusal");
    }
    // The scheme is case-insensitive (RFC 9110), the token is not.
    let lower = s.send_bytes(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: bearer {shop}\r\n\r\n").as_bytes(),
    );
    assert_eq!(lower.status, 200, "{lower:?}");
    // Health, readiness and the API description need no token; nothing else does without one.
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(s.raw_request("GET", open, None, None).status, 200, "{open}");
    }
    assert!(!s.log().contains(&shop), "no token in the server log");
}

#[test]
fn a_token_reaches_only_its_purposes_and_operations() {
    let s = Served::start(SHOP_TOKENS);
    let subject = s.new_customer("ans@voorbeeld.nl");
    let order = format!("/v1/subjects/{subject}/records/address/order-1001");
    assert_eq!(s.call("PUT", &order, "shop", Some(address())).status, 204);

    // The warehouse reads the order's address, not the customer's account data.
    let r = s.call("GET", &order, "warehouse", None);
    assert_eq!(
        (r.status, r.json["fields"]["city"].as_str()),
        (200, Some("Utrecht"))
    );
    let r = s.call("GET", &customer_path(&subject), "warehouse", None);
    assert_eq!((r.status, r.kind()), (403, "forbidden"), "{r:?}");
    // Customer service sees masks only.
    let r = s.call("GET", &customer_path(&subject), "support", None);
    assert_eq!((r.status, r.kind()), (403, "forbidden"));
    let r = s.call(
        "GET",
        &format!("{}?fields=email", customer_path(&subject)),
        "support",
        None,
    );
    assert_eq!(r.status, 403);
    let r = s.call(
        "GET",
        &format!("{}?view=masked", customer_path(&subject)),
        "support",
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["fields"]["email"], "a***@voorbeeld.nl");
    assert!(!r.body.contains("ans@"));
    // Writes, deletes and whole-subject acts need their operation (and all purposes).
    let refused = [
        (
            "PATCH",
            order.clone(),
            "warehouse",
            Some(json!({"city": "Delft"})),
        ),
        ("DELETE", order.clone(), "support", None),
        (
            "POST",
            format!("/v1/subjects/{subject}/forget"),
            "shop",
            None,
        ),
        (
            "GET",
            format!("/v1/subjects/{subject}/export"),
            "shop",
            None,
        ),
        ("GET", "/v1/register".to_owned(), "warehouse", None),
        (
            "PUT",
            customer_path(&subject),
            "operator",
            Some(json!({"first_name": "X"})),
        ),
        ("POST", "/v1/subjects".to_owned(), "support", None),
    ];
    for (method, path, token, body) in refused {
        let r = s.call(method, &path, token, body);
        assert_eq!(
            (r.status, r.kind()),
            (403, "forbidden"),
            "{method} {path} as {token}: {r:?}"
        );
    }
    // A transaction whose first operation is in scope and whose second is not: the vault refuses
    // the second, and the first does not land either.
    let tx = json!({"ops": [
        {"op": "update", "record_type": "address", "label": "order-1001", "fields": {"city": "Delft"}},
        {"op": "update", "record_type": "customer", "fields": {"first_name": "Els"}},
    ]});
    let tx_path = format!("/v1/subjects/{subject}/transaction");
    let r = s.call("POST", &tx_path, "fulfilment", Some(tx));
    assert_eq!((r.status, r.kind()), (403, "forbidden"), "{r:?}");
    let city = s.call("GET", &order, "warehouse", None).json["fields"]["city"].clone();
    assert_eq!(city, "Utrecht");
    // An operation the token lacks is refused before anything runs.
    let tx = json!({"ops": [{"op": "delete", "record_type": "address", "label": "order-1001"}]});
    assert_eq!(s.call("POST", &tx_path, "fulfilment", Some(tx)).status, 403);
    // An empty update of a type none of whose fields the token may touch says nothing about
    // whether the record exists.
    let empty = json!({"ops": [{"op": "update", "record_type": "customer", "fields": {}}]});
    let r = s.call("POST", &tx_path, "fulfilment", Some(empty.clone()));
    assert_eq!(r.status, 403, "{r:?}");
    let nobody = "/v1/subjects/AAAAAAAAAAAAAAAAAAAAAA/transaction";
    assert_eq!(
        s.call("POST", nobody, "fulfilment", Some(empty)).status,
        403
    );
    // Refusals are in the server log by token id (never the bearer text).
    let warehouse_id = &s.token("warehouse")["kluis_".len().."kluis_".len() + 12];
    let log = s.log();
    let line = format!("token={warehouse_id}");
    assert!(
        log.lines()
            .any(|l| l.contains(&line) && l.contains("status=403")),
        "{log}"
    );
    assert!(!log.contains(s.token("warehouse")));
    // The operator may forget; the shop then reads only shredded markers.
    let r = s.call(
        "POST",
        &format!("/v1/subjects/{subject}/forget"),
        "operator",
        Some(json!({"reason": "request 17"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = s.call("GET", &customer_path(&subject), "shop", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["fields"], json!({}));
    assert_eq!(r.json["shredded"]["email"]["purpose"], "account");
}

#[test]
fn events_through_a_token_must_lie_near_now() {
    let s = Served::start(SHOP_TOKENS);
    let subject = s.new_customer("ans@voorbeeld.nl");
    let order = format!("/v1/subjects/{subject}/records/address/order-7");
    assert_eq!(s.call("PUT", &order, "shop", Some(address())).status, 204);
    let events = format!("/v1/subjects/{subject}/events");
    for at in ["1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z"] {
        let r = s.call(
            "POST",
            &events,
            "warehouse",
            Some(json!({"event": "delivered", "record_type": "address", "label": "order-7", "at": at})),
        );
        assert_eq!((r.status, r.kind()), (422, "invalid_input"), "{at}: {r:?}");
    }
    let r = s.call(
        "POST",
        &events,
        "warehouse",
        Some(json!({"event": "delivered", "record_type": "address", "label": "order-7"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["recorded"], true);
    // An event of the whole subject would move every purpose's retention: warehouse may not.
    let r = s.call(
        "POST",
        &events,
        "warehouse",
        Some(json!({"event": "last_order"})),
    );
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn oversized_and_malformed_bodies_get_clear_answers_and_change_nothing() {
    let s = Served::start_with(SHOP_TOKENS, &["--max-body", "4096"]);
    let subject = s.new_customer("ans@voorbeeld.nl");
    let path = customer_path(&subject);
    let shop = s.token("shop").to_owned();
    let big = format!("{{\"first_name\": \"{}\"}}", "x".repeat(10_000));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("too large", big, 413, "too_large"),
        ("not JSON", "{\"first_name\": ".to_owned(), 400, "malformed"),
        (
            "not an object",
            "[1, 2, 3]".to_owned(),
            422,
            "invalid_input",
        ),
        (
            "unknown field",
            "{\"shoe_size\": \"Geheim-42\"}".to_owned(),
            422,
            "invalid_input",
        ),
        (
            "wrong type",
            "{\"first_name\": 42}".to_owned(),
            422,
            "invalid_input",
        ),
        (
            "field too long",
            format!("{{\"first_name\": \"{}\"}}", "y".repeat(3000)),
            422,
            "invalid_input",
        ),
    ];
    for (what, body, status, kind) in cases {
        let r = s.raw_request("PATCH", &path, Some(&shop), Some(&body));
        assert_eq!((r.status, r.kind()), (status, kind), "{what}: {r:?}");
        assert!(
            !r.body.contains("Geheim-42") && !r.body.contains("xxxxxxxx"),
            "{what} quotes the value: {r:?}"
        );
    }
    // A body that is not UTF-8, a missing content type, a bad subject id, an unknown route.
    let mut req = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {shop}\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(&[0xff, 0xfe, 0x7b, 0x7d]);
    assert_eq!(s.send_bytes(&req).status, 400);
    let no_type = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {shop}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    assert_eq!(s.send_bytes(no_type.as_bytes()).kind(), "malformed");
    let r = s.call(
        "GET",
        "/v1/subjects/not-a-subject/records/customer",
        "shop",
        None,
    );
    assert_eq!((r.status, r.kind()), (422, "invalid_input"));
    assert_eq!(s.call("GET", "/v1/nothing/here", "shop", None).status, 404);
    // Query strings and methods the endpoint does not take: JSON answers as well.
    let r = s.call("GET", &format!("{path}?view=bogus"), "shop", None);
    assert_eq!((r.status, r.kind()), (400, "malformed"), "{r:?}");
    let r = s.call(
        "GET",
        &format!("{path}?view=masked&fields=email"),
        "shop",
        None,
    );
    assert_eq!((r.status, r.kind()), (422, "invalid_input"), "{r:?}");
    let r = s.call("POST", &path, "shop", None);
    assert_eq!((r.status, r.kind()), (405, "malformed"), "{r:?}");
    // Garbage instead of HTTP, and a header section larger than the server reads.
    let r = s.send_bytes(b"\x16\x03\x01 this is not http\r\n\r\n");
    assert!(r.status == 400 || r.status == 0, "{r:?}");
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(1 << 20)
    );
    let r = s.send_bytes(huge.as_bytes());
    assert!(r.status == 431 || r.status == 0 || r.status == 400, "{r:?}");
    // Nothing changed, and the server still answers.
    let r = s.call("GET", &path, "shop", None);
    assert_eq!(r.json["fields"]["first_name"], "Ans", "{r:?}");
}

#[test]
fn slow_clients_are_cut_off_without_holding_up_others() {
    let s = Served::start_with(
        SHOP_TOKENS,
        &["--header-timeout", "1", "--request-timeout", "2"],
    );
    let subject = s.new_customer("ans@voorbeeld.nl");
    let path = customer_path(&subject);
    // Twenty clients that send half a request line and stall (slowloris).
    let stalled: Vec<_> = (0..20)
        .map(|_| {
            let mut c = s.connect();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            c
        })
        .collect();
    // Meanwhile a real client is served at once.
    let t = Instant::now();
    assert_eq!(s.call("GET", &path, "shop", None).status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "served while others stall"
    );
    // The stalled ones are closed after the header timeout.
    for mut c in stalled {
        let r = crate::server::read_reply(&mut c);
        assert!(r.status == 0 || r.status == 408, "{r:?}");
    }
    // A client that sends headers and only part of its body gets the request timeout, and
    // nothing of that write is applied.
    let shop = s.token("shop").to_owned();
    let mut c = s.connect();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {shop}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"first_name\": "
    );
    c.write_all(head.as_bytes()).unwrap();
    let r = crate::server::read_reply(&mut c);
    assert_eq!((r.status, r.kind()), (503, "timeout"), "{r:?}");
    assert_eq!(
        s.call("GET", &path, "shop", None).json["fields"]["first_name"],
        "Ans"
    );
}

/// Past `--max-in-flight` requests in progress, more get 503 `busy` at once instead of queueing
/// behind a stalled vault; health checks still answer.
#[test]
fn requests_past_the_in_flight_limit_are_turned_away_at_once() {
    let s = Served::start_with(
        SHOP_TOKENS,
        &["--max-in-flight", "1", "--request-timeout", "5"],
    );
    let subject = s.new_customer("ans@voorbeeld.nl");
    let path = customer_path(&subject);
    let shop = s.token("shop").to_owned();
    // One request in progress: its body never finishes.
    let mut slow = s.connect();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {shop}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    slow.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = s.call("GET", &path, "shop", None);
    assert_eq!((r.status, r.kind()), (503, "busy"), "{r:?}");
    assert!(r.header("retry-after").is_some());
    assert_eq!(s.raw_request("GET", "/healthz", None, None).status, 200);
    drop(slow);
    assert!(
        (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            s.call("GET", &path, "shop", None).status == 200
        }),
        "served again once the slow request is gone"
    );
}

/// An idle keep-alive connection is closed after the header timeout too: between requests a
/// client cannot hold a connection slot for ever.
#[test]
fn idle_keep_alive_connections_are_closed() {
    use std::io::Read;
    let s = Served::start_with(&[], &["--header-timeout", "1"]);
    let mut c = s.connect();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 512];
    let n = c.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // Idle: the server hangs up within a few header timeouts.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut rest = Vec::new();
    let closed = c.read_to_end(&mut rest).is_ok();
    assert!(
        closed && t.elapsed() < Duration::from_secs(5),
        "still open after {:?}",
        t.elapsed()
    );
}

#[test]
fn a_client_that_hangs_up_mid_request_leaves_nothing_behind() {
    let s = Served::start(SHOP_TOKENS);
    let subject = s.new_customer("ans@voorbeeld.nl");
    let order = format!("/v1/subjects/{subject}/records/address/order-9");
    let shop = s.token("shop").to_owned();
    for cut in [10, 60, 200] {
        let body = address().to_string();
        let req = format!(
            "PUT {order} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {shop}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let bytes = req.as_bytes();
        let head_len = req.len() - body.len();
        let mut c = s.connect();
        c.write_all(&bytes[..(head_len + cut).min(bytes.len() - 1)])
            .unwrap();
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    let r = s.call("GET", &order, "shop", None);
    assert_eq!(r.status, 404, "no half-sent record was stored: {r:?}");
    assert_eq!(s.call("GET", "/readyz", "shop", None).status, 200);
}

#[test]
fn a_token_over_its_rate_gets_429_with_retry_after() {
    let s = Served::start(&[("slow", "account", "read,write")]);
    // `--rate` is per token: made on a second token beside the first.
    let mut s = s;
    s.kill9();
    let out = s.cli_ok(&[
        "token",
        "create",
        "--name",
        "limited",
        "--purposes",
        "account",
        "--ops",
        "read",
        "--rate",
        "2",
    ]);
    s.tokens.insert("limited".to_owned(), out.trim().to_owned());
    s.spawn();
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            s.call(
                "GET",
                "/v1/subjects/AAAAAAAAAAAAAAAAAAAAAA/records/customer",
                "limited",
                None,
            )
            .status
        })
        .collect();
    let limited = statuses.iter().filter(|&&c| c == 429).count();
    assert!(limited >= 3, "burst 4 at 2/s: {statuses:?}");
    let r = s.call(
        "GET",
        "/v1/subjects/AAAAAAAAAAAAAAAAAAAAAA/records/customer",
        "limited",
        None,
    );
    if r.status == 429 {
        assert_eq!(r.kind(), "rate_limited");
        assert!(r.header("retry-after").is_some());
    }
    // Another token is not held back by it.
    let r = s.call(
        "GET",
        "/v1/subjects/AAAAAAAAAAAAAAAAAAAAAA/records/customer",
        "slow",
        None,
    );
    assert_eq!(r.status, 404, "{r:?}");
}

/// Writes acknowledged before a kill -9 are all there after a restart: a 2xx is sent only after
/// the write is durable.
#[test]
fn kill_9_mid_write_loses_no_acknowledged_write() {
    let mut s = Served::start(SHOP_TOKENS);
    let port = s.port;
    let shop = s.token("shop").to_owned();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let writer = std::thread::spawn(move || {
        let client = Client { port, bearer: shop };
        for i in 0.. {
            let body = json!({"records": [{"record_type": "customer", "fields": {
                "first_name": "Klant", "last_name": format!("Nummer{i}"), "email": format!("k{i}@voorbeeld.nl")
            }}]});
            match client.post("/v1/subjects", &body.to_string()) {
                Some(r) if r.status == 201 => {
                    let sid = r.json["subject"].as_str().unwrap().to_owned();
                    if tx.send(format!("{sid} {i}")).is_err() {
                        return;
                    }
                }
                _ => return, // the server is gone
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    s.kill9();
    writer.join().unwrap();
    let acked: Vec<String> = rx.try_iter().collect();
    assert!(
        acked.len() > 5,
        "some writes were acknowledged: {}",
        acked.len()
    );
    s.spawn();
    for line in &acked {
        let (sid, i) = line.split_once(' ').unwrap();
        let r = s.call("GET", &customer_path(sid), "shop", None);
        assert_eq!(r.status, 200, "acknowledged write {i} lost: {r:?}");
        assert_eq!(r.json["fields"]["last_name"], format!("Nummer{i}"));
    }
    // The audit chain survived the kill as well.
    s.stop();
    s.cli_ok(&["audit", "verify"]);
}

/// A client on its own connection (`Served` is not `Send` into the writer thread).
struct Client {
    port: u16,
    bearer: String,
}

impl Client {
    fn post(&self, path: &str, body: &str) -> Option<crate::server::Reply> {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.bearer,
            body.len()
        );
        c.write_all(req.as_bytes()).ok()?;
        let r = crate::server::read_reply(&mut c);
        (r.status != 0).then_some(r)
    }
}

/// One token stalling its request bodies fills only its own slots (`--max-in-flight-per-token`),
/// not the server's: the shop's requests go on.
#[test]
fn one_token_cannot_take_every_slot() {
    let s = Served::start_with(
        SHOP_TOKENS,
        &["--max-in-flight-per-token", "2", "--request-timeout", "5"],
    );
    let subject = s.new_customer("ans@voorbeeld.nl");
    let support = s.token("support").to_owned();
    let stalled: Vec<_> = (0..2)
        .map(|_| {
            let mut c = s.connect();
            let head = format!(
                "POST /v1/find HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {support}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            );
            c.write_all(head.as_bytes()).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let find = json!({"record_type": "customer", "field": "email", "value": "ans@voorbeeld.nl"});
    let r = s.call("POST", "/v1/find", "support", Some(find.clone()));
    assert_eq!((r.status, r.kind()), (503, "busy"), "{r:?}");
    assert_eq!(
        s.call("GET", &customer_path(&subject), "shop", None).status,
        200
    );
    assert_eq!(s.call("POST", "/v1/find", "shop", Some(find)).status, 200);
    drop(stalled);
}
