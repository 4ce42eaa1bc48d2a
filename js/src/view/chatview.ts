// The chat view: one conversation, its messages, an input, and the hub connection.
//
// It depends on the DOM and the wire contract only (no anywidget, no `@jupyterlab/*`), so the
// notebook widget and a sidebar panel mount the same view. DOM test hooks follow the design
// notes: `data-testid="streamchat"` on the root (with `data-connection`), `streamchat-input`,
// `-send`, `-stop`, `-typing`, and `streamchat-message` with `data-role`, `data-status` and
// `data-message-id` on every message; `streamchat-empty-chat` is the note of a conversation
// without messages (what to do: pick an agent, type, press Enter).
//
// Keyboard: the input takes Enter (send), Shift+Enter (a new line) and, while a reply is being
// generated, Escape (stop it). Every other key goes on to the page, so the host's shortcuts
// (JupyterLab's Save, command palette, tab switching, ...) work while the input has focus.
// Screen readers: the message list is a polite `log`; a reply is `aria-busy` while it streams,
// and how it ended is said once through a visually hidden status region.

import { AgentChoice, chooseAgent, chosenAt, HostAgent, LastUsed, lastUsed } from './agentchoice';
import { ConnectionState, HubConnection } from './connection';
import { el, randomId } from './dom';
import type { CodeBlockOptions } from './decorate';
import { ImagePolicy, loadAllowed } from './images';
import { BodyRenderer, StreamingMarkdown } from './markdown';
import { MessageView } from './message';
import { EarlierMessages } from './paging';
import {
  clientFrameProblem, ErrorFrame, FINAL, History, HistoryPage, idProblem, MessageAccepted,
  MessageChunk, SendMessage, ServerFrame, Status, StoredMessage, Usage
} from './protocol';
import { applyChunk, applyStored, isEnded, ReplyStep, resumed } from './reply';
import { authHeaders, ServerSettings } from './server';

/** A message as the kernel's snapshot has it (shown when no server can be reached). */
export interface SnapshotMessage {
  messageId: string;
  role: 'user' | 'assistant';
  agentId?: string;
  text: string;
  status: string;
  reasoning?: string;
  /** As the kernel's Python has it: model, input_tokens, output_tokens, first_token_seconds,
   * duration_seconds. */
  usage?: Record<string, unknown>;
}

/** A snapshot's usage (Python names) as the wire's, keeping only well-formed figures: the
 * snapshot comes from the kernel, not through the wire's checks. */
function snapshotUsage(usage: Record<string, unknown> | undefined): Usage | undefined {
  if (typeof usage !== 'object' || usage === null) {
    return undefined;
  }
  const number = (v: unknown) =>
    typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
  return {
    model: typeof usage.model === 'string' ? usage.model : undefined,
    inputTokens: number(usage.input_tokens),
    outputTokens: number(usage.output_tokens),
    firstTokenSeconds: number(usage.first_token_seconds),
    durationSeconds: number(usage.duration_seconds)
  };
}

export interface ChatViewOptions {
  /** The hub's server; null when the page has none (the view then says so). */
  server: ServerSettings | null;
  conversationId: string;
  /** The host's agent: the one a new conversation starts with (see agentchoice.ts). */
  agentId: string;
  /** When the host chose `agentId` (seconds since the epoch): a choice made after the
   * conversation's last message wins over the agent that message used. Absent, `agentId` is a
   * default, and a conversation opens with the agent it last used. */
  agentChosenAt?: number | null;
  /** Messages to show when the hub cannot be reached. */
  snapshot?: SnapshotMessage[];
  /** The user picked another agent (not called when the view follows the conversation's
   * last agent by itself). */
  onAgentChange?: (agentId: string) => void;
  /** How an assistant message's body renders (the default streams markdown). */
  createRenderer?: (el: HTMLElement) => BodyRenderer;
  /** Hosts whose images in agent output load without a click: exact names ("example.org")
   * or suffix patterns ("*.example.org"). Other images wait for a click (see images.ts). */
  imageHosts?: string[];
  /** Offered on each code block of a reply as an Insert button, when given (a JupyterLab host
   * inserts the code in a new cell below the active one). */
  onInsertCode?: CodeBlockOptions['onInsertCode'];
}

