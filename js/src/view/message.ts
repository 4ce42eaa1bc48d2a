// One message on screen: its element with the DOM test hooks, and its body, which an
// assistant message feeds to a BodyRenderer chunk by chunk (user text shows as typed).
// What a reply holds (text, reasoning, last seq, status, usage) is a `ReplyState`; the rules
// that change it are in reply.ts, and this class only shows their outcome.
//
// A reply's reasoning shows above its answer in a "Thinking" section (`<details>`,
// `data-testid="streamchat-thinking"`): open while only reasoning has come, so the user sees
// the model think, and folded by itself once the answer starts, unless the user has opened or
// closed it by hand. Once the reply has ended, its usage shows as one quiet line under it
// (`data-testid="streamchat-usage"`).
//
// The body (`data-testid="streamchat-message-text"`) holds the message's text alone: a user's
// as typed, a reply's answer as rendered.
//
// A reply's tool calls show as cards (toolcalls.ts) in a container of their own, between the
// thinking and the answer. While one waits for the user's answer the message is
// `data-waiting="true"`.
//
// An assistant message opens with a small header: the agent that wrote it and when
// (`data-testid="streamchat-message-meta"`). Every message has a "Copy as Markdown" button
// (`streamchat-copy-message`) that copies its text as written. A reply still streaming is
// `aria-busy`, so screen readers wait for its end rather than read every token.

import { actionButton, copyWithFeedback } from './actions';
import type { BodyRenderer } from './markdown';
import type { Status, ToolCallState, Usage } from './protocol';
import { endedHere, isEnded, NEW_REPLY, ReplyState, ReplyStep } from './reply';
import { ToolCallActions, ToolCallsView } from './toolcalls';
import { describeUsage } from './usage';

/** The reasoning of one reply, as a collapsible section. */
class ThinkingView {
  readonly el: HTMLDetailsElement;
  private readonly text = document.createTextNode('');
  private readonly scroller: HTMLElement;
  /** The user opened or closed it: it stays as they left it. */
  private userChose = false;
  /** Keep the newest thoughts in view while they stream, unless the user scrolled up to read. */
  private stick = true;
  private scrollQueued = false;

  constructor(open: boolean) {
    this.el = document.createElement('details');
    this.el.className = 'streamchat-thinking';
    this.el.dataset.testid = 'streamchat-thinking';
    const summary = document.createElement('summary');
    summary.textContent = 'Thinking';
    // Reasoning is agent output, so untrusted: it shows as plain text, never as markup. A text
    // node that grows in place costs only the new characters per frame.
    this.scroller = document.createElement('div');
    this.scroller.className = 'streamchat-thinking-text';
    this.scroller.append(this.text);
    this.el.append(summary, this.scroller);
    this.el.open = open;
    // Only the user clicks the summary (Enter and Space on it click too). The 'toggle' event
    // would not tell: it also follows our own changes, and merges changes made close together.
    summary.addEventListener('click', () => {
      this.userChose = true;
    });
    // Growing text does not fire 'scroll'; only the user's scrolling (and ours, to the bottom).
    this.scroller.addEventListener('scroll', () => {
      const s = this.scroller;
      this.stick = s.scrollHeight - s.scrollTop - s.clientHeight < 8;
    });
  }

  append(text: string): void {
    this.text.appendData(text);
    if (this.el.open && this.stick && !this.scrollQueued) {
      this.scrollQueued = true;
      requestAnimationFrame(() => {
        this.scrollQueued = false;
        this.scroller.scrollTop = this.scroller.scrollHeight;
      });
    }
  }

  /** Open or fold it, unless the user has chosen. */
  setOpen(open: boolean): void {
    if (!this.userChose) {
      this.el.open = open;
    }
  }

  /** Whether reasoning is still the newest thing coming (the summary then shows it live). */
  setLive(live: boolean): void {
    this.el.classList.toggle('streamchat-thinking-live', live);
  }
}

const ENDINGS: Partial<Record<Status, string>> = {
  stopped: '(Stopped)',
  interrupted: '(Interrupted: the server stopped before the reply was complete.)'
};

