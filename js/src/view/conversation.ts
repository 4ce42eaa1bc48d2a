// One conversation as the hub tells it, without the DOM: what the chat view draws, and the rules
// that keep it right through drops and reconnections (docs/protocol.md, "How the project's
// clients use it"). The kernel's Python follower (`Conversation` in
// jupyter_streamchat/kernel/follower.py) keeps a conversation by the same rules, and both run
// the cases of tests/fixtures/conversation.json.
//
// In: frames from the hub (`receive`), the transport opening and closing (`opened`, `closed`),
// and the user's actions (`send`, `stop`, `loadOlder`). Out: frames through the transport, and
// calls to an observer (the view) saying what changed.
//
// - A message is held once the hub has it (MESSAGE_ACCEPTED, a chunk, HISTORY), in conversation
//   order. The user's own messages wait apart, as sends, until the hub accepts them (they then
//   become held messages) or refuses them with an ERROR naming their `clientMessageId`.
// - A reply is held by reply.ts's rules: chunks by seq, a gap asks RESUME from what is held, a
//   stored copy adds only the text past what is held.
// - On every (re)connection, in this order: each send not yet answered (the same
//   `clientMessageId`: the hub stores it once), RESUME of each reply held still streaming from
//   its last seq, each stop not yet honoured, each answer to a tool call not yet seen taken,
//   then SUBSCRIBE.
// - A stop holds until its reply ends: it goes again after a reconnection, since one written
//   just before a drop may have been lost (stopping an ended reply does nothing). Stop asked
//   while a send waits for its answer stops that send's reply once the hub accepts it.
// - Older messages come a page at a time (LOAD_HISTORY, answered by HISTORY_PAGE), when the
//   host asks (`loadOlder`: the view does as the user scrolls up).
// - A reply's tool calls are held with it (reply.ts: the latest state per id, in the order they
//   first appeared). The user answers a call that waits (`answer`: ANSWER_TOOL_CALL); no ack
//   comes, the call's next state does, to every view. An answer holds until that state comes or
//   the reply ends, and goes again after a reconnection like a stop (one written just before a
//   drop may have been lost); the hub answers a second one `not_waiting`, which changes nothing
//   here: another view answered first, and the state it brought shows.

import type { Transport } from './transport';
import { randomId } from './dom';
import {
  AgentInfo,
  ClientFrame,
  clientFrameProblem,
  ContextItem,
  Decision,
  DEFAULT_MAX_MESSAGE_BYTES,
  ErrorFrame,
  History,
  HistoryPage,
  MessageAccepted,
  MessageChunk,
  SendMessage,
  ServerFrame,
  Status,
  StoredMessage
} from './protocol';
import {
  applyChunk,
  applyStored,
  endedHere,
  isEnded,
  NEW_REPLY,
  ReplyState,
  ReplyStep,
  resumed
} from './reply';

/** A message the hub has: the user's, or an agent's reply. */
export class HeldMessage {
  constructor(
    readonly messageId: string,
    readonly role: 'user' | 'assistant',
    readonly agentId: string,
    /** When it was made: now for one seen live, the server's time for a stored one (null when
     * the server sent none). */
    readonly createdAt: Date | null,
    /** Seen as it was made (accepted or streamed now), not read from the store. */
    readonly live: boolean,
    /** A reply as held (reply.ts); a user message keeps its text and status here too. */
    public state: ReplyState,
    /** A user message's attachments as sent (the `context` of its SEND_MESSAGE, of the
     * MESSAGE_ACCEPTED that told another tab, or of the store; context.ts checks them as it
     * draws them). */
    readonly context?: unknown
  ) {}

  get text(): string {
    return this.state.text;
  }

  get status(): Status {
    return this.state.status;
  }

  get lastSeq(): number {
    return this.state.lastSeq;
  }

  /** A reply not ended yet. */
  get streaming(): boolean {
    return this.role === 'assistant' && !isEnded(this.state);
  }

