// Markdown for agent output, which is untrusted.
//
// `renderMarkdown` turns text into a sanitized DOM fragment: raw HTML in the text is shown as
// text (never parsed), and what markdown itself produces goes through DOMPurify, so links and
// images cannot carry `javascript:` or event handlers.
//
// `StreamingMarkdown` renders a reply while it streams without ever touching what it has
// already rendered: finished blocks are rendered once and appended; the open block at the end
// is plain text that grows in place (`Text.appendData`). Cost per token is therefore bounded
// by the size of one block, not by the size of the reply.

import DOMPurify from 'dompurify';
import { Marked } from 'marked';

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

const purifier = DOMPurify();
purifier.addHook('afterSanitizeAttributes', node => {
  if (node.tagName === 'A') {
    // Open links away from the notebook, without giving the new page a handle on it.
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

/** Markdown text to a sanitized fragment, ready to append. */
export function renderMarkdown(text: string): DocumentFragment {
  const html = marked.parse(text) as string;
  return purifier.sanitize(html, { RETURN_DOM_FRAGMENT: true });
}

/** What a message body does with its text: the chat view feeds every message through one. */
export interface BodyRenderer {
  /** Add text at the end (a chunk while streaming, or a whole stored text). */
  append(chunk: string): void;
  /** The text is complete: show it all as formatted markdown. */
  finish(): void;
}

// Line kinds that decide where blocks end (CommonMark: fences, list items, indentation).
const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})/;
const LIST_ITEM = /^ {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)/;
const INDENTED = /^(?: {2,}|\t)/;
const BLANK = /^[ \t]*$/;

/**
 * Renders markdown as it streams. A block ends at a blank line followed by a line that does
 * not continue it (a list continues with indented lines and further items), or at the close
 * of a fenced code block, or where a fence interrupts a paragraph. An ended block is rendered
 * once; the open block shows as plain text until it ends.
 */
export class StreamingMarkdown implements BodyRenderer {
  private text = '';
  private blockStart = 0; // where the open block begins in `text`
  private scanPos = 0; // start of the first line not yet classified
  private blankAt = -1; // where a run of blank lines after block content began
  private blockHasContent = false;
  private blockIsList = false;
  private fence: string | null = null; // the marker of the open fenced code block
  private fenceInList = false;
  private readonly tail: HTMLElement;
  private readonly tailText: Text;

  constructor(readonly el: HTMLElement) {
    this.tail = document.createElement('div');
    this.tail.className = 'streamchat-tail';
    this.tailText = document.createTextNode('');
    this.tail.appendChild(this.tailText);
    el.appendChild(this.tail);
  }

  append(chunk: string): void {
    if (!chunk) {
      return;
    }
    this.text += chunk;
    let ended = false;
    let nl: number;
    while ((nl = this.text.indexOf('\n', this.scanPos)) !== -1) {
      const start = this.scanPos;
      this.scanPos = nl + 1;
      ended = this.line(this.text.slice(start, nl), start, nl + 1) || ended;
    }
    if (ended) {
      this.tailText.data = this.text.slice(this.blockStart);
    } else {
      this.tailText.appendData(chunk);
    }
  }

  finish(): void {
    if (this.blockStart < this.text.length && !BLANK.test(this.text.slice(this.blockStart))) {
      this.emit(this.blockStart, this.text.length);
    }
    this.blockStart = this.scanPos = this.text.length;
    this.tailText.data = '';
  }

  /** Classify one complete line; returns whether a block ended (and was rendered). */
  private line(line: string, start: number, end: number): boolean {
    if (this.fence !== null) {
      const close = line.trim();
      if (close.length >= this.fence.length && close === close[0].repeat(close.length) &&
          close[0] === this.fence[0]) {
        this.fence = null;
        if (!this.fenceInList) {
          this.endBlock(end, end);
          return true;
        }
      }
      return false;
    }
    if (BLANK.test(line)) {
      if (this.blockHasContent && this.blankAt < 0) {
        this.blankAt = start;
      }
      return false;
    }
    const indented = INDENTED.test(line);
    const listItem = LIST_ITEM.test(line);
    let ended = false;
    if (this.blankAt >= 0) {
      const continues = this.blockIsList && (indented || listItem);
      if (!continues) {
        this.endBlock(this.blankAt, start);
        ended = true;
      }
      this.blankAt = -1;
    }
    const fence = FENCE_OPEN.exec(line);
    if (fence) {
      const inList = this.blockIsList && indented;
      if (!inList && this.blockHasContent) {
        this.endBlock(start, start); // a fence interrupts a paragraph
        ended = true;
      }
      this.fence = fence[1];
      this.fenceInList = inList;
    }
    if (!this.blockHasContent) {
      this.blockIsList = listItem;
      this.blockHasContent = true;
    }
    return ended;
  }

  /** Render text[blockStart, contentEnd) and open a new block at nextStart. */
  private endBlock(contentEnd: number, nextStart: number): void {
    this.emit(this.blockStart, contentEnd);
    this.blockStart = nextStart;
    this.blockHasContent = false;
    this.blockIsList = false;
  }

  private emit(from: number, to: number): void {
    const block = document.createElement('div');
    block.className = 'streamchat-block';
    block.appendChild(renderMarkdown(this.text.slice(from, to)));
    this.el.insertBefore(block, this.tail);
  }
}
