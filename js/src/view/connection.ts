// The view's own WebSocket to the hub (never through the kernel), kept open.
//
// When it drops, it retries with exponential backoff and jitter; when a try fails, a REST call
// finds out why, so the user reads "login expired" rather than a spinner that never ends.
// Whoever owns the connection re-subscribes in `onOpen`: the hub answers from the store.
//
// The backoff starts again from its first step only after a connection proved healthy (it
// stayed open HEALTHY_AFTER_MS), not when a socket merely opens, nor when a frame comes: a
// server or proxy that accepts each socket and closes it at once (after an ERROR, say) then
// sees attempts spaced ever wider, up to MAX_DELAY_MS, rather than several a second. (A frame
// is no proof: the hub answers a refused request with an ERROR, and a socket that only
// watches the conversation list may hear nothing for hours.)
// A frame the server would certainly refuse is never sent (see `clientFrameProblem`).

import {
  ClientFrame,
  clientFrameProblem,
  DEFAULT_MAX_MESSAGE_BYTES,
  parseServerFrame,
  ServerFrame
} from './protocol';
import { openServerSocket, ServerSettings, serverRequest } from './server';

export type ConnectionState = 'connected' | 'reconnecting' | 'offline'; // as data-connection shows it

export interface ConnectionHandlers {
  onFrame(frame: ServerFrame): void;
  onOpen(): void;
  /** `problem` is a sentence for the user, or '' when all is well. */
  onState(state: ConnectionState, problem: string): void;
}

interface Diagnosis {
  userMustAct: boolean; // retrying alone will not help (login expired, extension missing)
  problem: string; // '' when the server looks fine
}
const OK: Diagnosis = { userMustAct: false, problem: '' };

export const FIRST_DELAY_MS = 250;
export const MAX_DELAY_MS = 10_000;
/** A connection that stayed open this long was healthy: the next drop retries from the
 * first, shortest delay. */
export const HEALTHY_AFTER_MS = 2_000;

/** Delay before retry number `attempt` (0-based): doubling, capped, with jitter so that many
 * views cut off together do not come back in one burst. */
function backoffDelay(attempt: number): number {
  const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** Math.min(attempt, 16));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export class HubConnection {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: number | null = null;
  private closed = false;
  /** The largest message text the server accepts, in UTF-8 bytes (its owner sets it when the
   * server says; otherwise the documented default). */
  maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;

  constructor(
    private readonly server: ServerSettings,
    private readonly handlers: ConnectionHandlers
  ) {
    this.open();
  }

  /** Send a frame now; false when not connected (the caller re-sends after `onOpen`) or when
   * the server would certainly refuse it (the caller should have checked: it is dropped). */
  send(frame: ClientFrame): boolean {
    if (this.ws === null || this.ws.readyState !== WebSocket.OPEN) {
      return false;
    }
    const problem = clientFrameProblem(frame, this.maxMessageBytes);
    if (problem !== null) {
      console.warn(`streamchat: not sending ${frame.type}: ${problem}`);
      return false;
    }
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) {
      clearTimeout(this.timer);
    }
    this.ws?.close();
    this.ws = null;
  }

  private open(): void {
    let ws: WebSocket;
    try {
      ws = openServerSocket(this.server, 'streamchat/ws');
    } catch (e) {
      this.setState('offline', `Cannot reach a streamchat server (${String(e)}).`);
      return;
    }
    this.ws = ws;
    let opened = false;
    let openedAt = 0;
    ws.onopen = () => {
      opened = true;
      openedAt = Date.now();
      this.setState('connected', '');
      this.handlers.onOpen();
    };
    ws.onmessage = event => {
      // What does not fit the contract (a newer server's frame types among it) is ignored
      // rather than allowed to break the view.
      const frame = typeof event.data === 'string' ? parseServerFrame(event.data) : null;
      if (frame !== null) {
        this.handlers.onFrame(frame);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.closed) {
        return;
      }
      this.ws = null;
      const healthy = opened && Date.now() - openedAt >= HEALTHY_AFTER_MS;
      if (healthy) {
        this.attempt = 0;
      }
      void this.retry(opened, healthy);
    };
  }

  private async retry(wasOpen: boolean, wasHealthy: boolean): Promise<void> {
    const delay = backoffDelay(this.attempt++);
    // A drop of a working socket is usually transient; a refused connection needs a reason.
    const diagnosis = wasOpen ? OK : await this.diagnose();
    if (this.closed) {
      return;
    }
    const seconds = Math.max(1, Math.round(delay / 1000));
    this.setState(
      diagnosis.userMustAct ? 'offline' : 'reconnecting',
      diagnosis.problem ||
        (wasOpen && !wasHealthy
          ? `The chat server closed the connection; reconnecting in ${seconds} s…`
          : `Connection lost; reconnecting in ${seconds} s…`)
    );
    this.timer = window.setTimeout(() => {
      this.timer = null;
      this.open();
    }, delay);
  }

  /** Why can't we connect? Asks the REST endpoint, which answers with a status code. */
  private async diagnose(): Promise<Diagnosis> {
    let response: Response;
    try {
      response = await serverRequest(this.server, 'streamchat/api/agents');
    } catch {
      return { userMustAct: false, problem: 'Cannot reach the Jupyter server; retrying…' };
    }
    if (response.status === 401 || response.status === 403) {
      return {
        userMustAct: true,
        problem: 'Your Jupyter login has expired. Log in again (reload the page) to keep chatting.'
      };
    }
    if (response.status === 404) {
      return {
        userMustAct: true,
        problem:
          'This Jupyter server does not run the streamchat extension ' +
          '(jupyter server extension enable jupyter_streamchat).'
      };
    }
    if (!response.ok) {
      return {
        userMustAct: false,
        problem: `The chat server answered ${response.status}; retrying…`
      };
    }
    return OK;
  }

  private setState(state: ConnectionState, problem: string): void {
    this.handlers.onState(state, problem);
  }
}