  /** A reply not ended yet with a tool call that waits for the user's answer. */
  get waiting(): boolean {
    return this.streaming && this.state.toolCalls.some(call => call.status === 'waiting');
  }
}

/** An answer to a tool call, until the call's next state comes. */
interface Answer {
  readonly messageId: string;
  readonly toolCallId: string;
  readonly decision: Decision;
  /** Sent again on a reconnection: false once the hub said the call no longer waits. */
  resend: boolean;
}

const answerKey = (messageId: string, toolCallId: string): string =>
  `${messageId}\u0000${toolCallId}`;

/** A message the user sent that the hub has not accepted. */
export interface OutgoingSend {
  readonly clientMessageId: string;
  readonly frame: SendMessage;
  /** `pending` until the hub answers; `error` once it refused (`error` says why). */
  status: 'pending' | 'error';
  error?: { code: string; message: string };
  /** Stop was asked before the hub accepted it: its reply is stopped once it is. */
  stopWanted: boolean;
}

/** What the view hears from the model; every method is optional. */
export interface ConversationObserver {
  /** The user sent a message: it waits for the hub's answer, shown as pending. */
  sending?(send: OutgoingSend): void;
  /** `message` is now held, at its place in `messages`. `send`: the user's own send it is
   * (shown already, as pending), or null. */
  added?(message: HeldMessage, send: OutgoingSend | null): void;
  /** The hub accepted `send`, whose message was held already (a HISTORY brought it first). */
  dropped?(send: OutgoingSend): void;
  /** The hub refused `send` (`send.error` says why). */
  refused?(send: OutgoingSend): void;
  /** A held message took `step` (reply.ts; for a user message, its text came). `announce`: a
   * reply held streaming ended with it. */
  updated?(message: HeldMessage, step: ReplyStep, announce: boolean): void;
  /** The hub no longer stores this reply: it is now held as failed. `announce` as above. */
  lost?(message: HeldMessage, announce: boolean): void;
  /** Every held message was dropped (sends stay): the latest ones no longer join up with them. */
  cleared?(): void;
  /** A HISTORY was taken in (after the calls for its messages). */
  history?(frame: History): void;
  /** Older messages were put before the others (a HISTORY_PAGE), oldest first. */
  older?(messages: HeldMessage[]): void;
  /** The hub reported a problem that no message of this conversation shows. */
  problem?(frame: ErrorFrame): void;
  /** The hub's agents changed (AGENTS_CHANGED): the whole list as it is now. */
  agents?(agents: AgentInfo[]): void;
  /** After each input that may have changed what is drawn (busy, loading older messages). */
  settled?(): void;
}

/** A stored message's time, when the server sent one (see `StoredMessage.createdAt`). */
function createdAt(message: StoredMessage): Date | null {
  const seconds = message.createdAt;
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds > 0
    ? new Date(seconds * 1000)
    : null;
}

/** What a user message holds: its text, and its status. */
const userState = (text: string, status: Status = 'complete'): ReplyState => ({
  ...NEW_REPLY,
  text,
  status
});

/** The step that shows a whole state on a message drawn from nothing. */
export function wholeStep(state: ReplyState): ReplyStep {
  return {
    state,
    append: state.text,
    appendReasoning: state.reasoning,
    toolCalls: state.toolCalls,
    resumeFrom: null,
    ended: isEnded(state)
  };
}

export class Conversation {
  private id: string;
  private transport: Transport | null = null;
  private held: HeldMessage[] = []; // in conversation order
  private byId = new Map<string, HeldMessage>();
  private outgoing = new Map<string, OutgoingSend>(); // by clientMessageId, in the order sent
  private stopping = new Set<string>(); // replies asked to stop, until they end
  private answers = new Map<string, Answer>(); // by answerKey, until the call's next state
  private olderAsked: string | null = null; // beforeMessageId of the LOAD_HISTORY in flight
  private olderExist = false; // the hub has messages older than the oldest held

