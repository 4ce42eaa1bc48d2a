// One message on screen: its element with the DOM test hooks, and its body, which an
// assistant message feeds to a BodyRenderer chunk by chunk (user text shows as typed).
// What a reply holds (text, last seq, status) is a `ReplyState`; the rules that change it are
// in reply.ts, and this class only shows their outcome.

import type { BodyRenderer } from './markdown';
import type { Status } from './protocol';
import { isEnded, NEW_REPLY, ReplyState, ReplyStep } from './reply';

const ENDINGS: Partial<Record<Status, string>> = {
  stopped: '(Stopped)',
  interrupted: '(Interrupted: the server stopped before the reply was complete.)'
};

export class MessageView {
  readonly el: HTMLElement;
  /** An assistant message's reply as held; a user message keeps only `text`. */
  reply: ReplyState = NEW_REPLY;
  private userText = '';
  private readonly body: HTMLElement;
  private readonly note: HTMLElement;
  private readonly renderer: BodyRenderer | null;

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
    this.body = document.createElement('div');
    this.body.className = 'streamchat-body';
    this.note = document.createElement('div');
    this.note.className = 'streamchat-note';
    this.note.hidden = true;
    this.el.append(this.body, this.note);
    this.renderer = role === 'assistant' ? createRenderer(this.body) : null;
    this.setId(messageId);
    this.setStatus(status);
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
  }

  /** Show a user message's text, or (without a server) a snapshot's text. */
  setText(text: string): void {
    if (this.renderer) {
      this.reply = { ...this.reply, text: this.reply.text + text };
      this.renderer.append(text);
    } else {
      this.userText = text;
      this.body.textContent = text; // user text is shown as typed
    }
  }

  /** Show the outcome of one step of the reply's reducer. */
  apply(step: ReplyStep): void {
    this.reply = step.state;
    if (step.append) {
      this.renderer?.append(step.append);
    }
    if (step.ended) {
      this.end(step.state.status, step.state.error);
    }
  }

  end(status: Status, error?: string): void {
    void this.renderer?.finish(); // data-status is the wire's; the last blocks may still render
    this.setStatus(status);
    const ending = status === 'error' ? `The agent failed: ${error || 'unknown error'}` : ENDINGS[status];
    if (ending) {
      this.note.textContent = ending;
      this.note.hidden = false;
    }
  }

  fail(problem: string): void {
    if (this.renderer && !isEnded(this.reply)) {
      this.reply = { ...this.reply, status: 'error' }; // no later frame changes it
      void this.renderer.finish();
    }
    this.setStatus('error');
    this.note.textContent = problem;
    this.note.hidden = false;
  }
}
