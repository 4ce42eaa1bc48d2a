// One message on screen: its element with the DOM test hooks, and its body, which an
// assistant message feeds to a BodyRenderer chunk by chunk (user text shows as typed).

import type { BodyRenderer } from './markdown';
import type { Status } from './protocol';

const ENDINGS: Partial<Record<Status, string>> = {
  stopped: '(Stopped)',
  interrupted: '(Interrupted: the server stopped before the reply was complete.)'
};

export class MessageView {
  readonly el: HTMLElement;
  text = '';
  lastSeq = 0;
  resumeAsked = -1; // the afterSeq of the last RESUME sent for a gap, so it is asked once
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

  setId(messageId: string): void {
    this.messageId = messageId;
    this.el.dataset.messageId = messageId;
  }

  setStatus(status: string): void {
    this.status = status;
    this.el.dataset.status = status;
  }

  append(chunk: string): void {
    this.text += chunk;
    if (this.renderer) {
      this.renderer.append(chunk);
    } else {
      this.body.textContent = this.text; // user text is shown as typed
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
    this.setStatus('error');
    this.note.textContent = problem;
    this.note.hidden = false;
  }
}

export const FINAL: ReadonlySet<string> = new Set(['complete', 'stopped', 'interrupted', 'error']);