/** What the status region says when a reply the user watched stream ends. */
const ENDED: Record<Status, string> = {
  streaming: '',
  complete: 'Reply complete',
  stopped: 'Reply stopped',
  interrupted: 'Reply interrupted',
  error: 'Reply failed'
};

/** A stored message's time, when the server sent one (see `StoredMessage.createdAt`). */
function createdAt(message: StoredMessage): Date | null {
  const seconds = message.createdAt;
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds > 0
    ? new Date(seconds * 1000)
    : null;
}

interface AgentInfo {
  id: string;
  name: string;
  description: string;
}

export class ChatView {
  readonly root: HTMLElement;
  private conversationId: string;
  private agentId: string; // the agent the next message goes to: `chooseAgent`'s answer
  private hostAgent: HostAgent;
  private pickedAgent: string | null = null; // picked in this view, for this conversation
  private lastAgent: LastUsed | null = null; // of the conversation's latest message
  private agentOpened = false; // the conversation's first HISTORY chose its agent
  private readonly agentNote: HTMLElement;
  private agentsLoaded = false; // the picker lists the server's agents
  private readonly createRenderer: (el: HTMLElement) => BodyRenderer;
  private readonly list: HTMLElement;
  private readonly typing: HTMLElement;
  private readonly emptyNote: HTMLElement; // what to do, while the conversation has no message
  private historyOf: string | null = null; // the conversation whose HISTORY came last
  private readonly announcer: HTMLElement;
  private readonly notice: HTMLElement;
  private readonly status: HTMLElement;
  private readonly picker: HTMLSelectElement;
  private readonly input: HTMLTextAreaElement;
  private readonly sendButton: HTMLButtonElement;
  private readonly stopButton: HTMLButtonElement;
  private connection: HubConnection | null = null;
  /** Why the server would refuse this conversation's id, or null when it would not. */
  private conversationProblem: string | null = null;
  private readonly images: ImagePolicy;
  private readonly earlier: EarlierMessages;
  private messages = new Map<string, MessageView>(); // by message id
  private pending = new Map<string, { frame: SendMessage; view: MessageView }>(); // by clientMessageId
  private streaming = new Set<string>(); // reply ids not yet ended
  private stopWanted = new Set<string>(); // stops asked while disconnected
  private agentProblem = '';
  private stick = true; // follow new text unless the user scrolled up
  private lastScrollTop = 0;
  private scrollQueued = false;
  // Messages grow as text streams in, and after they are put in (markdown renders over several
  // frames, images load): while the view follows the bottom, each growth scrolls it down again.
  private readonly growth: ResizeObserver;
  private announceTimer = 0;

