// The chat view: one conversation, its messages, an input, and the hub connection.
//
// It depends on the DOM and the wire contract only (no anywidget, no `@jupyterlab/*`), so the
// notebook widget and a sidebar panel mount the same view. What the conversation holds, and
// what goes to the hub when, is the DOM-free model's (conversation.ts); this view draws it.
// DOM test hooks follow the design notes: `data-testid="streamchat"` on the root (with
// `data-connection`), `streamchat-input`, `-send`, `-stop`, `-typing` (in whose place
// `-approval-wait` shows while a tool call waits for the user), and `streamchat-message`
// with `data-role`, `data-status` and `data-message-id` on every message (its text alone in
// `streamchat-message-text`, see message.ts); `streamchat-empty-chat` is the note of a
// conversation without messages (what to do: pick an agent, type, press Enter).
//
// The agent picker lists the server's agents (REST, or the transport's own way) and follows
// AGENTS_CHANGED live; a chosen agent that goes away stays shown, as unavailable.
//
// Keyboard: the input takes Enter (send), Shift+Enter (a new line) and, while a reply is being
// generated, Escape (stop it). Every other key goes on to the page, so the host's shortcuts
// (JupyterLab's Save, command palette, tab switching, ...) work while the input has focus.
// Typing `@` opens the context picker (context.ts): while it is open, the arrows, Enter, Tab
// and Escape are its. What is attached shows as chips above the input and on the message.
// Screen readers: the message list is a polite `log`; a reply is `aria-busy` while it streams,
// and how it ended is said once through a visually hidden status region.

import {
  agentOptions,
  AgentChoice,
  chooseAgent,
  chosenAt,
  HostAgent,
  LastUsed,
  lastUsed
} from './agentchoice';
import { ConnectionState, HubConnection } from './connection';
import {
  Attachment,
  ContextPicker,
  ContextSource,
  ContextTray,
  fitContext,
  registeredContextSources,
  showContext
} from './context';
import {
  Conversation,
  ConversationObserver,
  HeldMessage,
  OutgoingSend,
  wholeStep
} from './conversation';
import { el, randomId } from './dom';
import type { CodeBlockOptions } from './decorate';
import { ImagePolicy, loadAllowed } from './images';
import { BodyRenderer, StreamingMarkdown } from './markdown';
import { MessageView } from './message';
import { EarlierMessages } from './paging';
import {
  AgentInfo,
  ContextItem,
  DEFAULT_MAX_MESSAGE_BYTES,
  FINAL,
  History,
  idProblem,
  ServerFrame,
  Status,
  Usage,
  utf8Length
} from './protocol';
import type { ReplyStep } from './reply';
import { ServerSettings, serverRequest } from './server';
import type { Connect, Transport } from './transport';

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
  /** The hub's server; null when the page has none (the view then says so, unless `connect`
   * gives it another way). */
  server: ServerSettings | null;
  /** The host's own way to the hub, used instead of a WebSocket to `server` (the notebook
   * widget's comm through the kernel, where the page's server runs no hub). */
  connect?: Connect;
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
  /** What typing `@` in the input offers to attach (context.ts); absent, the sources the
   * page's host registered. */
  contextSources?: ContextSource[];
}

/** What the status region says when a reply the user watched stream ends. */
const ENDED: Record<Status, string> = {
  streaming: '',
  complete: 'Reply complete',
  stopped: 'Reply stopped',
  interrupted: 'Reply interrupted',
  error: 'Reply failed'
};

