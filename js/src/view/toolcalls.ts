// A reply's tool calls on screen: one compact card per call, in the order the calls first
// appeared, in a container of the message between its thinking and its answer (the answer's
// element, `streamchat-message-text`, never holds them).
//
// A card (`data-testid="streamchat-tool-call"`, with `data-tool-call-id` and `data-status`)
// shows the call's title (or its tool's name), a status badge and, once it ended, how long it
// took; its arguments (pretty JSON) and its result or error are folded in `<details>`, and a
// file edit shows as a small unified diff. A newer state of the same call updates the card in
// place: nothing is rebuilt, so a section the user opened stays open.
//
// A call that waits for the user (`waiting`) says what will run (the tool, its arguments, the
// edit) and offers Allow once (`streamchat-approve`), Always for this conversation
// (`streamchat-approve-always`) and Reject (`streamchat-reject`). A click sends the answer and
// disables the three at once; the card changes when the call's next state comes from the hub
// (in every view of the conversation: whichever answered first wins).
//
// Everything here is agent output, so untrusted: it is shown as text, never as markup.

import type { Decision, ToolCallDiff, ToolCallState } from './protocol';

/** What a card asks of its message: to answer a waiting call, and whether it was answered. */
export interface ToolCallActions {
  /** Send the user's answer; false when the call no longer waits (nothing was sent). */
  answer(toolCallId: string, decision: Decision): boolean;
  /** The user answered this call and its next state has not come yet. */
  answered(toolCallId: string): boolean;
}

/** The most diff lines a card shows; the rest is counted. */
const MAX_DIFF_LINES = 400;
/** Unchanged lines shown around a change. */
const CONTEXT_LINES = 2;

const BUTTONS: { decision: Decision; testid: string; label: string; title: string }[] = [
  {
    decision: 'allow_once',
    testid: 'streamchat-approve',
    label: 'Allow once',
    title: 'Run this call, and ask again next time'
  },
  {
    decision: 'allow_always',
    testid: 'streamchat-approve-always',
    label: 'Always for this conversation',
    title: 'Run this call, and calls of this tool for the rest of this conversation'
  },
  {
    decision: 'reject',
    testid: 'streamchat-reject',
    label: 'Reject',
    title: 'Do not run it: the agent is told so'
  }
];

const DECIDED: Record<Decision, string> = {
  allow_once: 'allowed once',
  allow_always: 'allowed for this conversation',
  reject: 'rejected'
};

function node<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  testid?: string
): HTMLElementTagNameMap[K] {
  const made = document.createElement(tag);
  made.className = className;
  if (testid) {
    made.dataset.testid = testid;
  }
  return made;
}

/** Set a node's text only when it changed (a selection in it survives other updates). */
function setText(target: HTMLElement, text: string): void {
  if (target.textContent !== text) {
    target.textContent = text;
  }
}

