// The anywidget adapter: mounts a ChatView in a notebook output and ties it to the model.
//
// The model carries configuration (conversation id, agent) and the kernel's small snapshot of
// the conversation; the token stream comes over the view's own WebSocket to the hub. Each live
// model also announces itself (`initialize`), so that JupyterLab's output renderer, which draws
// the chat from the saved notebook, can bind to it (see view/widgetmodel.ts).

import { ChatView } from '../view/chatview';
import { pageServerSettings } from '../view/server';
import {
  agentChosenAt, agentSetter, bindView, imageHosts, registerModel, snapshotOf, WidgetModel
} from '../view/widgetmodel';
import '../view/style.css';

function initialize({ model }: { model: WidgetModel }): (() => void) | void {
  const key = model.get('_output_key');
  if (typeof key === 'string' && key) {
    return registerModel(key, model);
  }
}

function render({ model, el }: { model: WidgetModel; el: HTMLElement }): () => void {
  const view = new ChatView(el, {
    server: pageServerSettings(),
    conversationId: model.get('conversation_id'),
    agentId: model.get('agent'),
    agentChosenAt: agentChosenAt(model),
    snapshot: snapshotOf(model),
    imageHosts: imageHosts(model),
    onAgentChange: agentSetter(model)
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
