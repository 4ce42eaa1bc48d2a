// What a rendered block gets beyond its markdown, once, before it is put in the page:
//
// - each code block is highlighted (highlight.ts) and gets a bar above it with its language and
//   a Copy button, and an Insert button when the host can insert code (a JupyterLab host puts
//   it in a new notebook cell);
// - each table sits in a box of its own that scrolls sideways, so a wide table scrolls inside
//   the message instead of stretching it.
//
// The streaming preview of a block not yet ended gets the boxes but neither highlighting nor
// buttons (see markdown.ts): those come once, with the block's final render.

import { actionButton, copyWithFeedback } from './actions';
import { codeLanguage, highlightCode } from './highlight';

export interface CodeBlockOptions {
  /** Offered as an Insert button on each code block when given: `code` is the block's text,
   * `language` what its fence named ('' when none). */
  onInsertCode?: (code: string, language: string) => void;
}

/** The text of a code element as the user wants it copied: markdown ends it with a newline. */
const codeText = (code: Element): string => (code.textContent ?? '').replace(/\n$/, '');

/** The bar above a code block; its language shows from `data-language`, drawn by CSS so it is
 * not part of the reply's text. */
export function codeBar(doc: Document, language: string): HTMLElement {
  const bar = doc.createElement('div');
  bar.className = 'streamchat-code-bar';
  if (language) {
    bar.dataset.language = language;
  }
  return bar;
}

/** A code block's box: its bar, then the `<pre>`, which scrolls sideways on its own. */
function boxCode(pre: HTMLElement, bar: HTMLElement): HTMLElement {
  const box = pre.ownerDocument.createElement('div');
  box.className = 'streamchat-code';
  pre.replaceWith(box);
  box.append(bar, pre);
  return box;
}

/** Tables in a box that scrolls sideways (a table itself cannot, without losing its role). */
export function boxTables(root: DocumentFragment | Element): void {
  for (const table of Array.from(root.querySelectorAll('table'))) {
    const box = table.ownerDocument.createElement('div');
    box.className = 'streamchat-table';
    table.replaceWith(box);
    box.append(table);
  }
}

/** Highlight each code block of a sanitized fragment and give it its bar and buttons. */
export function decorateCodeBlocks(
  root: DocumentFragment | Element,
  options: CodeBlockOptions
): void {
  for (const pre of Array.from(root.querySelectorAll('pre'))) {
    const code = pre.querySelector<HTMLElement>(':scope > code');
    if (!code) {
      continue;
    }
    const language = codeLanguage(code);
    highlightCode(code);
    const doc = pre.ownerDocument;
    const bar = codeBar(doc, language);
    bar.append(
      actionButton(
        {
          testid: 'streamchat-copy-code',
          label: 'Copy',
          name: language ? `Copy ${language} code` : 'Copy code',
          icon: 'copy',
          onClick: button => void copyWithFeedback(button, codeText(code))
        },
        doc
      )
    );
    const insert = options.onInsertCode;
    if (insert) {
      bar.append(
        actionButton(
          {
            testid: 'streamchat-insert-code',
            label: 'Insert',
            name: 'Insert code in a new cell',
            icon: 'insert',
            onClick: () => insert(codeText(code), language)
          },
          doc
        )
      );
    }
    boxCode(pre, bar);
  }
}

/** The preview of a code block still streaming: the same box and bar, no buttons yet. */
export function codePreview(
  doc: Document,
  language: string
): { box: HTMLElement; code: HTMLElement } {
  const pre = doc.createElement('pre');
  const code = doc.createElement('code');
  if (/^[\w+#.-]+$/.test(language)) {
    code.className = `language-${language}`;
  }
  pre.append(code);
  const box = doc.createElement('div');
  box.className = 'streamchat-code';
  box.append(codeBar(doc, language), pre);
  return { box, code };
}
