// The wire contract, version 1 (see docs/protocol.md): its frames as TypeScript types, and
// `parseServerFrame`, which checks at run time that a text from the hub is one of them.
//
// Every frame is one JSON text. Readers ignore unknown extra fields, and the view ignores
// frames it does not know, so the contract can grow by new fields and new frame types.

export type Status = 'streaming' | 'complete' | 'stopped' | 'interrupted' | 'error';

export const STATUSES: ReadonlySet<string> = new Set([
  'streaming',
  'complete',
  'stopped',
  'interrupted',
  'error'
]);
/** The statuses a reply can end with. */
export const FINAL: ReadonlySet<string> = new Set(['complete', 'stopped', 'interrupted', 'error']);

/** Ids are strings of 1 to this many characters. */
export const MAX_ID_LENGTH = 200;

// -- client to server ------------------------------------------------------------------------

/** One thing the user attached to a message (a cell, a selection, an error output, a file, a
 * variable): a snapshot of it as sent, stored with the user message (see context.ts). */
export interface ContextItem {
  kind: 'cell' | 'selection' | 'error' | 'file' | 'variable';
  /** A few words naming it ("cell 3", "df", "data/train.csv"). */
  label: string;
  text: string;
  /** The file or notebook it comes from, relative to the server's root. */
  path?: string;
  /** Its cell's index in the notebook (0-based). */
  cell?: number;
  language?: string;
  mime?: string;
}
export interface SendMessage {
  type: 'SEND_MESSAGE';
  conversationId: string;
  agentId: string;
  text: string;
  clientMessageId: string;
  /** What the user attached (at most 20 items; the whole frame within the message limit). */
  context?: ContextItem[];
}
export interface StopGenerating {
  type: 'STOP_GENERATING';
  messageId: string;
}
export interface Subscribe {
  type: 'SUBSCRIBE';
  conversationId: string;
}
/** Stops the frames of a conversation to this socket (its own and its replies'): sent when a
 * view switches to another conversation. */
export interface Unsubscribe {
  type: 'UNSUBSCRIBE';
  conversationId: string;
}
export interface Resume {
  type: 'RESUME';
  messageId: string;
  afterSeq: number;
}
/** Asks for the messages just older than `beforeMessageId` (answered by HISTORY_PAGE). */
export interface LoadHistory {
  type: 'LOAD_HISTORY';
  conversationId: string;
  beforeMessageId: string;
}
/** From now on, this socket is told of every change to the user's conversation list
 * (CONVERSATION_UPDATED, CONVERSATION_DELETED), until UNWATCH_CONVERSATIONS or it closes. */
export interface WatchConversations {
  type: 'WATCH_CONVERSATIONS';
}
export interface UnwatchConversations {
  type: 'UNWATCH_CONVERSATIONS';
}
/** Which agents the hub offers (answered by AGENTS): what `GET api/agents` tells, for a
 * transport without REST (a view whose frames go through the kernel). */
export interface ListAgents {
  type: 'LIST_AGENTS';
}
/** The user's answer to a tool call that waits for one (its state then reaches every view
 * of the conversation as a MESSAGE_CHUNK; no other answer comes). */
export interface AnswerToolCall {
  type: 'ANSWER_TOOL_CALL';
  messageId: string;
  toolCallId: string;
  decision: Decision;
}
export type ClientFrame =
  | AnswerToolCall
  | SendMessage
  | StopGenerating
  | Subscribe
  | Unsubscribe
  | Resume
  | LoadHistory
  | WatchConversations
  | UnwatchConversations
  | ListAgents;

// -- server to client ------------------------------------------------------------------------

export interface MessageAccepted {
  type: 'MESSAGE_ACCEPTED';
  clientMessageId: string;
  conversationId: string;
  userMessageId: string;
  messageId: string;
  agentId: string;
  text?: string; // the user's text, so other tabs on the conversation can show it
  context?: unknown; // what was attached to it, likewise (unchecked, as StoredMessage's)
}
/**
 * What producing a reply took, as the hub knows it (sent on the final frame and kept with the
 * reply). Every field is absent when unknown.
 */
