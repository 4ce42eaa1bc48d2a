// How a chat view reaches the hub, whichever way its frames travel.
//
// `HubConnection` (connection.ts) is the view's own WebSocket to the Jupyter server. A host
// whose server has no hub (VS Code, Colab, a server without the extension) gives the view
// another transport instead: `CommTransport` (widget/commtransport.ts) sends the same frames
// through the kernel. The view speaks to either through this interface alone.

import type { ConnectionHandlers } from './connection';
import type { AgentInfo, ClientFrame } from './protocol';

export type { ConnectionHandlers, ConnectionState } from './connection';

/** The hub's agents, and the largest message text it accepts (UTF-8 bytes) when it says. */
export interface AgentList {
  agents: AgentInfo[];
  maxMessageBytes?: number;
}

export interface Transport {
  /** Send a frame now; false when not connected (the caller re-sends after `onOpen`) or when
   * the hub would certainly refuse it (it is dropped). */
  send(frame: ClientFrame): boolean;
  close(): void;
  /** The largest message text the hub accepts, in UTF-8 bytes. */
  maxMessageBytes: number;
  /** The hub's agents, asked over this transport; absent: the view asks the server's REST API
   * (`GET streamchat/api/agents`). Resolves null when they cannot be had. */
  listAgents?(): Promise<AgentList | null>;
  /** One quiet line the view shows while it uses this transport (what it cannot do), or
   * absent. */
  readonly note?: string;
}

/** Makes the view's transport; the view passes its handlers (it owns what a frame does). */
export type Connect = (handlers: ConnectionHandlers) => Transport;
