// The anywidget adapter: mounts a ChatView in a notebook output and ties it to the model.
//
// The model carries configuration (conversation id, agent) and the kernel's small snapshot of
// the conversation; the token stream comes over the view's own WebSocket to the hub, or, when
// the page's server runs no hub (VS Code, Colab, the server extension not enabled), through the
// kernel over the model's own comm (commtransport.ts). Each live model also announces itself
// (`initialize`), so that JupyterLab's output renderer, which draws the chat from the saved
// notebook, can bind to it (see view/widgetmodel.ts).

import { ChatView } from '../view/chatview';
import { pageServerSettings } from '../view/server';
import { CommModel, CommTransport, serverHasHub } from './commtransport';
import { kernelVariables } from './kernelvariables';
import {
  agentChosenAt,
  agentSetter,
  bindView,
  imageHosts,
  registerModel,
  snapshotOf,
  WidgetModel
} from '../view/widgetmodel';
import '../view/style.css';

function initialize({ model }: { model: WidgetModel }): (() => void) | void {
  const key = model.get('_output_key');
  if (typeof key === 'string' && key) {
    return registerModel(key, model);
  }
}

async function render({
  model,
  el
}: {
  model: WidgetModel & CommModel;
  el: HTMLElement;
}): Promise<() => void> {
  const server = pageServerSettings();
  const viaServer = await serverHasHub(server);
  // A model that cannot send has no kernel behind it (a static page showing a saved
  // notebook): the view shows the saved conversation and says there is no server.
  const viaKernel = !viaServer && typeof model.send === 'function';
  const view = new ChatView(el, {
    server: viaServer ? server : null,
    connect: viaKernel ? handlers => new CommTransport(handlers, model) : undefined,
    conversationId: model.get('conversation_id'),
    agentId: model.get('agent'),
    agentChosenAt: agentChosenAt(model),
    snapshot: snapshotOf(model),
    imageHosts: imageHosts(model),
    onAgentChange: agentSetter(model),
    // `@` offers the kernel's variables, while a kernel is behind the model.
    contextSources: typeof model.send === 'function' ? [kernelVariables(model)] : []
  });
  const unbind = bindView(view, model);
  return () => {
    unbind();
    view.dispose();
  };
}

export default { initialize, render };

// For other hosts of the same view (a plain page).
export { ChatView } from '../view/chatview';
export { ImagePolicy } from '../view/images';
export { renderMarkdown, StreamingMarkdown } from '../view/markdown';
export { pageServerSettings, serverSettings } from '../view/server';
