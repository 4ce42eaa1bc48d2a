// A reply's tool calls on screen: one compact card per call, in the order the calls first
// appeared, in a container of the message between its thinking and its answer (the answer's
// element, `streamchat-message-text`, never holds them).
//
// A card (`data-testid="streamchat-tool-call"`, with `data-tool-call-id` and `data-status`)
// shows the call's title (or its tool's name), a status badge and, once it ended, how long it
// took; its arguments (pretty JSON), its result or error, and a file edit (as a small unified
// diff) are folded in `<details>`, whose content is drawn when the user opens them. A newer
// state of the same call updates the card in place: nothing is rebuilt, so a section the user
// opened stays open.
//
// A conversation may hold hundreds of cards, so a card costs little until it is looked at: the
// parts a call does not have are never made, folds are empty until opened, and cards out of
// view skip style and layout (`content-visibility`, style.css).
//
// A call that waits for the user (`waiting`) says what will run (the tool, its arguments, the
// edit, unfolded) and offers Allow once (`streamchat-approve`), Always for this conversation
// (`streamchat-approve-always`) and Reject (`streamchat-reject`). A click sends the answer and
// disables the three at once; the card changes when the call's next state comes from the hub
// (in every view of the conversation: whichever answered first wins).
//
// Everything here is agent output, so untrusted: it is shown as text, never as markup.

import { el } from './dom';
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

/** A file edit's lines as a small diff, drawn into `pre`. */
function drawDiff(pre: HTMLElement, diff: ToolCallDiff): void {
  const lines = diffLines(diff.oldText, diff.newText);
  const rows: HTMLElement[] = [];
  for (const line of lines.slice(0, MAX_DIFF_LINES)) {
    const row = el(
      'span',
      line.sign === '-'
        ? 'streamchat-diff-del'
        : line.sign === '+'
          ? 'streamchat-diff-add'
          : 'streamchat-diff-ctx'
    );
    row.textContent = `${line.sign} ${line.text}\n`;
    rows.push(row);
  }
  if (lines.length > MAX_DIFF_LINES) {
    const more = el('span', 'streamchat-diff-more');
    more.textContent = `… ${(lines.length - MAX_DIFF_LINES).toLocaleString('en-US')} more lines\n`;
    rows.push(more);
  }
  if (lines.length === 0) {
    const same = el('span', 'streamchat-diff-more');
    same.textContent = '(no change)\n';
    rows.push(same);
  }
  pre.replaceChildren(...rows);
}

/**
 * A folded section (arguments, result, error, an edit's diff) whose content can change in
 * place. Its summary is always there; its body is drawn only once it is opened, and again when
 * its content changes while it is open: a conversation can hold hundreds of cards, whose folds
 * are mostly never opened, and a closed fold's body would only cost time to build and style.
 */
class Fold {
  readonly el: HTMLDetailsElement;
  private readonly summary: HTMLElement;
  private body: HTMLElement | null = null;
  private key = ''; // what the content is, as last set
  private drawnKey: string | null = null; // what the body shows
  private draw: (body: HTMLElement) => void = () => undefined;

  constructor(
    className: string,
    testid: string,
    private readonly bodyClass: string
  ) {
    this.el = el('details', `streamchat-tool-call-fold ${className}`, testid);
    this.summary = el('summary', 'streamchat-tool-call-fold-summary');
    this.el.append(this.summary);
    // Drawn before the click's default action opens it, so it never shows empty for a frame;
    // 'toggle' (which comes a task later) covers every other way it opens.
    this.summary.addEventListener('click', () => {
      if (!this.el.open) {
        this.refresh();
      }
    });
    this.el.addEventListener('toggle', () => {
      if (this.el.open) {
        this.refresh();
      }
    });
  }

  /** The summary, and the content: `key` says what it is (the same key, the same content),
   * `draw` puts it in the body when it is shown. */
  set(summary: string, key: string, draw: (body: HTMLElement) => void): void {
    setText(this.summary, summary);
    this.key = key;
    this.draw = draw;
    if (this.el.open) {
      this.refresh();
    }
  }

  open(): void {
    this.refresh();
    this.el.open = true;
  }

  private refresh(): void {
    if (this.drawnKey === this.key) {
      return;
    }
    if (this.body === null) {
      this.body = el('pre', this.bodyClass);
      this.el.append(this.body);
    }
    this.draw(this.body);
    this.drawnKey = this.key;
  }
}

/** What a waiting card asks: the question, the arguments, and the three answers. */
interface Ask {
  readonly box: HTMLElement;
  readonly question: HTMLElement;
  readonly arguments: HTMLPreElement;
  readonly answers: HTMLElement; // the buttons and what was answered, under the diff
  readonly note: HTMLElement;
  readonly buttons: HTMLButtonElement[];
}

