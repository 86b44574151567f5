//! Generated exports in the formats of the shop systems `kluis import --preset` reads: the
//! WooCommerce "Customer / Order / Coupon Export" extension's customer and order CSVs (format
//! "Default") and Magento 2's customer grid export. Row `i` is a pure function of `i`, so a
//! benchmark writes 100,000 rows of each and gets the same file on every run, and the
//! end-to-end tests (tests/tests/import_presets.rs) build their files from the same rows, each
//! changed where a test needs a bad or special cell.
//!
//! Both systems write CSV with PHP's `fputcsv` ([`fputcsv`]): a cell is quoted only when it
//! holds a comma, a quote, a backslash, white space or a line break. The WooCommerce extension
//! may start its file with a UTF-8 byte order mark (for Excel; the generated files have one,
//! kluis reads both); Magento writes none, but puts a space before a cell that starts with `=`,
//! `+` or `-` (against formula injection), so its phone cells read `" +31…"`. Spreadsheet-edited
//! WooCommerce files keep a leading `+` as `'+31…`.

/// The UTF-8 byte order mark a WooCommerce export may start with (see [`file`]).
pub const BOM: &str = "\u{feff}";

/// The header of Shopify's customer export ("CSV for Excel, Numbers, or other spreadsheet
/// programs"), which starts with a byte order mark.
pub const SHOPIFY_CUSTOMERS_HEADER: &str = "Customer ID,First Name,Last Name,Email,\
Accepts Email Marketing,Default Address Company,Default Address Address1,\
Default Address Address2,Default Address City,Default Address Province Code,\
Default Address Country Code,Default Address Zip,Default Address Phone,Phone,\
Accepts SMS Marketing,Total Spent,Total Orders,Note,Tax Exempt,Tags";

/// The header of the WooCommerce customer CSV (one row per registered customer).
pub const WOOCOMMERCE_CUSTOMERS_HEADER: &str = "customer_id,first_name,last_name,user_login,\
email,date_registered,billing_first_name,billing_last_name,billing_company,billing_email,\
billing_phone,billing_address_1,billing_address_2,billing_postcode,billing_city,billing_state,\
billing_country,shipping_first_name,shipping_last_name,shipping_company,shipping_address_1,\
shipping_address_2,shipping_postcode,shipping_city,shipping_state,shipping_country,total_spent,\
order_count";

/// The header of the WooCommerce order CSV (format "Default": one row per order, the items of
/// an order in one cell each).
pub const WOOCOMMERCE_ORDERS_HEADER: &str = "order_id,order_number,order_date,status,\
shipping_total,shipping_tax_total,fee_total,fee_tax_total,tax_total,cart_discount,order_discount,\
discount_total,order_total,refunded_total,order_currency,payment_method,shipping_method,\
customer_id,billing_first_name,billing_last_name,billing_full_name,billing_company,vat_number,\
billing_email,billing_phone,billing_address_1,billing_address_2,billing_postcode,billing_city,\
billing_state,billing_state_code,billing_country,shipping_first_name,shipping_last_name,\
shipping_full_name,shipping_address_1,shipping_address_2,shipping_postcode,shipping_city,\
shipping_state,shipping_state_code,shipping_country,shipping_company,customer_note,line_items,\
shipping_items,fee_items,tax_items,coupon_items,refunds,order_notes,download_permissions";

/// The header of Magento 2's customer grid export, as `fputcsv` writes it.
pub const MAGENTO_CUSTOMERS_HEADER: &str = "ID,Name,Email,Group,Phone,ZIP,Country,\
State/Province,\"Customer Since\",\"Web Site\",\"Confirmed email\",\"Account Created in\",\
\"Billing Address\",\"Shipping Address\",\"Date of Birth\",\"Tax VAT Number\",Gender,\
\"Street Address\",City,Fax,\"VAT Number\",Company,\"Billing Firstname\",\"Billing Lastname\",\
\"Account Lock\"";

const FIRST: &[&str] = &[
    "Jan",
    "Anouk",
    "Pieter",
    "Sanne",
    "Daan",
    "Fleur",
    "Bram",
    "Lotte",
    "Sem",
    "Eva",
    "Ruben",
    "Noor",
    "Anna Maria",
];
const LAST: &[&str] = &[
    "de Vries",
    "Jansen",
    "van den Berg",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "de Boer",
    "Mulder",
    "de Groot",
    "Bos",
];
/// Street names with the addition each gets after its number ("Hoofdweg 7a").
const STREETS: &[(&str, &str)] = &[
    ("Kerkstraat", ""),
    ("Laan van Meerdervoort", "-bis"),
    ("Dorpsstraat", " A"),
    ("Hoofdweg", "a"),
    ("2e Hugo de Grootstraat", " hs"),
    ("Molenweg", ""),
    ("Rue de la Loi", " bus 3"),
];
const CITIES: &[(&str, &str)] = &[
    ("Amsterdam", "1011 AB"),
    ("Den Haag", "2517 KJ"),
    ("Utrecht", "3511 LX"),
    ("Groningen", "9711 BC"),
    ("Maastricht", "6211 CM"),
];