export interface Usage {
  model?: string;
  inputTokens?: number;
  outputTokens?: number;
  /** Seconds from the start of the reply to its first token. */
  firstTokenSeconds?: number;
  /** Seconds from the start of the reply to its end. */
  durationSeconds?: number;
}
export type ToolCallStatus = 'pending' | 'running' | 'waiting' | 'completed' | 'failed';
export const TOOL_CALL_STATUSES: ReadonlySet<string> = new Set([
  'pending',
  'running',
  'waiting',
  'completed',
  'failed'
]);
/** What the user answers to a call that waits for approval. */
export type Decision = 'allow_once' | 'allow_always' | 'reject';
export const DECISIONS: ReadonlySet<string> = new Set(['allow_once', 'allow_always', 'reject']);
/** A file edit a tool call makes (or asks to make). */
export interface ToolCallDiff {
  path: string;
  oldText: string;
  newText: string;
}
/** One state of a tool call; the latest state of each `id` (unique in its reply) wins. */
export interface ToolCallState {
  id: string;
  name: string;
  status: ToolCallStatus;
  /** JSON text, as the model wrote it (absent: none). */
  arguments?: string;
  title?: string;
  kind?: string;
  result?: string;
  error?: string;
  diff?: ToolCallDiff;
  /** The user's answer, once the call was approved or rejected. */
  decision?: Decision;
  /** Seconds since the epoch, stamped by the hub. */
  startedAt?: number;
  endedAt?: number;
}
export interface MessageChunk {
  type: 'MESSAGE_CHUNK';
  messageId: string;
  conversationId: string;
  agentId: string;
  seq: number; // 1, 2, 3, ... per reply, the final frame included
  /** Answer text only: the concatenation of a reply's chunks is its answer. */
  chunk: string;
  /** Reasoning ("thinking") text this frame adds, kept apart from the answer. */
  reasoning?: string;
  isComplete: boolean;
  status?: Status; // on the final frame
  error?: string; // on a final frame with status 'error'
  usage?: Usage; // on the final frame
  /** The tool calls whose state changed in this frame (after its `chunk`, in stream order). */
  toolCalls?: ToolCallState[];
}
export interface StoredMessage {
  messageId: string;
  role: 'user' | 'assistant';
  agentId: string;
  /** The concatenation of the reply's chunks up to `lastSeq`. */
  text: string;
  /** The concatenation of the reply's `reasoning` fields up to `lastSeq`. */
  reasoning?: string;
  status: Status;
  lastSeq: number;
  error?: string;
  /** What producing the reply took, once it has ended. */
  usage?: Usage;
  /** `text` is only the start of the message: RESUME from `lastSeq` brings the rest. */
  truncated?: boolean;
  /** A user message's attachments, as sent. Not among the checked fields: the view draws the
   * well-formed items and skips the rest (context.ts), rather than refuse the whole frame. */
  context?: unknown;
  /** The latest state of each tool call as of `lastSeq`, in first-appearance order. */
  toolCalls?: ToolCallState[];
  /** When the message was made, in seconds since the epoch (as a conversation's `createdAt`).
   * Older servers do not send it; readers use it when it is a number and otherwise leave it
   * alone, so it is not among the checked fields. */
  createdAt?: unknown;
}
/** The latest messages of a conversation, oldest first, answering SUBSCRIBE. */
export interface History {
  type: 'HISTORY';
  conversationId: string;
  messages: StoredMessage[];
  /** Older messages exist (ask with LOAD_HISTORY); absent from servers without paging. */
  hasMore?: boolean;
}
/** The messages just older than `beforeMessageId`, oldest first, answering LOAD_HISTORY. */
export interface HistoryPage {
  type: 'HISTORY_PAGE';
  conversationId: string;
  beforeMessageId: string;
  messages: StoredMessage[];
  hasMore: boolean;
}
/** A conversation as `GET streamchat/api/conversations` lists it. */
export interface ConversationEntry {
  conversationId: string;
  /** The title given, else the start of the first user message. */
  title: string;
  /** Seconds since the epoch. */
  createdAt: number;
  updatedAt: number;
  messageCount: number;
  /** The agent of the latest message. */
  agentId: string;
  /** A reply in it is being generated. */
  streaming: boolean;
  /** A reply in it waits for the user to approve a tool call. */
  waiting?: boolean;
  /** In search results: the text around the first match in a message. */
  snippet?: string;
}
/** A conversation was created or changed (a message, a reply started or ended, a rename):
 * its list entry as it is now. */
