// A notebook's chat, drawn from the saved output rather than from the kernel's widget model.
//
// `ChatWidget` leaves `application/vnd.jupyter.streamchat+json` (conversation id, agent, and a
// key naming its widget model) beside the widget view in the cell's output. This renderer is
// preferred to the widget view, so the chat shows with no kernel at all: after a kernel restart,
// a server restart, or in a notebook opened tomorrow; the view streams from the hub over its own
// socket, and a reply in flight continues. While the kernel's widget model is alive (the cell
// was run in this session) the view binds to it, so `send`, `stop`, `messages` and trait
// changes from Python work as in the plain widget. Where the page's server runs no hub (the
// server extension is not enabled there), the view streams through that model's kernel instead
// (widget/commtransport.ts), as the plain widget does.
//
// A notebook may come from anyone, so the saved output is checked before anything is sent:
// a field of the wrong kind, or an id the server would refuse (over 200 characters, not valid
// Unicode), shows a sentence in place of the chat, and no socket is opened for it.

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import { chosenAt } from '../view/agentchoice';
import { ChatView } from '../view/chatview';
import { el } from '../view/dom';
import { parseChatOutput } from '../view/protocol';
import { pageServerSettings, ServerSettings } from '../view/server';
import { CommModel, CommTransport, serverHasHub } from '../widget/commtransport';
import {
  agentChosenAt,
  agentSetter,
  bindView,
  imageHosts,
  snapshotOf,
  watchModel,
  WidgetModel
} from '../view/widgetmodel';
import { showing } from './shown';

export const OUTPUT_MIME = 'application/vnd.jupyter.streamchat+json';

/** The agent of an output that names none: `ChatWidget`'s default. */
const DEFAULT_AGENT = 'demo';

export class NotebookChatOutput extends Widget implements IRenderMime.IRenderer {
  private view: ChatView | null = null;
  private model: WidgetModel | null = null;
  private comm: CommTransport | null = null; // the view's transport when it goes through the kernel
  private conversationId = '';
  private unbind = (): void => undefined;
  private unwatch = (): void => undefined;
  private unshow = (): void => undefined;

  constructor(
    private readonly onInsertCode?: (code: string, language: string) => void,
    private readonly server?: ServerSettings
  ) {
    super();
    this.addClass('jp-streamchat-Output');
  }

  async renderModel(mimeModel: IRenderMime.IMimeModel): Promise<void> {
    const parsed = parseChatOutput(mimeModel.data[OUTPUT_MIME]);
    if ('problem' in parsed) {
      this.refuse(parsed.problem);
      return;
    }
    const data = { ...parsed.output, agentId: parsed.output.agentId || DEFAULT_AGENT };
    // When the kernel chose that agent (absent in outputs of older versions: then a default,
    // and the chat opens with the agent the conversation last used; see agentchoice.ts).
    const raw = mimeModel.data[OUTPUT_MIME] as Record<string, unknown>;
    const agentChosen = chosenAt(raw.agentChosenAt);
    // The host's settings (JupyterLab's ServerConnection), where the page names a server.
    const page = this.view === null ? pageServerSettings() : null;
    const server = page && (this.server ?? page);
    const viaServer = this.view === null && (await serverHasHub(server));
    if (this.view === null) {
      this.node.replaceChildren();
      this.view = new ChatView(this.node, {
        server: viaServer ? server : null,
        connect: viaServer
          ? undefined
          : handlers =>
              (this.comm = new CommTransport(
                handlers,
                this.model as (WidgetModel & CommModel) | null
              )),
        conversationId: data.conversationId,
        agentId: data.agentId,
        agentChosenAt: agentChosen,
        onAgentChange: agentId => {
          if (this.model) {
            agentSetter(this.model)(agentId);
          }
        },
        onInsertCode: this.onInsertCode
      });
      this.markShown(data.conversationId);
      if (data.outputKey) {
        this.unwatch = watchModel(data.outputKey, model => this.attach(model));
      }
    } else if (this.model === null) {
      this.view.setConversation(data.conversationId);
      this.view.setAgent(data.agentId, agentChosen);
      this.markShown(data.conversationId);
    }
  }

  /** Show why the output cannot be a chat, in its place (the chat, if any, goes). */
  private refuse(problem: string): void {
    this.unwatch();
    this.unbind();
    this.unshow();
    this.unwatch = this.unbind = this.unshow = () => undefined;
    this.view?.dispose();
    this.view = null;
    this.model = null;
    this.conversationId = '';
    const note = el('div', 'streamchat-refused', 'streamchat-refused');
    note.setAttribute('role', 'alert');
    note.textContent = problem;
    this.node.replaceChildren(note);
  }

  /** The kernel's widget model came (bind to it) or went (the view carries on alone). */
  private attach(model: WidgetModel | null): void {
    this.unbind();
    this.unbind = () => undefined;
    this.model = model;
    this.comm?.attach(model as (WidgetModel & CommModel) | null);
    if (model === null || this.view === null) {
      return;
    }
    const conversationId = model.get('conversation_id');
    if (typeof conversationId === 'string' && conversationId) {
      this.view.setConversation(conversationId);
      this.markShown(conversationId);
    }
    this.view.setAgent(model.get('agent'), agentChosenAt(model));
    this.view.setImageHosts(imageHosts(model));
    this.view.setSnapshot(snapshotOf(model));
    const unbindView = bindView(this.view, model);
    const onConversation = () => this.markShown(model.get('conversation_id'));
    model.on('change:conversation_id', onConversation);
    this.unbind = () => {
      unbindView();
      model.off('change:conversation_id', onConversation);
    };
  }

  private markShown(conversationId: string): void {
    if (conversationId !== this.conversationId) {
      this.unshow();
      this.conversationId = conversationId;
      this.unshow = showing(conversationId, this.node);
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.unwatch();
    this.unbind();
    this.unshow();
    this.view?.dispose();
    super.dispose();
  }
}

/** The renderer factory. Ranked before the widget view's (-10, set by ipywidgets' manager) so
 * that the saved output, not the kernel, decides whether the chat shows. It is `safe`: the
 * output holds only ids, the view renders agent text through a sanitizer, and nothing runs
 * until the user acts, so an untrusted notebook may show it too. */
export function outputRendererFactory(
  onInsertCode?: (code: string, language: string) => void,
  server?: ServerSettings
): IRenderMime.IRendererFactory {
  return {
    safe: true,
    mimeTypes: [OUTPUT_MIME],
    defaultRank: -20,
    createRenderer: () => new NotebookChatOutput(onInsertCode, server)
  };
}
