<?php
// A tiny client for `kluis serve`, with nothing but PHP's curl extension (no framework, no
// composer). Copy it into your shop and adapt it.
//
// Configuration comes from the environment, not from code, so no token ends up in your
// repository:
//   KLUIS_URL            the server, e.g. http://127.0.0.1:8700
//   KLUIS_TOKEN_SHOP     the shop backend's token       (kluis token create --name shop ...)
//   KLUIS_TOKEN_<ROLE>   any other token, by role name  (warehouse, support, ...)
//
// Every failure the server reports is one JSON body, {"error": {"kind": ..., "message": ...}},
// with an HTTP status that matches the kind. kluis_request() turns every non-2xx answer into a
// KluisError carrying both, so callers branch on the stable `kind` ("forbidden", "not_found",
// "conflict", ...) and never on message text. Messages never contain field values, so they are
// safe to log; the values you send and receive are personal data and are not.

declare(strict_types=1);

final class KluisError extends RuntimeException
{
    /** @param string $kind the server's error kind, or "transport" when no answer came */
    public function __construct(
        public readonly int $status,
        public readonly string $kind,
        string $message,
    ) {
        parent::__construct("kluis: HTTP $status $kind: $message");
    }
}

/**
 * One request to kluis as token $role (env KLUIS_TOKEN_<ROLE>).
 *
 * @param array|null $body sent as JSON (null: no body)
 * @return array{status: int, body: mixed} the decoded JSON answer (null for 204)
 * @throws KluisError on a non-2xx answer or when the server cannot be reached
 */
function kluis_request(string $method, string $path, ?array $body = null, string $role = 'shop'): array
{
    // One curl handle per process and token: curl keeps the connection alive between calls,
    // which saves a TCP (and TLS) handshake per request.
    static $handles = [];
    $base = getenv('KLUIS_URL') ?: 'http://127.0.0.1:8700';
    $token = getenv('KLUIS_TOKEN_' . strtoupper($role));
    if ($token === false || $token === '') {
        throw new KluisError(0, 'transport', 'KLUIS_TOKEN_' . strtoupper($role) . ' is not set');
    }
    $ch = $handles[$role] ??= curl_init();
    curl_reset($ch);
    $headers = [
        'Authorization: Bearer ' . trim($token),
        'Accept: application/json',
        // curl would otherwise wait for "100 Continue" before sending bodies over 1 KiB.
        'Expect:',
    ];
    $options = [
        CURLOPT_URL => rtrim($base, '/') . $path,
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_CONNECTTIMEOUT => 5,
        // The server gives up on a request after 30 s (503 "timeout"); wait a little longer.
        CURLOPT_TIMEOUT => 35,
    ];
    if ($body !== null) {
        $options[CURLOPT_POSTFIELDS] = json_encode($body, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE);
        $headers[] = 'Content-Type: application/json';
    }
    $options[CURLOPT_HTTPHEADER] = $headers;
    curl_setopt_array($ch, $options);

    $raw = curl_exec($ch);
    if ($raw === false) {
        throw new KluisError(0, 'transport', curl_error($ch));
    }
    $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    $decoded = $raw === '' ? null : json_decode($raw, true);
    if ($status >= 200 && $status < 300) {
        return ['status' => $status, 'body' => $decoded];
    }
    $error = is_array($decoded) ? ($decoded['error'] ?? []) : [];
    throw new KluisError(
        $status,
        (string) ($error['kind'] ?? 'unknown'),
        (string) ($error['message'] ?? 'no error body'),
    );
}

/** The path of a record: the default one of its type, or the one labelled $label. */
function kluis_record_path(string $subject, string $recordType, string $label = ''): string
{
    $path = '/v1/subjects/' . rawurlencode($subject) . '/records/' . rawurlencode($recordType);
    return $label === '' ? $path : $path . '/' . rawurlencode($label);
}