export interface ConversationUpdated {
  type: 'CONVERSATION_UPDATED';
  conversationId: string;
  conversation: ConversationEntry;
}
export interface ConversationDeleted {
  type: 'CONVERSATION_DELETED';
  conversationId: string;
}
/** An agent as `GET api/agents` and AGENTS list it. */
export interface AgentInfo {
  id: string;
  name: string;
  description: string;
}
/** The hub's agents, answering LIST_AGENTS. */
export interface Agents {
  type: 'AGENTS';
  agents: AgentInfo[];
  /** The largest message text the hub accepts, in UTF-8 bytes, when it says. */
  maxMessageBytes?: number;
}
/** The hub's agents changed (a kernel registered or withdrew a notebook agent): the whole list
 * as it is now, sent to every connection, so pickers follow without asking again. */
export interface AgentsChanged {
  type: 'AGENTS_CHANGED';
  agents: AgentInfo[];
}
export type ErrorCode =
  | 'bad_json'
  | 'unknown_type'
  | 'bad_field'
  | 'too_large'
  | 'unknown_message'
  | 'not_waiting'
  | 'unknown_agent'
  | 'not_a_reply'
  | 'conversation_deleted'
  | 'too_many_subscriptions'
  | 'store_unavailable'
  | 'internal_error';
export interface ErrorFrame {
  type: 'ERROR';
  /** One of `ErrorCode`, or a code added to the contract after this reader was written. */
  code: ErrorCode | (string & {});
  message: string;
  clientMessageId?: string;
  messageId?: string;
  conversationId?: string;
}
export type ServerFrame =
  | MessageAccepted
  | MessageChunk
  | History
  | HistoryPage
  | ConversationUpdated
  | ConversationDeleted
  | Agents
  | AgentsChanged
  | ErrorFrame;

// -- run-time checks -------------------------------------------------------------------------

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isId = (v: unknown): v is string =>
  typeof v === 'string' && v.length > 0 && v.length <= MAX_ID_LENGTH;
const isSeq = (v: unknown): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
/** An optional field: absent, or of the right kind (JSON has no undefined; null is wrong). */
const optional = (v: unknown, check: (v: unknown) => boolean): boolean =>
  v === undefined || check(v);
const isString = (v: unknown): v is string => typeof v === 'string';
const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
const isCount = isSeq; // token counts: integers from 0 to 2^53 - 1
const isSeconds = (v: unknown): v is number =>
  typeof v === 'number' && Number.isFinite(v) && v >= 0;

function isUsage(u: unknown): u is Usage {
  return (
    isObject(u) &&
    optional(u.model, isString) &&
    optional(u.inputTokens, isCount) &&
    optional(u.outputTokens, isCount) &&
    optional(u.firstTokenSeconds, isSeconds) &&
    optional(u.durationSeconds, isSeconds)
  );
}

const isDiff = (d: unknown): d is ToolCallDiff =>
  isObject(d) && isString(d.path) && isString(d.oldText) && isString(d.newText);

