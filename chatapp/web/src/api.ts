// HTTP client of the chat page: tokens (with one silent refresh on 401), the OpenAI
// error envelope, and server-sent events read from a streamed fetch() (EventSource
// cannot POST).
//
// The access token lives in memory only; the refresh token in an HttpOnly cookie that
// scripts cannot read (the `X-ChatApp-Refresh: cookie` header asks the server for it). A
// reload, a new tab or an OIDC login's landing trades that cookie for an access token.
// Nothing is read from the URL: a link with planted tokens cannot log the page in.

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public retryAfter: number | null = null,
  ) {
    super(message);
  }
}

/** The stream ended (network, proxy, server restart) before its final event. */
export class StreamDropped extends Error {}

export interface Tokens {
  access_token: string;
  expires_at: number; // ms since epoch
}

export interface Provider {
  name: string;
  display_name: string;
  login_url: string;
}

const COOKIE_MODE = { "x-chatapp-refresh": "cookie" };
const base = new URL(".", document.baseURI);

export function url(path: string): string {
  return new URL(path.replace(/^\//, ""), base).toString();
}

type Listener = () => void;

class Session {
  /** null until known: whether this server has accounts at all. */
  authEnabled: boolean | null = null;
  tokens: Tokens | null = null;
  onLoggedOut: Listener = () => {};
  private refreshing: Promise<boolean> | null = null;

  constructor() {
    localStorage.removeItem("chatapp.tokens"); // older versions kept tokens there
  }

  store(t: { access_token: string; expires_in?: number | string }) {
    this.tokens = {
      access_token: t.access_token,
      expires_at: Date.now() + Number(t.expires_in ?? 900) * 1000,
    };
  }

  clear() {
    this.tokens = null;
  }

  /** One refresh at a time: the HttpOnly cookie is traded for an access token (and
   * rotated by the server). False when there is no live session. */
  refresh(): Promise<boolean> {
    this.refreshing ??= (async () => {
      try {
        const r = await fetch(url("api/auth/refresh"), {
          method: "POST",
          headers: COOKIE_MODE,
          credentials: "same-origin",
        });
        if (!r.ok) return false;
        this.store(await r.json());
        return true;
      } catch {
        return false;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  async headers(): Promise<Record<string, string>> {
    if (this.tokens && this.tokens.expires_at - Date.now() < 20_000) await this.refresh();
    return this.tokens ? { authorization: `Bearer ${this.tokens.access_token}` } : {};
  }
}

export const session = new Session();

async function toError(r: Response): Promise<ApiError> {
  let code = "http_error";
  let message = `${r.status} ${r.statusText}`;
  try {
    const body = await r.json();
    if (body?.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
    }
  } catch {
    /* not JSON */
  }
  const retry = r.headers.get("retry-after");
  return new ApiError(r.status, code, message, retry ? Math.max(1, Number(retry) || 1) : null);
}

/** fetch() with the bearer token; a 401 refreshes once, then logs out. */
export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  for (let attempt = 0; ; attempt++) {
    const headers = { ...(init.headers as Record<string, string>), ...(await session.headers()) };
    const r = await fetch(url(path), { ...init, headers });
    if (r.status !== 401) {
      if (!r.ok) throw await toError(r);
      return r;
    }
    if (attempt === 0 && (await session.refresh())) continue;
    const err = await toError(r);
    session.authEnabled = true;
    session.clear();
    session.onLoggedOut();
    throw err;
  }
}

export async function json<T>(path: string, init: RequestInit = {}, body?: unknown): Promise<T> {
  if (body !== undefined) {
    init = {
      ...init,
      body: JSON.stringify(body),
      headers: { ...(init.headers as Record<string, string>), "content-type": "application/json" },
    };
  }
  const r = await request(path, init);
  return (r.status === 204 ? null : await r.json()) as T;
}

// -- accounts ------------------------------------------------------------------------

/** Providers when the server has accounts; null when it has none (every request is the
 * local user). */
export async function detectAuth(): Promise<Provider[] | null> {
  const r = await fetch(url("api/auth/providers"));
  if (r.status === 404 || r.status === 405) {
    session.authEnabled = false;
    return null;
  }
  session.authEnabled = true;
  if (!r.ok) return [];
  const body = await r.json();
  return Array.isArray(body) ? body : (body.items ?? body.data ?? []);
}

export async function login(email: string, password: string): Promise<void> {
  const r = await fetch(url("api/auth/token"), {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...COOKIE_MODE },
    body: new URLSearchParams({ username: email, password, grant_type: "password" }),
  });
  if (!r.ok) throw await toError(r);
  session.store(await r.json());
}

export async function register(email: string, password: string, displayName: string) {
  const r = await fetch(url("api/auth/register"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password, display_name: displayName || undefined }),
  });
  if (!r.ok) throw await toError(r);
  await login(email, password);
}

export async function logout(): Promise<void> {
  const headers = await session.headers();
  session.clear();
  // ends the session and clears the refresh cookie
  await fetch(url("api/auth/logout"), { method: "POST", headers }).catch(() => undefined);
}

// -- server-sent events --------------------------------------------------------------

export interface SseEvent {
  event: string;
  data: any;
}

/** POST `body` and call `onEvent` per SSE event. Resolves after `done` or `error`;
 * throws ApiError before the stream starts, StreamDropped if it breaks, and the fetch's
 * AbortError when `signal` aborts. */
export async function streamTurn(
  path: string,
  body: unknown,
  onEvent: (e: SseEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const r = await request(path, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  if (!(r.headers.get("content-type") ?? "").startsWith("text/event-stream") || !r.body) {
    throw new ApiError(r.status, "not_a_stream", "the server did not answer with a stream");
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut: number;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = parseBlock(block);
        if (!event) continue;
        onEvent(event);
        if (event.event === "done" || event.event === "error") finished = true;
      }
    }
  } catch (err) {
    if (signal.aborted) throw err;
    throw new StreamDropped(String(err));
  }
  if (!finished) throw new StreamDropped("the connection closed before the answer finished");
}

function parseBlock(block: string): SseEvent | null {
  let event = "message";
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { event, data: JSON.parse(data.join("\n")) };
  } catch {
    return { event, data: data.join("\n") };
  }
}
