// The dashboard's only way to the mesh: the control plane's metrics API
// (docs/api.md), on the same origin that served this page.
//
// Live tap needs the API token. `tulle dashboard` opens the page with it in
// the URL's fragment (`#token=...`, or `#/service/NAME&token=...`), which
// never reaches a server: it is moved to this tab's sessionStorage and taken
// out of the address bar (and history) before the page routes, then sent as
// `Authorization: Bearer` with tap requests only. The read views need none.

const TOKEN_KEY = "tulle-api-token";
const TOKEN_IN_HASH = /(^#|&)token=([^&]*)/;

function adoptTokenFromHash() {
  const match = location.hash.match(TOKEN_IN_HASH);
  if (!match) return;
  try {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[2]));
  } catch {
    // Storage disabled: tap will say it needs the token.
  }
  const rest = location.hash.replace(TOKEN_IN_HASH, "$1").replace(/^#&/, "#").replace(/&$/, "");
  history.replaceState(null, "", location.pathname + location.search + (rest === "#" ? "" : rest));
}

adoptTokenFromHash();

function authorization() {
  let token = null;
  try {
    token = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    token = null;
  }
  return token ? { authorization: `Bearer ${token}` } : {};
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function url(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export async function getJSON(path, params = {}, signal = undefined) {
  let response;
  try {
    response = await fetch(url(path, params), { signal, headers: { accept: "application/json" } });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "cannot reach the control plane");
  }
  let document = null;
  try {
    document = await response.json();
  } catch {
    document = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, document?.error ?? `HTTP ${response.status} from ${path}`);
  }
  return document;
}

// Streams /api/tap: calls `onEvent` for each NDJSON line until the stream
// ends or `signal` aborts. Resolves with how it ended.
export async function tap(params, onEvent, signal) {
  const response = await fetch(url("/api/tap", params), { signal, headers: authorization() });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error ?? message;
    } catch {
      // The status line is all there is.
    }
    throw new ApiError(response.status, message);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline = buffered.indexOf("\n");
    while (newline >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) {
        try {
          onEvent(JSON.parse(line));
        } catch (error) {
          if (!(error instanceof SyntaxError)) throw error;
        }
      }
      newline = buffered.indexOf("\n");
    }
  }
  return "ended";
}