// The parts of a card below its head, in the order they show. Each is made the first time it
// has something to show: most calls never wait, fail or edit a file.
const ASK = 0;
const DIFF = 1;
const ANSWERS = 2;
const ARGUMENTS = 3;
const RESULT = 4;
const ERROR = 5;

/** One tool call's card. */
class ToolCallCard {
  readonly el: HTMLElement;
  private readonly title: HTMLElement;
  private readonly badge: HTMLElement;
  private decided: HTMLElement | null = null; // made when the call was answered
  private readonly duration: HTMLElement;
  private readonly parts: (HTMLElement | null)[] = [null, null, null, null, null, null];
  private ask: Ask | null = null;
  private diff: Fold | null = null;
  private args: Fold | null = null;
  private result: Fold | null = null;
  private error: Fold | null = null;
  private state: ToolCallState;
  private diffAsked = false; // the diff was opened for the wait under way

  constructor(
    call: ToolCallState,
    private readonly actions: ToolCallActions | null
  ) {
    this.state = call;
    this.el = el('div', 'streamchat-tool-call', 'streamchat-tool-call');
    this.el.dataset.toolCallId = call.id;
    this.el.setAttribute('role', 'group');
    const head = el('div', 'streamchat-tool-call-head');
    this.title = el('span', 'streamchat-tool-call-title', 'streamchat-tool-call-title');
    this.badge = el('span', 'streamchat-tool-call-status', 'streamchat-tool-call-status');
    this.duration = el('span', 'streamchat-tool-call-duration', 'streamchat-tool-call-duration');
    head.append(this.title, this.badge, this.duration);
    this.el.append(head);
    this.update(call);
  }

  get status(): string {
    return this.state.status;
  }

  update(call: ToolCallState): void {
    this.state = call;
    const card = this.el;
    const name = call.title || call.name;
    if (card.dataset.status !== call.status) {
      card.dataset.status = call.status;
    }
    if (call.kind) {
      if (card.dataset.kind !== call.kind) {
        card.dataset.kind = call.kind;
      }
    } else if (card.dataset.kind !== undefined) {
      delete card.dataset.kind;
    }
    setText(this.title, name);
    setAttr(this.title, 'title', call.title ? `${call.title} (${call.name})` : call.name);
    const label = statusLabel(call);
    setText(this.badge, label);
    setAttr(card, 'aria-label', `Tool call ${name}: ${label}`);
    const decided = call.decision && call.status !== 'waiting' ? DECIDED[call.decision] : '';
    if (decided && this.decided === null) {
      this.decided = el('span', 'streamchat-tool-call-decision');
      this.duration.before(this.decided);
    }
    if (this.decided !== null) {
      setText(this.decided, decided);
      setHidden(this.decided, !decided);
    }
    const took =
      call.startedAt !== undefined && call.endedAt !== undefined && call.endedAt >= call.startedAt
        ? formatDuration(call.endedAt - call.startedAt)
        : '';
    setText(this.duration, took);
    setHidden(this.duration, !took);

    const waiting = call.status === 'waiting';
    if (waiting) {
      this.showAsk(call);
    } else if (this.ask) {
      setHidden(this.ask.box, true);
      setHidden(this.ask.answers, true);
    }

    // An edit shows as a diff: opened once while the call waits (it is what the user is asked
    // to allow), folded otherwise. The card never folds it by itself: only the user does.
    this.diffAsked &&= waiting;
    const diff = call.diff;
    if (diff) {
      this.diff ??= this.fold(
        DIFF,
        'streamchat-tool-call-diff',
        'streamchat-tool-call-diff',
        'streamchat-tool-call-diff-lines'
      );
      this.diff.set(
        `Changes to ${diff.path}`,
        `${diff.path}\u0000${diff.oldText}\u0000${diff.newText}`,
        pre => drawDiff(pre, diff)
      );
      setHidden(this.diff.el, false);
      if (waiting && !this.diffAsked) {
        this.diff.open();
        this.diffAsked = true;
      }
    } else if (this.diff) {
      setHidden(this.diff.el, true);
    }

    // While it waits, the arguments show in the question, unfolded.
    const args = call.arguments ?? '';
    if (!waiting && args.trim()) {
      this.args ??= this.fold(
        ARGUMENTS,
        'streamchat-tool-call-arguments',
        'streamchat-tool-call-arguments',
        'streamchat-tool-call-fold-text'
      );
      this.args.set('Arguments', args, pre => setText(pre, prettyArguments(args)));
      setHidden(this.args.el, false);
    } else if (this.args) {
      setHidden(this.args.el, true);
    }

    const result = call.result ?? '';
    if (result) {
      this.result ??= this.fold(
        RESULT,
        'streamchat-tool-call-result',
        'streamchat-tool-call-result',
        'streamchat-tool-call-fold-text'
      );
      this.result.set('Result', result, pre => setText(pre, result));
      setHidden(this.result.el, false);
    } else if (this.result) {
      setHidden(this.result.el, true);
    }

    const error = call.error ?? '';
    if (error) {
      this.error ??= this.fold(
        ERROR,
        'streamchat-tool-call-error',
        'streamchat-tool-call-error',
        'streamchat-tool-call-fold-text'
      );
      const firstLine = error.split('\n', 1)[0];
      this.error.set(
        `Error: ${firstLine.length > 100 ? `${firstLine.slice(0, 100)}…` : firstLine}`,
        error,
        pre => setText(pre, error)
      );
      setHidden(this.error.el, false);
    } else if (this.error) {
      setHidden(this.error.el, true);
    }
  }

