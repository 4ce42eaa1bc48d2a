// Markdown for agent output, which is untrusted.
//
// `renderMarkdown` turns text into a sanitized DOM fragment: raw HTML in the text is shown as
// text (never parsed), and what markdown itself produces goes through DOMPurify, so links and
// images cannot carry `javascript:` or event handlers, and nothing fetches a URL by itself
// (images follow the rules of images.ts).
//
// `StreamingMarkdown` renders a reply while it streams without ever touching what it has
// already rendered: finished blocks are rendered once and appended, a few at a time between
// paints, with their code highlighted and given Copy buttons (decorate.ts). The block still
// open at the end is shown as a preview, rendered again at most once per animation frame with
// the inline markup its last line leaves open closed (inline.ts), so bold, code and links show
// as they grow; an open code fence grows in place as plain code. Work per chunk is therefore
// bounded by the chunk and the open block, never by the size of the reply, and no task renders
// more than a few kilobytes. The one exception is reference links (`[text][label]`): a block
// that used a label before its definition arrived is rendered again when it does (see
// `LinkDefinitions`).

import DOMPurify from 'dompurify';
import { Lexer, Marked } from 'marked';
import { boxTables, CodeBlockOptions, codePreview, decorateCodeBlocks } from './decorate';
import { prepareCommonLanguages, prepareLanguage } from './highlight';
import { ImagePolicy, insertPlaceholders, vetElement } from './images';
import { closeInline } from './inline';

const escapeHtml = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

const marked = new Marked({
  gfm: true,
  async: false,
  renderer: {
    // Raw HTML blocks and inline tags show as the text the agent wrote.
    html: ({ text }) => escapeHtml(text)
  }
});

/** Link reference definitions by normalized label, as marked keeps them. */
export type Links = Record<string, { href: string; title: string }>;

const NO_IMAGES = new ImagePolicy();

// The policy of the render in progress: DOMPurify's hooks are global to the purifier, and
// sanitizing is synchronous, so this is set around each call.
let activeImages: ImagePolicy = NO_IMAGES;

