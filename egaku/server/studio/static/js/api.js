// The studio's only way to the server: egaku's native JSON API under /api/v1 (docs/studio.md).
// Errors arrive as {"error": {"code", "message"}}; they become ApiError with the HTTP status.

const KEY_STORAGE = "egaku.apiKey";

export class ApiError extends Error {
  /** status 0 = the network (server down, offline); retryAfter in seconds for 429. */
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function storedKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function storeKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function authHeaders() {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || `HTTP ${response.status}`;
  let retryAfter = Number(response.headers.get("Retry-After")) || null;
  try {
    const body = await response.json();
    const err = body.error ?? body.detail ?? body;
    if (typeof err === "string") message = err;
    else if (err && typeof err === "object") {
      code = err.code || err.name || code;
      message = err.message || (typeof err.detail === "string" ? err.detail : message);
      retryAfter = retryAfter ?? (Number(err.retry_after) || null);
    }
  } catch {
    /* not JSON: keep the status text */
  }
  return new ApiError(response.status, code, message, retryAfter);
}

/** fetch() with the API key; network failures become ApiError(0, "network"). */
export async function call(method, path, body = undefined, { signal, raw = false } = {}) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", e.message || "network error");
  }
  if (!response.ok) throw await errorFrom(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** A list from either a bare JSON array or an object holding one under a known key. */
function listOf(value, ...keys) {
  if (Array.isArray(value)) return value;
  for (const k of keys) if (Array.isArray(value?.[k])) return value[k];
  return [];
}

export const api = {
  account: () => call("GET", "/api/v1/account"),
  models: async () => listOf(await call("GET", "/api/v1/models"), "models", "data"),
  loras: async () => listOf(await call("GET", "/api/v1/loras"), "loras", "data"),
  samplers: async () =>
    listOf(await call("GET", "/api/v1/samplers"), "samplers", "data").map((s) => (typeof s === "string" ? s : s.name)),
  cost: async (spec, signal) => (await call("POST", "/api/v1/cost", spec, { signal })).credits,
  submit: (spec) => call("POST", "/api/v1/jobs", spec),
  job: (id) => call("GET", `/api/v1/jobs/${encodeURIComponent(id)}`),
  cancel: (id) => call("POST", `/api/v1/jobs/${encodeURIComponent(id)}/cancel`),
  jobs: ({ limit = 24, before = null, q = "", status = "succeeded" } = {}) => {
    const p = new URLSearchParams({ limit: String(limit) });
    if (before) p.set("before", before);
    if (q) p.set("q", q);
    if (status) p.set("status", status);
    return call("GET", `/api/v1/jobs?${p}`);
  },
  deleteImage: (id) => call("DELETE", `/api/v1/images/${encodeURIComponent(id)}`),
  /** The server's PNG (its A1111 parameters chunk intact) as a Blob. */
  imageBlob: async (image) => {
    const response = await call("GET", image.url || `/api/v1/images/${image.id}`, undefined, { raw: true });
    return response.blob();
  },
};

/**
 * Follow a job's text/event-stream with fetch() (so the key travels in a header, which EventSource
 * cannot send). Calls onEvent(kind, data) per event; resolves when the stream closes.
 * Format: https://html.spec.whatwg.org/multipage/server-sent-events.html (event:/data: lines, blank line ends).
 */
export async function streamEvents(jobId, onEvent, signal) {
  const response = await call("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}/events`, undefined, { signal, raw: true });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // comment / keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") kind = val;
        else if (field === "data") data.push(val);
      }
      if (!data.length) continue;
      let parsed;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch {
        continue;
      }
      onEvent(kind, parsed);
    }
  }
}

/** A base64 string (no data: prefix) of a Blob, as POST /api/v1/jobs wants init_image and mask. */
export function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}