export function isToolCallState(c: unknown): c is ToolCallState {
  return (
    isObject(c) &&
    isId(c.id) &&
    isString(c.name) &&
    isString(c.status) &&
    TOOL_CALL_STATUSES.has(c.status) &&
    optional(c.arguments, isString) &&
    optional(c.title, isString) &&
    optional(c.kind, isString) &&
    optional(c.result, isString) &&
    optional(c.error, isString) &&
    optional(c.diff, isDiff) &&
    optional(c.decision, d => isString(d) && DECISIONS.has(d)) &&
    optional(c.startedAt, isSeconds) &&
    optional(c.endedAt, isSeconds)
  );
}

const isToolCalls = (v: unknown): v is ToolCallState[] =>
  Array.isArray(v) && v.every(isToolCallState);

function isStoredMessage(m: unknown): m is StoredMessage {
  return (
    isObject(m) &&
    isId(m.messageId) &&
    (m.role === 'user' || m.role === 'assistant') &&
    isString(m.agentId) &&
    isString(m.text) &&
    optional(m.reasoning, isString) &&
    isString(m.status) &&
    STATUSES.has(m.status) &&
    isSeq(m.lastSeq) &&
    optional(m.error, isString) &&
    optional(m.truncated, isBoolean) &&
    optional(m.usage, isUsage) &&
    optional(m.toolCalls, isToolCalls)
  );
}

const isAgentInfo = (a: unknown): a is AgentInfo =>
  isObject(a) && isId(a.id) && isString(a.name) && isString(a.description);

const isMessages = (v: unknown): v is StoredMessage[] =>
  Array.isArray(v) && v.every(isStoredMessage);

function isConversationEntry(c: unknown): c is ConversationEntry {
  return (
    isObject(c) &&
    isId(c.conversationId) &&
    isString(c.title) &&
    isSeconds(c.createdAt) &&
    isSeconds(c.updatedAt) &&
    isCount(c.messageCount) &&
    isString(c.agentId) &&
    isBoolean(c.streaming) &&
    optional(c.waiting, isBoolean) &&
    optional(c.snippet, isString)
  );
}

/** Field checks per server frame type; a frame must pass its type's check to be used. */
const SERVER_FRAMES: Record<ServerFrame['type'], (f: Json) => boolean> = {
  MESSAGE_ACCEPTED: f =>
    isId(f.clientMessageId) &&
    isId(f.conversationId) &&
    isId(f.userMessageId) &&
    isId(f.messageId) &&
    isId(f.agentId) &&
    optional(f.text, isString),
  MESSAGE_CHUNK: f =>
    isId(f.messageId) &&
    isId(f.conversationId) &&
    isId(f.agentId) &&
    isSeq(f.seq) &&
    f.seq >= 1 &&
    isString(f.chunk) &&
    optional(f.reasoning, isString) &&
    isBoolean(f.isComplete) &&
    // The final frame says how the reply ended; the others may say it still streams.
    (f.isComplete
      ? isString(f.status) && FINAL.has(f.status)
      : optional(f.status, s => s === 'streaming')) &&
    optional(f.error, isString) &&
    optional(f.usage, isUsage) &&
    optional(f.toolCalls, isToolCalls),
  HISTORY: f => isId(f.conversationId) && isMessages(f.messages) && optional(f.hasMore, isBoolean),
  HISTORY_PAGE: f =>
    isId(f.conversationId) &&
    isId(f.beforeMessageId) &&
    isMessages(f.messages) &&
    isBoolean(f.hasMore),
  CONVERSATION_UPDATED: f =>
    isId(f.conversationId) &&
    isConversationEntry(f.conversation) &&
    f.conversation.conversationId === f.conversationId,
  CONVERSATION_DELETED: f => isId(f.conversationId),
  AGENTS: f =>
    Array.isArray(f.agents) &&
    f.agents.every(isAgentInfo) &&
    optional(f.maxMessageBytes, v => isSeq(v) && v >= 1),
  AGENTS_CHANGED: f => Array.isArray(f.agents) && f.agents.every(isAgentInfo),
  ERROR: f =>
    isString(f.code) &&
    f.code.length > 0 &&
    isString(f.message) &&
    optional(f.clientMessageId, isId) &&
    optional(f.messageId, isId) &&
    optional(f.conversationId, isId)
};