  constructor(host: HTMLElement, private readonly options: ChatViewOptions) {
    this.conversationId = options.conversationId;
    this.agentId = options.agentId;
    this.hostAgent = { agentId: options.agentId, chosenAt: chosenAt(options.agentChosenAt) };
    this.images = new ImagePolicy(options.imageHosts ?? []);
    const code: CodeBlockOptions = { onInsertCode: options.onInsertCode };
    this.createRenderer = options.createRenderer ??
      (body => new StreamingMarkdown(body, this.images, code));

    this.root = el('div', 'streamchat', 'streamchat');
    const header = el('div', 'streamchat-header');
    this.picker = el('select', 'streamchat-agent', 'streamchat-agent');
    this.picker.setAttribute('aria-label', 'Agent');
    const label = el('label', 'streamchat-agent-label');
    const pickerBox = el('span', 'streamchat-agent-box'); // draws the picker's arrow
    pickerBox.append(this.picker);
    label.append('Agent', pickerBox);
    this.status = el('span', 'streamchat-status', 'streamchat-status');
    // Which agent answers, when it is not the one the conversation last used (agentchoice.ts):
    // a row of its own under the picker, drawn as the notices are (it fits a narrow panel).
    this.agentNote = el('div', 'streamchat-notice streamchat-agent-note', 'streamchat-agent-note');
    this.agentNote.id = `streamchat-agent-note-${randomId()}`;
    this.agentNote.setAttribute('role', 'status');
    this.agentNote.hidden = true;
    this.picker.setAttribute('aria-describedby', this.agentNote.id);
    header.append(label, this.status);
    this.notice = el('div', 'streamchat-notice', 'streamchat-notice');
    this.notice.setAttribute('role', 'alert');
    this.notice.hidden = true;
    this.list = el('div', 'streamchat-messages', 'streamchat-messages');
    this.list.setAttribute('role', 'log');
    this.list.setAttribute('aria-live', 'polite');
    this.list.setAttribute('aria-label', 'Chat messages');
    this.earlier = new EarlierMessages(this.list, () => this.oldestShown(), beforeMessageId =>
      this.connection?.send({
        type: 'LOAD_HISTORY', conversationId: this.conversationId, beforeMessageId
      }) ?? false);
    this.list.append(this.earlier.marker);
    this.typing = el('div', 'streamchat-typing', 'streamchat-typing');
    this.typing.setAttribute('role', 'img');
    this.typing.setAttribute('aria-label', 'The agent is typing');
    this.typing.append(el('span', ''), el('span', ''), el('span', ''));
    this.typing.hidden = true;
    // Outside the log: a live region inside another is read twice, or not at all.
    this.announcer = el('div', 'streamchat-visually-hidden', 'streamchat-announcer');
    this.announcer.setAttribute('role', 'status');
    const footer = el('div', 'streamchat-footer');
    this.input = el('textarea', 'streamchat-input', 'streamchat-input');
    this.input.rows = 2;
    // Short: it must fit one line of the input in a 250 px side panel (the keys are told by
    // the empty conversation's note, below).
    this.input.placeholder = 'Type a message';
    this.input.setAttribute('aria-label', 'Message');
    this.sendButton = el('button', 'streamchat-send', 'streamchat-send');
    this.sendButton.type = 'button';
    this.sendButton.textContent = 'Send';
    this.stopButton = el('button', 'streamchat-stop', 'streamchat-stop');
    this.stopButton.type = 'button';
    this.stopButton.textContent = 'Stop Generating';
    this.stopButton.title = 'Stop generating (Escape)';
    this.stopButton.hidden = true;
    footer.append(this.input, this.sendButton, this.stopButton);
    // A conversation without messages says what to do (see `updateEmpty`).
    this.emptyNote = el('div', 'streamchat-empty', 'streamchat-empty-chat');
    const emptyTitle = el('p', 'streamchat-empty-title');
    emptyTitle.textContent = 'Ask anything';
    const emptyHint = el('p', 'streamchat-empty-hint');
    emptyHint.textContent =
      'Pick an agent above, type your message below and press Enter (Shift+Enter adds a line).';
    this.emptyNote.append(emptyTitle, emptyHint);
    this.emptyNote.hidden = true;
    this.root.append(header, this.agentNote, this.notice, this.list, this.emptyNote, this.typing,
      this.announcer, footer);
    new MutationObserver(() => this.updateEmpty()).observe(this.list, { childList: true });
    host.appendChild(this.root);
    this.growth = new ResizeObserver(this.onGrowth);

    this.input.addEventListener('keydown', this.onKeyDown);
    this.sendButton.addEventListener('click', () => {
      this.sendInput();
      this.input.focus(); // ready for the next message
    });
    this.stopButton.addEventListener('click', () => {
      this.stop();
      this.input.focus(); // the button hides: the keyboard must not be left nowhere
    });
    this.picker.addEventListener('change', () => {
      this.pickedAgent = this.picker.value;
      this.chooseAgent();
      this.options.onAgentChange?.(this.agentId);
    });
    this.list.addEventListener('scroll', this.onScroll);

    if (options.server === null) {
      this.showSnapshot(options.snapshot ?? []);
      this.setConnection('offline',
        'Cannot reach a streamchat server: this page is not served by a Jupyter server. ' +
        'Open the notebook in JupyterLab with jupyter-streamchat installed to chat.');
      this.input.disabled = this.sendButton.disabled = this.picker.disabled = true;
      return;
    }
    this.conversationProblem = idProblem(this.conversationId);
    if (this.conversationProblem !== null) {
      this.refuseConversation();
    } else {
      this.connect(options.server);
    }
  }

  private connect(server: ServerSettings): void {
    this.setConnection('reconnecting', 'Connecting…');
    this.connection = new HubConnection(server, {
      onFrame: frame => this.onFrame(frame),
      onOpen: () => this.onOpen(),
      onState: (state, problem) => this.setConnection(state, problem)
    });
    void this.loadAgents(server);
  }

