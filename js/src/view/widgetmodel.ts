// A ChatView tied to a notebook widget's model, and where hosts find those models.
//
// The kernel's `ChatWidget` carries configuration (conversation id, agent, image hosts) and a
// small snapshot on its widget model. The anywidget adapter binds a view to that model; so does
// the JupyterLab output renderer, which draws a notebook's chat from the saved output alone and
// then binds to the model when (and only when) a live kernel has one. The two are separate
// bundles, so the models they share are kept in one registry on `globalThis`, keyed by the
// widget's `_output_key` (also written into the saved output).

import { chosenAt } from './agentchoice';
import { ChatView, SnapshotMessage } from './chatview';

/** The part of an anywidget model the view uses. */
export interface WidgetModel {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  on(event: string, callback: () => void): void;
  off(event: string, callback: () => void): void;
}

/** Hosts whose images load without a click. Read defensively: a widget saved by an older
 * version, or a kernel without the trait, has no such attribute. */
export function imageHosts(model: WidgetModel): string[] {
  const hosts = model.get('image_hosts') ?? [];
  return Array.isArray(hosts) ? hosts.filter((h): h is string => typeof h === 'string') : [];
}

/** When the kernel chose the model's agent (seconds since the epoch: `ChatWidget(agent=...)`,
 * `chat.agent = ...`, or a pick in a view of it), or null: the agent is then only a default,
 * and the view follows the conversation's last agent (see agentchoice.ts). A kernel of an
 * older version has no such trait. */
export function agentChosenAt(model: WidgetModel): number | null {
  return chosenAt(model.get('_agent_set_at'));
}

export function snapshotOf(model: WidgetModel): SnapshotMessage[] {
  const messages = model.get('messages');
  return Array.isArray(messages) ? messages : [];
}

/** Keep `view` in step with `model` (and the model with the view's agent picker) until the
 * returned function is called. */
export function bindView(view: ChatView, model: WidgetModel): () => void {
  const onConversation = () => view.setConversation(model.get('conversation_id'));
  // A change now is the kernel's choice made now: newer than every message the view has seen.
  const onAgent = () => view.setAgent(model.get('agent'), agentChosenAt(model), true);
  const onMessages = () => view.setSnapshot(snapshotOf(model));
  const onImageHosts = () => view.setImageHosts(imageHosts(model));
  const events: [string, () => void][] = [
    ['change:conversation_id', onConversation],
    ['change:agent', onAgent],
    ['change:_agent_set_at', onAgent],
    ['change:messages', onMessages],
    ['change:image_hosts', onImageHosts]
  ];
  for (const [event, callback] of events) {
    model.on(event, callback);
  }
  return () => {
    for (const [event, callback] of events) {
      model.off(event, callback);
    }
  };
}

/** The user picked another agent in a bound view: the model (and the kernel) learn it. */
export function agentSetter(model: WidgetModel): (agentId: string) => void {
  return agentId => {
    model.set('agent', agentId);
    model.save_changes();
  };
}

// -- the registry of live widget models ------------------------------------------------------

type Listener = (key: string, model: WidgetModel | null) => void;

interface Registry {
  models: Map<string, WidgetModel>;
  listeners: Set<Listener>;
}

function registry(): Registry {
  const slot = Symbol.for('jupyter-streamchat.widget-models');
  const holder = globalThis as unknown as Record<symbol, Registry | undefined>;
  return (holder[slot] ??= { models: new Map(), listeners: new Set() });
}

/** A live model announces itself; the returned function withdraws it (model closed). */
export function registerModel(key: string, model: WidgetModel): () => void {
  const { models, listeners } = registry();
  models.set(key, model);
  listeners.forEach(listener => listener(key, model));
  return () => {
    if (models.get(key) === model) {
      models.delete(key);
      listeners.forEach(listener => listener(key, null));
    }
  };
}

/** Call `listener` with the model of `key` now (if any) and whenever it comes or goes. */
export function watchModel(key: string, listener: (model: WidgetModel | null) => void): () => void {
  const { models, listeners } = registry();
  const filtered: Listener = (k, model) => {
    if (k === key) {
      listener(model);
    }
  };
  listeners.add(filtered);
  const model = models.get(key);
  if (model !== undefined) {
    listener(model);
  }
  return () => listeners.delete(filtered);
}