/**
 * One text from the hub as a server frame, or null when it is not one: not JSON, not an
 * object, a type this reader does not know, or a known type with a field missing or of the
 * wrong kind. Unknown extra fields are allowed (and kept).
 */
export function parseServerFrame(text: string): ServerFrame | null {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return null;
  }
  return serverFrame(data);
}

/** A JSON value already parsed (a frame that came through the kernel's comm) as a server
 * frame, or null when it is not one; the checks of `parseServerFrame`. */
export function serverFrame(data: unknown): ServerFrame | null {
  if (
    !isObject(data) ||
    typeof data.type !== 'string' ||
    !Object.prototype.hasOwnProperty.call(SERVER_FRAMES, data.type)
  ) {
    return null;
  }
  const check = SERVER_FRAMES[data.type as ServerFrame['type']];
  return check(data) ? (data as unknown as ServerFrame) : null;
}

// -- what the server is certain to refuse ----------------------------------------------------
//
// The view checks what it is about to send by the rules the server applies (docs/protocol.md,
// "Client to server"), so a request the server would answer with `bad_field` or `too_large`
// is refused here with words for the user, and never costs an upload. Values that reach the
// view from outside the wire (a saved notebook output, a widget model) pass the same checks.

/** `StreamChatApp.max_message_bytes`' default: the largest `text`, in UTF-8 bytes, that a
 * server accepts unless it says otherwise. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** False for a string holding a lone surrogate: JSON can spell one (`"\ud800"`), but neither
 * UTF-8 nor the server's store can hold it. */
export function isWellFormed(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}

/** How many bytes `text` takes in UTF-8 (a lone surrogate counted as its replacement's 3). */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) {
      bytes += 1;
    } else if (unit < 0x800) {
      bytes += 2;
    } else if (
      unit >= 0xd800 &&
      unit <= 0xdbff &&
      i + 1 < text.length &&
      (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      bytes += 4; // a surrogate pair: one character outside the BMP
      i++;
    } else {
      bytes += 3;
    }
  }
  return bytes;
}