  /** The conversation's id is one the server would refuse (too long, not a string, not valid
   * Unicode: a notebook may come from anyone): say so, and open no socket to send it. */
  private refuseConversation(): void {
    this.connection?.close();
    this.connection = null;
    this.setConnection('offline',
      `This chat cannot be shown: its conversation id ${this.conversationProblem}.`);
    this.input.disabled = this.sendButton.disabled = this.picker.disabled = true;
  }

  dispose(): void {
    this.connection?.close();
    this.earlier.forget();
    this.growth.disconnect();
    clearTimeout(this.announceTimer);
    this.root.remove();
  }

  /** Follow another conversation: the hub stops sending the old one's frames (UNSUBSCRIBE),
   * and any still in flight are ignored. */
  setConversation(conversationId: string): void {
    if (conversationId === this.conversationId) {
      return;
    }
    this.connection?.send({ type: 'UNSUBSCRIBE', conversationId: this.conversationId });
    const wasRefused = this.conversationProblem !== null;
    this.conversationId = conversationId;
    this.conversationProblem = idProblem(conversationId);
    this.messages.clear();
    this.pending.clear();
    this.streaming.clear();
    this.stopWanted.clear();
    this.earlier.reset(false);
    this.earlier.forget();
    this.growth.disconnect();
    this.list.replaceChildren(this.earlier.marker);
    this.stick = true; // another conversation opens at its latest messages
    this.pickedAgent = null; // a pick was for the conversation it was made in
    this.lastAgent = null; // until its HISTORY comes
    this.agentOpened = false;
    this.chooseAgent();
    this.updateBusy();
    if (this.conversationProblem !== null) {
      this.refuseConversation();
    } else if (wasRefused && this.options.server !== null) {
      this.input.disabled = this.sendButton.disabled = this.picker.disabled = false;
      this.connect(this.options.server); // subscribes once open
    } else {
      this.connection?.send({ type: 'SUBSCRIBE', conversationId });
    }
  }

  /** The host's agent, chosen at `chosenAt` (seconds since the epoch; null: a default that
   * the conversation's last agent overrides). `live`: the host chose it just now (a Python
   * trait changed while the view shows), so it is newer than every message seen so far, and
   * newer than a different pick made in this view. */
  setAgent(agentId: string, chosenAt: number | null = null, live = false): void {
    if (live) {
      chosenAt = Math.max(chosenAt ?? Date.now() / 1000, this.lastAgent?.at ?? 0);
      if (this.pickedAgent !== null && this.pickedAgent !== agentId) {
        this.pickedAgent = null;
      }
    }
    this.hostAgent = { agentId, chosenAt };
    this.chooseAgent();
  }

  /** The agent the next message goes to. */
  get agent(): string {
    return this.agentId;
  }

  /** What `chooseAgent` decided, for the view's own picker and note. `keep`: messages came
   * while the conversation is open (live, or a reconnect's HISTORY): the view keeps the agent
   * it shows, as if picked, and only the note says the conversation last used another (so a
   * one-off `chat.send(text, agent="echo")` from Python does not switch the picker). */
  private chooseAgent(keep = false): void {
    const picked = this.pickedAgent ?? (keep ? this.agentId : null);
    const choice: AgentChoice = chooseAgent(this.hostAgent, this.lastAgent, picked);
    this.agentNote.textContent = choice.note;
    this.agentNote.hidden = !choice.note;
    if (choice.agentId !== this.agentId || this.picker.value !== choice.agentId) {
      this.agentId = choice.agentId;
      if (this.agentsLoaded) {
        this.selectAgent(); // otherwise `loadAgents` does, once the list is in
      }
    }
  }

  /** A message made now, seen live (sent here, elsewhere, or by the kernel's Python): the
   * conversation last used its agent, later than any choice known so far. */
  private agentUsed(agentId: string): void {
    if (agentId) {
      const at = Math.max(Date.now() / 1000, (this.hostAgent.chosenAt ?? 0) + 0.001,
        this.lastAgent?.at ?? 0);
      this.lastAgent = { agentId, at };
      this.chooseAgent(this.agentOpened);
    }
  }