export class ChatView {
  readonly root: HTMLElement;
  private readonly model: Conversation;
  private agentId: string; // the agent the next message goes to: `chooseAgent`'s answer
  private hostAgent: HostAgent;
  private pickedAgent: string | null = null; // picked in this view, for this conversation
  private lastAgent: LastUsed | null = null; // of the conversation's latest message
  private agentOpened = false; // the conversation's first HISTORY chose its agent
  private readonly agentNote: HTMLElement;
  private agentsLoaded = false; // the picker lists the server's agents
  private agents: AgentInfo[] = []; // the server's agents, as last told
  private agentsChanged = 0; // AGENTS_CHANGED frames seen: newer than a REST answer under way
  private readonly createRenderer: (el: HTMLElement) => BodyRenderer;
  private readonly list: HTMLElement;
  private readonly typing: HTMLElement;
  /** Says, instead of the typing dots, that a reply waits for the user to answer a tool call. */
  private readonly approvalWait: HTMLElement;
  private readonly emptyNote: HTMLElement; // what to do, while the conversation has no message
  private historyOf: string | null = null; // the conversation whose HISTORY came last
  private readonly announcer: HTMLElement;
  private readonly notice: HTMLElement;
  private readonly status: HTMLElement;
  private readonly picker: HTMLSelectElement;
  private readonly input: HTMLTextAreaElement;
  private readonly sendButton: HTMLButtonElement;
  private readonly stopButton: HTMLButtonElement;
  // Above the input: what the next message takes along, and the `@` picker (context.ts).
  private readonly contextArea: HTMLElement;
  private readonly contextTray: ContextTray;
  private readonly contextPicker: ContextPicker;
  private connection: Transport | null = null;
  private transportNote: HTMLElement | null = null; // what the transport cannot do, if anything
  /** Why the server would refuse this conversation's id, or null when it would not. */
  private conversationProblem: string | null = null;
  private readonly images: ImagePolicy;
  private readonly earlier: EarlierMessages;
  private messages = new Map<string, MessageView>(); // held messages, by message id
  private sent = new Map<string, MessageView>(); // sends not accepted yet, by clientMessageId
  private agentProblem = '';
  private stick = true; // follow new text unless the user scrolled up
  private lastScrollTop = 0;
  private scrollQueued = false;
  // Messages grow as text streams in, and after they are put in (markdown renders over several
  // frames, images load): while the view follows the bottom, each growth scrolls it down again.
  private readonly growth: ResizeObserver;
  private announceTimer = 0;

  constructor(
    host: HTMLElement,
    private readonly options: ChatViewOptions
  ) {
    this.model = new Conversation(options.conversationId, this.observer);
    this.agentId = options.agentId;
    this.hostAgent = { agentId: options.agentId, chosenAt: chosenAt(options.agentChosenAt) };
    this.images = new ImagePolicy(options.imageHosts ?? []);
    const code: CodeBlockOptions = { onInsertCode: options.onInsertCode };
    this.createRenderer =
      options.createRenderer ?? (body => new StreamingMarkdown(body, this.images, code));

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
    this.earlier = new EarlierMessages(this.list, () => this.model.loadOlder());
    this.list.append(this.earlier.marker);
    this.typing = el('div', 'streamchat-typing', 'streamchat-typing');
    this.typing.setAttribute('role', 'img');
    this.typing.setAttribute('aria-label', 'The agent is typing');
    this.typing.append(el('span', ''), el('span', ''), el('span', ''));
    this.typing.hidden = true;
    this.approvalWait = el('div', 'streamchat-approval-wait', 'streamchat-approval-wait');
    this.approvalWait.textContent = 'Waiting for your approval';
    this.approvalWait.hidden = true;
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
    this.contextArea = el('div', 'streamchat-context-area');
    this.contextTray = new ContextTray(() => this.updateContextArea());
    this.contextPicker = new ContextPicker(
      this.input,
      () => this.options.contextSources ?? registeredContextSources(),
      attachment => this.attachContext([attachment]),
      problem => this.showNotice(problem),
      () => this.updateContextArea()
    );
    this.contextArea.append(this.contextTray.el, this.contextPicker.el);
    this.contextArea.hidden = true;
    // A conversation without messages says what to do (see `updateEmpty`).
    this.emptyNote = el('div', 'streamchat-empty', 'streamchat-empty-chat');
    const emptyTitle = el('p', 'streamchat-empty-title');
    emptyTitle.textContent = 'Ask anything';
    const emptyHint = el('p', 'streamchat-empty-hint');
    emptyHint.textContent =
      'Pick an agent above, type your message below and press Enter (Shift+Enter adds a line).';
    this.emptyNote.append(emptyTitle, emptyHint);
    this.emptyNote.hidden = true;
    this.root.append(
      header,
      this.agentNote,
      this.notice,
      this.list,
      this.emptyNote,
      this.typing,
      this.approvalWait,
      this.announcer,
      this.contextArea,
      footer
    );
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

    if (options.server === null && !options.connect) {
      this.showSnapshot(options.snapshot ?? []);
      this.setConnection(
        'offline',
        'Cannot reach a streamchat server: this page is not served by a Jupyter server. ' +
          'Open the notebook in JupyterLab with jupyter-streamchat installed to chat.'
      );
      this.input.disabled = this.sendButton.disabled = this.picker.disabled = true;
      return;
    }
    this.conversationProblem = idProblem(this.model.conversationId);
    if (this.conversationProblem !== null) {
      this.refuseConversation();
    } else {
      this.connect(options.server);
    }
  }