  constructor(
    conversationId: string,
    private readonly observer: ConversationObserver = {}
  ) {
    this.id = conversationId;
  }

  get conversationId(): string {
    return this.id;
  }

  /** The messages held, in conversation order. */
  get messages(): readonly HeldMessage[] {
    return this.held;
  }

  /** The user's sends not accepted: waiting for an answer, or refused. */
  get sends(): OutgoingSend[] {
    return Array.from(this.outgoing.values());
  }

  message(messageId: string): HeldMessage | undefined {
    return this.byId.get(messageId);
  }

  get pendingCount(): number {
    let count = 0;
    for (const send of this.outgoing.values()) {
      count += send.status === 'pending' ? 1 : 0;
    }
    return count;
  }

  get streamingCount(): number {
    return this.held.reduce((count, m) => count + (m.streaming ? 1 : 0), 0);
  }

  /** Replies being generated that wait for the user to answer a tool call. */
  get waitingCount(): number {
    return this.held.reduce((count, m) => count + (m.waiting ? 1 : 0), 0);
  }

  /** The user answered this call and its next state has not come yet. */
  answered(messageId: string, toolCallId: string): boolean {
    return this.answers.has(answerKey(messageId, toolCallId));
  }

  /** A page of older messages was asked for and has not come yet. */
  get loadingOlder(): boolean {
    return this.olderAsked !== null;
  }

  /** The hub has messages older than the oldest held. */
  get hasOlder(): boolean {
    return this.olderExist;
  }

  // -- the transport ---------------------------------------------------------------------------

  /** Talk to the hub through `transport` (null: through none, as while the id is refused). */
  attach(transport: Transport | null): void {
    this.transport = transport;
  }

  /** The transport (re)connected: ask for what is needed to catch up, in the documented order
   * (the hub answers a connection's requests in it). */
  opened(): void {
    this.olderAsked = null; // a page asked for on the last connection will not be answered
    for (const send of this.outgoing.values()) {
      if (send.status === 'pending') {
        this.post(send.frame); // the hub is idempotent on its clientMessageId
      }
    }
    // Their replies replay from seq 1; these from what is held.
    for (const message of this.held) {
      if (message.streaming) {
        message.state = resumed(message.state);
        this.post({ type: 'RESUME', messageId: message.messageId, afterSeq: message.lastSeq });
      }
    }
    for (const messageId of this.stopping) {
      this.post({ type: 'STOP_GENERATING', messageId });
    }
    for (const answer of this.answers.values()) {
      if (answer.resend) {
        this.post(answerFrame(answer));
      }
    }
    this.post({ type: 'SUBSCRIBE', conversationId: this.id });
    this.observer.settled?.();
  }

  /** The transport dropped: what was asked on it will not be answered. */
  closed(): void {
    this.olderAsked = null;
    this.observer.settled?.();
  }

  private post(frame: ClientFrame): boolean {
    return this.transport?.send(frame) ?? false;
  }

  // -- the user's actions ----------------------------------------------------------------------

  /** Send `text` to `agentId`; a sentence saying why not when the hub would certainly refuse it
   * (nothing is then sent), else null. Offline, it goes once the transport opens. */
  send(
    text: string,
    agentId: string,
    clientMessageId: string = randomId(),
    context?: ContextItem[]
  ): string | null {
    const frame: SendMessage = {
      type: 'SEND_MESSAGE',
      conversationId: this.id,
      agentId,
      text,
      clientMessageId,
      ...(context?.length ? { context } : {})
    };
    const problem = clientFrameProblem(
      frame,
      this.transport?.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES
    );
    if (problem !== null) {
      return problem;
    }
    if (this.outgoing.has(clientMessageId)) {
      return null; // sent already
    }
    const send: OutgoingSend = { clientMessageId, frame, status: 'pending', stopWanted: false };
    this.outgoing.set(clientMessageId, send);
    this.observer.sending?.(send);
    this.post(frame);
    this.observer.settled?.();
    return null;
  }

