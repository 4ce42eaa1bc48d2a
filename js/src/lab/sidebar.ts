// The "Chat" side panel: every stored conversation, most recent first, and the chat view of the
// one opened.
//
// The list is paged by the server (`GET api/conversations`, the next page loads as the user
// scrolls), searched by the server (`?q=`), and kept live by the hub: the panel's own socket
// asks for WATCH_CONVERSATIONS and applies each CONVERSATION_UPDATED / CONVERSATION_DELETED,
// whichever tab made the change. DOM hooks (DESIGN.md): `streamchat-sidebar` on the root,
// `streamchat-new`, `streamchat-search`, and `streamchat-conversation` with
// `data-conversation-id` on each entry (and `data-waiting="true"`, with a visible mark, while a
// reply in it waits for the user to approve a tool call: the list's `waiting`).

import { Dialog, InputDialog, Notification, showDialog } from '@jupyterlab/apputils';
import { deleteIcon, downloadIcon, editIcon, LabIcon, launchIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import { HubConnection } from '../view/connection';
import { el, randomId } from '../view/dom';
import { ConversationEntry, ServerFrame } from '../view/protocol';
import { ServerSettings } from '../view/server';
import { ApiError, ConversationsApi } from './api';
import { ChatPanel } from './chatpanel';
import { claimNotification } from './notifyonce';
import { isShown } from './shown';
import { Unread } from './unread';
import { fullDate, howLongAgo } from './when';

const PAGE = 50;
/** The title of a conversation that has none yet (short: the panel is 250 px wide). */
const NEW_TITLE = 'New chat';
const SEARCH_DELAY_MS = 200;

export interface SidebarOptions {
  server: ServerSettings;
  /** Agent of a new chat until the user picks another. */
  defaultAgent: string;
  onInsertCode?: (code: string, language: string) => void;
  /** Open a conversation in a main-area tab. */
  openInTab: (conversationId: string, agentId: string, title: string) => void;
}

/** A button named `label` (for screen readers and the tooltip), showing `face`: its text, or
 * one of JupyterLab's icons. */
function button(
  label: string,
  className: string,
  testid: string,
  face: string | LabIcon = label
): HTMLButtonElement {
  const node = el('button', `jp-streamchat-button ${className}`, testid);
  node.type = 'button';
  if (typeof face === 'string') {
    node.textContent = face;
  } else {
    node.append(face.element({ tag: 'span', className: 'jp-streamchat-Icon' }));
  }
  node.setAttribute('aria-label', label);
  node.title = label;
  return node;
}

/**
 * A search result's snippet (plain text from the server, see docs/protocol.md) as nodes, each
 * occurrence of `query` wrapped in `<mark>`. The server sends no offsets: the query is found
 * again here, ignoring case (the regular expression's Unicode case folding), with any run of
 * spaces in it matching any run of whitespace (the server makes them one space). Only text
 * nodes are made: the snippet is someone's message, never HTML.
 */
export function markMatches(text: string, query: string): Node[] {
  const words = query
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .map(word => word.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'));
  if (!text || words.length === 0) {
    return text ? [document.createTextNode(text)] : [];
  }
  const nodes: Node[] = [];
  const pattern = new RegExp(words.join('\\s+'), 'giu');
  let last = 0;
  for (const found of text.matchAll(pattern)) {
    const start = found.index ?? 0;
    if (found[0].length === 0) {
      continue;
    }
    if (start > last) {
      nodes.push(document.createTextNode(text.slice(last, start)));
    }
    const mark = document.createElement('mark');
    mark.className = 'jp-streamchat-Match';
    mark.textContent = found[0];
    nodes.push(mark);
    last = start + found[0].length;
  }
  if (last < text.length) {
    nodes.push(document.createTextNode(text.slice(last)));
  }
  return nodes;
}

/** A conversation not stored yet gets its id here; the hub stores it with its first message. */
export const newConversationId = randomId;

export class ConversationSidebar extends Widget {
  readonly api: ConversationsApi;
  readonly unread = new Unread();
  private readonly options: SidebarOptions;
  private readonly search: HTMLInputElement;
  private readonly listView: HTMLElement;
  private readonly list: HTMLElement;
  private readonly more: HTMLButtonElement;
  private readonly empty: HTMLElement;
  private readonly problem: HTMLElement;
  private readonly chatView: HTMLElement;
  private readonly chatTitle: HTMLElement;
  private readonly connection: HubConnection;
  private readonly scroller: HTMLElement;
  private entries = new Map<string, ConversationEntry>(); // shown in the list, by id
  private streaming = new Map<string, boolean>(); // every conversation the hub told about
  private next: string | null = null;
  private query = '';
  private loading: Promise<void> | null = null;
  private generation = 0; // bumps on every reload, so late pages of an old query are dropped
  private searchTimer: number | null = null;
  private chat: ChatPanel | null = null;
  private agent: string;

  constructor(options: SidebarOptions) {
    super();
    this.options = options;
    this.api = new ConversationsApi(options.server);
    this.agent = options.defaultAgent;
    this.id = 'streamchat-sidebar';
    this.addClass('jp-streamchat-Sidebar');
    this.node.dataset.testid = 'streamchat-sidebar';
    this.title.caption = 'Chat';

    // The list: new chat, search, entries.
    this.listView = el('div', 'jp-streamchat-ListView');
    const toolbar = el('div', 'jp-streamchat-Toolbar');
    const newButton = button('New chat', 'jp-mod-styled jp-mod-accept', 'streamchat-new');
    newButton.addEventListener('click', () => this.newChat());
    this.search = el('input', 'jp-streamchat-Search jp-mod-styled', 'streamchat-search');
    this.search.type = 'search';
    this.search.placeholder = 'Search messages';
    this.search.setAttribute('aria-label', 'Search conversations by the text of their messages');
    this.search.addEventListener('input', () => this.searchSoon());
    this.search.addEventListener('keydown', event => {
      if (event.key === 'ArrowDown') {
        event.preventDefault();
        this.focusEntry(0);
      }
    });
    toolbar.append(newButton, this.search);
    this.problem = el('div', 'jp-streamchat-Problem', 'streamchat-list-problem');
    this.problem.setAttribute('role', 'alert');
    this.problem.hidden = true;
    this.list = el('ul', 'jp-streamchat-List', 'streamchat-conversations');
    this.list.setAttribute('aria-label', 'Conversations');
    this.list.addEventListener('keydown', this.onListKey);
    this.empty = el('p', 'jp-streamchat-Empty', 'streamchat-empty');
    this.empty.hidden = true;
    this.more = button('Load more conversations', 'jp-streamchat-More', 'streamchat-more', 'More…');
    this.more.hidden = true;
    this.more.addEventListener('click', () => void this.loadMore());
    // One scrolling box holds the entries and the "More" button after them, so the button is
    // in view (and the next page loads) only once the user has scrolled to the end.
    const scroller = el('div', 'jp-streamchat-Scroller');
    scroller.append(this.list, this.empty, this.more);
    this.listView.append(toolbar, this.problem, scroller);

    // The open conversation: a way back to the list, and the shared chat view.
    this.chatView = el('div', 'jp-streamchat-ChatArea');
    this.chatView.hidden = true;
    const chatHeader = el('div', 'jp-streamchat-ChatHeader');
    const back = button(
      'Back to all conversations',
      'jp-streamchat-Back',
      'streamchat-back',
      '← Chats'
    );
    back.addEventListener('click', () => this.showList());
    this.chatTitle = el('span', 'jp-streamchat-ChatTitle', 'streamchat-chat-title');
    const inTab = button(
      'Open in a tab',
      'jp-streamchat-InTab',
      'streamchat-chat-open-tab',
      launchIcon
    );
    inTab.addEventListener('click', () => {
      if (this.chat) {
        this.options.openInTab(
          this.chat.conversationId,
          this.agent,
          this.chatTitle.textContent ?? ''
        );
      }
    });
    chatHeader.append(back, this.chatTitle, inTab);
    this.chatView.append(chatHeader);
    this.node.append(this.listView, this.chatView);

    // The next page loads when the user scrolls near the end of the list.
    this.scroller = scroller;
    scroller.addEventListener('scroll', () => this.loadIfNearEnd(), { passive: true });

    this.connection = new HubConnection(options.server, {
      onOpen: () => {
        this.connection.send({ type: 'WATCH_CONVERSATIONS' });
        void this.reload(); // catch up on what changed while the socket was down
      },
      onFrame: frame => this.onFrame(frame),
      onState: () => undefined
    });
  }

  /** Conversation open in the panel, if any. */
  get openConversation(): ChatPanel | null {
    return this.chat;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.connection.close();
    this.chat?.dispose();
    super.dispose();
  }

  // -- the list ----------------------------------------------------------------------------

  /** The first page again (of the search, when there is one). */
  async reload(): Promise<void> {
    const generation = ++this.generation;
    this.next = null;
    this.loading = null;
    let page;
    try {
      page = await this.api.list({ limit: PAGE, query: this.query });
    } catch (e) {
      this.showProblem(e);
      return;
    }
    if (generation !== this.generation) {
      return;
    }
    this.showProblem(null);
    this.entries.clear();
    this.list.replaceChildren();
    this.append(page.conversations);
    this.next = page.next;
    this.updateFooter();
  }

  private loadMore(): Promise<void> {
    if (this.loading === null && this.next !== null) {
      const generation = this.generation;
      const after = this.next;
      this.loading = this.api
        .list({ limit: PAGE, after, query: this.query })
        .then(
          page => {
            if (generation === this.generation) {
              this.append(page.conversations);
              this.next = page.next;
              this.updateFooter();
              requestAnimationFrame(() => this.loadIfNearEnd()); // still short of the end
            }
          },
          e => this.showProblem(e)
        )
        .finally(() => {
          if (generation === this.generation) {
            this.loading = null;
          }
        });
    }
    return this.loading ?? Promise.resolve();
  }

  private loadIfNearEnd(): void {
    const { scrollTop, clientHeight, scrollHeight } = this.scroller;
    if (this.next !== null && clientHeight > 0 && scrollTop + clientHeight >= scrollHeight - 200) {
      void this.loadMore();
    }
  }

  private append(conversations: ConversationEntry[]): void {
    for (const entry of conversations) {
      if (!this.entries.has(entry.conversationId)) {
        this.entries.set(entry.conversationId, entry);
        this.streaming.set(entry.conversationId, entry.streaming);
        this.list.append(this.renderEntry(entry));
      }
    }
  }

  private updateFooter(): void {
    this.more.hidden = this.next === null;
    this.empty.hidden = this.entries.size > 0;
    this.empty.textContent = this.query
      ? `No conversation mentions “${this.query}”.`
      : 'No conversations yet. Start one with “New chat”.';
  }

  private showProblem(error: unknown): void {
    this.problem.hidden = error === null;
    if (error !== null) {
      this.problem.textContent =
        error instanceof ApiError
          ? `The conversation list is not available: ${error.message}`
          : 'Cannot reach the Jupyter server to list conversations.';
    }
  }

  private searchSoon(): void {
    if (this.searchTimer !== null) {
      clearTimeout(this.searchTimer);
    }
    this.searchTimer = window.setTimeout(() => {
      this.searchTimer = null;
      const query = this.search.value.trim();
      if (query !== this.query) {
        this.query = query;
        void this.reload();
      }
    }, SEARCH_DELAY_MS);
  }

  focusSearch(): void {
    this.showList();
    this.search.focus();
    this.search.select();
  }

  private renderEntry(entry: ConversationEntry): HTMLElement {
    const item = el('li', 'jp-streamchat-Conversation', 'streamchat-conversation');
    item.dataset.conversationId = entry.conversationId;
    item.tabIndex = 0;
    item.setAttribute('role', 'button');
    this.fillEntry(item, entry);
    item.addEventListener('click', event => {
      if (!(event.target as HTMLElement).closest('button')) {
        this.open(entry.conversationId);
      }
    });
    return item;
  }

  private fillEntry(item: HTMLElement, entry: ConversationEntry): void {
    const id = entry.conversationId;
    const title = entry.title || NEW_TITLE;
    const unread = this.unread.has(id);
    item.dataset.streaming = String(entry.streaming);
    item.dataset.unread = String(unread);
    if (entry.waiting) {
      item.dataset.waiting = 'true';
    } else {
      delete item.dataset.waiting;
    }
    item.classList.toggle('jp-mod-unread', unread);
    item.classList.toggle('jp-mod-active', this.chat?.conversationId === id);
    const when = new Date(entry.updatedAt * 1000);
    const label = [
      title,
      entry.agentId ? `with ${entry.agentId}` : '',
      howLongAgo(when),
      entry.streaming ? 'reply streaming' : '',
      entry.waiting ? 'waiting for your approval' : '',
      unread ? 'unread' : ''
    ]
      .filter(Boolean)
      .join(', ');
    item.setAttribute('aria-label', label);

    const titleNode = el(
      'span',
      'jp-streamchat-ConversationTitle',
      'streamchat-conversation-title'
    );
    titleNode.textContent = title;
    titleNode.title = title;
    const meta = el('span', 'jp-streamchat-ConversationMeta');
    const agent = el('span', 'jp-streamchat-ConversationAgent', 'streamchat-conversation-agent');
    agent.textContent = entry.agentId ?? '';
    const time = el('time', 'jp-streamchat-ConversationTime', 'streamchat-conversation-time');
    time.dateTime = when.toISOString();
    time.textContent = howLongAgo(when);
    time.title = fullDate(when);
    meta.append(agent, time);
    const marks = el('span', 'jp-streamchat-ConversationMarks');
    if (entry.waiting) {
      const ask = el('span', 'jp-streamchat-WaitingMark', 'streamchat-waiting-mark');
      ask.textContent = 'Approve?';
      ask.title = 'A tool call waits for your approval';
      ask.setAttribute('aria-hidden', 'true'); // the entry's label says it
      marks.append(ask);
    }
    if (entry.streaming) {
      const live = el('span', 'jp-streamchat-Live', 'streamchat-live');
      live.title = 'A reply is streaming';
      live.setAttribute('aria-hidden', 'true');
      marks.append(live);
    }
    if (unread) {
      const dot = el('span', 'jp-streamchat-UnreadDot', 'streamchat-unread');
      dot.title = 'Unread reply';
      dot.setAttribute('aria-hidden', 'true');
      marks.append(dot);
    }
    const actions = el('span', 'jp-streamchat-Actions');
    const rename = button(
      `Rename “${title}”`,
      'jp-streamchat-Action',
      'streamchat-rename',
      editIcon
    );
    rename.addEventListener('click', () => void this.rename(id));
    const exportButton = button(
      `Export “${title}” as Markdown`,
      'jp-streamchat-Action',
      'streamchat-export',
      downloadIcon
    );
    exportButton.addEventListener('click', () => void this.exportMarkdown(id));
    const tab = button(
      `Open “${title}” in a tab`,
      'jp-streamchat-Action',
      'streamchat-open-tab',
      launchIcon
    );
    tab.addEventListener('click', () =>
      this.options.openInTab(id, entry.agentId ?? this.agent, title)
    );
    const remove = button(
      `Delete “${title}”`,
      'jp-streamchat-Action',
      'streamchat-delete',
      deleteIcon
    );
    remove.addEventListener('click', () => void this.remove(id));
    actions.append(rename, exportButton, tab, remove);
    const snippet = el('span', 'jp-streamchat-Snippet', 'streamchat-snippet');
    snippet.append(...markMatches(entry.snippet ?? '', this.query));
    snippet.title = entry.snippet ?? '';
    snippet.hidden = !entry.snippet;
    item.replaceChildren(titleNode, marks, meta, snippet, actions);
  }

  private items(): HTMLElement[] {
    return Array.from(
      this.list.querySelectorAll<HTMLElement>('[data-testid="streamchat-conversation"]')
    );
  }

  private focusEntry(index: number): void {
    const items = this.items();
    items[Math.max(0, Math.min(index, items.length - 1))]?.focus();
  }

  /** Up/Down move between entries, Enter opens, F2 renames, Delete deletes. */
  private onListKey = (event: KeyboardEvent): void => {
    const item = (event.target as HTMLElement).closest<HTMLElement>(
      '[data-testid="streamchat-conversation"]'
    );
    if (item === null || event.target !== item) {
      return;
    }
    const id = item.dataset.conversationId!;
    const index = this.items().indexOf(item);
    const actions: Record<string, () => void> = {
      ArrowDown: () => this.focusEntry(index + 1),
      ArrowUp: () => (index === 0 ? this.search.focus() : this.focusEntry(index - 1)),
      Home: () => this.focusEntry(0),
      End: () => this.focusEntry(Infinity),
      Enter: () => this.open(id),
      ' ': () => this.open(id),
      F2: () => void this.rename(id),
      Delete: () => void this.remove(id)
    };
    const action = actions[event.key];
    if (action && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      action();
    }
  };

  // -- live updates from the hub -----------------------------------------------------------

  private onFrame(frame: ServerFrame): void {
    if (frame.type === 'CONVERSATION_UPDATED') {
      this.onUpdated(frame.conversation);
    } else if (frame.type === 'CONVERSATION_DELETED') {
      this.onDeleted(frame.conversationId);
    }
  }

  private onUpdated(entry: ConversationEntry): void {
    const id = entry.conversationId;
    const wasStreaming = this.streaming.get(id) ?? false;
    this.streaming.set(id, entry.streaming);
    if (wasStreaming && !entry.streaming && !isShown(id)) {
      this.unread.add(id);
      void this.notifyReply(entry);
    }
    if (this.chat?.conversationId === id) {
      this.chatTitle.textContent = entry.title || NEW_TITLE;
    }
    const known = this.entries.get(id);
    if (this.query) {
      // A search's results keep their place; what changed in them is shown.
      if (known) {
        this.entries.set(id, { ...entry, snippet: known.snippet });
        this.fillEntry(this.itemOf(id)!, this.entries.get(id)!);
      }
      return;
    }
    // Most recent first: the entry moves to its place by time (the top, nearly always). One
    // older than every loaded entry is left to its page.
    const item = known ? this.itemOf(id)! : this.renderEntry(entry);
    this.entries.set(id, entry);
    this.fillEntry(item, entry);
    const after = this.items().find(other => {
      const o = this.entries.get(other.dataset.conversationId!);
      return (
        other !== item &&
        o !== undefined &&
        (o.updatedAt < entry.updatedAt ||
          (o.updatedAt === entry.updatedAt && o.conversationId < id))
      );
    });
    if (after) {
      if (after !== item.nextSibling || !item.isConnected) {
        const focused = document.activeElement === item;
        this.list.insertBefore(item, after);
        if (focused) {
          item.focus();
        }
      }
    } else if (this.next === null) {
      this.list.append(item);
    } else if (!known) {
      this.entries.delete(id);
    }
    this.updateFooter();
  }

  private onDeleted(conversationId: string): void {
    this.streaming.delete(conversationId);
    this.unread.delete(conversationId);
    this.entries.delete(conversationId);
    this.itemOf(conversationId)?.remove();
    this.updateFooter();
    if (this.chat?.conversationId === conversationId) {
      this.showList();
    }
  }

  private itemOf(conversationId: string): HTMLElement | null {
    return this.list.querySelector<HTMLElement>(
      `[data-conversation-id="${CSS.escape(conversationId)}"]`
    );
  }

  /** A notification that a reply ended unseen, raised by one tab of this origin only (the
   * first to claim it: notifyonce.ts). Every tab hears the same entry for that end, and no
   * two ends of one conversation have the same number of messages. */
  private async notifyReply(entry: ConversationEntry): Promise<void> {
    if (!(await claimNotification(`${entry.conversationId}:${entry.messageCount}`))) {
      return;
    }
    const title = entry.title || 'a conversation';
    Notification.info(`A reply finished in “${title}”.`, {
      autoClose: 8000,
      actions: [
        {
          label: 'Open',
          caption: `Open “${title}” in the Chat panel`,
          callback: () => this.open(entry.conversationId, true)
        }
      ]
    });
  }

  // -- actions -----------------------------------------------------------------------------

  /** Show a conversation in the panel (and the panel itself when `reveal`). */
  open(conversationId: string, reveal = false): ChatPanel {
    const entry = this.entries.get(conversationId);
    const agent = entry?.agentId ?? this.agent;
    this.unread.delete(conversationId);
    if (this.chat === null) {
      this.chat = new ChatPanel({
        server: this.options.server,
        conversationId,
        agentId: agent,
        onInsertCode: this.options.onInsertCode
      });
      Widget.attach(this.chat, this.chatView);
    } else {
      this.chat.setConversation(conversationId, agent);
    }
    this.chatTitle.textContent = entry?.title || NEW_TITLE;
    this.listView.hidden = true;
    this.chatView.hidden = false;
    this.node.dataset.view = 'chat';
    this.node.dataset.openConversation = conversationId;
    for (const item of this.items()) {
      item.classList.toggle('jp-mod-active', item.dataset.conversationId === conversationId);
    }
    if (entry) {
      this.fillEntry(this.itemOf(conversationId)!, entry);
    }
    if (reveal) {
      this.revealed?.();
    }
    this.chat.focusInput();
    return this.chat;
  }

  /** Set by the plugin: bring the panel to the front of the left area. */
  revealed: (() => void) | null = null;

  /** A conversation not stored yet: it appears in the list with its first message. */
  newChat(): ChatPanel {
    return this.open(newConversationId());
  }

  showList(): void {
    this.chatView.hidden = true;
    this.listView.hidden = false;
    this.node.dataset.view = 'list';
    const current = this.chat?.conversationId;
    (current ? this.itemOf(current) : null)?.focus();
  }

  private async rename(conversationId: string): Promise<void> {
    const entry = this.entries.get(conversationId);
    const result = await InputDialog.getText({
      title: 'Rename conversation',
      label: 'Title (leave empty for its first words)',
      text: entry?.title ?? '',
      okLabel: 'Rename'
    });
    if (!result.button.accept || result.value === null) {
      return;
    }
    try {
      await this.api.rename(conversationId, result.value);
    } catch (e) {
      Notification.error(`Could not rename the conversation: ${(e as Error).message}`);
    }
    // The hub's CONVERSATION_UPDATED brings the new title to every tab, this one included.
  }

  private async remove(conversationId: string): Promise<void> {
    const title = this.entries.get(conversationId)?.title || 'this conversation';
    const answer = await showDialog({
      title: 'Delete conversation?',
      body: `“${title}” and all its messages will be deleted. This cannot be undone.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await this.api.remove(conversationId);
      this.onDeleted(conversationId); // at once here; other tabs hear it from the hub
    } catch (e) {
      Notification.error(`Could not delete the conversation: ${(e as Error).message}`);
    }
  }

  private async exportMarkdown(conversationId: string): Promise<void> {
    let file;
    try {
      file = await this.api.exportMarkdown(conversationId);
    } catch (e) {
      Notification.error(`Could not export the conversation: ${(e as Error).message}`);
      return;
    }
    const url = URL.createObjectURL(new Blob([file.text], { type: 'text/markdown' }));
    const link = document.createElement('a');
    link.href = url;
    link.download = file.filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  /** The agent a new chat starts with (the last one picked). */
  setDefaultAgent(agentId: string): void {
    this.agent = agentId;
  }

  protected onAfterShow(): void {
    // Relative times moved on while the panel was closed; only their text is redone.
    const now = Date.now();
    for (const time of this.list.querySelectorAll<HTMLTimeElement>('time')) {
      const text = howLongAgo(new Date(time.dateTime), now);
      if (time.textContent !== text) {
        time.textContent = text;
      }
    }
  }
}
