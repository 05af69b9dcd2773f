// REST client: JSON in and out, errors turned into plain words.

const TOKEN_KEY = "swiftchat.token";

// The token lives in sessionStorage: see docs/security.md ("The SPA's token").
export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
}
export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) { /* storage disabled: the session lasts as long as the page */ }
}

const PLAIN = {
  invalid_credentials: "The email or password is wrong.",
  email_not_verified: "Please confirm your email first: open the link we sent you.",
  too_many_attempts: "Too many attempts. Please wait a few minutes and try again.",
  email_taken: "An account with this email already exists. Try logging in instead.",
  invalid_email: "Please enter a valid email address.",
  weak_password: "The password must be 8 to 256 characters long.",
  invalid_display_name: "The name must be 1 to 64 characters long.",
  invalid_room_name: "The room name must be 1 to 100 characters long.",
  invalid_body: "A message must be 1 to 4000 characters long.",
  invalid_token: "This link is invalid, already used or expired.",
  invalid_state: "The sign-in attempt expired or was already used. Please try again.",
  email_not_verified_by_provider: "The provider has not confirmed your email address.",
  provider_error: "The sign-in provider refused the request. Please try again.",
  provider_not_configured: "This sign-in provider is not available.",
  not_invited: "This room is private: you need an invitation.",
  not_a_member: "You are not a member of this room.",
};

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
  // Worth retrying the same request later (network, overload, dependency down).
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

function plainMessage(status, code, serverMessage) {
  if (PLAIN[code]) return PLAIN[code];
  if (status === 0) return "Cannot reach the server. Check your connection.";
  if (status === 401) return "Your session has ended. Please log in again.";
  if (status === 403) return "You are not allowed to do that.";
  if (status === 404) return "Not found.";
  if (status === 429) return "Too many requests. Please wait a moment.";
  if (status >= 500) return "The server is having trouble. Please try again shortly.";
  return serverMessage || "Something went wrong.";
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function api(method, path, body, { auth = true, query } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
    const s = params.toString();
    if (s) url += "?" + s;
  }
  const headers = { Accept: "application/json" };
  const token = auth ? getToken() : null;
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit",
    });
  } catch (_) {
    throw new ApiError(0, "network", plainMessage(0));
  }
  let data = null;
  const text = await res.text().catch(() => "");
  if (text) { try { data = JSON.parse(text); } catch (_) { data = null; } }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const retryAfter = Number(res.headers.get("Retry-After")) || undefined;
    const e = new ApiError(res.status, err.code || "http_" + res.status, plainMessage(res.status, err.code, err.message), retryAfter);
    if (res.status === 401 && token && token === getToken()) onUnauthorized(e);
    throw e;
  }
  return data;
}

export function uuid() {
  if (typeof crypto !== "undefined" && crypto.randomUUID) return crypto.randomUUID();
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
