// The chat's server settings in JupyterLab: the application's own `ServerConnection` settings,
// so the chat's REST calls and sockets authenticate exactly as JupyterLab's do. The token goes
// in an `Authorization` header when the page has one, the `_xsrf` cookie's value in
// `X-XSRFToken` when the page has that cookie (a page behind a password, or a JupyterHub
// single-user server that does not expose its token, has only cookies), and a socket carries
// the token in its URL only where JupyterLab's would (`appendToken`: another host).

import { ServerConnection } from '@jupyterlab/services';
import { serverSettings, ServerSettings } from '../view/server';

export function labServerSettings(settings: ServerConnection.ISettings): ServerSettings {
  return {
    ...serverSettings(settings.baseUrl, settings.token, settings.wsUrl),
    request: (url, init) => ServerConnection.makeRequest(url, init, settings),
    openSocket: url => {
      const socketUrl = new URL(url);
      if (settings.appendToken && settings.token) {
        socketUrl.searchParams.set('token', settings.token);
      }
      return new settings.WebSocket(socketUrl.href);
    }
  };
}
