// What the user attaches to a message: the notebook's cells, a selection, an error output, a
// file, a kernel's variable. Each is a `ContextItem` (protocol.ts): a snapshot of the thing as
// text, sent with SEND_MESSAGE as `context` and stored with the user message.
//
// - Sources (`ContextSource`) say what can be attached. The host gives them: JupyterLab's
//   (lab/contextsources.ts) know the active notebook, the server's files and the notebook's
//   kernel, and register themselves here for every chat view of the page; the notebook widget
//   outside JupyterLab offers its kernel's variables (widget/kernelvariables.ts).
// - The picker: typing `@` in the input (at its start or after a space) lists what the sources
//   offer for the text typed after it; arrows move, Enter or Tab attaches, Escape closes.
// - Attached items show as chips above the input (`data-testid="streamchat-context"`, with
//   `data-kind`), removable, and on the user's message once sent, also when it comes from the
//   store (HISTORY). A chip's button shows the text that goes (or went) to the agent.
// - Limits: at most MAX_CONTEXT_ITEMS items, each text at most MAX_ITEM_TEXT_BYTES (UTF-8); a
//   text cut to fit ends with CUT. The whole frame stays within the server's message limit:
//   at send time the longest texts are cut further until it does.

import { el, randomId } from './dom';
import { ContextItem, utf8Length } from './protocol';
import './context.css';

export type ContextKind = ContextItem['kind'];

const KINDS: ReadonlySet<string> = new Set(['cell', 'selection', 'error', 'file', 'variable']);

/** At most this many items go with one message. */
export const MAX_CONTEXT_ITEMS = 20;
/** An item's text is cut to this many bytes (UTF-8). */
export const MAX_ITEM_TEXT_BYTES = 32 * 1024;
/** The mark a cut text ends with. */
export const CUT = '[cut]';
/** Labels longer than this are cut (a file path, a variable's name: a few words). */
const MAX_LABEL = 200;

/** How each kind reads in the picker and on a chip's tooltip. */
const KIND_NAMES: Record<ContextKind, string> = {
  cell: 'Cell',
  selection: 'Selection',
  error: 'Error',
  file: 'File',
  variable: 'Variable'
};

// -- items ---------------------------------------------------------------------------------

/** `text` cut to at most `maxBytes` bytes of UTF-8, ending with a line "[cut]" when cut (a
 * character is never split). */
export function cutText(text: string, maxBytes: number): string {
  if (text.length <= maxBytes / 3 || utf8Length(text) <= maxBytes) {
    return text;
  }
  const room = Math.max(0, maxBytes - utf8Length(CUT) - 1);
  let bytes = 0;
  let end = 0;
  for (const char of text) {
    const size = utf8Length(char);
    if (bytes + size > room) {
      break;
    }
    bytes += size;
    end += char.length;
  }
  return `${text.slice(0, end)}\n${CUT}`;
}

