// The anywidget adapter: mounts a ChatView in a notebook output and ties it to the model.
//
// The model carries configuration (conversation id, agent) and the kernel's small snapshot of
// the conversation; the token stream comes over the view's own WebSocket to the hub.

import { ChatView, SnapshotMessage } from '../view/chatview';
import { pageServerSettings } from '../view/server';
import '../view/style.css';

interface Model {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  on(event: string, callback: () => void): void;
  off(event: string, callback: () => void): void;
}

/** Hosts whose images load without a click. Read defensively: a widget saved by an older
 * version, or a kernel without the trait, has no such attribute. */
function imageHosts(model: Model): string[] {
  const hosts = model.get('image_hosts') ?? [];
  return Array.isArray(hosts) ? hosts.filter((h): h is string => typeof h === 'string') : [];
}

function render({ model, el }: { model: Model; el: HTMLElement }): () => void {
  const view = new ChatView(el, {
    server: pageServerSettings(),
    conversationId: model.get('conversation_id'),
    agentId: model.get('agent'),
    snapshot: model.get('messages') as SnapshotMessage[],
    imageHosts: imageHosts(model),
    onAgentChange: agentId => {
      model.set('agent', agentId);
      model.save_changes();
    }
  });
  const onConversation = () => view.setConversation(model.get('conversation_id'));
  const onAgent = () => view.setAgent(model.get('agent'));
  const onMessages = () => view.setSnapshot(model.get('messages'));
  const onImageHosts = () => view.setImageHosts(imageHosts(model));
  model.on('change:conversation_id', onConversation);
  model.on('change:agent', onAgent);
  model.on('change:messages', onMessages);
  model.on('change:image_hosts', onImageHosts);
  return () => {
    model.off('change:conversation_id', onConversation);
    model.off('change:agent', onAgent);
    model.off('change:messages', onMessages);
    model.off('change:image_hosts', onImageHosts);
    view.dispose();
  };
}

export default { render };

// For other hosts of the same view (a sidebar panel, a plain page).
export { ChatView } from '../view/chatview';
export { ImagePolicy } from '../view/images';
export { renderMarkdown, StreamingMarkdown } from '../view/markdown';
export { pageServerSettings, serverSettings } from '../view/server';
