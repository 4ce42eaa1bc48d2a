// The chat view's frames through the kernel, for front ends whose server runs no hub (VS Code,
// Colab, a Jupyter server without the streamchat extension).
//
// The frames are those of the WebSocket (docs/protocol.md), carried in the notebook widget's
// custom messages, each in an envelope naming the view it belongs to:
//
//   view -> kernel   {streamchat: 'open' | 'frame' | 'close', view, frame?}
//   kernel -> view   {streamchat: 'opened' | 'frame' | 'closed', view, frame?, reason?}
//
// The kernel's relay (jupyter_streamchat/widget/comm.py) gives each view a connection of its own
// to the hub in the kernel: 'opened' is that connection's open (the view then sends what it
// sends on every connection: pending messages, RESUMEs, SUBSCRIBE), 'closed' its loss. A
// widget's custom messages reach every view of it, so each view keeps only its own.
//
// Requests queue in the kernel behind a running cell (a stop included), while the hub's frames
// come from the hub's own thread, so a reply streams on during a cell. The stream lives as long
// as the kernel: after a kernel restart only the server extension can resume it.

import type { ConnectionHandlers } from '../view/connection';
import { randomId } from '../view/dom';
import {
  ClientFrame,
  clientFrameProblem,
  DEFAULT_MAX_MESSAGE_BYTES,
  serverFrame
} from '../view/protocol';
import { ServerSettings, serverRequest } from '../view/server';
import type { AgentList, Transport } from '../view/transport';

/** The key of the envelope in a widget custom message (and what it is). */
export const ENVELOPE = 'streamchat';

/** The part of an anywidget model the transport uses. */
export interface CommModel {
  send(content: unknown): void;
  on(event: 'msg:custom', callback: (content: unknown) => void): void;
  off(event: 'msg:custom', callback: (content: unknown) => void): void;
}

export const TRANSPORT_NOTE =
  'Streaming through the kernel: resuming after a kernel restart ' +
  'needs the jupyter_streamchat server extension.';

/** After this long without the kernel's answer, the view says what it waits for. */
export const WAITING_NOTICE_MS = 3_000;
/** After the kernel let a view go, it opens again after this, doubling up to the maximum. */
export const REOPEN_FIRST_MS = 1_000;
export const REOPEN_MAX_MS = 30_000;

const NO_KERNEL =
  'This Jupyter server does not run the streamchat extension, and no running ' +
  'kernel holds this chat: run its cell to chat through the kernel.';
const WAITING =
  'Waiting for the kernel: chat requests go through it here, and wait while a ' + 'cell runs.';

type Timer = ReturnType<typeof setTimeout>;

function isEnvelope(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    typeof (value as Record<string, unknown>)[ENVELOPE] === 'string'
  );
}

export class CommTransport implements Transport {
  maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
  readonly note = TRANSPORT_NOTE;
  /** This view's name in the envelopes. */
  readonly viewId = randomId();
  private model: CommModel | null = null;
  private opened = false;
  private closed = false;
  private waiting: Timer | null = null;
  private reopen: Timer | null = null;
  private reopenAttempt = 0;
  private agentWaiters: ((list: AgentList | null) => void)[] = [];

  /** `model`: the widget model whose comm carries the frames; null until a host has one
   * (see `attach`). */
  constructor(
    private readonly handlers: ConnectionHandlers,
    model: CommModel | null = null
  ) {
    if (model === null) {
      this.handlers.onState('offline', NO_KERNEL);
    } else {
      this.attach(model);
    }
  }

  /** Carry the frames over `model` from now on (null: there is none, the kernel went). The
   * view then opens anew, as after a reconnect. */
  attach(model: CommModel | null): void {
    if (this.closed || model === this.model) {
      return;
    }
    const wasOpen = this.opened;
    this.detach();
    this.model = model;
    if (model === null) {
      this.handlers.onState(
        'offline',
        wasOpen ? `The kernel went away. ${TRANSPORT_NOTE}` : NO_KERNEL
      );
      return;
    }
    model.on('msg:custom', this.onMessage);
    this.open();
  }

  send(frame: ClientFrame): boolean {
    if (!this.opened || this.model === null || this.closed) {
      return false;
    }
    const problem = clientFrameProblem(frame, this.maxMessageBytes);
    if (problem !== null) {
      console.warn(`streamchat: not sending ${frame.type}: ${problem}`);
      return false;
    }
    return this.post({ [ENVELOPE]: 'frame', view: this.viewId, frame });
  }

  close(): void {
    if (this.closed) {
      return;
    }
    this.detach();
    this.closed = true;
    this.settleAgents(null);
  }

