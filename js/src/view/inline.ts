// Closing what the end of a streaming block leaves open, so its preview shows formatting early.
//
// While a paragraph streams, its text often ends inside an emphasis, a code span or a link:
// "see **the docs" renders as literal asterisks until the closing "**" arrives, and then jumps
// into bold. The preview of the open block (markdown.ts) renders `closeInline(text)` instead,
// which adds the closers the last line lacks: "see **the docs**". The final render of the block
// uses the text as sent, never this.
//
// Only the last line is looked at: markdown emphasis may span lines, but in agent output it
// rarely does, and the scan then costs only the line. Delimiters follow CommonMark's flanking
// rules closely enough for a preview: a run opens when a non-space follows it, and closes an
// open one of the same kind when a non-space precedes it. A wrong guess shows for a frame or
// two, until more text comes; the final render is always the markdown as written.

const FENCE_LINE = /^ {0,3}(?:`{3,}|~{3,})/;
const WORD = /[\p{L}\p{N}]/u;
const SPACE = /\s/;

/** Count the run of `ch` starting at `i`. */
function runLength(line: string, i: number, ch: string): number {
  let j = i;
  while (j < line.length && line[j] === ch) {
    j++;
  }
  return j - i;
}

/** `text` with the closers of the inline markup its last line leaves open appended (before any
 * trailing whitespace, where a closer still closes). */
export function closeInline(text: string): string {
  const start = text.lastIndexOf('\n') + 1;
  const line = text.slice(start);
  if (FENCE_LINE.test(line)) {
    return text; // a code fence being opened, not inline markup
  }
  const open: string[] = []; // emphasis delimiters not closed yet, innermost last
  let brackets = 0; // link texts opened by '[' and not closed yet
  let codeRun = 0; // length of the backtick run that opened the code span we are in (0: none)
  let inDestination = false; // inside a link's "(...)" with no ")" yet
  let i = 0;
  while (i < line.length) {
    const ch = line[i];
    if (codeRun > 0) {
      const run = ch === '`' ? runLength(line, i, '`') : 1;
      if (ch === '`' && run === codeRun) {
        codeRun = 0;
      }
      i += run;
      continue;
    }
    if (inDestination) {
      if (ch === ')') {
        inDestination = false;
      }
      i++;
      continue;
    }
    if (ch === '\\') {
      i += 2;
      continue;
    }
    if (ch === '`') {
      codeRun = runLength(line, i, '`');
      i += codeRun;
      continue;
    }
    if (ch === '[') {
      brackets++;
      i++;
      continue;
    }
    if (ch === ']') {
      if (brackets > 0) {
        brackets--;
        if (line[i + 1] === '(') {
          inDestination = true;
          i += 2;
          continue;
        }
      }
      i++;
      continue;
    }
    if (ch === '*' || ch === '_' || ch === '~') {
      const run = runLength(line, i, ch);
      const before = i > 0 ? line[i - 1] : ' ';
      const after = line[i + run] ?? ' '; // nothing yet after a run at the end
      i += run;
      if (ch === '~' && run !== 2) {
        continue; // GFM strikethrough is "~~"
      }
      if (ch === '_' && WORD.test(before) && WORD.test(after)) {
        continue; // snake_case, not emphasis
      }
      const delimiter = ch.repeat(Math.min(run, 3));
      const at = open.lastIndexOf(delimiter);
      if (at >= 0 && !SPACE.test(before)) {
        open.length = at; // closes it, and anything opened inside it
      } else if (!SPACE.test(after)) {
        open.push(delimiter);
      }
      continue;
    }
    i++;
  }
  // Innermost first: the code span, the link's destination, then the emphasis around them.
  const closers = '`'.repeat(codeRun) + (inDestination ? ')' : '') + open.reverse().join('');
  if (!closers) {
    return text;
  }
  // "**bold " + "**" would not close (a closer must follow a non-space): close before the space
  // (inside a code span spaces are its text, and a closer may follow them).
  const trailing = codeRun > 0 ? '' : /\s*$/.exec(line)![0];
  return text.slice(0, text.length - trailing.length) + closers + trailing;
}
