// Where the hub is: the Jupyter server that served this page.
//
// JupyterLab and Notebook 7 pages carry their settings in a JSON script element
// (`#jupyter-config-data`, what `PageConfig` reads); reading it directly keeps this code free of
// `@jupyterlab/*` imports. A page without it (a static notebook viewer, an exported HTML file)
// has no server to stream from.
//
// A page need not carry a token: behind a password, or a JupyterHub single-user server set not
// to expose it, only the login cookie authenticates. Jupyter then wants the `_xsrf` cookie's
// value back in an `X-XSRFToken` header (on every REST call under JupyterHub, on writes under a
// plain server), and a same-origin WebSocket needs nothing but the cookie. The JupyterLab host
// passes its own `ServerConnection` instead (`request`, `openSocket`), which does the same.

export interface ServerSettings {
  /** http(s) URL of the server's base_url, ending in `/`. */
  baseUrl: string;
  /** ws(s) URL of the same base, ending in `/`. */
  wsUrl: string;
  /** API token when the page has one; otherwise the browser's login cookie authenticates. */
  token: string;
  /** The host's own way to make a REST call to `url` (under `baseUrl`), authenticated as its
   * other calls are; absent: `fetch` with `authHeaders`. */
  request?: (url: string, init: RequestInit) => Promise<Response>;
  /** The host's own way to open a WebSocket to `url` (under `wsUrl`); absent: the token, if
   * any, goes in the query (browsers cannot set WebSocket headers). */
  openSocket?: (url: string) => WebSocket;
}

export function serverSettings(baseUrl: string, token = '', wsUrl = ''): ServerSettings {
  const base = new URL(baseUrl.endsWith('/') ? baseUrl : baseUrl + '/', location.href);
  const ws = wsUrl ? new URL(wsUrl, location.href) : new URL(base.href);
  if (!wsUrl) {
    ws.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
  }
  return { baseUrl: base.href, wsUrl: ws.href.endsWith('/') ? ws.href : ws.href + '/', token };
}

/** The settings of the Jupyter server behind this page, or null when there is none. */
export function pageServerSettings(): ServerSettings | null {
  const el = document.getElementById('jupyter-config-data');
  if (!el || !el.textContent) {
    return null;
  }
  try {
    const config = JSON.parse(el.textContent);
    if (typeof config.baseUrl !== 'string') {
      return null;
    }
    return serverSettings(config.baseUrl, config.token || '', config.wsUrl || '');
  } catch {
    return null;
  }
}

/** Headers for a REST call: the token when there is one, and the `_xsrf` cookie's value when
 * the page has that cookie (cookies are sent regardless), as `ServerConnection` sends them. */
export function authHeaders(server: ServerSettings): Record<string, string> {
  const headers: Record<string, string> = {};
  if (server.token) {
    headers.Authorization = `token ${server.token}`;
  }
  const xsrf = cookie('_xsrf');
  if (xsrf !== undefined) {
    headers['X-XSRFToken'] = xsrf;
  }
  return headers;
}

/** A REST call to `path` under the server's base URL (`streamchat/api/agents`, say): through
 * the host's `request` when it has one, else `fetch` with `authHeaders`. Headers in `init` are
 * kept. Rejects only when the server cannot be reached; any status resolves. */
export function serverRequest(
  server: ServerSettings,
  path: string,
  init: RequestInit = {}
): Promise<Response> {
  const url = new URL(path, server.baseUrl).href;
  if (server.request) {
    return server.request(url, init);
  }
  const headers = { ...authHeaders(server), ...(init.headers as Record<string, string>) };
  return fetch(url, { credentials: 'same-origin', cache: 'no-store', ...init, headers });
}

/** A WebSocket to `path` under the server's WebSocket URL: through the host's `openSocket`
 * when it has one, else with the token in the query when there is one (none: the same-origin
 * login cookie authenticates). May throw, as `new WebSocket` does. */
export function openServerSocket(server: ServerSettings, path: string): WebSocket {
  const url = new URL(path, server.wsUrl);
  if (server.openSocket) {
    return server.openSocket(url.href);
  }
  if (server.token) {
    url.searchParams.set('token', server.token);
  }
  return new WebSocket(url.href);
}

/** The value of the page's cookie `name`, or undefined. Of several with that name (set at
 * different paths) the last, which is the one Tornado reads as well. */
function cookie(name: string): string | undefined {
  let cookies = '';
  try {
    cookies = typeof document === 'undefined' ? '' : document.cookie;
  } catch {
    return undefined; // a sandboxed frame may not read cookies
  }
  let value: string | undefined;
  for (const part of cookies.split(';')) {
    const trimmed = part.trim();
    if (trimmed.startsWith(name + '=')) {
      value = trimmed.substring(name.length + 1);
    }
  }
  return value;
}