  /** Hosts whose images load without a click (see `ChatViewOptions.imageHosts`). Images
   * already waiting for a click from a host now allowed load at once. */
  setImageHosts(hosts: string[]): void {
    this.images.setHosts(hosts);
    loadAllowed(this.list, this.images, document.baseURI);
  }

  /** The snapshot shows only while no server answers. */
  setSnapshot(snapshot: SnapshotMessage[]): void {
    if (this.options.server === null) {
      this.growth.disconnect();
      this.list.replaceChildren(this.earlier.marker);
      this.messages.clear();
      this.showSnapshot(snapshot);
    }
  }

  // -- user actions ------------------------------------------------------------------------

  private onKeyDown = (event: KeyboardEvent): void => {
    if (event.isComposing) {
      return; // the key belongs to the input method (choosing a character), not to us
    }
    const modified = event.ctrlKey || event.altKey || event.metaKey;
    if (event.key === 'Shift') {
      // Shift alone is no shortcut, but JupyterLab, seeing it, would refuse the next line break
      // typed inside a notebook cell (it keeps Shift+Enter for running the cell), and
      // Shift+Enter here would add no line.
      event.stopPropagation();
    } else if (event.key === 'Enter' && !modified) {
      // Ours alone: in a notebook, Shift+Enter would also run the cell around the chat.
      event.stopPropagation();
      if (!event.shiftKey) {
        event.preventDefault();
        this.sendInput();
      } // with Shift, the textarea adds the new line itself
    } else if (event.key === 'Escape' && !modified && !event.shiftKey && this.streaming.size > 0) {
      event.stopPropagation();
      event.preventDefault();
      this.stop();
    }
    // Any other key goes on to the page and its shortcuts.
  };

  private sendInput(): void {
    const text = this.input.value;
    if (!text.trim() || this.connection === null) {
      return;
    }
    if (!this.agentId) {
      this.showNotice('Pick an agent first.');
      return;
    }
    const frame: SendMessage = {
      type: 'SEND_MESSAGE',
      conversationId: this.conversationId,
      agentId: this.agentId,
      text,
      clientMessageId: randomId()
    };
    // What the server is certain to refuse is refused here, the text left in the input.
    const problem = clientFrameProblem(frame, this.connection.maxMessageBytes);
    if (problem !== null) {
      this.showNotice(`Not sent: ${problem}`);
      return;
    }
    this.input.value = '';
    const view = new MessageView('user', '', 'pending', this.createRenderer);
    view.setText(text);
    this.observe(view);
    this.pending.set(frame.clientMessageId, { frame, view });
    this.insert(view);
    this.stick = true; // your own message always scrolls into view
    this.updateBusy();
    this.connection.send(frame); // if offline, onOpen sends it (the hub is idempotent on its id)
  }

  private stop(): void {
    for (const messageId of this.streaming) {
      if (!this.connection?.send({ type: 'STOP_GENERATING', messageId })) {
        this.stopWanted.add(messageId);
      }
    }
  }

  // -- frames --------------------------------------------------------------------------------

  private onOpen(): void {
    const connection = this.connection!;
    // A page asked for on the last connection will not be answered; the next scroll asks again.
    this.earlier.reset();
    // Order matters: answers come back in it. Re-sent messages first (their replies replay from
    // seq 1), then the replies we hold part of, then the snapshot of everything else.
    for (const { frame } of this.pending.values()) {
      connection.send(frame);
    }
    for (const messageId of this.streaming) {
      const view = this.messages.get(messageId);
      if (view) {
        view.reply = resumed(view.reply);
      }
      connection.send({ type: 'RESUME', messageId, afterSeq: view ? view.reply.lastSeq : 0 });
    }
    for (const messageId of this.stopWanted) {
      connection.send({ type: 'STOP_GENERATING', messageId });
    }
    this.stopWanted.clear();
    connection.send({ type: 'SUBSCRIBE', conversationId: this.conversationId });
  }

  private onFrame(frame: ServerFrame): void {
    if (frame.type === 'ERROR') {
      this.onError(frame);
      return;
    }
    if (frame.conversationId !== this.conversationId) {
      return; // another conversation's (this view followed it before)
    }
    switch (frame.type) {
      case 'MESSAGE_CHUNK':
        this.onChunk(frame);
        break;
      case 'MESSAGE_ACCEPTED':
        this.onAccepted(frame);
        break;
      case 'HISTORY':
        this.onHistory(frame);
        this.historyOf = frame.conversationId;
        this.updateEmpty();
        break;
      case 'HISTORY_PAGE':
        this.onHistoryPage(frame);
        break;
    }
  }

