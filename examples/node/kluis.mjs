// A tiny client for `kluis serve` on Node's built-in fetch (Node 18+; no npm packages). Copy it
// into your shop and adapt it.
//
// Configuration comes from the environment, not from code, so no token ends up in your
// repository:
//   KLUIS_URL            the server, e.g. http://127.0.0.1:8700
//   KLUIS_TOKEN_SHOP     the shop backend's token       (kluis token create --name shop ...)
//   KLUIS_TOKEN_<ROLE>   any other token, by role name  (warehouse, support, ...)
//
// Every failure the server reports is one JSON body, {"error": {"kind": ..., "message": ...}},
// with an HTTP status that matches the kind. kluisRequest() throws a KluisError carrying both
// for every non-2xx answer, so callers branch on the stable `kind` ("forbidden", "not_found",
// "conflict", ...), never on message text. Messages never contain field values, so they are
// safe to log; the values you send and receive are personal data and are not.

export class KluisError extends Error {
  /** @param {number} status @param {string} kind "transport" when no answer came */
  constructor(status, kind, message) {
    super(`kluis: HTTP ${status} ${kind}: ${message}`);
    this.name = 'KluisError';
    this.status = status;
    this.kind = kind;
  }
}

// The server gives up on a request after 30 s (503 "timeout"); wait a little longer.
const TIMEOUT_MS = 35_000;

/**
 * One request to kluis as token `role` (env KLUIS_TOKEN_<ROLE>).
 * @param {string} method
 * @param {string} path
 * @param {object|null} body sent as JSON (null: no body)
 * @param {string} role
 * @returns {Promise<{status: number, body: any}>} the decoded JSON answer (null for 204)
 * @throws {KluisError} on a non-2xx answer or when the server cannot be reached
 */
export async function kluisRequest(method, path, body = null, role = 'shop') {
  const base = process.env.KLUIS_URL || 'http://127.0.0.1:8700';
  const name = `KLUIS_TOKEN_${role.toUpperCase()}`;
  const token = (process.env[name] || '').trim();
  if (!token) {
    throw new KluisError(0, 'transport', `${name} is not set`);
  }
  const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
  const init = { method, headers, signal: AbortSignal.timeout(TIMEOUT_MS) };
  if (body !== null) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    // fetch keeps connections alive between calls (undici's pool), like a reused curl handle.
    response = await fetch(base.replace(/\/+$/, '') + path, init);
  } catch (e) {
    // The cause (connection refused, timeout) says more than fetch's "fetch failed".
    throw new KluisError(0, 'transport', String(e.cause?.message ?? e.message));
  }
  const text = await response.text();
  let decoded = null;
  if (text !== '') {
    try {
      decoded = JSON.parse(text);
    } catch {
      decoded = null;
    }
  }
  if (response.ok) {
    return { status: response.status, body: decoded };
  }
  const error = decoded?.error ?? {};
  throw new KluisError(response.status, String(error.kind ?? 'unknown'), String(error.message ?? 'no error body'));
}

/** The path of a record: the default one of its type, or the one labelled `label`. */
export function recordPath(subject, recordType, label = '') {
  const path = `/v1/subjects/${encodeURIComponent(subject)}/records/${encodeURIComponent(recordType)}`;
  return label === '' ? path : `${path}/${encodeURIComponent(label)}`;
}