  listAgents(): Promise<AgentList | null> {
    if (this.closed) {
      return Promise.resolve(null);
    }
    return new Promise(resolve => {
      this.agentWaiters.push(resolve);
      if (this.opened && this.agentWaiters.length === 1) {
        this.send({ type: 'LIST_AGENTS' });
      } // otherwise asked once open, or already asked
    });
  }

  private open(): void {
    this.clearTimers();
    this.opened = false;
    if (!this.post({ [ENVELOPE]: 'open', view: this.viewId })) {
      this.handlers.onState('offline', NO_KERNEL);
      return;
    }
    this.waiting = setTimeout(() => {
      this.waiting = null;
      this.handlers.onState('reconnecting', WAITING);
    }, WAITING_NOTICE_MS);
  }

  /** Let go of the model: the kernel closes this view's connection to the hub. */
  private detach(): void {
    this.clearTimers();
    if (this.model !== null) {
      this.post({ [ENVELOPE]: 'close', view: this.viewId });
      this.model.off('msg:custom', this.onMessage);
      this.model = null;
    }
    this.opened = false;
  }

  /** Send one envelope; false when the model cannot send (its kernel is gone). */
  private post(content: Record<string, unknown>): boolean {
    try {
      this.model?.send(content);
      return this.model !== null;
    } catch (e) {
      console.warn(`streamchat: cannot reach the kernel: ${String(e)}`);
      return false;
    }
  }

  private onMessage = (content: unknown): void => {
    if (this.closed || !isEnvelope(content) || content.view !== this.viewId) {
      return; // another view's, or not the chat's
    }
    switch (content[ENVELOPE]) {
      case 'opened':
        this.clearTimers();
        this.opened = true;
        this.reopenAttempt = 0;
        this.handlers.onState('connected', '');
        this.handlers.onOpen();
        if (this.agentWaiters.length > 0) {
          this.send({ type: 'LIST_AGENTS' });
        }
        break;
      case 'frame': {
        // What does not fit the contract is ignored, as on the WebSocket.
        const frame = serverFrame(content.frame);
        if (frame === null) {
          return;
        }
        if (frame.type === 'AGENTS') {
          if (frame.maxMessageBytes !== undefined) {
            this.maxMessageBytes = frame.maxMessageBytes;
          }
          this.settleAgents({ agents: frame.agents, maxMessageBytes: frame.maxMessageBytes });
          return;
        }
        this.handlers.onFrame(frame);
        break;
      }
      case 'closed': {
        // The kernel let this view's connection go (it holds a few per widget, or its hub
        // could not start): open again a little later, as a socket reconnects.
        this.opened = false;
        this.clearTimers();
        const delay = Math.min(
          REOPEN_MAX_MS,
          REOPEN_FIRST_MS * 2 ** Math.min(this.reopenAttempt++, 16)
        );
        const reason =
          typeof content.reason === 'string' && content.reason
            ? content.reason.slice(0, 300)
            : "The kernel closed the chat's connection";
        this.handlers.onState(
          'reconnecting',
          `${reason}; reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`
        );
        this.reopen = setTimeout(() => {
          this.reopen = null;
          if (this.model !== null && !this.closed) {
            this.open();
          }
        }, delay);
        break;
      }
    }
  };

  private settleAgents(list: AgentList | null): void {
    const waiters = this.agentWaiters;
    this.agentWaiters = [];
    waiters.forEach(resolve => resolve(list));
  }

  private clearTimers(): void {
    if (this.waiting !== null) {
      clearTimeout(this.waiting);
      this.waiting = null;
    }
    if (this.reopen !== null) {
      clearTimeout(this.reopen);
      this.reopen = null;
    }
  }
}

// -- which way a host's view goes ------------------------------------------------------------

const probes = new Map<string, Promise<boolean>>();

/**
 * Whether the page's server runs the streamchat hub, so the view streams over its own
 * WebSocket (the hub then outlives the kernel). It does when `GET streamchat/api/agents`
 * answers at all but 404: a 401 or 403 is a login to renew, which the WebSocket's diagnosis
 * tells. No server on the page (VS Code, Colab), a 404 (the extension is not enabled there) or
 * no answer: the view goes through the kernel. Asked once per page and server.
 */
export function serverHasHub(server: ServerSettings | null): Promise<boolean> {
  if (server === null) {
    return Promise.resolve(false);
  }
  let probe = probes.get(server.baseUrl);
  if (probe === undefined) {
    probe = serverRequest(server, 'streamchat/api/agents').then(
      response => response.status !== 404,
      () => {
        probes.delete(server.baseUrl); // no answer now may be an answer later: ask again then
        return false;
      }
    );
    probes.set(server.baseUrl, probe);
  }
  return probe;
}