/// One row as PHP's `fputcsv` writes it (no line end).
pub fn fputcsv(cells: &[&str]) -> String {
    cells
        .iter()
        .map(|c| {
            let special = |ch: char| matches!(ch, ',' | '"' | '\\' | ' ' | '\t' | '\n' | '\r');
            if c.contains(special) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                (*c).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Magento's guard against formula injection: a space before `=`, `+` or `-`.
fn magento_cell(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-']) {
        format!(" {cell}")
    } else {
        cell.to_owned()
    }
}

/// A generated customer: names, contact and one address. Fields are as an export writes them
/// (an e-mail address may have odd case or spaces; see [`Person::email_normalised`]).
#[derive(Debug, Clone)]
pub struct Person {
    /// First name (sometimes two words: "Anna Maria").
    pub first: String,
    /// Last name with its prefix ("van den Berg").
    pub last: String,
    /// The e-mail address as typed.
    pub email: String,
    /// A Dutch mobile number in E.164 form, or empty (no phone given).
    pub phone: String,
    /// The street line, street name and number ("Laan van Meerdervoort 123-bis").
    pub street_line: String,
    /// The postcode.
    pub postcode: String,
    /// The city.
    pub city: String,
    /// The ISO 3166-1 alpha-2 country code.
    pub country: String,
}

impl Person {
    /// Customer `i`: every 5th has no phone, every 7th an e-mail address in odd case with spaces.
    pub fn generated(i: u64) -> Person {
        let pick =
            |list: &[&'static str], salt: u64| list[((i + salt) % list.len() as u64) as usize];
        let (first, last) = (pick(FIRST, 0), pick(LAST, 3));
        let local = format!("{}.{}", first, last)
            .replace(' ', "")
            .to_lowercase();
        let email = if i % 7 == 3 {
            format!(" {}{i}@Voorbeeld.NL ", local.to_uppercase())
        } else {
            format!("{local}{i}@voorbeeld.nl")
        };
        let phone = if i % 5 == 4 {
            String::new()
        } else {
            format!("+316{}{:07}", 1 + i % 5, (i * 7_919) % 10_000_000)
        };
        let (street, addition) = STREETS[(i % STREETS.len() as u64) as usize];
        let (city, postcode) = CITIES[(i % CITIES.len() as u64) as usize];
        let belgian = street.starts_with("Rue");
        Person {
            first: first.into(),
            last: last.into(),
            email,
            phone,
            street_line: format!("{street} {}{addition}", 1 + (i * 7) % 300),
            postcode: if belgian {
                "1040".into()
            } else {
                postcode.into()
            },
            city: if belgian {
                "Brussel".into()
            } else {
                city.into()
            },
            country: if belgian { "BE".into() } else { "NL".into() },
        }
    }

    /// The e-mail address as kluis stores it (trimmed, lower case).
    pub fn email_normalised(&self) -> String {
        self.email.trim().to_lowercase()
    }

    /// The full name, first then last.
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// How a spreadsheet program saves a phone number it was told to keep as text.
fn spreadsheet_phone(phone: &str) -> String {
    if phone.is_empty() {
        String::new()
    } else {
        format!("'{phone}")
    }
}

/// A row of the WooCommerce customer CSV.
#[derive(Debug, Clone)]
pub struct WooCustomer {
    /// The WordPress user id.
    pub customer_id: String,
    /// The account's first name (`first_name`, may differ from the billing name).
    pub first_name: String,
    /// The account's last name.
    pub last_name: String,
    /// The account's e-mail address (`email`).
    pub email: String,
    /// `billing_phone`, as the file holds it (`'+31…` after a spreadsheet).
    pub billing_phone: String,
    /// The billing and shipping address's person.
    pub person: Person,
}

impl WooCustomer {
    /// Customer `i` (user id 100 + i), its phone as a spreadsheet saved it.
    pub fn generated(i: u64) -> WooCustomer {
        let person = Person::generated(i);
        WooCustomer {
            customer_id: (100 + i).to_string(),
            first_name: person.first.clone(),
            last_name: person.last.clone(),
            email: person.email.clone(),
            billing_phone: spreadsheet_phone(&person.phone),
            person,
        }
    }

    /// The row's CSV line.
    pub fn line(&self) -> String {
        let p = &self.person;
        let login = self.email.trim().to_lowercase();
        fputcsv(&[
            &self.customer_id,
            &self.first_name,
            &self.last_name,
            &login,
            &self.email,
            "2024-03-05 10:22:31",
            &p.first,
            &p.last,
            "",
            &login,
            &self.billing_phone,
            &p.street_line,
            "",
            &p.postcode,
            &p.city,
            "",
            &p.country,
            &p.first,
            &p.last,
            "",
            &p.street_line,
            "",
            &p.postcode,
            &p.city,
            "",
            &p.country,
            "120.50",
            "3",
        ])
    }
}

/// Row `i` of a generated Shopify customer export: every third customer accepts e-mail
/// marketing; phones as a spreadsheet keeps them (`'+31…`); a note over two lines now and then.
pub fn shopify_customers_row(i: u64) -> String {
    let p = Person::generated(i);
    let id = (7_000_000_000 + i).to_string();
    let phone = spreadsheet_phone(&p.phone);
    let note = if i.is_multiple_of(11) {
        "Belt liever na 17 uur,\n\"graag\" een sms"
    } else {
        ""
    };
    let accepts = if i.is_multiple_of(3) { "yes" } else { "no" };
    fputcsv(&[
        &id,
        &p.first,
        &p.last,
        &p.email,
        accepts,
        "",
        &p.street_line,
        "",
        &p.city,
        "",
        &p.country,
        &p.postcode,
        &phone,
        &phone,
        "no",
        "120.50",
        "3",
        note,
        "no",
        "vip",
    ])
}

/// Row `i` of a generated WooCommerce customer CSV.
pub fn woocommerce_customers_row(i: u64) -> String {
    WooCustomer::generated(i).line()
}

/// Order statuses as the extension writes them, one per order in turn.
const STATUSES: &[&str] = &[
    "completed",
    "completed",
    "processing",
    "completed",
    "on-hold",
    "completed",
    "pending",
    "cancelled",
    "completed",
    "refunded",
];

/// A row of the WooCommerce order CSV.
#[derive(Debug, Clone)]
pub struct WooOrder {
    /// The order's id and number (WooCommerce's number is its id unless a plug-in changes it).
    pub order_number: String,
    /// The status slug ("processing", "completed", …).
    pub status: String,
    /// The WordPress user id, "0" for a guest checkout.
    pub customer_id: String,
    /// The billing and shipping person (one person: the shipping name is the billing name).
    pub person: Person,
    /// `billing_phone`, as the file holds it.
    pub billing_phone: String,
    /// The customer's note on the order (may span lines).
    pub customer_note: String,
}

impl WooOrder {
    /// The customer of order `i`: every third order from order 50 on is a repeat order of the
    /// customer of order `i - 50`, so a customer's orders are not adjacent in the file.
    pub fn customer_of(i: u64) -> u64 {
        if i % 3 == 2 && i >= 50 {
            i - 50
        } else {
            i
        }
    }

    /// Order `i` (number 1000 + i); every 4th customer checked out as a guest, every 6th order
    /// has a note over two lines.
    pub fn generated(i: u64) -> WooOrder {
        let c = Self::customer_of(i);
        let person = Person::generated(c);
        let note = if i % 6 == 1 {
            "Graag bij de buren afgeven,\nniet in de \"brievenbus\"".to_owned()
        } else {
            String::new()
        };
        WooOrder {
            order_number: (1000 + i).to_string(),
            status: STATUSES[(i % STATUSES.len() as u64) as usize].to_owned(),
            customer_id: if c % 4 == 1 {
                "0".into()
            } else {
                (100 + c).to_string()
            },
            billing_phone: spreadsheet_phone(&person.phone),
            person,
            customer_note: note,
        }
    }

    /// The row's CSV line.
    pub fn line(&self) -> String {
        let p = &self.person;
        let full = p.full_name();
        let items = "id:1|name:Tulpenbollen (25)|product_id:17|sku:TB-25|quantity:2|\
subtotal:12.50|subtotal_tax:2.63|total:12.50|total_tax:2.63|refunded:0|refunded_qty:0|meta:";
        let head = [
            self.order_number.as_str(),
            &self.order_number,
            "2026-05-01 14:03:22",
            &self.status,
            "4.95",
            "1.04",
            "0.00",
            "0.00",
            "3.67",
            "0.00",
            "0.00",
            "0.00",
            "30.04",
            "0.00",
            "EUR",
            "ideal",
            "PostNL",
            &self.customer_id,
        ];
        let billing = [
            p.first.as_str(),
            &p.last,
            &full,
            "",
            "",
            &p.email,
            &self.billing_phone,
            &p.street_line,
            "",
            &p.postcode,
            &p.city,
            "",
            "",
            &p.country,
        ];
        let shipping = [
            p.first.as_str(),
            &p.last,
            &full,
            &p.street_line,
            "",
            &p.postcode,
            &p.city,
            "",
            "",
            &p.country,
            "",
        ];
        let tail = [
            self.customer_note.as_str(),
            items,
            "method:PostNL|total:4.95|taxes:1.04",
            "",
            "id:3|code:BTW 21%|total:3.67",
            "",
            "",
            "Betaling via iDEAL ontvangen.",
            "",
        ];
        let cells: Vec<&str> = [&head[..], &billing, &shipping, &tail].concat();
        fputcsv(&cells)
    }
}

/// Row `i` of a generated WooCommerce order CSV.
pub fn woocommerce_orders_row(i: u64) -> String {
    WooOrder::generated(i).line()
}

/// A row of Magento 2's customer grid export.
#[derive(Debug, Clone)]
pub struct MagentoCustomer {
    /// The customer's entity id.
    pub id: String,
    /// The account's full name (first, middle and last name in one cell).
    pub name: String,
    /// The e-mail address.
    pub email: String,
    /// The billing address's phone number (`Phone`), as stored (Magento adds its space).
    pub phone: String,
    /// The billing street, its lines separated by a line break.
    pub street: String,
    /// The date of birth as the grid writes it ("Jan 15, 1985"), or empty.
    pub dob: String,
    /// The person behind the row.
    pub person: Person,
}

impl MagentoCustomer {
    /// Customer `i` (id 1 + i); every 4th has a date of birth, every 9th a street over two lines.
    pub fn generated(i: u64) -> MagentoCustomer {
        let person = Person::generated(i);
        let street = if i % 9 == 5 {
            format!("{}\nachterom", person.street_line)
        } else {
            person.street_line.clone()
        };
        MagentoCustomer {
            id: (1 + i).to_string(),
            name: person.full_name(),
            email: person.email.clone(),
            phone: person.phone.clone(),
            street,
            dob: if i.is_multiple_of(4) {
                "Jan 15, 1985".into()
            } else {
                String::new()
            },
            person,
        }
    }

    /// The row's CSV line.
    pub fn line(&self) -> String {
        let p = &self.person;
        let one_line = self.street.replace('\n', " ");
        let address = format!("{one_line} {}  {}", p.city, p.postcode);
        let country = if p.country == "BE" {
            "Belgium"
        } else {
            "Netherlands"
        };
        let cells = [
            self.id.clone(),
            self.name.clone(),
            self.email.clone(),
            "General".into(),
            magento_cell(&self.phone),
            p.postcode.clone(),
            country.into(),
            String::new(),
            "Mar 5, 2024 10:22:31 AM".into(),
            "Main Website".into(),
            "Confirmation Not Required".into(),
            "Default Store View".into(),
            address.clone(),
            address,
            self.dob.clone(),
            String::new(),
            "Not Specified".into(),
            self.street.clone(),
            p.city.clone(),
            String::new(),
            String::new(),
            String::new(),
            p.first.clone(),
            p.last.clone(),
            "Unlocked".into(),
        ];
        let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
        fputcsv(&refs)
    }
}

/// Row `i` of a generated Magento 2 customer grid export.
pub fn magento_customers_row(i: u64) -> String {
    MagentoCustomer::generated(i).line()
}

/// A whole file: the byte order mark if `bom`, the header and the lines, each ended by `\n` as
/// PHP's `fputcsv` ends them.
pub fn file(bom: bool, header: &str, lines: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    if bom {
        out.push_str(BOM);
    }
    out.push_str(header);
    out.push('\n');
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(header: &str) -> usize {
        header.split(',').count()
    }

    #[test]
    fn rows_have_as_many_cells_as_their_header() {
        let count = |line: String| {
            let mut n = 1;
            let mut quoted = false;
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => n += 1,
                    _ => {}
                }
            }
            n
        };
        for i in 0..200 {
            assert_eq!(
                count(woocommerce_customers_row(i)),
                columns(WOOCOMMERCE_CUSTOMERS_HEADER)
            );
            assert_eq!(
                count(woocommerce_orders_row(i)),
                columns(WOOCOMMERCE_ORDERS_HEADER)
            );
            assert_eq!(
                count(magento_customers_row(i)),
                columns(MAGENTO_CUSTOMERS_HEADER)
            );
        }
    }

    #[test]
    fn php_quoting_and_magentos_space() {
        assert_eq!(fputcsv(&["a", "b c", "x\"y", ""]), "a,\"b c\",\"x\"\"y\",");
        assert_eq!(magento_cell("+31612345678"), " +31612345678");
        assert!(magento_customers_row(0).contains("\" +316"));
    }
}