  /** Stop every reply being generated, and the replies of sends still waiting for an answer. */
  stop(): void {
    for (const message of this.held) {
      if (message.streaming) {
        this.stopping.add(message.messageId);
        this.post({ type: 'STOP_GENERATING', messageId: message.messageId });
      }
    }
    for (const send of this.outgoing.values()) {
      if (send.status === 'pending') {
        send.stopWanted = true;
      }
    }
    this.observer.settled?.();
  }

  /** Answer a tool call that waits for the user: false when it does not wait (nothing is
   * sent), else true (offline, the answer goes once the transport opens). */
  answer(messageId: string, toolCallId: string, decision: Decision): boolean {
    const message = this.byId.get(messageId);
    const call = message?.streaming
      ? message.state.toolCalls.find(c => c.id === toolCallId)
      : undefined;
    if (call?.status !== 'waiting') {
      return false;
    }
    const key = answerKey(messageId, toolCallId);
    if (!this.answers.has(key)) {
      const answer: Answer = { messageId, toolCallId, decision, resend: true };
      this.answers.set(key, answer);
      this.post(answerFrame(answer));
    }
    this.observer.settled?.();
    return true;
  }

  /** Ask for the page of messages before the oldest held; false when there is none to ask
   * for, one is on its way, or the transport is down. */
  loadOlder(): boolean {
    const before = this.held[0]?.messageId;
    if (!this.olderExist || this.olderAsked !== null || before === undefined) {
      return false;
    }
    if (!this.post({ type: 'LOAD_HISTORY', conversationId: this.id, beforeMessageId: before })) {
      return false;
    }
    this.olderAsked = before;
    this.observer.settled?.();
    return true;
  }

  /** Follow another conversation: the hub stops sending the old one's frames (UNSUBSCRIBE),
   * any still in flight are ignored, and everything held is forgotten. `subscribe`: ask for the
   * new one now (otherwise the next `opened` does). */
  setConversation(conversationId: string, subscribe = true): void {
    if (conversationId === this.id) {
      return;
    }
    this.post({ type: 'UNSUBSCRIBE', conversationId: this.id });
    this.id = conversationId;
    this.held = [];
    this.byId.clear();
    this.outgoing.clear();
    this.stopping.clear();
    this.answers.clear();
    this.olderAsked = null;
    this.olderExist = false;
    if (subscribe) {
      this.post({ type: 'SUBSCRIBE', conversationId });
    }
  }

  // -- frames from the hub -------------------------------------------------------------------

  receive(frame: ServerFrame): void {
    switch (frame.type) {
      case 'ERROR':
        this.onError(frame);
        break;
      case 'AGENTS_CHANGED':
        this.observer.agents?.(frame.agents);
        break;
      case 'MESSAGE_CHUNK':
        if (frame.conversationId === this.id) {
          this.onChunk(frame);
        }
        break;
      case 'MESSAGE_ACCEPTED':
        if (frame.conversationId === this.id) {
          this.onAccepted(frame);
        }
        break;
      case 'HISTORY':
        if (frame.conversationId === this.id) {
          this.onHistory(frame);
        }
        break;
      case 'HISTORY_PAGE':
        if (frame.conversationId === this.id) {
          this.onHistoryPage(frame);
        }
        break;
      default:
        return; // the conversation list's frames, and any other: not this model's
    }
    this.observer.settled?.();
  }

  private onAccepted(frame: MessageAccepted): void {
    const waiting = this.outgoing.get(frame.clientMessageId);
    const send = waiting?.status === 'pending' ? waiting : null;
    if (send !== null) {
      this.outgoing.delete(frame.clientMessageId);
    }
    if (this.byId.has(frame.userMessageId)) {
      if (send !== null) {
        this.observer.dropped?.(send); // a HISTORY brought it in while we were away
      }
    } else {
      // Ours, or sent elsewhere: another tab, or the kernel's Python.
      const text = send !== null ? send.frame.text : (frame.text ?? '');
      this.add(
        new HeldMessage(
          frame.userMessageId,
          'user',
          frame.agentId,
          new Date(),
          true,
          userState(text),
          send !== null ? send.frame.context : frame.context
        ),
        send
      );
    }
    let reply = this.byId.get(frame.messageId);
    if (reply === undefined) {
      reply = this.add(
        new HeldMessage(frame.messageId, 'assistant', frame.agentId, new Date(), true, NEW_REPLY),
        null
      );
    }
    if (send?.stopWanted && reply.streaming) {
      this.stopping.add(reply.messageId);
      this.post({ type: 'STOP_GENERATING', messageId: reply.messageId });
    }
  }

