// What JupyterLab offers to attach to a chat message (view/context.ts): the active notebook's
// cells, the current selection, the notebook's error outputs, files under the server's root,
// and the variables of the notebook's kernel.
//
// "The active notebook" is the notebook tracker's current one: the notebook the user last
// worked in, also while the keyboard is in a chat (the side panel, a tab, a cell's output).
//
// Variables are summarised in the kernel (jupyter_streamchat/kernel/variables.py): the values
// live there, and only a few kilobytes of summary need to come out. The kernel may not have
// jupyter_streamchat installed, so this bundle carries that file's text (esbuild imports it as
// text at build time: one copy of the Python, in the Python package) and runs it in a silent
// execute request: a `user_expressions` entry evaluates it in a namespace of its own and calls
// its `answer`, whose JSON comes back in the reply. Nothing is added to the user's namespace,
// the execution count does not move, and nothing is asked while the kernel is busy (the
// request would wait behind the running cell).

import type { JupyterFrontEnd } from '@jupyterlab/application';
import type { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import type { Contents, Kernel } from '@jupyterlab/services';
import {
  Attachment,
  ContextOption,
  ContextSource,
  matches,
  registerContextSource,
  VARIABLES_LIST_TIMEOUT_MS,
  variableOptions,
  withTimeout
} from '../view/context';
import type { ContextItem } from '../view/protocol';
import VARIABLES_PY from '../../../jupyter_streamchat/kernel/variables.py' with { type: 'text' };

type Cell = NotebookPanel['content']['widgets'][number];

/** Files larger than this are not read (the contents API has no ranges). */
const MAX_FILE_BYTES = 4 * 1024 * 1024;
/** A directory's listing is reused this long, while the user types in its name. */
const LISTING_TTL_MS = 3_000;

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

/** A cell's first line with text, for the picker. */
function firstLine(source: string): string {
  const line = source.split('\n').find(l => l.trim()) ?? '';
  return line.trim().slice(0, 100);
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** The language of the notebook's code (its kernel's, as the notebook's metadata says). */
function notebookLanguage(panel: NotebookPanel): string {
  const metadata = panel.content.model?.metadata as Record<string, any> | undefined;
  const name = metadata?.language_info?.name ?? metadata?.kernelspec?.language;
  return typeof name === 'string' ? name : '';
}

/** A cell as a context item: its source, and where it is. */
export function cellItem(panel: NotebookPanel, cell: Cell, index: number): ContextItem {
  const type = cell.model.type;
  const language =
    type === 'code' ? notebookLanguage(panel) : type === 'markdown' ? 'markdown' : '';
  return {
    kind: 'cell',
    label: `cell ${index + 1}`,
    text: cell.model.sharedModel.getSource(),
    path: panel.context.path,
    cell: index,
    ...(language ? { language } : {})
  };
}

/** A cell attached, read again when the message goes (by its id: cells may move meanwhile). */
export function cellAttachment(panel: NotebookPanel, cell: Cell, index: number): Attachment {
  const id = cell.model.id;
  return {
    item: cellItem(panel, cell, index),
    refresh: () => {
      if (panel.isDisposed) {
        return null;
      }
      const now = panel.content.widgets.findIndex(c => c.model.id === id);
      return now < 0 ? null : cellItem(panel, panel.content.widgets[now], now);
    }
  };
}

/** An error output's content, as nbformat has it. */
export interface ErrorContent {
  ename: string;
  evalue: string;
  traceback: string[];
}

/** An error output as a context item: its name, value and traceback (colours removed). */
export function errorItem(
  error: ErrorContent,
  where?: { path: string; cell: number }
): ContextItem {
  const traceback = (Array.isArray(error.traceback) ? error.traceback : [])
    .map(line => String(line).replace(ANSI, ''))
    .join('\n');
  return {
    kind: 'error',
    label: where ? `error in cell ${where.cell + 1}` : String(error.ename || 'error'),
    text: `${error.ename}: ${error.evalue}\n\n${traceback}`.trim(),
    ...(where ? { path: where.path, cell: where.cell } : {})
  };
}

/** The error outputs of a cell. */
function cellErrors(cell: Cell): ErrorContent[] {
  if (cell.model.type !== 'code') {
    return [];
  }
  const outputs = (cell.model as any).outputs;
  const found: ErrorContent[] = [];
  for (let i = 0; i < (outputs?.length ?? 0); i++) {
    const output = outputs.get(i).toJSON();
    if (output.output_type === 'error') {
      found.push(output as unknown as ErrorContent);
    }
  }
  return found;
}

/** The active notebook's cells. */
function cellSource(notebooks: INotebookTracker): ContextSource {
  return {
    async options(query) {
      const panel = notebooks.currentWidget;
      if (!panel) {
        return [];
      }
      const name = basename(panel.context.path);
      return panel.content.widgets.flatMap((cell, index): ContextOption[] => {
        const source = cell.model.sharedModel.getSource();
        const label = `cell ${index + 1}`;
        if (!matches(query, label, source.slice(0, 2000), name)) {
          return [];
        }
        return [
          {
            kind: 'cell',
            label,
            detail: firstLine(source) || `(empty ${cell.model.type} cell)`,
            attach: async () => cellAttachment(panel, cell, index)
          }
        ];
      });
    }
  };
}

/** The text selected in the active cell's editor; else the selected cells; else the active
 * cell. */
function selectionSource(notebooks: INotebookTracker): ContextSource {
  const selected = (panel: NotebookPanel): ContextItem | null => {
    const notebook = panel.content;
    const active = notebook.activeCell;
    if (!active) {
      return null;
    }
    const index = notebook.activeCellIndex;
    const editor = active.editor;
    const source = active.model.sharedModel.getSource();
    if (editor) {
      const range = editor.getSelection();
      const from = editor.getOffsetAt(range.start);
      const to = editor.getOffsetAt(range.end);
      if (from !== to) {
        return {
          kind: 'selection',
          label: `selection in cell ${index + 1}`,
          text: source.slice(Math.min(from, to), Math.max(from, to)),
          path: panel.context.path,
          cell: index
        };
      }
    }
    const cells = notebook.widgets
      .map((cell, i) => [cell, i] as const)
      .filter(([cell]) => notebook.isSelectedOrActive(cell));
    if (cells.length > 1) {
      const first = cells[0][1] + 1;
      const last = cells[cells.length - 1][1] + 1;
      return {
        kind: 'selection',
        label: `cells ${first}–${last}`,
        text: cells
          .map(([cell, i]) => `# cell ${i + 1}\n${cell.model.sharedModel.getSource()}`)
          .join('\n\n'),
        path: panel.context.path
      };
    }
    return { ...cellItem(panel, active, index), kind: 'selection', label: `cell ${index + 1}` };
  };
  return {
    async options(query) {
      const panel = notebooks.currentWidget;
      const item = panel ? selected(panel) : null;
      if (item === null || !matches(query, 'selection', item.label, item.text.slice(0, 2000))) {
        return [];
      }
      return [
        {
          kind: 'selection',
          label: item.label,
          detail: firstLine(item.text),
          attach: async () => ({ item })
        }
      ];
    }
  };
}

/** The active notebook's error outputs. */
function errorSource(notebooks: INotebookTracker): ContextSource {
  return {
    async options(query) {
      const panel = notebooks.currentWidget;
      if (!panel) {
        return [];
      }
      return panel.content.widgets.flatMap((cell, index) =>
        cellErrors(cell).flatMap((error): ContextOption[] => {
          const item = errorItem(error, { path: panel.context.path, cell: index });
          const detail = `${error.ename}: ${error.evalue}`.slice(0, 200);
          return matches(query, 'error', item.label, detail)
            ? [{ kind: 'error', label: item.label, detail, attach: async () => ({ item }) }]
            : [];
        })
      );
    }
  };
}

/** What a file's extension says its language is, for the few common ones. */
const LANGUAGES: Record<string, string> = {
  py: 'python',
  ipynb: 'json',
  js: 'javascript',
  ts: 'typescript',
  md: 'markdown',
  json: 'json',
  r: 'r',
  jl: 'julia',
  sql: 'sql',
  sh: 'bash',
  yaml: 'yaml',
  yml: 'yaml',
  toml: 'toml',
  csv: 'csv',
  html: 'html',
  css: 'css'
};

/** A notebook file as text: its cells' sources, each under a line naming it. */
function notebookText(content: any): string {
  const cells: any[] = Array.isArray(content?.cells) ? content.cells : [];
  return cells
    .map((cell, i) => {
      const source = Array.isArray(cell.source) ? cell.source.join('') : String(cell.source ?? '');
      return `# cell ${i + 1} (${cell.cell_type})\n${source}`;
    })
    .join('\n\n');
}

/** Files under the server's root, through the contents API: what is typed after `@` is a
 * path; its last part filters the folder it names (the root, if none). */
function fileSource(contents: Contents.IManager): ContextSource {
  const listings = new Map<string, { at: number; items: Promise<Contents.IModel[]> }>();
  const list = (dir: string): Promise<Contents.IModel[]> => {
    const cached = listings.get(dir);
    if (cached && Date.now() - cached.at < LISTING_TTL_MS) {
      return cached.items;
    }
    const items = contents
      .get(dir, { content: true })
      .then(model =>
        model.type === 'directory' && Array.isArray(model.content) ? model.content : []
      );
    listings.set(dir, { at: Date.now(), items });
    items.catch(() => listings.delete(dir));
    return items;
  };
  const read = async (entry: Contents.IModel): Promise<Attachment> => {
    if ((entry.size ?? 0) > MAX_FILE_BYTES) {
      throw new Error(`it is larger than ${MAX_FILE_BYTES / 1024 / 1024} MB`);
    }
    const notebook = entry.type === 'notebook';
    const model = await contents.get(entry.path, {
      content: true,
      ...(notebook
        ? { type: 'notebook' as const }
        : { type: 'file' as const, format: 'text' as const })
    });
    if (model.format === 'base64') {
      throw new Error('it is not a text file');
    }
    const text = notebook ? notebookText(model.content) : String(model.content ?? '');
    const extension = entry.name.includes('.') ? entry.name.split('.').pop()!.toLowerCase() : '';
    const language = notebook ? '' : (LANGUAGES[extension] ?? '');
    return {
      item: {
        kind: 'file',
        label: entry.path,
        text,
        path: entry.path,
        ...(language ? { language } : {}),
        ...(model.mimetype ? { mime: model.mimetype } : {})
      }
    };
  };
  return {
    async options(query) {
      const slash = query.lastIndexOf('/');
      const dir = slash >= 0 ? query.slice(0, slash) : '';
      const part = query.slice(slash + 1).toLowerCase();
      let entries: Contents.IModel[];
      try {
        entries = await list(dir);
      } catch {
        return []; // no such folder
      }
      return entries
        .filter(entry => entry.name.toLowerCase().includes(part))
        .sort(
          (a, b) =>
            Number(!a.name.toLowerCase().startsWith(part)) -
              Number(!b.name.toLowerCase().startsWith(part)) ||
            Number(a.type !== 'directory') - Number(b.type !== 'directory') ||
            a.name.localeCompare(b.name)
        )
        .map((entry): ContextOption =>
          entry.type === 'directory'
            ? { kind: 'file', label: `${entry.path}/`, detail: 'folder', query: `${entry.path}/` }
            : {
                kind: 'file',
                label: entry.path,
                detail: entry.type === 'notebook' ? 'notebook' : undefined,
                attach: () => read(entry)
              }
        );
    }
  };
}

// -- the kernel's variables ------------------------------------------------------------------

/** Run `request` through variables.py's `answer` in `kernel`: its JSON answer. */
async function askKernel(
  kernel: Kernel.IKernelConnection,
  request: Record<string, unknown>,
  timeoutMs: number
): Promise<Record<string, any>> {
  // Python string literals: JSON strings are valid ones.
  const expression =
    `(lambda ns: (exec(${JSON.stringify(VARIABLES_PY)}, ns), ` +
    `ns['answer'](${JSON.stringify(JSON.stringify(request))}))[1])` +
    `({'__name__': '_streamchat_variables'})`;
  const future = kernel.requestExecute(
    {
      code: '',
      silent: true,
      store_history: false,
      allow_stdin: false,
      stop_on_error: false,
      user_expressions: { answer: expression }
    },
    true
  );
  let reply;
  try {
    reply = await withTimeout(future.done, timeoutMs, 'the kernel');
  } catch (e) {
    future.dispose();
    throw e;
  }
  const content = reply.content as any;
  const answer = content?.user_expressions?.answer;
  if (content?.status !== 'ok' || answer?.status !== 'ok') {
    throw new Error(`the kernel could not answer (${answer?.ename ?? content?.ename ?? 'error'})`);
  }
  const data = answer.data?.['application/json'];
  if (typeof data !== 'object' || data === null) {
    throw new Error('the kernel gave no answer');
  }
  if (typeof data.error === 'string') {
    throw new Error(data.error);
  }
  return data;
}

/** The variables of the active notebook's kernel, where it runs Python. */
function variableSource(notebooks: INotebookTracker): ContextSource {
  let note = '';
  const kernelOf = async (): Promise<Kernel.IKernelConnection | null> => {
    const panel = notebooks.currentWidget;
    const kernel = panel?.sessionContext.session?.kernel ?? null;
    if (kernel === null) {
      note = panel ? 'The notebook has no kernel: its variables cannot be attached.' : '';
      return null;
    }
    const info = await withTimeout(kernel.info, VARIABLES_LIST_TIMEOUT_MS, 'the kernel');
    if (info.language_info.name !== 'python') {
      note = `Variables can be attached from Python kernels only.`;
      return null;
    }
    if (kernel.status !== 'idle') {
      note = 'The kernel is busy: its variables can be attached once it is idle.';
      return null;
    }
    note = '';
    return kernel;
  };
  return {
    get note() {
      return note;
    },
    async options(query) {
      const kernel = await kernelOf();
      if (kernel === null) {
        return [];
      }
      return variableOptions((request, timeoutMs) => askKernel(kernel, request, timeoutMs), query);
    }
  };
}

/** Offer the lab's sources in every chat view of the page; returns their withdrawal. */
export function registerLabContextSources(
  app: JupyterFrontEnd,
  notebooks: INotebookTracker | null
): () => void {
  const sources: ContextSource[] = [];
  if (notebooks) {
    sources.push(
      selectionSource(notebooks),
      cellSource(notebooks),
      errorSource(notebooks),
      variableSource(notebooks)
    );
  }
  sources.push(fileSource(app.serviceManager.contents));
  const withdraw = sources.map(registerContextSource);
  return () => withdraw.forEach(w => w());
}

/** What "Ask about this error" attaches: the error, and its cell's source when the error is a
 * notebook cell's. */
export function errorAttachments(
  error: ErrorContent,
  where: { panel: NotebookPanel; index: number } | null
): Attachment[] {
  if (where === null) {
    return [{ item: errorItem(error) }];
  }
  const { panel, index } = where;
  const cell = panel.content.widgets[index];
  return [
    { item: errorItem(error, { path: panel.context.path, cell: index }) },
    ...(cell ? [cellAttachment(panel, cell, index)] : [])
  ];
}