/** The arguments as indented JSON, or as written when they are not JSON. */
export function prettyArguments(text: string): string {
  if (!text.trim()) {
    return '';
  }
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** A duration in seconds as a card shows it: "120 ms", "3.4 s", "2 min 5 s". */
export function formatDuration(seconds: number): string {
  if (seconds < 1) {
    return `${Math.max(0, Math.round(seconds * 1000))} ms`;
  }
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)} min ${whole % 60} s`;
}

/** The badge of a status: what became of the call, in a word or two. */
export function statusLabel(call: ToolCallState): string {
  switch (call.status) {
    case 'pending':
      return 'Pending';
    case 'running':
      return 'Running';
    case 'waiting':
      return 'Needs approval';
    case 'completed':
      return 'Done';
    case 'failed':
      if (call.decision === 'reject') {
        return 'Rejected';
      }
      return /^not run\b/i.test(call.error ?? '') ? 'Not run' : 'Failed';
  }
}

export interface DiffLine {
  sign: ' ' | '-' | '+';
  text: string;
}

const linesOf = (text: string): string[] => {
  if (text === '') {
    return [];
  }
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') {
    lines.pop(); // the final newline ends the last line; it starts none
  }
  return lines;
};

/**
 * The lines of a unified-style diff of `oldText` to `newText`: the changed middle (what lies
 * between their common first and last lines) as removed and added lines, with a little context
 * around it. Enough to see an edit; not a minimal diff.
 */
export function diffLines(oldText: string, newText: string): DiffLine[] {
  const before = linesOf(oldText);
  const after = linesOf(newText);
  let head = 0;
  while (head < before.length && head < after.length && before[head] === after[head]) {
    head++;
  }
  if (head === before.length && head === after.length) {
    return []; // no change
  }
  let tail = 0;
  while (
    tail < before.length - head &&
    tail < after.length - head &&
    before[before.length - 1 - tail] === after[after.length - 1 - tail]
  ) {
    tail++;
  }
  const context = (lines: string[]): DiffLine[] => lines.map(text => ({ sign: ' ', text }));
  return [
    ...context(before.slice(Math.max(0, head - CONTEXT_LINES), head)),
    ...before.slice(head, before.length - tail).map(text => ({ sign: '-' as const, text })),
    ...after.slice(head, after.length - tail).map(text => ({ sign: '+' as const, text })),
    ...context(before.slice(before.length - tail, before.length - tail + CONTEXT_LINES))
  ];
}

/** A file edit as a small diff: its path, then its lines. */
function renderDiff(diff: ToolCallDiff): HTMLElement {
  const box = node('div', 'streamchat-tool-call-diff', 'streamchat-tool-call-diff');
  const path = node('div', 'streamchat-tool-call-diff-path');
  path.textContent = diff.path;
  const pre = node('pre', 'streamchat-tool-call-diff-lines');
  const lines = diffLines(diff.oldText, diff.newText);
  for (const line of lines.slice(0, MAX_DIFF_LINES)) {
    const row = node(
      'span',
      line.sign === '-'
        ? 'streamchat-diff-del'
        : line.sign === '+'
          ? 'streamchat-diff-add'
          : 'streamchat-diff-ctx'
    );
    row.textContent = `${line.sign} ${line.text}\n`;
    pre.append(row);
  }
  if (lines.length > MAX_DIFF_LINES) {
    const more = node('span', 'streamchat-diff-more');
    more.textContent = `… ${(lines.length - MAX_DIFF_LINES).toLocaleString('en-US')} more lines\n`;
    pre.append(more);
  }
  if (lines.length === 0) {
    const same = node('span', 'streamchat-diff-more');
    same.textContent = '(no change)\n';
    pre.append(same);
  }
  box.append(path, pre);
  return box;
}

/** A folded section (arguments, result, error) whose text can change in place. */
class Fold {
  readonly el: HTMLDetailsElement;
  private readonly summary: HTMLElement;
  private readonly pre: HTMLPreElement;

  constructor(className: string, testid: string) {
    this.el = node('details', `streamchat-tool-call-fold ${className}`, testid);
    this.summary = node('summary', 'streamchat-tool-call-fold-summary');
    this.pre = node('pre', 'streamchat-tool-call-fold-text');
    this.el.append(this.summary, this.pre);
  }

  set(summary: string, text: string): void {
    setText(this.summary, summary);
    setText(this.pre, text);
  }
}

/** One tool call's card. */
class ToolCallCard {
  readonly el: HTMLElement;
  private readonly title: HTMLElement;
  private readonly badge: HTMLElement;
  private readonly decided: HTMLElement;
  private readonly duration: HTMLElement;
  private readonly ask: HTMLElement;
  private readonly askText: HTMLElement;
  private readonly askArguments: HTMLPreElement;
  private readonly answers: HTMLElement; // the buttons and what was answered, under the diff
  private readonly askNote: HTMLElement;
  private readonly buttons: HTMLButtonElement[];
  private readonly args = new Fold(
    'streamchat-tool-call-arguments',
    'streamchat-tool-call-arguments'
  );
  private readonly result = new Fold('streamchat-tool-call-result', 'streamchat-tool-call-result');
  private readonly error = new Fold('streamchat-tool-call-error', 'streamchat-tool-call-error');
  private diff: HTMLElement | null = null;
  private diffShown = ''; // the diff drawn, as JSON: redrawn only when it changes
  private state: ToolCallState;

  constructor(
    call: ToolCallState,
    private readonly actions: ToolCallActions | null
  ) {
    this.state = call;
    this.el = node('div', 'streamchat-tool-call', 'streamchat-tool-call');
    this.el.dataset.toolCallId = call.id;
    this.el.setAttribute('role', 'group');
    const head = node('div', 'streamchat-tool-call-head');
    this.title = node('span', 'streamchat-tool-call-title', 'streamchat-tool-call-title');
    this.badge = node('span', 'streamchat-tool-call-status', 'streamchat-tool-call-status');
    this.decided = node('span', 'streamchat-tool-call-decision');
    this.duration = node('span', 'streamchat-tool-call-duration', 'streamchat-tool-call-duration');
    head.append(this.title, this.badge, this.decided, this.duration);

    // What the user is asked, while the call waits.
    this.ask = node('div', 'streamchat-tool-call-ask', 'streamchat-tool-call-ask');
    this.askText = node('div', 'streamchat-tool-call-question');
    this.askArguments = node('pre', 'streamchat-tool-call-ask-arguments');
    const row = node('div', 'streamchat-tool-call-buttons');
    this.buttons = BUTTONS.map(spec => {
      const button = node('button', `streamchat-tool-call-button streamchat-${spec.decision}`);
      button.type = 'button';
      button.dataset.testid = spec.testid;
      button.textContent = spec.label;
      button.title = spec.title;
      button.addEventListener('click', event => {
        // Inside a notebook output or a link, the click is ours alone.
        event.preventDefault();
        event.stopPropagation();
        this.choose(spec.decision, spec.label);
      });
      return button;
    });
    row.append(...this.buttons);
    this.askNote = node('div', 'streamchat-tool-call-ask-note');
    this.askNote.setAttribute('role', 'status');
    this.ask.append(this.askText, this.askArguments);
    this.answers = node('div', 'streamchat-tool-call-answers');
    this.answers.append(row, this.askNote);

    // The diff, when there is one, goes between the question and the answers (see showDiff).
    this.el.append(head, this.ask, this.answers, this.args.el, this.result.el, this.error.el);
    this.update(call);
  }

  get status(): string {
    return this.state.status;
  }

  update(call: ToolCallState): void {
    this.state = call;
    const el = this.el;
    const name = call.title || call.name;
    el.dataset.status = call.status;
    if (call.kind) {
      el.dataset.kind = call.kind;
    } else {
      delete el.dataset.kind;
    }
    setText(this.title, name);
    this.title.title = call.title ? `${call.title} (${call.name})` : call.name;
    const label = statusLabel(call);
    setText(this.badge, label);
    el.setAttribute('aria-label', `Tool call ${name}: ${label}`);
    setText(this.decided, call.decision && call.status !== 'waiting' ? DECIDED[call.decision] : '');
    const took =
      call.startedAt !== undefined && call.endedAt !== undefined && call.endedAt >= call.startedAt
        ? formatDuration(call.endedAt - call.startedAt)
        : '';
    setText(this.duration, took);
    this.duration.hidden = !took;

    const args = prettyArguments(call.arguments ?? '');
    const waiting = call.status === 'waiting';
    this.ask.hidden = this.answers.hidden = !waiting;
    if (waiting) {
      setText(
        this.askText,
        `The agent asks to run ${call.name}` +
          (call.title && call.title !== call.name ? ` (${call.title})` : '') +
          (args ? ' with these arguments:' : ', without arguments.')
      );
      setText(this.askArguments, args);
      this.askArguments.hidden = !args;
      const answered = this.actions?.answered(call.id) ?? false;
      for (const button of this.buttons) {
        button.disabled = answered || this.actions === null;
      }
      if (!answered) {
        setText(this.askNote, '');
      }
    }
    // While it waits, the arguments show in the question, unfolded.
    this.args.set('Arguments', args);
    this.args.el.hidden = waiting || !args;

    this.showDiff(call.diff);
    this.result.set('Result', call.result ?? '');
    this.result.el.hidden = call.result === undefined || call.result === '';
    const error = call.error ?? '';
    const firstLine = error.split('\n', 1)[0];
    this.error.set(
      `Error: ${firstLine.length > 100 ? `${firstLine.slice(0, 100)}…` : firstLine}`,
      error
    );
    this.error.el.hidden = !error;
  }

  private showDiff(diff: ToolCallDiff | undefined): void {
    const key = diff ? JSON.stringify([diff.path, diff.oldText, diff.newText]) : '';
    if (key === this.diffShown) {
      return;
    }
    this.diffShown = key;
    const next = diff ? renderDiff(diff) : null;
    if (this.diff && next) {
      this.diff.replaceWith(next);
    } else if (next) {
      // Under the question, before the answers: what will change is part of what is asked.
      this.ask.after(next);
    } else {
      this.diff?.remove();
    }
    this.diff = next;
  }

  private choose(decision: Decision, label: string): void {
    if (this.state.status !== 'waiting' || this.actions === null) {
      return;
    }
    for (const button of this.buttons) {
      button.disabled = true; // at once: one answer per call
    }
    if (this.actions.answer(this.state.id, decision)) {
      this.askNote.textContent = `Your answer: ${label}`;
    }
  }
}

/** A reply's tool calls: the container of their cards. */
export class ToolCallsView {
  readonly el: HTMLElement;
  private readonly cards = new Map<string, ToolCallCard>();

  constructor(private readonly actions: ToolCallActions | null) {
    this.el = node('div', 'streamchat-tool-calls', 'streamchat-tool-calls');
  }

  /** Show these states: a known call's card changes in place, a new call's card goes last
   * (states come in the order the calls first appeared). */
  show(calls: readonly ToolCallState[]): void {
    for (const call of calls) {
      const card = this.cards.get(call.id);
      if (card) {
        card.update(call);
      } else {
        const made = new ToolCallCard(call, this.actions);
        this.cards.set(call.id, made);
        this.el.append(made.el);
      }
    }
  }

  /** A call waits for the user's answer. */
  get waiting(): boolean {
    for (const card of this.cards.values()) {
      if (card.status === 'waiting') {
        return true;
      }
    }
    return false;
  }
}