/** What is wrong with `value` as a JSON value's kind, in a few words ("a number"). */
function kindOf(value: unknown): string {
  if (value === null) {
    return 'null';
  }
  if (Array.isArray(value)) {
    return 'a list';
  }
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** Why `value` is not an id the server accepts (a string of 1 to MAX_ID_LENGTH characters,
 * valid Unicode), as a phrase to follow the field's name; null when it is one. */
export function idProblem(value: unknown): string | null {
  if (value === undefined) {
    return 'is missing';
  }
  if (typeof value !== 'string') {
    return `is ${kindOf(value)}, not a string`;
  }
  if (value.length === 0) {
    return 'is empty';
  }
  if (value.length > MAX_ID_LENGTH) {
    return (
      `is ${value.length.toLocaleString('en-US')} characters long; ids are at most ` +
      `${MAX_ID_LENGTH}`
    );
  }
  if (!isWellFormed(value)) {
    return 'is not valid Unicode (it holds a lone surrogate)';
  }
  return null;
}

/** Why `value` is not a message text the server accepts (not empty, valid Unicode, at most
 * `maxBytes` in UTF-8); null when it is one. */
export function textProblem(value: unknown, maxBytes: number): string | null {
  if (typeof value !== 'string') {
    return value === undefined ? 'is missing' : `is ${kindOf(value)}, not a string`;
  }
  if (value.length === 0) {
    return 'is empty';
  }
  // Every UTF-16 unit takes 1 to 3 bytes: the exact count is needed only near the limit.
  const size = value.length * 3 > maxBytes ? utf8Length(value) : value.length;
  if (size > maxBytes) {
    return (
      `is ${size.toLocaleString('en-US')} bytes; the server accepts at most ` +
      `${maxBytes.toLocaleString('en-US')}`
    );
  }
  if (!isWellFormed(value)) {
    return 'is not valid Unicode (it holds a lone surrogate)';
  }
  return null;
}

const isAfterSeq = (v: unknown): boolean =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Each request's fields and their kinds, as the server checks them. */
const CLIENT_FIELDS: Record<ClientFrame['type'], [string, 'id' | 'text' | 'seq' | 'decision'][]> = {
  ANSWER_TOOL_CALL: [
    ['messageId', 'id'],
    ['toolCallId', 'id'],
    ['decision', 'decision']
  ],
  SEND_MESSAGE: [
    ['conversationId', 'id'],
    ['agentId', 'id'],
    ['text', 'text'],
    ['clientMessageId', 'id']
  ],
  STOP_GENERATING: [['messageId', 'id']],
  SUBSCRIBE: [['conversationId', 'id']],
  UNSUBSCRIBE: [['conversationId', 'id']],
  RESUME: [
    ['messageId', 'id'],
    ['afterSeq', 'seq']
  ],
  LOAD_HISTORY: [
    ['conversationId', 'id'],
    ['beforeMessageId', 'id']
  ],
  WATCH_CONVERSATIONS: [],
  UNWATCH_CONVERSATIONS: [],
  LIST_AGENTS: []
};

/**
 * Why the server would certainly refuse `frame` (a field missing, of the wrong kind, an id too
 * long or not valid Unicode, a text over `maxBytes`), as a sentence; null when it would not.
 */
export function clientFrameProblem(
  frame: ClientFrame,
  maxBytes: number = DEFAULT_MAX_MESSAGE_BYTES
): string | null {
  const fields = (CLIENT_FIELDS as Record<string, [string, string][]>)[frame.type];
  if (fields === undefined) {
    return `${String(frame.type).slice(0, 40)} is not a request the server knows`;
  }
  const data = frame as unknown as Record<string, unknown>;
  for (const [name, kind] of fields) {
    const value = data[name];
    const problem =
      kind === 'id'
        ? idProblem(value)
        : kind === 'text'
          ? textProblem(value, maxBytes)
          : kind === 'decision'
            ? isString(value) && DECISIONS.has(value)
              ? null
              : 'is not allow_once, allow_always or reject'
            : isAfterSeq(value)
              ? null
              : 'is not an integer from 0 to 2^53 - 1';
    if (problem !== null) {
      return name === 'text' ? `the message ${problem}.` : `its ${name} ${problem}.`;
    }
  }
  return null;
}

/** What a notebook's saved chat output (`application/vnd.jupyter.streamchat+json`) holds. */
export interface ChatOutput {
  conversationId: string;
  /** '' when the output names none (the host picks its default). */
  agentId: string;
  /** '' when the output names no widget model. */
  outputKey: string;
}

/**
 * A saved chat output's fields, checked: a notebook may come from anyone, so a field of the
 * wrong kind, an id the server would refuse, or a value that is not an object gives `problem`,
 * a sentence for the reader, rather than a chat that uploads it. `agentId` and `outputKey` may
 * be absent (or empty); `conversationId` may not.
 */
export function parseChatOutput(value: unknown): { output: ChatOutput } | { problem: string } {
  if (!isObject(value)) {
    return { problem: `This chat output cannot be shown: it is ${kindOf(value)}, not an object.` };
  }
  const fields: [keyof ChatOutput, boolean][] = [
    ['conversationId', true],
    ['agentId', false],
    ['outputKey', false]
  ];
  const output: ChatOutput = { conversationId: '', agentId: '', outputKey: '' };
  for (const [name, required] of fields) {
    const field = value[name];
    if (!required && (field === undefined || field === '')) {
      continue;
    }
    const problem = idProblem(field);
    if (problem !== null) {
      return { problem: `This chat output cannot be shown: its ${name} ${problem}.` };
    }
    output[name] = field as string;
  }
  return { output };
}