  private connect(server: ServerSettings | null): void {
    this.setConnection('reconnecting', 'Connecting…');
    const handlers = {
      onFrame: (frame: ServerFrame) => this.model.receive(frame),
      onOpen: () => this.model.opened(),
      onState: (state: ConnectionState, problem: string) => {
        this.setConnection(state, problem);
        if (state !== 'connected') {
          this.model.closed();
        }
      }
    };
    this.connection = this.options.connect?.(handlers) ?? new HubConnection(server!, handlers);
    this.model.attach(this.connection);
    if (this.connection.note && this.transportNote === null) {
      // One quiet line under the input, for as long as the view lives.
      this.transportNote = el('div', 'streamchat-transport-note', 'streamchat-transport-note');
      this.transportNote.textContent = this.connection.note;
      this.root.append(this.transportNote);
    }
    void this.loadAgents(server);
  }

  /** The conversation's id is one the server would refuse (too long, not a string, not valid
   * Unicode: a notebook may come from anyone): say so, and open no socket to send it. */
  private refuseConversation(): void {
    this.connection?.close();
    this.connection = null;
    this.model.attach(null);
    this.setConnection(
      'offline',
      `This chat cannot be shown: its conversation id ${this.conversationProblem}.`
    );
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
    if (conversationId === this.model.conversationId) {
      return;
    }
    const wasRefused = this.conversationProblem !== null;
    this.conversationProblem = idProblem(conversationId);
    // Subscribed at once on a connection that stays; a new one subscribes once open.
    this.model.setConversation(conversationId, !wasRefused && this.conversationProblem === null);
    this.messages.clear();
    this.sent.clear();
    this.earlier.setLoading(false);
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
    } else if (wasRefused && (this.options.server !== null || this.options.connect)) {
      this.input.disabled = this.sendButton.disabled = this.picker.disabled = false;
      this.connect(this.options.server); // subscribes once open
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
      const at = Math.max(
        Date.now() / 1000,
        (this.hostAgent.chosenAt ?? 0) + 0.001,
        this.lastAgent?.at ?? 0
      );
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
    if (this.options.server === null && !this.options.connect) {
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
    if (this.contextPicker.onKeyDown(event)) {
      return; // the `@` list is open: arrows, Enter, Tab and Escape are its
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
    } else if (
      event.key === 'Escape' &&
      !modified &&
      !event.shiftKey &&
      this.model.streamingCount > 0
    ) {
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
    const context = this.contextFor(text);
    if (context === null) {
      this.showNotice('Not sent: what is attached does not fit in one message; remove some.');
      return;
    }
    // What the server is certain to refuse is refused here, the text left in the input. If
    // offline, the message goes once the connection opens (the hub is idempotent on its id).
    const problem = this.model.send(text, this.agentId, undefined, context);
    if (problem !== null) {
      this.showNotice(`Not sent: ${problem}`);
      return;
    }
    this.input.value = '';
    this.contextPicker.close();
    this.contextTray.clear();
    this.stick = true; // your own message always scrolls into view
    this.followBottom();
  }

  /** What is attached, as it goes with `text` now: read again where it can be, and cut so
   * that the whole frame stays within the server's limit. Undefined when nothing is attached;
   * null when it cannot fit. */
  private contextFor(text: string): ContextItem[] | null | undefined {
    if (this.contextTray.count === 0) {
      return undefined;
    }
    const limit = this.connection?.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const frame = {
      type: 'SEND_MESSAGE',
      conversationId: this.model.conversationId,
      agentId: this.agentId,
      text,
      clientMessageId: randomId(),
      context: []
    };
    const room = limit - utf8Length(JSON.stringify(frame)) - 64;
    return room > 0 ? fitContext(this.contextTray.snapshot(), room) : null;
  }

  /** Attach things to the next message (as the `@` picker does; a host's "Ask about this
   * error" too). */
  attachContext(attachments: Attachment[]): void {
    for (const attachment of attachments) {
      const problem = this.contextTray.add(attachment);
      if (problem !== null) {
        this.showNotice(problem);
        break;
      }
    }
  }

  /** The context area shows while something is attached or the picker is open. */
  private updateContextArea(): void {
    this.contextArea.hidden = this.contextTray.count === 0 && this.contextPicker.el.hidden;
  }

  private stop(): void {
    this.model.stop();
  }

  // -- what the model tells ------------------------------------------------------------------

  private readonly observer: ConversationObserver = {
    sending: send => this.onSending(send),
    added: (message, send) => this.onAdded(message, send),
    dropped: send => {
      // A HISTORY brought the message in while we were away: its own element shows it.
      const view = this.sent.get(send.clientMessageId);
      this.sent.delete(send.clientMessageId);
      if (view !== undefined) {
        this.growth.unobserve(view.el);
        view.el.remove();
      }
    },
    refused: send => this.onRefused(send),
    updated: (message, step, announce) => this.onUpdated(message, step, announce),
    lost: (message, announce) => {
      this.messages.get(message.messageId)?.fail('This reply is no longer stored on the server.');
      if (announce) {
        this.announce(ENDED.error);
      }
    },
    cleared: () => this.clearShown(),
    history: frame => this.onHistory(frame),
    older: messages => this.onOlder(messages),
    problem: frame => this.showNotice(`The chat server reported a problem: ${frame.message}`),
    agents: agents => {
      this.agentsChanged++;
      this.setAgents(agents);
    },
    settled: () => {
      this.updateBusy();
      this.earlier.setLoading(this.model.loadingOlder);
    }
  };

  /** The user's message, shown as pending (last: after every message held) until accepted. */
  private onSending(send: OutgoingSend): void {
    const view = new MessageView('user', '', 'pending', this.createRenderer);
    view.setText(send.frame.text);
    showContext(view.el, send.frame.context);
    this.observe(view);
    this.sent.set(send.clientMessageId, view);
    this.list.append(view.el);
    this.followBottom();
  }

  private onRefused(send: OutgoingSend): void {
    const view = this.sent.get(send.clientMessageId);
    this.sent.delete(send.clientMessageId); // stays shown where it is, failed
    const code = send.error?.code ?? '';
    view?.fail(
      code === 'unknown_agent'
        ? `Not sent: ${send.error?.message}`
        : code === 'conversation_deleted'
          ? 'Not sent: this conversation has been deleted.'
          : `Not sent: ${send.error?.message} (${code})`
    );
  }

  /** A message now held: the user's own (its pending element becomes the message), or a new
   * one, drawn from what is held of it. */
  private onAdded(message: HeldMessage, send: OutgoingSend | null): void {
    let view = send !== null ? this.sent.get(send.clientMessageId) : undefined;
    if (send !== null) {
      this.sent.delete(send.clientMessageId);
    }
    if (view !== undefined) {
      view.setId(message.messageId);
      view.setStatus(message.status);
    } else {
      view = this.drawn(message);
    }
    this.messages.set(message.messageId, view);
    this.place(view, message);
    if (message.live && message.role === 'assistant') {
      this.agentUsed(message.agentId);
    }
  }

  /** A new view of a held message, showing all it holds so far. */
  private drawn(message: HeldMessage): MessageView {
    const view = new MessageView(
      message.role,
      message.messageId,
      message.role === 'assistant' ? 'streaming' : message.status,
      this.createRenderer
    );
    view.showOrigin(message.agentId, message.createdAt);
    if (message.role === 'user') {
      view.setText(message.text);
      showContext(view.el, message.context);
    } else {
      // Its tool-call cards answer a waiting call through the model.
      view.toolActions = {
        answer: (toolCallId, decision) =>
          this.model.answer(message.messageId, toolCallId, decision),
        answered: toolCallId => this.model.answered(message.messageId, toolCallId)
      };
      view.apply(wholeStep(message.state));
    }
    this.observe(view);
    return view;
  }

  private onUpdated(message: HeldMessage, step: ReplyStep, announce: boolean): void {
    const view = this.messages.get(message.messageId);
    if (view === undefined) {
      return;
    }
    if (message.role === 'user') {
      view.setText(message.text);
      return;
    }
    view.apply(step); // it grows: see `onGrowth`
    if (announce) {
      this.announce(ENDED[message.status]);
    }
  }

  /** The latest messages were merged in (the model placed and drew them). */
  private onHistory(frame: History): void {
    this.historyOf = frame.conversationId;
    // The latest messages: the last of them tells which agent the conversation last used.
    this.lastAgent = lastUsed(frame.messages);
    this.chooseAgent(this.agentOpened); // the first opens the conversation with its last agent
    this.agentOpened = true;
    this.updateEmpty();
    this.followBottom();
    // At the next frame, with the frame's own layout: measured now, the list would be laid out
    // here too, all of it, in the task that just built it.
    requestAnimationFrame(() => this.earlier.onContent());
  }

  /** Older messages, asked for when the user scrolled to the top: shown above the others. */
  private onOlder(messages: HeldMessage[]): void {
    const added: HTMLElement[] = [];
    for (const message of messages) {
      // Filled before they are put in, so the place kept below counts what they show at once.
      const view = this.drawn(message);
      this.messages.set(message.messageId, view);
      added.push(view.el);
    }
    this.earlier.prepend(added);
    this.earlier.onContent();
  }

  // -- messages ------------------------------------------------------------------------------

  /** Forget every message shown except the user's sends. */
  private clearShown(): void {
    this.earlier.forget();
    for (const view of this.messages.values()) {
      this.growth.unobserve(view.el);
      view.el.remove();
    }
    this.messages.clear();
  }

  // -- DOM upkeep ----------------------------------------------------------------------------

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

  /** Put a held message's element at its place in the model's order: before the next held
   * message shown, else before the user's messages still being sent, else last. An element
   * already in order stays (it is never moved needlessly: moving resets what it shows). */
  private place(view: MessageView, message: HeldMessage): void {
    const held = this.model.messages;
    let before: Element | null = null;
    for (let i = held.indexOf(message) + 1; i < held.length && before === null; i++) {
      const next = this.messages.get(held[i].messageId);
      before = next?.el.isConnected ? next.el : null;
    }
    if (before === null) {
      for (const pending of this.sent.values()) {
        if (pending.el.isConnected) {
          before = pending.el;
          break;
        }
      }
    }
    const misplaced =
      !view.el.isConnected ||
      (before !== null &&
        (view.el.compareDocumentPosition(before) & Node.DOCUMENT_POSITION_PRECEDING) !== 0);
    if (misplaced) {
      this.list.insertBefore(view.el, before);
    }
    this.followBottom();
  }

  private showSnapshot(snapshot: SnapshotMessage[]): void {
    for (const message of snapshot) {
      const view = new MessageView(
        message.role,
        message.messageId,
        'streaming',
        this.createRenderer
      );
      view.showOrigin(message.agentId ?? '', null);
      view.setText(message.text);
      if (
        message.role === 'assistant' &&
        typeof message.reasoning === 'string' &&
        message.reasoning
      ) {
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
    const empty =
      this.historyOf === this.model.conversationId &&
      this.list.querySelector(':scope > .streamchat-message') === null;
    this.emptyNote.hidden = !empty;
    this.root.classList.toggle('streamchat-is-empty', empty);
  }

  private updateBusy(): void {
    const streaming = this.model.streamingCount;
    const waiting = this.model.waitingCount > 0;
    this.typing.hidden = (streaming === 0 && this.model.pendingCount === 0) || waiting;
    this.approvalWait.hidden = !waiting;
    this.stopButton.hidden = streaming === 0;
  }

  private setConnection(state: ConnectionState, problem: string): void {
    this.root.dataset.connection = state;
    this.status.textContent =
      state === 'connected' ? '' : state === 'offline' ? 'offline' : 'reconnecting…';
    this.showNotice(state === 'connected' ? this.agentProblem : problem);
  }

  private showNotice(text: string): void {
    this.notice.textContent = text;
    this.notice.hidden = !text;
  }

  private async loadAgents(server: ServerSettings | null): Promise<void> {
    const changedBefore = this.agentsChanged;
    let agents: AgentInfo[] = [];
    try {
      let body: { agents?: unknown; maxMessageBytes?: unknown } | null = null;
      if (this.connection?.listAgents) {
        body = await this.connection.listAgents(); // its own way: the kernel's comm has no REST
      } else if (server !== null) {
        const response = await serverRequest(server, 'streamchat/api/agents');
        body = response.ok ? await response.json() : null;
      }
      if (body !== null) {
        agents = Array.isArray(body.agents) ? body.agents : [];
        // The server's limit on a message, where it says it (otherwise the documented default).
        const limit = body.maxMessageBytes;
        if (this.connection !== null && Number.isSafeInteger(limit) && (limit as number) > 0) {
          this.connection.maxMessageBytes = limit as number;
        }
      }
    } catch {
      // The connection reports unreachable servers; the picker keeps the configured agent.
    }
    if (this.agentsChanged === changedBefore) {
      this.setAgents(agents); // else an AGENTS_CHANGED came meanwhile, and it is newer
    }
  }

  /** The server's agents, as REST or AGENTS_CHANGED tell: the picker lists them, keeping the
   * agent chosen (see `agentOptions`). */
  private setAgents(agents: AgentInfo[]): void {
    this.agents = agents;
    this.agentsLoaded = true;
    this.selectAgent();
  }

  private selectAgent(): void {
    const { options, problem } = agentOptions(this.agents, this.agentId);
    // Rebuilt only when it changed: a list the user has open stays as it is otherwise.
    const shown = Array.from(this.picker.options);
    const same =
      shown.length === options.length &&
      options.every(
        (option, i) =>
          shown[i].value === option.value &&
          shown[i].textContent === option.label &&
          shown[i].title === option.title &&
          shown[i].disabled === option.unavailable
      );
    if (!same) {
      this.picker.replaceChildren(
        ...options.map(option => {
          const node = document.createElement('option');
          node.value = option.value;
          node.textContent = option.label;
          node.title = option.title;
          // Still chosen, and shown so; the user can pick another, not pick it again.
          node.disabled = option.unavailable;
          if (option.unavailable) {
            node.dataset.unavailable = 'true';
          }
          return node;
        })
      );
    }
    this.picker.value = this.agentId;
    this.agentProblem = problem;
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