  private onChunk(frame: MessageChunk): void {
    // A reply not heard of yet (sent from elsewhere before a HISTORY told of it): from seq 1.
    const message =
      this.byId.get(frame.messageId) ??
      this.add(
        new HeldMessage(frame.messageId, 'assistant', frame.agentId, new Date(), true, NEW_REPLY),
        null
      );
    if (message.role === 'assistant') {
      this.apply(message, applyChunk(message.state, frame));
    }
  }

  /** The latest messages: merged into what is held (after a reconnection, most are known). */
  private onHistory(frame: History): void {
    const shown = this.held.length > 0;
    if (shown && frame.hasMore && !frame.messages.some(m => this.byId.has(m.messageId))) {
      // More came while we were away than one HISTORY holds: what is held no longer joins up
      // with it, so start again from the latest (sends stay).
      this.held = [];
      this.byId.clear();
      this.observer.cleared?.();
    }
    const ordered: HeldMessage[] = [];
    const fresh: HeldMessage[] = [];
    for (const stored of frame.messages) {
      const known = this.byId.get(stored.messageId);
      if (known !== undefined) {
        this.merge(known, stored);
        ordered.push(known);
      } else if (!fresh.some(m => m.messageId === stored.messageId)) {
        const message = this.fromStored(stored);
        fresh.push(message);
        ordered.push(message);
      }
    }
    const inFrame = new Set(ordered);
    const rest = this.held.filter(m => !inFrame.has(m));
    // With `hasMore`, only the latest came, so what else is held is older; without it, the
    // frame holds the whole conversation, and what it lacks (deleted meanwhile) stays after it.
    this.held = frame.hasMore ? [...rest, ...ordered] : [...ordered, ...rest];
    for (const message of fresh) {
      this.byId.set(message.messageId, message);
      this.observer.added?.(message, null);
    }
    // `hasMore` speaks of messages older than the frame's first: it is ours to keep only if
    // that is the oldest held (after a reconnection, older pages may be held already).
    if (!shown || this.held[0]?.messageId === frame.messages[0]?.messageId) {
      this.olderExist = frame.hasMore ?? false;
    }
    this.observer.history?.(frame);
  }

  /** Older messages, asked for by `loadOlder`: held before the others. */
  private onHistoryPage(frame: HistoryPage): void {
    if (this.olderAsked === null || frame.beforeMessageId !== this.olderAsked) {
      return; // an answer to a request of an earlier connection or conversation
    }
    const fresh: HeldMessage[] = [];
    for (const stored of frame.messages) {
      const known = this.byId.get(stored.messageId);
      if (known !== undefined) {
        this.merge(known, stored);
      } else if (!fresh.some(m => m.messageId === stored.messageId)) {
        fresh.push(this.fromStored(stored));
      }
    }
    const at = this.held.findIndex(m => m.messageId === frame.beforeMessageId);
    this.held.splice(Math.max(at, 0), 0, ...fresh);
    for (const message of fresh) {
      this.byId.set(message.messageId, message);
    }
    this.olderAsked = null;
    this.olderExist = frame.hasMore;
    this.observer.older?.(fresh);
  }

