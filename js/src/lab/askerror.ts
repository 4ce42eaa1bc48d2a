// "Ask about this error" on a cell's error output: a button under the traceback, and the same
// command in the output's context menu. Either opens the Chat panel with the error (and its
// cell's source) attached to the next message.
//
// The button comes with the output's renderer: error outputs carry
// `application/vnd.jupyter.error` beside their stderr text, and this renderer, ranked before
// JupyterLab's own error renderer, draws that text exactly as it does (same widget, same
// classes and `data-mime-type`, so themes and other extensions see the usual error output),
// then adds the button (`data-testid="streamchat-ask-error"`). Its label is drawn by CSS, so
// the output's text stays the traceback alone.

import { IRenderMime, RenderedError } from '@jupyterlab/rendermime';
import type { ErrorContent } from './contextsources';
import './askerror.css';

export const ERROR_MIME = 'application/vnd.jupyter.error';
const STDERR_MIME = 'application/vnd.jupyter.stderr';
/** On the node of every error output drawn here (the context menu's selector). */
export const ERROR_OUTPUT_CLASS = 'jp-streamchat-ErrorOutput';

/** The error shown by each output drawn here, by its node (for the context menu). */
const shown = new WeakMap<HTMLElement, ErrorContent>();

/** The error of the output drawn at `node`, if it is one of ours. */
export function errorAt(node: HTMLElement): ErrorContent | undefined {
  return shown.get(node);
}

function errorContent(model: IRenderMime.IMimeModel): ErrorContent | null {
  const data = model.data[ERROR_MIME] as Record<string, unknown> | undefined;
  if (typeof data !== 'object' || data === null) {
    return null;
  }
  return {
    ename: String(data.ename ?? ''),
    evalue: String(data.evalue ?? ''),
    traceback: Array.isArray(data.traceback) ? data.traceback.map(String) : []
  };
}

class ErrorOutput extends RenderedError {
  constructor(
    options: IRenderMime.IRendererOptions,
    private readonly ask: ((error: ErrorContent, node: HTMLElement) => void) | null
  ) {
    super({ ...options, mimeType: STDERR_MIME });
    this.addClass(ERROR_OUTPUT_CLASS);
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    await super.renderModel(model);
    const error = errorContent(model);
    if (error === null) {
      return;
    }
    shown.set(this.node, error);
    if (this.ask === null) {
      return;
    }
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'jp-streamchat-AskError';
    button.dataset.testid = 'streamchat-ask-error';
    button.dataset.label = 'Ask about this error';
    button.setAttribute('aria-label', 'Ask about this error in the Chat panel');
    button.title = 'Open the Chat panel with this error and its cell attached';
    button.addEventListener('click', event => {
      event.preventDefault();
      event.stopPropagation();
      this.ask?.(error, this.node);
    });
    this.node.append(button);
  }
}

/** Draws error outputs with an "Ask about this error" button calling `ask` (no button when
 * `ask()` says there is no chat to ask in). */
export function errorRendererFactory(
  ask: () => ((error: ErrorContent, node: HTMLElement) => void) | null
): IRenderMime.IRendererFactory {
  return {
    safe: true, // the traceback is drawn as JupyterLab draws it, as text
    mimeTypes: [ERROR_MIME],
    defaultRank: 100, // before JupyterLab's stderr renderer (110), which errors fall back to
    createRenderer: options => new ErrorOutput(options, ask())
  };
}
