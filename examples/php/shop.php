<?php
// A web shop's use of kluis, start to finish: register a customer, place an order, let the
// warehouse mark it delivered, and let customer service look the customer up. Each step uses
// the token of the part of the shop that does it, so each part can do only its own job.
//
//   KLUIS_URL=http://127.0.0.1:8700 KLUIS_TOKEN_SHOP=... KLUIS_TOKEN_WAREHOUSE=... \
//   KLUIS_TOKEN_SUPPORT=... php examples/php/shop.php
//
// Optional: KLUIS_EXAMPLE_EMAIL (default ans.smit@voorbeeld.nl), KLUIS_EXAMPLE_ORDER (default
// order-1001). Exits 0 when every step gave the answer it should, 1 otherwise.

declare(strict_types=1);

require __DIR__ . '/kluis.php';

function step(string $what): void
{
    echo "- $what\n";
}

function fail(string $why): never
{
    fwrite(STDERR, "shop.php: $why\n");
    exit(1);
}

$email = getenv('KLUIS_EXAMPLE_EMAIL') ?: 'ans.smit@voorbeeld.nl';
$order = getenv('KLUIS_EXAMPLE_ORDER') ?: 'order-1001';

try {
    // 1. Registration. The customer's data goes into kluis; your own `customers` and `orders`
    //    tables keep only the subject id kluis returns (a pseudonym). Your database, its
    //    backups and its logs then hold no personal data, and forgetting a customer in kluis
    //    forgets them everywhere.
    try {
        $created = kluis_request('POST', '/v1/subjects', ['records' => [[
            'record_type' => 'customer',
            'fields' => [
                'first_name' => 'Ans',
                'last_name' => 'Smit',
                'email' => $email,
                'phone' => '06-12345678',
            ],
        ]]]);
        $subject = $created['body']['subject'];
        step("registered a customer: subject $subject (the only thing the shop stores)");
    } catch (KluisError $e) {
        // The e-mail address is a unique index: a second registration with it is a conflict.
        // A shop would offer a log-in instead; here we look the existing customer up.
        if ($e->kind !== 'conflict') {
            throw $e;
        }
        $found = kluis_request('POST', '/v1/find', [
            'record_type' => 'customer', 'field' => 'email', 'value' => $email,
        ]);
        $subject = $found['body']['subjects'][0] ?? fail('conflict, yet no customer has this e-mail');
        step("the customer was registered before: subject $subject");
    }

    // 2. An order. Its delivery address is a record of its own, labelled with the order number:
    //    the shipping purpose keeps each order's address until 30 days after *that* order was
    //    delivered, whatever happens to the customer's other orders.
    kluis_request('PUT', kluis_record_path($subject, 'address', $order), [
        'recipient_name' => 'A. Smit',
        'street' => 'Kerkstraat',
        'house_number' => '12',
        'house_number_addition' => 'A',
        'postcode' => '1017 GC',
        'city' => 'Amsterdam',
        'country' => 'NL',
    ]);
    step("stored the delivery address of $order");

    // 3. The warehouse (a token for the shipping purpose only) marks the order delivered. This
    //    starts the address's 30 days; kluis shreds it when they are over, with no cron job of
    //    yours.
    $report = kluis_request('POST', '/v1/subjects/' . rawurlencode($subject) . '/events', [
        'event' => 'delivered',
        'record_type' => 'address',
        'label' => $order,
        'reason' => "parcel of $order delivered",
    ], 'warehouse');
    // The answer says which purposes' clocks the event started: shipping, here. Marking an
    // order delivered twice (a retried request) is harmless: a time no later than the one
    // recorded changes nothing, and the answer says so.
    if (($report['body']['recorded'] ?? false) !== true) {
        if (($report['body']['already_recorded'] ?? null) === null) {
            fail('the delivered event was neither recorded nor recorded before');
        }
        step("$order was already marked delivered; nothing changed");
    } else {
        $counted = implode(',', $report['body']['counted_for'] ?? []);
        if ($counted !== 'shipping') {
            fail("the delivered event counted for \"$counted\", not for shipping");
        }
        step("the warehouse marked $order delivered: the shipping retention of its address runs");
    }

    // 4. Customer service (read_masked only) sees enough to recognise a caller, not the data.
    $masked = kluis_request('GET', kluis_record_path($subject, 'customer') . '?view=masked', null, 'support');
    $fields = $masked['body']['fields'] ?? [];
    $shown = $fields['email'] ?? '';
    if ($shown === '' || $shown === $email || !str_contains($shown, '*')) {
        fail('the masked read did not mask the e-mail address');
    }
    // Masked values may be shown and logged; whole values may not.
    step('customer service sees: ' . json_encode($fields, JSON_UNESCAPED_UNICODE));

    // 5. ... and may not read the whole record: the server refuses with 403 "forbidden".
    try {
        kluis_request('GET', kluis_record_path($subject, 'customer'), null, 'support');
        fail('the support token read the whole customer record');
    } catch (KluisError $e) {
        if ($e->status !== 403 || $e->kind !== 'forbidden') {
            throw $e;
        }
        step('customer service cannot read the whole record: HTTP 403 forbidden, as it should');
    }
} catch (KluisError $e) {
    // Kind and message only: the message never holds a field value, so this is safe to log.
    fail($e->getMessage());
}

echo "done\n";