/** `item` with its label and text within the limits. */
export function cappedItem(item: ContextItem, maxBytes: number = MAX_ITEM_TEXT_BYTES): ContextItem {
  const label =
    item.label.length > MAX_LABEL ? `${item.label.slice(0, MAX_LABEL - 1)}…` : item.label;
  return { ...item, label, text: cutText(item.text, maxBytes) };
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** The well-formed items of `value` (a stored message's `context`, from the wire): each an
 * object with a known kind and string label and text; optional fields of the wrong kind are
 * dropped. */
export function contextItems(value: unknown): ContextItem[] {
  if (!Array.isArray(value)) {
    return [];
  }
  const items: ContextItem[] = [];
  for (const v of value.slice(0, MAX_CONTEXT_ITEMS * 5)) {
    if (typeof v !== 'object' || v === null) {
      continue;
    }
    const raw = v as Record<string, unknown>;
    if (!KINDS.has(raw.kind as string) || typeof raw.label !== 'string') {
      continue;
    }
    if (typeof raw.text !== 'string') {
      continue;
    }
    const item: ContextItem = { kind: raw.kind as ContextKind, label: raw.label, text: raw.text };
    if (typeof raw.path === 'string') item.path = raw.path;
    if (isCount(raw.cell)) item.cell = raw.cell;
    if (typeof raw.language === 'string') item.language = raw.language;
    if (typeof raw.mime === 'string') item.mime = raw.mime;
    items.push(item);
  }
  return items;
}

/** `items` cut so that their JSON takes at most `maxBytes` (UTF-8): the longest texts are
 * halved, in turn, until it fits. Null when even cut to a line each they would not fit. */
export function fitContext(items: ContextItem[], maxBytes: number): ContextItem[] | null {
  const fitted = items.map(item => ({ ...item }));
  const size = () => utf8Length(JSON.stringify(fitted));
  for (let round = 0; round < 40 * fitted.length + 1; round++) {
    if (size() <= maxBytes) {
      return fitted;
    }
    let longest = -1;
    for (let i = 0; i < fitted.length; i++) {
      if (longest < 0 || fitted[i].text.length > fitted[longest].text.length) {
        longest = i;
      }
    }
    const text = fitted[longest]?.text ?? '';
    if (text.length <= 2 * CUT.length) {
      return null; // nothing left to cut
    }
    fitted[longest].text = cutText(text, Math.floor(utf8Length(text) / 2));
  }
  return size() <= maxBytes ? fitted : null;
}

// -- sources -------------------------------------------------------------------------------

/** Something attached in the input, and how to read it again when the message goes (a cell
 * edited since it was attached goes as it is then). */
export interface Attachment {
  item: ContextItem;
  /** The item as it is now; null: as attached. */
  refresh?: () => ContextItem | null;
}

/** One line of the picker. */
export interface ContextOption {
  kind: ContextKind;
  label: string;
  /** Said after the label, quieter (a cell's first line, a variable's type and shape). */
  detail?: string;
  /** A folder: picking it goes on with this text after the `@` (its path and a slash). */
  query?: string;
  /** What picking it attaches, read then (a variable's summary is computed in the kernel only
   * now). Throws an Error whose message says why it cannot be attached. */
  attach?: () => Promise<Attachment>;
}

export interface ContextSource {
  /** What can be attached that matches `query` (the text typed after `@`), best first. */
  options(query: string): Promise<ContextOption[]>;
  /** Said at the picker's foot when nothing matches: what cannot be attached here, and why. */
  readonly note?: string;
}

const registered: ContextSource[] = [];

/** Offer `source` in every chat view of the page that has no sources of its own (a host's
 * extension does, once). Returns a function that withdraws it. */
export function registerContextSource(source: ContextSource): () => void {
  registered.push(source);
  return () => {
    const at = registered.indexOf(source);
    if (at >= 0) {
      registered.splice(at, 1);
    }
  };
}

export function registeredContextSources(): readonly ContextSource[] {
  return registered;
}

/** Whether `query` matches any of `texts`: each of its words is in one of them (any case). */
/** Asks a kernel one of the requests `kernel/variables.py` answers (`{op: 'list', query}`,
 * `{op: 'describe', name}`) and resolves to its answer; each host carries it its own way. */
export type AskKernel = (request: Record<string, unknown>, timeoutMs: number) => Promise<any>;

export const VARIABLES_LIST_TIMEOUT_MS = 4_000;
// Summarising a large value (a DataFrame's first rows) takes longer than listing names.
export const VARIABLES_DESCRIBE_TIMEOUT_MS = 15_000;

/** A kernel's variables matching `query`, as picker options that summarise one when picked. */
export async function variableOptions(ask: AskKernel, query: string): Promise<ContextOption[]> {
  const answer = await ask({ op: 'list', query }, VARIABLES_LIST_TIMEOUT_MS);
  const variables: any[] = Array.isArray(answer.variables) ? answer.variables : [];
  return variables
    .filter(v => typeof v?.name === 'string')
    .map((v): ContextOption => ({
      kind: 'variable',
      label: v.name,
      detail: String(v.brief ?? v.type ?? ''),
      attach: async () => {
        const { item } = await ask({ op: 'describe', name: v.name }, VARIABLES_DESCRIBE_TIMEOUT_MS);
        if (!item) {
          throw new Error('the kernel no longer has it');
        }
        return { item: { ...item, kind: 'variable', label: String(v.name) } };
      }
    }));
}

export function matches(query: string, ...texts: (string | undefined)[]): boolean {
  const hay = texts.filter(Boolean).join(' ').toLowerCase();
  return query
    .toLowerCase()
    .split(/\s+/)
    .every(word => hay.includes(word));
}

// -- chips -----------------------------------------------------------------------------------

/** What a chip's tooltip says: kind, label, where it comes from, and the start of its text. */
function describe(item: ContextItem): string {
  const where = [item.path, item.cell !== undefined ? `cell ${item.cell + 1}` : '']
    .filter(Boolean)
    .join(', ');
  const head = `${KIND_NAMES[item.kind]}: ${item.label}${where ? ` (${where})` : ''}`;
  const text = item.text.length > 1500 ? `${item.text.slice(0, 1500)}…` : item.text;
  return `${head}\n\n${text}`;
}

/** A row of chips for `items`, with one preview of the text of the chip the user opens.
 * `onRemove`: chips get a remove button calling it (the input's chips; a sent message's have
 * none). */
function chipRow(
  items: ContextItem[],
  className: string,
  onRemove?: (index: number) => void
): HTMLElement {
  const row = el('div', className);
  const chips = el('div', 'streamchat-context-chips');
  const preview = el('pre', 'streamchat-context-preview', 'streamchat-context-preview');
  preview.id = `streamchat-context-preview-${randomId()}`;
  preview.hidden = true;
  let open: HTMLButtonElement | null = null;
  items.forEach((item, index) => {
    const chip = el('span', 'streamchat-context-chip', 'streamchat-context');
    chip.dataset.kind = item.kind;
    chip.title = describe(item);
    // The label is the chip's own text; the kind is drawn by CSS (data-kind), the remove
    // button's cross too, so a message's chips read as their labels alone.
    const face = el('button', 'streamchat-context-face');
    face.type = 'button';
    face.textContent = item.label;
    face.setAttribute('aria-label', `${KIND_NAMES[item.kind]} ${item.label}: show its text`);
    face.setAttribute('aria-expanded', 'false');
    face.setAttribute('aria-controls', preview.id);
    face.addEventListener('click', event => {
      event.stopPropagation();
      const opening = open !== face;
      open?.setAttribute('aria-expanded', 'false');
      open = opening ? face : null;
      face.setAttribute('aria-expanded', String(opening));
      preview.textContent = opening ? item.text : '';
      preview.hidden = !opening;
    });
    chip.append(face);
    if (onRemove) {
      const remove = el('button', 'streamchat-context-remove', 'streamchat-context-remove');
      remove.type = 'button';
      remove.setAttribute('aria-label', `Remove ${item.label}`);
      remove.title = 'Remove';
      remove.addEventListener('click', event => {
        event.stopPropagation();
        onRemove(index);
      });
      chip.append(remove);
    }
    chips.append(chip);
  });
  row.append(chips, preview);
  return row;
}

/** Show a user message's attachments (a stored `context`, checked here) as chips, before its
 * text; replaces chips shown before. `message` is the message's element. */
export function showContext(message: HTMLElement, context: unknown): void {
  const items = contextItems(context);
  message.querySelector(':scope > .streamchat-message-context')?.remove();
  if (items.length === 0) {
    return;
  }
  const row = chipRow(items, 'streamchat-message-context');
  const body = message.querySelector(':scope > [data-testid="streamchat-message-text"]');
  message.insertBefore(row, body);
}

/** The chips above the input: what the next message takes along. */
export class ContextTray {
  readonly el: HTMLElement;
  private attached: Attachment[] = [];

  constructor(private readonly onChange: () => void = () => undefined) {
    this.el = el('div', 'streamchat-context-tray', 'streamchat-context-tray');
    this.el.setAttribute('aria-label', 'Attached to the next message');
    this.el.hidden = true;
  }

  get count(): number {
    return this.attached.length;
  }

  get items(): ContextItem[] {
    return this.attached.map(a => a.item);
  }

  /** Attach `attachment` (an item already attached takes its place); a sentence saying why not
   * when the tray is full, else null. */
  add(attachment: Attachment): string | null {
    const item = cappedItem(attachment.item);
    const same = (a: Attachment) =>
      a.item.kind === item.kind &&
      a.item.label === item.label &&
      a.item.path === item.path &&
      a.item.cell === item.cell;
    const at = this.attached.findIndex(same);
    if (at < 0 && this.attached.length >= MAX_CONTEXT_ITEMS) {
      return `At most ${MAX_CONTEXT_ITEMS} items can go with one message.`;
    }
    const entry = { ...attachment, item };
    if (at >= 0) {
      this.attached[at] = entry;
    } else {
      this.attached.push(entry);
    }
    this.draw();
    return null;
  }

  remove(index: number): void {
    this.attached.splice(index, 1);
    this.draw();
  }

  clear(): void {
    this.attached = [];
    this.draw();
  }

  /** The items as they go now: each read again where it can be, within the limits. */
  snapshot(): ContextItem[] {
    return this.attached.map(a => {
      let now: ContextItem | null = null;
      try {
        now = a.refresh?.() ?? null;
      } catch {
        now = null; // the cell is gone, say: it goes as attached
      }
      return now ? cappedItem(now) : a.item;
    });
  }

  private draw(): void {
    this.el.replaceChildren();
    if (this.attached.length > 0) {
      this.el.append(
        chipRow(this.items, 'streamchat-context-row', index => {
          this.remove(index);
        })
      );
    }
    this.el.hidden = this.attached.length === 0;
    this.onChange();
  }
}

// -- the picker ------------------------------------------------------------------------------

/** How long a source may take to answer before the picker shows it has none. */
const SOURCE_TIMEOUT_MS = 5_000;
/** Typing pauses this long before the sources are asked. */
const DEBOUNCE_MS = 80;
/** Lines shown per source, and in all. */
const MAX_PER_SOURCE = 30;
const MAX_SHOWN = 100;

/** `@` and what follows it up to the caret, at the start or after a space: the query. */
const TRIGGER = /(?:^|\s)@([^\s@]*)$/;

interface Shown {
  option: ContextOption;
  row: HTMLElement;
}

/**
 * The `@` picker of an input: a list that opens above it while the text before the caret ends
 * with `@query`. The input keeps the focus (the list is its `aria-activedescendant`), so
 * typing goes on narrowing the list.
 */
export class ContextPicker {
  readonly el: HTMLElement;
  private readonly list: HTMLElement;
  private readonly foot: HTMLElement;
  private shown: Shown[] = [];
  private active = -1;
  private start = -1; // where the `@` is in the input's text, while open
  private query: string | null = null; // asked of the sources (null: closed)
  private asked = 0; // each query's number: answers to an older one are dropped
  private timer = 0;

  constructor(
    private readonly input: HTMLTextAreaElement,
    private readonly sources: () => readonly ContextSource[],
    private readonly onPick: (attachment: Attachment) => void,
    private readonly onProblem: (text: string) => void,
    /** The list opened or closed. */
    private readonly onToggle: () => void = () => undefined
  ) {
    this.el = el('div', 'streamchat-context-picker', 'streamchat-context-picker');
    this.el.hidden = true;
    this.list = el('div', 'streamchat-context-options');
    this.list.id = `streamchat-context-options-${randomId()}`;
    this.list.setAttribute('role', 'listbox');
    this.list.setAttribute('aria-label', 'Attach');
    this.foot = el('div', 'streamchat-context-foot');
    this.el.append(this.list, this.foot);
    input.setAttribute('aria-autocomplete', 'list');
    // A click on a line must not take the focus from the input (which would close the list).
    this.el.addEventListener('mousedown', event => event.preventDefault());
    input.addEventListener('input', () => this.update());
    input.addEventListener('click', () => this.update());
    input.addEventListener('blur', () => this.close());
  }

  get isOpen(): boolean {
    return this.query !== null;
  }

  /** The input's text or caret changed: open, narrow or close the list. */
  update(): void {
    const caret = this.input.selectionStart ?? 0;
    const found =
      this.sources().length > 0 && caret === this.input.selectionEnd
        ? TRIGGER.exec(this.input.value.slice(0, caret))
        : null;
    if (found === null) {
      this.close();
      return;
    }
    const query = found[1];
    this.start = caret - query.length - 1;
    if (query === this.query) {
      return;
    }
    this.query = query;
    this.input.setAttribute('aria-controls', this.list.id);
    if (this.el.hidden) {
      this.el.hidden = false;
      this.onToggle();
    }
    const asked = ++this.asked;
    clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.ask(query, asked), DEBOUNCE_MS);
    if (this.shown.length === 0) {
      this.setFoot('Looking…');
    }
  }

  close(): void {
    if (this.query === null && this.el.hidden) {
      return;
    }
    clearTimeout(this.timer);
    this.asked++;
    this.query = null;
    this.start = -1;
    this.shown = [];
    this.active = -1;
    this.list.replaceChildren();
    this.el.hidden = true;
    this.input.removeAttribute('aria-activedescendant');
    this.input.removeAttribute('aria-controls');
    this.onToggle();
  }

  /** A key pressed in the input: true when the picker took it (the input must then do
   * nothing else with it). */
  onKeyDown(event: KeyboardEvent): boolean {
    if (!this.isOpen || event.ctrlKey || event.altKey || event.metaKey) {
      return false;
    }
    const move = (to: number) => {
      event.preventDefault();
      event.stopPropagation();
      this.setActive(to);
    };
    switch (event.key) {
      case 'ArrowDown':
        move(this.shown.length ? (this.active + 1) % this.shown.length : -1);
        return true;
      case 'ArrowUp':
        move(this.shown.length ? (this.active - 1 + this.shown.length) % this.shown.length : -1);
        return true;
      case 'Enter':
      case 'Tab':
        if (event.shiftKey || this.active < 0) {
          return false; // nothing chosen: Enter sends, Tab moves on
        }
        event.preventDefault();
        event.stopPropagation();
        void this.pick(this.shown[this.active].option);
        return true;
      case 'Escape':
        event.preventDefault();
        event.stopPropagation();
        this.close();
        return true;
    }
    return false;
  }

  private async ask(query: string, asked: number): Promise<void> {
    const sources = this.sources();
    const answers: (ContextOption[] | null)[] = sources.map(() => null);
    const notes: string[] = [];
    let pending = sources.length;
    await Promise.all(
      sources.map(async (source, i) => {
        let options: ContextOption[] = [];
        try {
          options = await withTimeout(source.options(query), SOURCE_TIMEOUT_MS);
        } catch {
          options = []; // a source that fails or takes too long offers nothing this time
        }
        if (asked !== this.asked) {
          return;
        }
        answers[i] = options.slice(0, MAX_PER_SOURCE);
        if (source.note) {
          notes.push(source.note);
        }
        pending--;
        this.show(answers, pending > 0, notes);
      })
    );
  }

  private show(answers: (ContextOption[] | null)[], more: boolean, notes: string[]): void {
    const chosen = this.shown[this.active]?.option;
    const options = answers.flatMap(a => a ?? []).slice(0, MAX_SHOWN);
    this.shown = options.map(option => ({ option, row: this.row(option) }));
    this.list.replaceChildren(...this.shown.map(s => s.row));
    const keep = chosen ? options.findIndex(o => o === chosen) : -1;
    this.setActive(keep >= 0 ? keep : options.length > 0 ? 0 : -1);
    if (more) {
      this.setFoot(options.length ? '' : 'Looking…');
    } else if (options.length === 0) {
      this.setFoot(['Nothing to attach matches.', ...notes].join(' '));
    } else {
      this.setFoot('');
    }
  }

  private row(option: ContextOption): HTMLElement {
    const row = el('div', 'streamchat-context-option', 'streamchat-context-option');
    row.id = `streamchat-context-option-${randomId()}`;
    row.setAttribute('role', 'option');
    row.setAttribute('aria-selected', 'false');
    row.dataset.kind = option.kind;
    const kind = el('span', 'streamchat-context-option-kind');
    kind.textContent = KIND_NAMES[option.kind];
    const label = el('span', 'streamchat-context-option-label');
    label.textContent = option.label;
    row.append(kind, label);
    if (option.detail) {
      const detail = el('span', 'streamchat-context-option-detail');
      detail.textContent = option.detail;
      row.append(detail);
    }
    row.title = option.detail ? `${option.label}: ${option.detail}` : option.label;
    row.addEventListener('click', () => void this.pick(option));
    return row;
  }

  private setActive(index: number): void {
    this.shown[this.active]?.row.setAttribute('aria-selected', 'false');
    this.active = index;
    const row = this.shown[index]?.row;
    if (row) {
      row.setAttribute('aria-selected', 'true');
      row.scrollIntoView({ block: 'nearest' });
      this.input.setAttribute('aria-activedescendant', row.id);
    } else {
      this.input.removeAttribute('aria-activedescendant');
    }
  }

  private setFoot(text: string): void {
    this.foot.textContent = text;
    this.foot.hidden = !text;
  }

  /** Attach `option` (or, for a folder, go into it): the `@query` typed leaves the input. */
  private async pick(option: ContextOption): Promise<void> {
    const value = this.input.value;
    const caret = this.input.selectionStart ?? value.length;
    const start = this.start >= 0 ? this.start : caret;
    if (option.query !== undefined) {
      this.replaceTyped(start, caret, `@${option.query}`);
      this.update();
      return;
    }
    this.replaceTyped(start, caret, '');
    this.close();
    if (!option.attach) {
      return;
    }
    try {
      this.onPick(await option.attach());
    } catch (e) {
      this.onProblem(`${option.label} cannot be attached: ${(e as Error)?.message ?? e}`);
    }
  }

  private replaceTyped(start: number, end: number, text: string): void {
    const value = this.input.value;
    this.input.value = value.slice(0, start) + text + value.slice(end);
    const at = start + text.length;
    this.input.setSelectionRange(at, at);
  }
}

/** `promise`, or a rejection after `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what = 'it'): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${what} took longer than ${ms / 1000} s`)),
      ms
    );
    promise.then(
      value => {
        clearTimeout(timer);
        resolve(value);
      },
      error => {
        clearTimeout(timer);
        reject(error);
      }
    );
  });
}