  private onAccepted(frame: MessageAccepted): void {
    const pending = this.pending.get(frame.clientMessageId);
    this.pending.delete(frame.clientMessageId);
    const known = this.messages.get(frame.userMessageId);
    if (pending && known && known !== pending.view) {
      pending.view.el.remove(); // the snapshot already brought it in while we were away
    } else if (pending) {
      pending.view.setId(frame.userMessageId);
      pending.view.setStatus('complete');
      this.messages.set(frame.userMessageId, pending.view);
    } else if (!known) {
      // Sent elsewhere: another tab, or the kernel's Python.
      const view = new MessageView('user', frame.userMessageId, 'complete', this.createRenderer);
      view.setText(frame.text ?? '');
      this.messages.set(frame.userMessageId, view);
      this.observe(view);
      this.insert(view);
    }
    if (!this.messages.has(frame.messageId)) {
      this.addReply(frame.messageId, frame.agentId);
    }
    this.updateBusy();
  }

  private onChunk(frame: MessageChunk): void {
    const view = this.messages.get(frame.messageId) ??
      this.addReply(frame.messageId, frame.agentId);
    this.applyReply(view, applyChunk(view.reply, frame)); // it grows: see `onGrowth`
  }

  /** The latest messages: merged into what is shown (after a reconnect, most are known). */
  private onHistory(frame: History): void {
    const shown = this.messages.size > 0;
    if (shown && frame.hasMore && !frame.messages.some(m => this.messages.has(m.messageId))) {
      // More came while we were away than one HISTORY holds: what we show no longer joins
      // up with it, so start again from the latest (messages being sent stay).
      this.clearShown();
    }
    for (const message of frame.messages) {
      const view = this.messages.get(message.messageId) ?? this.storedView(message);
      if (!view.el.isConnected) {
        this.insert(view);
      }
      this.mergeStored(view, message);
    }
    // `hasMore` speaks of messages older than the HISTORY's first: it is ours to keep only if
    // that is the oldest we show (after a reconnect we may show older pages already).
    if (!shown || this.oldestShown() === (frame.messages[0]?.messageId ?? null)) {
      this.earlier.reset(frame.hasMore ?? false);
    }
    // The latest messages: the last of them tells which agent the conversation last used.
    this.lastAgent = lastUsed(frame.messages);
    this.chooseAgent(this.agentOpened); // the first opens the conversation with its last agent
    this.agentOpened = true;
    this.updateBusy();
    this.followBottom();
    this.earlier.onContent();
  }

  /** Older messages, asked for when the user scrolled to the top: shown above the others. */
  private onHistoryPage(frame: HistoryPage): void {
    if (!this.earlier.answers(frame.beforeMessageId)) {
      return; // an answer to a request of an earlier connection or conversation
    }
    const added: HTMLElement[] = [];
    const merges: [MessageView, StoredMessage][] = [];
    for (const message of frame.messages) {
      let view = this.messages.get(message.messageId);
      if (!view) {
        view = this.storedView(message);
        added.push(view.el);
      }
      merges.push([view, message]);
    }
    // Filled before they are put in, so the place kept below counts what they show at once.
    for (const [view, message] of merges) {
      this.mergeStored(view, message);
    }
    this.earlier.prepend(added, frame.hasMore);
    this.updateBusy();
    this.earlier.onContent();
  }

  private onError(frame: ErrorFrame): void {
    const pending = frame.clientMessageId ? this.pending.get(frame.clientMessageId) : undefined;
    if (pending) {
      this.pending.delete(frame.clientMessageId!);
      pending.view.fail(frame.code === 'unknown_agent'
        ? `Not sent: ${frame.message}`
        : frame.code === 'conversation_deleted'
          ? 'Not sent: this conversation has been deleted.'
          : `Not sent: ${frame.message} (${frame.code})`);
      this.updateBusy();
      return;
    }
    if (frame.conversationId && frame.conversationId !== this.conversationId) {
      return;
    }
    if (frame.code === 'unknown_message' && this.earlier.refused(frame.messageId)) {
      return; // the oldest message shown is gone from the server: there is nothing before it
    }
    const reply = frame.messageId ? this.messages.get(frame.messageId) : undefined;
    if (reply && reply.role === 'assistant' && frame.code === 'unknown_message') {
      if (this.streaming.delete(reply.messageId)) {
        this.announce(ENDED.error);
      }
      reply.fail('This reply is no longer stored on the server.');
      this.updateBusy();
      return;
    }
    this.showNotice(`The chat server reported a problem: ${frame.message}`);
  }