// Date formats in the user's locale, made once. The first one a page makes costs tens of
// milliseconds (the browser loads its locale data), so it is made when the page is idle, never
// in the task that shows a reply's first words; later ones cost microseconds.
let formats: { time: Intl.DateTimeFormat; day: Intl.DateTimeFormat; full: Intl.DateTimeFormat };
function dateFormats(): typeof formats {
  formats ??= {
    time: new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' }),
    day: new Intl.DateTimeFormat(undefined, {
      month: 'short',
      day: 'numeric',
      hour: '2-digit',
      minute: '2-digit'
    }),
    full: new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' })
  };
  return formats;
}

const whenIdle = (task: () => void): void => {
  if (typeof requestIdleCallback === 'function') {
    requestIdleCallback(task, { timeout: 1000 });
  } else {
    setTimeout(task, 200);
  }
};

/** A time as the header shows it: the hour alone today, with the day otherwise. */
function shortTime(when: Date, now: Date = new Date()): string {
  const today = when.toDateString() === now.toDateString();
  return (today ? dateFormats().time : dateFormats().day).format(when);
}

export class MessageView {
  readonly el: HTMLElement;
  /** An assistant message's reply as held; a user message keeps only `text`. */
  reply: ReplyState = NEW_REPLY;
  private userText = '';
  private readonly meta: HTMLElement | null = null; // an assistant message's header
  private readonly body: HTMLElement;
  private readonly note: HTMLElement;
  private readonly renderer: BodyRenderer | null;
  private thinking: ThinkingView | null = null; // made when the first reasoning comes
  private answered = false; // visible answer text has come (the thinking then folds)
  private usageLine: HTMLElement | null = null;
  private tools: ToolCallsView | null = null; // made when the first tool call comes
  /** How this reply's cards answer a call that waits (null: they cannot; set before the first
   * tool call shows). */
  toolActions: ToolCallActions | null = null;

  constructor(
    readonly role: 'user' | 'assistant',
    public messageId: string,
    public status: string,
    createRenderer: (el: HTMLElement) => BodyRenderer
  ) {
    this.el = document.createElement('div');
    this.el.className = `streamchat-message streamchat-${role}`;
    this.el.dataset.testid = 'streamchat-message';
    this.el.dataset.role = role;
    const actions = document.createElement('div');
    actions.className = 'streamchat-actions';
    actions.append(
      actionButton({
        testid: 'streamchat-copy-message',
        label: 'Copy',
        name: 'Copy as Markdown',
        icon: 'copy',
        onClick: button => void copyWithFeedback(button, this.text)
      })
    );
    this.body = document.createElement('div');
    this.body.className = 'streamchat-body';
    // The message's own text and nothing else (header, buttons, thinking and usage are its
    // siblings; code-block buttons draw their labels from CSS), for scripts to read exactly.
    this.body.dataset.testid = 'streamchat-message-text';
    this.note = document.createElement('div');
    this.note.className = 'streamchat-note';
    this.note.hidden = true;
    if (role === 'assistant') {
      this.meta = document.createElement('div');
      this.meta.className = 'streamchat-meta';
      this.meta.dataset.testid = 'streamchat-message-meta';
      this.meta.hidden = true; // until the agent is known
      this.el.append(this.meta);
    }
    this.el.append(actions, this.body, this.note);
    this.renderer = role === 'assistant' ? createRenderer(this.body) : null;
    this.setId(messageId);
    this.setStatus(status);
  }

  /** Show which agent wrote this reply and when it began. `time` is null when not known: a
   * stored message without its time shows none, rather than the time it was loaded. */
  showOrigin(agentId: string, time: Date | null): void {
    const meta = this.meta;
    if (meta === null) {
      return;
    }
    meta.replaceChildren();
    if (agentId) {
      const agent = document.createElement('span');
      agent.className = 'streamchat-meta-agent';
      agent.textContent = agentId;
      meta.append(agent);
    }
    meta.hidden = !agentId;
    if (time) {
      const stamp = document.createElement('time');
      stamp.className = 'streamchat-meta-time';
      stamp.dateTime = time.toISOString();
      whenIdle(() => {
        stamp.textContent = shortTime(time);
        stamp.title = dateFormats().full.format(time);
        meta.append(...(meta.childNodes.length ? [' · '] : []), stamp);
        meta.hidden = false;
      });
    }
  }

