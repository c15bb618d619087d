// Access to the /v1 API: the API key, JSON reads, and the SSE forecast stream.
//
// The key lives only in this tab (sessionStorage) and travels as `Authorization: Bearer`.
// EventSource cannot send headers, so the stream is read with fetch() and parsed here:
// the key never goes into a URL, where server logs would keep it.

const KEY_STORAGE = "episodic-koopman.api-key";

let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";

export class AuthError extends Error {}
export class GoneError extends Error {}
export class RequestError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export function hasKey() {
  return apiKey !== "";
}

export function setKey(key) {
  apiKey = key;
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  return apiKey ? { ...extra, Authorization: `Bearer ${apiKey}` } : extra;
}

async function checked(res, path) {
  if (res.status === 401) throw new AuthError("API key needed");
  if (res.status === 404) throw new GoneError(path);
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    const detail = Array.isArray(body.detail) ? body.detail[0].msg : body.detail;
    throw new RequestError(res.status, detail ?? res.statusText);
  }
  return res;
}

/** GET a JSON resource. */
export async function api(path, signal) {
  const res = await fetch(path, { headers: headers(), signal, cache: "no-store" });
  return (await checked(res, path)).json();
}

/** Open an SSE stream: resolves once the server has answered, to its (event, data) pairs. */
export async function eventStream(path, signal) {
  const res = await fetch(path, {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
    cache: "no-store",
  });
  await checked(res, path);
  return sseEvents(res.body);
}

/** (event, data) pairs of a text/event-stream body; comments (heartbeats) are skipped. */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    // Lines end in CRLF, LF or CR (the server sends CRLF).
    while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A CR at the end of a chunk may be half of a CRLF: wait for the next chunk.
      if (end === buffer.length - 1 && buffer[end] === "\r") break;
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
      if (line === "") {
        if (data.length) yield [event, data.join("\n")];
        event = "message";
        data = [];
      } else if (line.startsWith("event:")) {
        event = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
}