  // -- messages ------------------------------------------------------------------------------

  /** A view for a stored message not shown yet (not placed in the list). */
  private storedView(message: StoredMessage): MessageView {
    const view = new MessageView(message.role, message.messageId,
      message.role === 'assistant' ? 'streaming' : message.status, this.createRenderer);
    view.showOrigin(message.agentId, createdAt(message));
    this.messages.set(message.messageId, view);
    this.observe(view);
    return view;
  }

  /** Take in a stored copy of a message (from HISTORY or HISTORY_PAGE). */
  private mergeStored(view: MessageView, message: StoredMessage): void {
    if (view.role === 'user') {
      if (!view.text) {
        view.setText(message.text);
      }
      return;
    }
    this.applyReply(view, applyStored(view.reply, message));
  }

  /** Show one step of a reply's reducer, and do what it asks of the connection. */
  private applyReply(view: MessageView, step: ReplyStep): void {
    view.apply(step);
    if (step.resumeFrom !== null) {
      this.connection?.send({ type: 'RESUME', messageId: view.messageId, afterSeq: step.resumeFrom });
    }
    if (isEnded(view.reply)) {
      // Only a reply seen streaming is announced, not each one a reload brings in ended.
      if (this.streaming.delete(view.messageId) && step.ended) {
        this.announce(ENDED[view.reply.status]);
      }
    } else {
      this.streaming.add(view.messageId);
    }
    if (step.ended) {
      this.updateBusy();
    }
  }

  /** Forget every message shown except those still being sent. */
  private clearShown(): void {
    this.earlier.forget();
    for (const view of this.messages.values()) {
      this.growth.unobserve(view.el);
      view.el.remove();
    }
    this.messages.clear();
    this.streaming.clear();
  }

  /** The id of the oldest message shown, which LOAD_HISTORY pages back from. */
  private oldestShown(): string | null {
    for (const node of Array.from(this.list.children)) {
      const id = (node as HTMLElement).dataset.messageId;
      if (id) {
        return id;
      }
    }
    return null;
  }

  // -- DOM upkeep ----------------------------------------------------------------------------

  /** A reply that starts now, live: its time is now. */
  private addReply(messageId: string, agentId: string): MessageView {
    const view = new MessageView('assistant', messageId, 'streaming', this.createRenderer);
    view.showOrigin(agentId, new Date());
    this.agentUsed(agentId);
    this.messages.set(messageId, view);
    this.streaming.add(messageId);
    this.observe(view);
    this.insert(view);
    return view;
  }

  /** Follow the growth of a message (see `growth`). */
  private observe(view: MessageView): void {
    this.growth.observe(view.el);
  }

  /** Say `text` once through the status region. Emptied first, and filled a moment later, so
   * the same words said twice in a row are read twice. */
  private announce(text: string): void {
    if (!text) {
      return;
    }
    clearTimeout(this.announceTimer);
    this.announcer.textContent = '';
    this.announceTimer = window.setTimeout(() => {
      this.announcer.textContent = text;
    }, 100);
  }

  /** New messages go after the known ones and before our own messages still being sent. */
  private insert(view: MessageView): void {
    let before: Element | null = null;
    if (view.role === 'assistant' || view.status !== 'pending') {
      for (const { view: p } of this.pending.values()) {
        if (p !== view && p.el.isConnected) {
          before = p.el;
          break;
        }
      }
    }
    this.list.insertBefore(view.el, before);
    this.followBottom();
  }