  get text(): string {
    return this.renderer ? this.reply.text : this.userText;
  }

  setId(messageId: string): void {
    this.messageId = messageId;
    this.el.dataset.messageId = messageId;
  }

  setStatus(status: string): void {
    this.status = status;
    this.el.dataset.status = status;
    if (this.role === 'assistant' && status === 'streaming') {
      this.el.setAttribute('aria-busy', 'true');
    } else {
      this.el.removeAttribute('aria-busy');
    }
  }

  /** Show a user message's text, or (without a server) a snapshot's text. */
  setText(text: string): void {
    if (this.renderer) {
      this.reply = { ...this.reply, text: this.reply.text + text };
      this.renderer.append(text);
      this.answerGrew(text);
    } else {
      this.userText = text;
      this.body.textContent = text; // user text is shown as typed
    }
  }

  /** Show the outcome of one step of the reply's reducer. */
  apply(step: ReplyStep): void {
    this.reply = step.state;
    // The answer first: reasoning that comes with the answer's start shows folded at once.
    if (step.append) {
      this.renderer?.append(step.append);
      this.answerGrew(step.append);
    }
    if (step.appendReasoning) {
      this.showReasoning(step.appendReasoning);
    }
    if (step.toolCalls.length > 0) {
      this.showToolCalls(step.toolCalls);
    }
    if (step.ended) {
      this.end(step.state.status, step.state.error, step.state.usage);
    }
  }

  /** Add reasoning text to the Thinking section (made on the first). */
  showReasoning(text: string): void {
    if (this.thinking === null) {
      this.thinking = new ThinkingView(!this.answered);
      this.thinking.setLive(!this.answered && !isEnded(this.reply));
      this.el.insertBefore(this.thinking.el, this.tools?.el ?? this.body);
    }
    this.thinking.append(text);
  }

  /** Show these tool call states (the container is made on the first). */
  showToolCalls(calls: readonly ToolCallState[]): void {
    if (this.tools === null) {
      this.tools = new ToolCallsView(this.toolActions);
      this.el.insertBefore(this.tools.el, this.body);
    }
    this.tools.show(calls);
    this.showWaiting();
  }

  /** Whether the reply waits for the user to answer a tool call. */
  get waiting(): boolean {
    return !isEnded(this.reply) && (this.tools?.waiting ?? false);
  }

  private showWaiting(): void {
    if (this.waiting) {
      this.el.dataset.waiting = 'true';
    } else {
      delete this.el.dataset.waiting;
    }
  }

  private answerGrew(text: string): void {
    // Blank lines between the reasoning and the answer are not yet an answer to read.
    if (!this.answered && /\S/.test(text)) {
      this.answered = true;
      this.thinking?.setOpen(false);
      this.thinking?.setLive(false);
    }
  }

  end(status: Status, error?: string, usage?: Usage): void {
    void this.renderer?.finish(); // data-status is the wire's; the last blocks may still render
    this.setStatus(status);
    this.thinking?.setLive(false);
    this.showWaiting();
    const ending =
      status === 'error' ? `The agent failed: ${error || 'unknown error'}` : ENDINGS[status];
    if (ending) {
      this.note.textContent = ending;
      this.note.hidden = false;
    }
    if (usage) {
      this.showUsage(usage);
    }
  }

  private showUsage(usage: Usage): void {
    const { line, detail } = describeUsage(usage);
    if (!line) {
      return;
    }
    if (this.usageLine === null) {
      this.usageLine = document.createElement('div');
      this.usageLine.className = 'streamchat-usage';
      this.usageLine.dataset.testid = 'streamchat-usage';
      this.el.append(this.usageLine);
    }
    this.usageLine.textContent = line;
    this.usageLine.title = detail;
  }

  fail(problem: string): void {
    if (this.renderer && !isEnded(this.reply)) {
      this.reply = endedHere(this.reply, 'error'); // no later frame changes it
      void this.renderer.finish();
      this.thinking?.setLive(false);
      if (this.tools !== null) {
        this.showToolCalls(this.reply.toolCalls); // none is left to run
      }
    }
    this.setStatus('error');
    this.note.textContent = problem;
    this.note.hidden = false;
  }
}
