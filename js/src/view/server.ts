// Where the hub is: the Jupyter server that served this page.
//
// JupyterLab and Notebook 7 pages carry their settings in a JSON script element
// (`#jupyter-config-data`, what `PageConfig` reads); reading it directly keeps this code free of
// `@jupyterlab/*` imports. A page without it (a static notebook viewer, an exported HTML file)
// has no server to stream from.

export interface ServerSettings {
  /** http(s) URL of the server's base_url, ending in `/`. */
  baseUrl: string;
  /** ws(s) URL of the same base, ending in `/`. */
  wsUrl: string;
  /** API token when the page has one; otherwise the browser's login cookie authenticates. */
  token: string;
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

/** Headers for a REST call: the token when there is one (cookies are sent regardless). */
export function authHeaders(server: ServerSettings): Record<string, string> {
  return server.token ? { Authorization: `token ${server.token}` } : {};
}