  private showSnapshot(snapshot: SnapshotMessage[]): void {
    for (const message of snapshot) {
      const view = new MessageView(message.role, message.messageId, 'streaming', this.createRenderer);
      view.showOrigin(message.agentId ?? '', null);
      view.setText(message.text);
      if (message.role === 'assistant' && typeof message.reasoning === 'string' &&
          message.reasoning) {
        view.showReasoning(message.reasoning);
      }
      if (message.role === 'assistant' && FINAL.has(message.status)) {
        view.end(message.status as Status, undefined, snapshotUsage(message.usage));
      } else {
        view.setStatus(message.status);
      }
      this.observe(view);
      this.list.append(view.el);
    }
    this.followBottom();
  }

  /** The note of an empty conversation shows once its HISTORY has come with no message and
   * none is being sent (not while it loads, nor offline); the first message takes its place. */
  private updateEmpty(): void {
    const empty = this.historyOf === this.conversationId &&
      this.list.querySelector(':scope > .streamchat-message') === null;
    this.emptyNote.hidden = !empty;
    this.root.classList.toggle('streamchat-is-empty', empty);
  }

  private updateBusy(): void {
    const busy = this.streaming.size > 0 || this.pending.size > 0;
    this.typing.hidden = !busy;
    this.stopButton.hidden = this.streaming.size === 0;
  }

  private setConnection(state: ConnectionState, problem: string): void {
    this.root.dataset.connection = state;
    this.status.textContent = state === 'connected' ? '' : state === 'offline' ? 'offline' : 'reconnecting…';
    this.showNotice(state === 'connected' ? this.agentProblem : problem);
  }

  private showNotice(text: string): void {
    this.notice.textContent = text;
    this.notice.hidden = !text;
  }

  private async loadAgents(server: ServerSettings): Promise<void> {
    let agents: AgentInfo[] = [];
    try {
      const response = await fetch(new URL('streamchat/api/agents', server.baseUrl).href, {
        headers: authHeaders(server),
        credentials: 'same-origin'
      });
      if (response.ok) {
        const body = await response.json();
        agents = Array.isArray(body.agents) ? body.agents : [];
        // The server's limit on a message, where it says it (otherwise the documented default).
        const limit = body.maxMessageBytes;
        if (this.connection !== null && Number.isSafeInteger(limit) && limit > 0) {
          this.connection.maxMessageBytes = limit;
        }
      }
    } catch {
      // The connection reports unreachable servers; the picker keeps the configured agent.
    }
    this.picker.replaceChildren();
    for (const agent of agents) {
      const option = document.createElement('option');
      option.value = agent.id;
      option.textContent = agent.name || agent.id;
      option.title = agent.description;
      this.picker.append(option);
    }
    this.agentsLoaded = true;
    this.selectAgent();
  }

  private selectAgent(): void {
    const known = Array.from(this.picker.options).some(o => o.value === this.agentId);
    if (!known && this.agentId) {
      const option = document.createElement('option');
      option.value = this.agentId;
      option.textContent = `${this.agentId} (not on this server)`;
      this.picker.append(option);
    }
    this.picker.value = this.agentId;
    const available = this.picker.options.length > (known ? 0 : 1);
    this.agentProblem = !known && available
      ? `The agent "${this.agentId}" is not available on this server; pick another.`
      : '';
    if (this.root.dataset.connection === 'connected') {
      this.showNotice(this.agentProblem);
    }
  }

  private onScroll = (): void => {
    const top = this.list.scrollTop;
    const atBottom = this.list.scrollHeight - top - this.list.clientHeight < 24;
    // Growing content never lowers scrollTop; only the user does.
    if (atBottom) {
      this.stick = true;
    } else if (top < this.lastScrollTop - 2) {
      this.stick = false;
    }
    this.lastScrollTop = top;
    this.earlier.onScroll();
  };

  /** A message grew. Called after layout and before paint: the list's height is known without
   * laying it out again, and the new bottom shows in the same frame. */
  private onGrowth = (): void => {
    if (this.stick) {
      this.list.scrollTop = this.list.scrollHeight;
      this.lastScrollTop = this.list.scrollTop;
    }
  };

  /** Keep to the bottom, once per animation frame, unless the user has scrolled up. */
  private followBottom(): void {
    if (!this.stick || this.scrollQueued) {
      return;
    }
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      if (this.stick) {
        this.list.scrollTop = this.list.scrollHeight;
        this.lastScrollTop = this.list.scrollTop;
      }
    });
  }
}