const purifier = DOMPurify();
// Set once: parsing the configuration on every call costs more than sanitizing a short block.
// HTML only: SVG and MathML have their own ways to refer to URLs.
purifier.setConfig({ RETURN_DOM_FRAGMENT: true, USE_PROFILES: { html: true } });
purifier.addHook('afterSanitizeAttributes', node => {
  if (node.nodeType !== 1) {
    return;
  }
  const element = node as Element;
  vetElement(element, activeImages, document.baseURI);
  if (element.tagName === 'A') {
    // Open links away from the notebook, without giving the new page a handle on it.
    element.setAttribute('target', '_blank');
    element.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

/** How a render's output is finished: as a block for good (its code highlighted and given
 * buttons, its images as the policy says), or as the passing preview of an open block. */
type Finish = { code: CodeBlockOptions } | 'preview';

/**
 * Markdown text to a sanitized fragment, ready to append, with `links` known as if their
 * definitions were part of the text. Returns also every definition known after it (those given
 * and those the text adds; the first definition of a label wins, as in CommonMark).
 */
function render(
  text: string,
  links: Links,
  images: ImagePolicy,
  finish: Finish
): { fragment: DocumentFragment; links: Links } {
  const lexer = new Lexer({ ...marked.defaults });
  Object.assign(lexer.tokens.links, links);
  const html = marked.parser(lexer.lex(text)) as string;
  // A preview is replaced at the next frame: its images would only flicker (and fetch URLs
  // still being written), so none may load, and each shows as its alt text.
  activeImages = finish === 'preview' ? NO_IMAGES : images;
  let fragment: DocumentFragment;
  try {
    fragment = purifier.sanitize(html) as unknown as DocumentFragment;
  } finally {
    activeImages = NO_IMAGES;
  }
  boxTables(fragment);
  if (finish === 'preview') {
    for (const img of Array.from(fragment.querySelectorAll('img'))) {
      img.replaceWith(img.getAttribute('alt') ?? '');
    }
  } else {
    insertPlaceholders(fragment);
    decorateCodeBlocks(fragment, finish.code);
  }
  return { fragment, links: lexer.tokens.links as Links };
}

/** Markdown text to a sanitized fragment, ready to append. */
export function renderMarkdown(
  text: string,
  images: ImagePolicy = NO_IMAGES,
  code: CodeBlockOptions = {}
): DocumentFragment {
  return render(text, {}, images, { code }).fragment;
}

// -- reference links while streaming ---------------------------------------------------------

/** Most blocks a reply keeps waiting for a label's definition; past it, the oldest stops
 * waiting (it keeps the brackets as written). Bounds memory and the work a definition costs. */
const MAX_WAITING_BLOCKS = 100;

/** The content of each innermost pair of brackets: every label that a text may use as a
 * reference (`[text][label]`, `[label][]`, `[label]`), and more; a superset is enough. */
const BRACKETED = /\[((?:[^\[\]\\]|\\[\s\S]){1,999})\]/g;

/** A label as marked looks it up: trimmed, inner whitespace collapsed, case folded. */
const normalizeLabel = (label: string): string =>
  label.trim().replace(/\s+/g, ' ').toLowerCase().toUpperCase().toLowerCase();

interface RenderedBlock {
  readonly el: HTMLElement;
  readonly text: string;
  awaiting: Set<string>; // labels it may use that were not defined when it was rendered
}

/**
 * The link reference definitions of a streaming reply, so far. A whole-text render knows every
 * definition, wherever it is; a block rendered while streaming knows those before it. So each
 * block is rendered with the definitions seen so far, and one that may use a label not yet
 * defined waits for it: when a later block defines the label, that block (and no other) is
 * rendered again. The end result equals a whole-text render.
 */
class LinkDefinitions {
  links: Links = Object.create(null);
  private waiting = new Set<RenderedBlock>(); // oldest first

  /** `block` was rendered with `this.links`, and knew `after` at its end: take in its
   * definitions; returns the earlier blocks to render again, now that more is defined. */
  learn(block: RenderedBlock, after: Links): RenderedBlock[] {
    const fresh = new Set<string>();
    for (const label of Object.keys(after)) {
      if (!(label in this.links)) {
        this.links[label] = after[label];
        fresh.add(label);
      }
    }
    const again = fresh.size
      ? Array.from(this.waiting).filter(b => Array.from(b.awaiting).some(l => fresh.has(l)))
      : [];
    this.track(block);
    return again;
  }

  /** Note which labels `block` may use but are not defined yet. */
  track(block: RenderedBlock): void {
    this.waiting.delete(block);
    block.awaiting = new Set();
    for (const match of block.text.matchAll(BRACKETED)) {
      const label = normalizeLabel(match[1]);
      if (label && !(label in this.links)) {
        block.awaiting.add(label);
      }
    }
    if (block.awaiting.size) {
      this.waiting.add(block);
      if (this.waiting.size > MAX_WAITING_BLOCKS) {
        this.waiting.delete(this.waiting.values().next().value as RenderedBlock);
      }
    }
  }
}

/** What a message body does with its text: the chat view feeds every message through one. */
export interface BodyRenderer {
  /** Add text at the end (a chunk while streaming, or a whole stored text). */
  append(chunk: string): void;
  /** The text is complete: show it all as formatted markdown. A renderer that does so over
   * several tasks returns a promise that settles once it is all shown. */
  finish(): void | Promise<void>;
}

// Line kinds that decide where blocks end (CommonMark: fences, list items, indentation).
const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})/;
const LIST_ITEM = /^ {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)/;
const INDENTED = /^(?: {2,}|\t)/;
const BLANK = /^[ \t]*$/;

/** Time a render step may take before it yields to the browser (to paint, to take input). */
const STEP_BUDGET_MS = 4;
/** Text rendered per marked/DOMPurify call: each call has a fixed cost (DOMPurify builds a
 * document), so neighbouring blocks go together, up to this many characters. */
const BATCH_CHARS = 2048;

const schedule: (step: () => void) => void =
  typeof requestAnimationFrame === 'function' && typeof document !== 'undefined'
    ? step => {
        // Animation frames stop in hidden tabs; a timeout keeps the queue moving there.
        let done = false;
        const once = () => {
          if (!done) {
            done = true;
            step();
          }
        };
        requestAnimationFrame(once);
        setTimeout(once, 50);
      }
    : step => setTimeout(step, 0);

/** Longest open block previewed as formatted markdown: rendering it takes up to a few
 * milliseconds. Past it (a long list or table), the preview stops at what it showed, and the
 * text that comes after it grows beneath it as plain text until the block ends. */
const PREVIEW_MAX_CHARS = 4096;
/** A preview that took t ms waits t * PREVIEW_BACKOFF ms before the next, so previews of a
 * growing block never take more than a fifth or so of the main thread. */
const PREVIEW_BACKOFF = 4;

/** A line that may be (the start of) the fence closing a code block, by its marker's kind. */
const FENCE_CLOSING = /^ {0,3}(`+|~+)[ \t]*$/;
/** An open block that is so far only the first line of a code fence, still being written. */
const FENCE_OPENING = /^(?:[ \t]*\n)*[ ]{0,3}(?:`{3,}|~{3,})[^\n]*$/;

/** What the tail shows of the open block. */
type Tail =
  | { kind: 'nothing' }
  // its formatted preview, of its first `chars` characters, replaced whole at each refresh
  // while the block is short; then `rest`, the text after those, grows in place beneath it
  | { kind: 'preview'; chars: number; rest: Text | null }
  | { kind: 'plain'; text: Text } // its text, growing in place
  | { kind: 'code'; lines: Text; partial: Text }; // an open fence's code, growing in place

/**
 * Renders markdown as it streams. A block ends at a blank line followed by a line that does
 * not continue it (a list continues with indented lines and further items), or at the close
 * of a fenced code block, or where a fence interrupts a paragraph. Ended blocks are rendered
 * once each, a few at a time between paints, and never touched again; until then each shows
 * as plain text. The open block shows at the end (the tail) as a preview refreshed at most once
 * per animation frame (see the top of this file).
 */
export class StreamingMarkdown implements BodyRenderer {
  private open = ''; // the open block's text (blocks that ended were cut off the front)
  private scanPos = 0; // start, in `open`, of the first line not yet classified
  private blankAt = -1; // where, in `open`, a run of blank lines after block content began
  private blockHasContent = false;
  private blockIsList = false;
  private fence: string | null = null; // the marker of the open fenced code block
  private fenceInList = false;
  private fenceBodyStart = 0; // where, in `open`, the code of the open fence begins
  private fenceLanguage = ''; // what the open fence names
  // Ended blocks not rendered yet, each shown meanwhile as plain text in an element of its
  // own (so rendering one re-lays out only that element, not all the text still waiting).
  private queued: { text: string; raw: HTMLElement }[] = [];
  private stepping = false; // a step is scheduled
  private whenIdle: (() => void)[] = []; // finish() promises waiting for the queue to empty
  private readonly tail: HTMLElement;
  private shown: Tail = { kind: 'nothing' };
  private previewQueued = false; // a refresh of the tail is scheduled
  private previewNotBefore = 0; // performance.now() before which no refresh starts
  private readonly definitions = new LinkDefinitions();

  constructor(
    readonly el: HTMLElement,
    private readonly images: ImagePolicy = NO_IMAGES,
    private readonly code: CodeBlockOptions = {}
  ) {
    this.tail = document.createElement('div');
    this.tail.className = 'streamchat-tail';
    el.appendChild(this.tail);
    prepareCommonLanguages();
  }

  append(chunk: string): void {
    if (!chunk) {
      return;
    }
    // Only the new text is searched for line ends: the open block is bounded, the reply not.
    let from = this.open.length;
    this.open += chunk;
    let nl: number;
    while ((nl = this.open.indexOf('\n', from)) !== -1) {
      from = nl + 1;
      const start = this.scanPos;
      this.scanPos = nl + 1;
      const cut = this.line(this.open.slice(start, nl), start, nl + 1);
      if (cut > 0) {
        from -= cut;
      }
    }
    if (this.queued.length && !this.stepping) {
      this.step(); // some now, the rest between paints
    }
    this.schedulePreview();
  }

  finish(): Promise<void> {
    if (this.open) {
      this.queue(BLANK.test(this.open) ? '' : this.open, this.open.length);
    }
    this.open = '';
    this.scanPos = 0;
    this.fence = null;
    // Even the end is rendered a few kilobytes per task: a reply that streamed faster than it
    // rendered would otherwise be laid out in one long task.
    const done = new Promise<void>(resolve => this.whenIdle.push(resolve));
    if (!this.stepping) {
      this.step();
    }
    return done;
  }

  /** Render queued blocks for a few milliseconds, then give the browser the thread back. */
  private step = (): void => {
    const deadline = performance.now() + STEP_BUDGET_MS;
    while (this.queued.length && performance.now() < deadline) {
      this.render(BATCH_CHARS);
    }
    this.stepping = this.queued.length > 0;
    if (this.stepping) {
      schedule(this.step);
    } else {
      this.whenIdle.splice(0).forEach(resolve => resolve());
    }
  };

  /** Render queued blocks (at least one) holding up to `chars` characters, in one call. */
  private render(chars: number): void {
    let text = '';
    let n = 0;
    while (n < this.queued.length && (n === 0 || text.length < chars)) {
      text += this.queued[n].text;
      n++;
    }
    const done = this.queued.splice(0, n);
    if (text) {
      const block = document.createElement('div');
      block.className = 'streamchat-block';
      const finish = { code: this.code };
      const out = render(text, this.definitions.links, this.images, finish);
      block.appendChild(out.fragment);
      this.el.insertBefore(block, done[0].raw);
      const rendered: RenderedBlock = { el: block, text, awaiting: new Set() };
      for (const earlier of this.definitions.learn(rendered, out.links)) {
        earlier.el.replaceChildren(
          render(earlier.text, this.definitions.links, this.images, finish).fragment
        );
        this.definitions.track(earlier);
      }
    }
    done.forEach(item => item.raw.remove());
  }

  /** Move the first `shown` characters of the open text into a plain-text stand-in of their
   * own, until `text` (those characters, or '' when they are blank) is rendered. */
  private queue(text: string, shown: number): void {
    const raw = document.createElement('div');
    raw.className = 'streamchat-raw';
    raw.textContent = this.open.slice(0, shown);
    this.el.insertBefore(raw, this.tail);
    this.queued.push({ text, raw });
    // The tail previewed text that has just left it: it shows the rest from the next frame on.
    this.showNothing();
    this.schedulePreview();
  }

  // -- the open block's preview ------------------------------------------------------------

  private schedulePreview(): void {
    if (this.previewQueued) {
      return;
    }
    this.previewQueued = true;
    const wait = this.previewNotBefore - performance.now();
    if (wait > 0) {
      setTimeout(() => schedule(this.refreshPreview), wait);
    } else {
      schedule(this.refreshPreview);
    }
  }

  /** Show the open block as it is now. Between two refreshes `open` only grows, unless a block
   * ended, and then `queue` emptied the tail: so what the tail shows is always a start of it. */
  private refreshPreview = (): void => {
    this.previewQueued = false;
    const text = this.open;
    if (!/\S/.test(text)) {
      this.showNothing();
    } else if (this.fence !== null && !this.fenceInList) {
      this.showCode();
    } else if (FENCE_OPENING.test(text)) {
      this.showNothing(); // the code's box shows once its fence line is whole
    } else if (text.length <= PREVIEW_MAX_CHARS) {
      const started = performance.now();
      const links = this.definitions.links;
      const { fragment } = render(closeInline(text), links, this.images, 'preview');
      this.tail.replaceChildren(fragment);
      this.tail.classList.remove('streamchat-plain');
      this.shown = { kind: 'preview', chars: text.length, rest: null };
      const took = performance.now() - started;
      this.previewNotBefore = performance.now() + took * PREVIEW_BACKOFF;
    } else if (this.shown.kind === 'preview') {
      this.showRest(this.shown);
    } else {
      this.showPlain();
    }
  };

  /** The open block outgrew its preview: what follows the part previewed grows beneath it. */
  private showRest(shown: { chars: number; rest: Text | null }): void {
    if (shown.rest === null) {
      const box = document.createElement('div');
      box.className = 'streamchat-plain';
      shown.rest = document.createTextNode('');
      box.append(shown.rest);
      this.tail.append(box);
    }
    shown.rest.appendData(this.open.slice(shown.chars + shown.rest.length));
  }

  private showNothing(): void {
    if (this.shown.kind !== 'nothing') {
      this.tail.replaceChildren();
      this.tail.classList.remove('streamchat-plain');
      this.shown = { kind: 'nothing' };
    }
  }

  private showPlain(): void {
    if (this.shown.kind !== 'plain') {
      const text = document.createTextNode('');
      this.tail.replaceChildren(text);
      this.tail.classList.add('streamchat-plain');
      this.shown = { kind: 'plain', text };
    }
    const { text } = this.shown;
    text.appendData(this.open.slice(text.length));
  }

  /** The open fence's code: complete lines are appended as they come; the line still being
   * written shows too, unless it may be the closing fence (which would flash as code). */
  private showCode(): void {
    if (this.shown.kind !== 'code') {
      const { box, code } = codePreview(document, this.fenceLanguage);
      const lines = document.createTextNode('');
      const partial = document.createTextNode('');
      code.append(lines, partial);
      this.tail.replaceChildren(box);
      this.tail.classList.remove('streamchat-plain');
      this.shown = { kind: 'code', lines, partial };
    }
    const { lines, partial } = this.shown;
    const body = this.open.slice(this.fenceBodyStart);
    const complete = body.lastIndexOf('\n') + 1;
    lines.appendData(body.slice(lines.length, complete));
    const rest = body.slice(complete);
    const closing = FENCE_CLOSING.exec(rest);
    partial.data = closing && closing[1][0] === this.fence![0] ? '' : rest;
  }

  // -- block ends ---------------------------------------------------------------------------

  /** Classify one complete line (`start`..`end` in `open`); returns how many characters were
   * cut off the front of `open` because a block ended (0 if none). */
  private line(line: string, start: number, end: number): number {
    if (this.fence !== null) {
      const close = line.trim();
      if (
        close.length >= this.fence.length &&
        close === close[0].repeat(close.length) &&
        close[0] === this.fence[0]
      ) {
        this.fence = null;
        if (!this.fenceInList) {
          return this.endBlock(end);
        }
      }
      return 0;
    }
    if (BLANK.test(line)) {
      if (this.blockHasContent && this.blankAt < 0) {
        this.blankAt = start;
      }
      return 0;
    }
    const indented = INDENTED.test(line);
    const listItem = LIST_ITEM.test(line);
    let cut = 0;
    if (this.blankAt >= 0) {
      const continues = this.blockIsList && (indented || listItem);
      if (!continues) {
        cut = this.endBlock(start);
      }
      this.blankAt = -1;
    }
    const fence = FENCE_OPEN.exec(line);
    if (fence) {
      const inList = this.blockIsList && indented;
      if (!inList && this.blockHasContent) {
        cut += this.endBlock(start - cut); // a fence interrupts a paragraph
      }
      this.fence = fence[1];
      this.fenceInList = inList;
      this.fenceBodyStart = end - cut;
      this.fenceLanguage = line.slice(fence[0].length).trim().split(/\s+/)[0];
      prepareLanguage(this.fenceLanguage);
    }
    if (!this.blockHasContent) {
      this.blockIsList = listItem;
      this.blockHasContent = true;
    }
    return cut;
  }

  /** Queue open[0, nextStart) for rendering and cut it off `open`; returns its length.
   * The blank lines between two blocks go with the first, so the text stays as sent. */
  private endBlock(nextStart: number): number {
    this.queue(this.open.slice(0, nextStart), nextStart);
    this.open = this.open.slice(nextStart);
    this.scanPos -= nextStart;
    this.blankAt = -1;
    this.blockHasContent = false;
    this.blockIsList = false;
    return nextStart;
  }
}