  private onError(frame: ErrorFrame): void {
    const send =
      frame.clientMessageId !== undefined ? this.outgoing.get(frame.clientMessageId) : undefined;
    if (send !== undefined && send.status === 'pending') {
      send.status = 'error';
      send.error = { code: frame.code, message: frame.message };
      this.observer.refused?.(send);
      return;
    }
    if (frame.conversationId !== undefined && frame.conversationId !== this.id) {
      return;
    }
    if (
      frame.code === 'unknown_message' &&
      frame.messageId !== undefined &&
      frame.messageId === this.olderAsked
    ) {
      // The oldest message held is gone from the server: there is nothing before it.
      this.olderAsked = null;
      this.olderExist = false;
      return;
    }
    const message = frame.messageId !== undefined ? this.byId.get(frame.messageId) : undefined;
    if (message?.role === 'assistant' && frame.code === 'unknown_message') {
      const announce = message.streaming;
      message.state = endedHere(message.state, 'error'); // no later frame changes it
      this.stopping.delete(message.messageId);
      this.forgetAnswers(message);
      this.observer.lost?.(message, announce);
      return;
    }
    if (frame.code === 'not_waiting') {
      // Answered from another view (or ended meanwhile): its state says what became of it.
      for (const answer of this.answers.values()) {
        if (answer.messageId === frame.messageId) {
          answer.resend = false;
        }
      }
      return;
    }
    this.observer.problem?.(frame);
  }

  // -- held messages ---------------------------------------------------------------------------

  /** Hold `message` after the others (a message seen live is the newest). */
  private add(message: HeldMessage, send: OutgoingSend | null): HeldMessage {
    this.held.push(message);
    this.byId.set(message.messageId, message);
    this.observer.added?.(message, send);
    return message;
  }

  /** A message from a stored copy, not held yet (the caller places it). */
  private fromStored(stored: StoredMessage): HeldMessage {
    if (stored.role === 'user') {
      return new HeldMessage(
        stored.messageId,
        'user',
        stored.agentId,
        createdAt(stored),
        false,
        userState(stored.text, stored.status),
        stored.context
      );
    }
    const step = applyStored(NEW_REPLY, stored);
    this.resumeIfAsked(stored.messageId, step);
    return new HeldMessage(
      stored.messageId,
      'assistant',
      stored.agentId,
      createdAt(stored),
      false,
      step.state
    );
  }

  /** Take a stored copy of a held message (from HISTORY or HISTORY_PAGE). */
  private merge(message: HeldMessage, stored: StoredMessage): void {
    if (message.role === 'user') {
      if (!message.text && stored.text) {
        message.state = { ...message.state, text: stored.text };
        this.observer.updated?.(message, wholeStep(message.state), false);
      }
      return;
    }
    this.apply(message, applyStored(message.state, stored));
  }

  /** One step of a reply's reducer: hold it, ask what it asks of the hub, tell the view. */
  private apply(message: HeldMessage, step: ReplyStep): void {
    const wasStreaming = message.streaming;
    message.state = step.state;
    this.resumeIfAsked(message.messageId, step);
    if (!message.streaming) {
      this.stopping.delete(message.messageId); // honoured, or ended anyway
      this.forgetAnswers(message);
    } else {
      for (const call of step.toolCalls) {
        if (call.status !== 'waiting') {
          this.answers.delete(answerKey(message.messageId, call.id)); // its answer came
        }
      }
    }
    // Only a reply held streaming is announced, not each one a reload brings in ended.
    this.observer.updated?.(message, step, wasStreaming && step.ended);
  }

  private forgetAnswers(message: HeldMessage): void {
    for (const call of message.state.toolCalls) {
      this.answers.delete(answerKey(message.messageId, call.id));
    }
  }

  private resumeIfAsked(messageId: string, step: ReplyStep): void {
    if (step.resumeFrom !== null) {
      this.post({ type: 'RESUME', messageId, afterSeq: step.resumeFrom });
    }
  }
}

const answerFrame = (answer: Answer): ClientFrame => ({
  type: 'ANSWER_TOOL_CALL',
  messageId: answer.messageId,
  toolCallId: answer.toolCallId,
  decision: answer.decision
});
