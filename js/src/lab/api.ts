// The conversation list's REST calls (`{base_url}streamchat/api/conversations`, see
// docs/protocol.md): a page of the list or of a search, rename, delete, and the export's URL.

import { ConversationEntry } from '../view/protocol';
import { ServerSettings, serverRequest } from '../view/server';

export interface ConversationPage {
  conversations: ConversationEntry[];
  next: string | null; // `after` of the next page, null at the end
}

export interface AgentEntry {
  id: string;
  name: string;
  description: string;
}

/** A failed call, with the server's own words when it sent some. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

export class ConversationsApi {
  constructor(readonly server: ServerSettings) {}

  /** A page of the list, most recent first; with `query`, only conversations whose title or
   * messages contain it. */
  list(
    options: { limit?: number; after?: string | null; query?: string } = {}
  ): Promise<ConversationPage> {
    const params = new URLSearchParams();
    params.set('limit', String(options.limit ?? 50));
    if (options.after) {
      params.set('after', options.after);
    }
    if (options.query) {
      params.set('q', options.query);
    }
    return this.call('GET', `conversations?${params}`);
  }

  async agents(): Promise<AgentEntry[]> {
    return (await this.call<{ agents: AgentEntry[] }>('GET', 'agents')).agents;
  }

  rename(conversationId: string, title: string): Promise<{ title: string }> {
    return this.call('PATCH', `conversations/${encodeURIComponent(conversationId)}`, { title });
  }

  async remove(conversationId: string): Promise<void> {
    await this.call('DELETE', `conversations/${encodeURIComponent(conversationId)}`);
  }

  /** The Markdown export (a download: the server names the file). */
  async exportMarkdown(conversationId: string): Promise<{ filename: string; text: string }> {
    const response = await this.fetch(
      'GET',
      `conversations/${encodeURIComponent(conversationId)}/export`
    );
    const disposition = response.headers.get('Content-Disposition') ?? '';
    return {
      filename: filenameOf(disposition) || `${conversationId}.md`,
      text: await response.text()
    };
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.fetch(method, path, body);
    return (response.status === 204 ? undefined : await response.json()) as T;
  }

  private async fetch(method: string, path: string, body?: unknown): Promise<Response> {
    // In JupyterLab `server` goes through its ServerConnection (lab/server.ts): the token or
    // the XSRF header, whichever the page has, as JupyterLab's own calls carry them.
    const response = await serverRequest(this.server, `streamchat/api/${path}`, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body)
    });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        const reply = await response.json();
        message = reply.message || message;
      } catch {
        // not JSON: keep the status line
      }
      throw new ApiError(response.status, message);
    }
    return response;
  }
}

/** The file name of a Content-Disposition header, preferring RFC 5987's `filename*`. */
export function filenameOf(disposition: string): string {
  const extended = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition);
  if (extended) {
    try {
      return decodeURIComponent(extended[1].trim());
    } catch {
      // fall through to the plain name
    }
  }
  const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(disposition);
  return plain ? plain[1].trim() : '';
}