  /** A new fold, put at its place among the card's parts. */
  private fold(at: number, className: string, testid: string, bodyClass: string): Fold {
    const made = new Fold(className, testid, bodyClass);
    this.put(at, made.el);
    return made;
  }

  /** Put a part in the card: before the first part that shows below it, else last. */
  private put(at: number, part: HTMLElement): void {
    this.parts[at] = part;
    const next = this.parts.slice(at + 1).find(p => p !== null) ?? null;
    this.el.insertBefore(part, next);
  }

  /** The question and its answers, as they are while the call waits. */
  private showAsk(call: ToolCallState): void {
    const ask = (this.ask ??= this.makeAsk());
    setHidden(ask.box, false);
    setHidden(ask.answers, false);
    const args = prettyArguments(call.arguments ?? '');
    setText(
      ask.question,
      `The agent asks to run ${call.name}` +
        (call.title && call.title !== call.name ? ` (${call.title})` : '') +
        (args ? ' with these arguments:' : ', without arguments.')
    );
    setText(ask.arguments, args);
    setHidden(ask.arguments, !args);
    const answered = this.actions?.answered(call.id) ?? false;
    for (const button of ask.buttons) {
      button.disabled = answered || this.actions === null;
    }
    if (!answered) {
      setText(ask.note, '');
    }
  }

  private makeAsk(): Ask {
    const box = el('div', 'streamchat-tool-call-ask', 'streamchat-tool-call-ask');
    const question = el('div', 'streamchat-tool-call-question');
    const args = el('pre', 'streamchat-tool-call-ask-arguments');
    box.append(question, args);
    const row = el('div', 'streamchat-tool-call-buttons');
    const buttons = BUTTONS.map(spec => {
      const button = el('button', `streamchat-tool-call-button streamchat-${spec.decision}`);
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
    row.append(...buttons);
    const note = el('div', 'streamchat-tool-call-ask-note');
    note.setAttribute('role', 'status');
    const answers = el('div', 'streamchat-tool-call-answers');
    answers.append(row, note);
    // The diff, when there is one, goes between the question and the answers.
    this.put(ASK, box);
    this.put(ANSWERS, answers);
    return { box, question, arguments: args, answers, note, buttons };
  }

  private choose(decision: Decision, label: string): void {
    const ask = this.ask;
    if (this.state.status !== 'waiting' || this.actions === null || ask === null) {
      return;
    }
    for (const button of ask.buttons) {
      button.disabled = true; // at once: one answer per call
    }
    if (this.actions.answer(this.state.id, decision)) {
      ask.note.textContent = `Your answer: ${label}`;
    }
  }
}

/** Set an attribute only when it changed. */
function setAttr(target: HTMLElement, name: string, value: string): void {
  if (target.getAttribute(name) !== value) {
    target.setAttribute(name, value);
  }
}

/** Show or hide a node only when that changes. */
function setHidden(target: HTMLElement, hidden: boolean): void {
  if (target.hidden !== hidden) {
    target.hidden = hidden;
  }
}

/** A reply's tool calls: the container of their cards. */
export class ToolCallsView {
  readonly el: HTMLElement;
  private readonly cards = new Map<string, ToolCallCard>();
  private readonly waitingIds = new Set<string>();

  constructor(private readonly actions: ToolCallActions | null) {
    this.el = el('div', 'streamchat-tool-calls', 'streamchat-tool-calls');
  }

  /** Show these states, all in one pass: a known call's card changes in place, new calls'
   * cards go last, together (states come in the order the calls first appeared). */
  show(calls: readonly ToolCallState[]): void {
    let added: DocumentFragment | null = null;
    for (const call of calls) {
      const card = this.cards.get(call.id);
      if (card) {
        card.update(call);
      } else {
        const made = new ToolCallCard(call, this.actions);
        this.cards.set(call.id, made);
        (added ??= document.createDocumentFragment()).append(made.el);
      }
      if (call.status === 'waiting') {
        this.waitingIds.add(call.id);
      } else {
        this.waitingIds.delete(call.id);
      }
    }
    if (added !== null) {
      this.el.append(added);
    }
  }

  /** A call waits for the user's answer. */
  get waiting(): boolean {
    return this.waitingIds.size > 0;
  }
}
