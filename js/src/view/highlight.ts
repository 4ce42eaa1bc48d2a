// Syntax highlighting of the code blocks in agent output, with highlight.js.
//
// Only highlight.js's core and the languages an agent writes most are bundled: the widget is one
// self-contained file, and the full library would add close to a megabyte to it. A fence naming
// another language, or none, stays plain text (guessing the language would run every grammar).
// Token colours come from JupyterLab's editor theme variables (see style.css), so blocks read
// like the notebook's own cells in every theme.

import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import css from 'highlight.js/lib/languages/css';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import markdown from 'highlight.js/lib/languages/markdown';
import plaintext from 'highlight.js/lib/languages/plaintext';
import python from 'highlight.js/lib/languages/python';
import r from 'highlight.js/lib/languages/r';
import shell from 'highlight.js/lib/languages/shell';
import sql from 'highlight.js/lib/languages/sql';
import typescript from 'highlight.js/lib/languages/typescript';
import xml from 'highlight.js/lib/languages/xml';
import yaml from 'highlight.js/lib/languages/yaml';

// Each grammar also answers to its aliases (py, js, ts, sh, zsh, html, svg, yml, md, ...).
const LANGUAGES = {
  bash,
  css,
  javascript,
  json,
  markdown,
  plaintext,
  python,
  r,
  shell,
  sql,
  typescript,
  xml,
  yaml
};
for (const [name, grammar] of Object.entries(LANGUAGES)) {
  hljs.registerLanguage(name, grammar);
}

/** Longest code highlighted: highlight.js takes about 0.3 ms per kilobyte, and a block is
 * highlighted in one piece, in the task that renders it. Longer code stays plain. */
export const MAX_HIGHLIGHT_CHARS = 20_000;

const prepared = new Set<string>();

const whenIdle = (task: () => void): void => {
  if (typeof requestIdleCallback === 'function') {
    requestIdleCallback(task, { timeout: 2000 });
  } else {
    setTimeout(task, 100);
  }
};

/**
 * Get a language's grammar ready when the page is next idle. highlight.js compiles a grammar
 * the first time it is used, which takes 5 to 20 ms: done ahead, it stays out of the task that
 * renders a code block. Called when a code fence opens, and for the languages agents write
 * most when the first reply is shown.
 */
export function prepareLanguage(language: string): void {
  if (!language || prepared.has(language) || !hljs.getLanguage(language)) {
    return;
  }
  prepared.add(language);
  whenIdle(() => hljs.highlight('', { language, ignoreIllegals: true }));
}

/** Languages agents write most, prepared (one per idle moment) once a reply is shown. */
const COMMON = ['python', 'bash', 'json', 'javascript', 'typescript', 'sql'];
let warmed = false;

export function prepareCommonLanguages(): void {
  if (!warmed) {
    warmed = true;
    COMMON.forEach(prepareLanguage);
  }
}

/** The language of a `<code>` element as markdown names it (`class="language-python"`). */
export function codeLanguage(code: Element): string {
  for (const name of Array.from(code.classList)) {
    if (name.startsWith('language-')) {
      return name.slice('language-'.length);
    }
  }
  return '';
}

/**
 * Colour the text of a `<code>` element in place, if its language is known. The element's
 * text stays the same (only `<span class="hljs-...">` wrappers are added), so copying it or
 * reading its `textContent` still gives the code.
 */
export function highlightCode(code: HTMLElement): void {
  const language = codeLanguage(code);
  const text = code.textContent ?? '';
  if (!language || !hljs.getLanguage(language) || text.length > MAX_HIGHLIGHT_CHARS) {
    return;
  }
  // highlight.js escapes every character of the text it is given: its output holds no markup
  // but its own spans.
  code.innerHTML = hljs.highlight(text, { language, ignoreIllegals: true }).value;
  code.classList.add('hljs');
}
