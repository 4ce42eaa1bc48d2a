// The JupyterLab (and Notebook 7) host of the chat: a thin adapter over the shared view.
//
// - a "Chat" panel in the left sidebar: the stored conversations and the one opened;
// - conversations in main-area tabs, restored with the layout;
// - notebook outputs of `ChatWidget` drawn from the saved notebook, with or without a kernel;
// - commands in the palette, and one shortcut that puts the keyboard in the chat input;
// - code from a reply inserted as a new cell below the active one;
// - `@` in a chat's input attaches the active notebook's cells, the selection, error outputs,
//   files and the kernel's variables (contextsources.ts); error outputs offer "Ask about this
//   error" (askerror.ts).

import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, Notification, WidgetTracker } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { LabIcon } from '@jupyterlab/ui-components';
import { errorAt, ERROR_OUTPUT_CLASS, errorRendererFactory } from './askerror';
import { ErrorContent, errorAttachments, registerLabContextSources } from './contextsources';
import { pageServerSettings, ServerSettings } from '../view/server';
import '../view/style.css';
import { ChatPanel } from './chatpanel';
import chatSvg from './chat.svg';
import { outputRendererFactory } from './output';
import { labServerSettings } from './server';
import { ConversationSidebar, newConversationId } from './sidebar';
import './sidebar.css';

export const chatIcon = new LabIcon({ name: 'jupyter-streamchat:chat', svgstr: chatSvg });

const DEFAULT_AGENT = 'demo';

export namespace CommandIDs {
  export const openPanel = 'streamchat:open-panel';
  export const newChat = 'streamchat:new-chat';
  export const newChatInTab = 'streamchat:new-chat-in-tab';
  export const openInTab = 'streamchat:open-in-tab';
  export const focusInput = 'streamchat:focus-input';
  export const search = 'streamchat:search';
  export const askAboutError = 'streamchat:ask-about-error';
}

/** The notebook and index of the cell whose output `node` is in, if it is a notebook's. */
function cellOf(
  notebooks: INotebookTracker | null,
  node: HTMLElement
): { panel: NotebookPanel; index: number } | null {
  let found: { panel: NotebookPanel; index: number } | null = null;
  notebooks?.forEach(panel => {
    const index = panel.content.widgets.findIndex(cell => cell.node.contains(node));
    if (found === null && index >= 0) {
      found = { panel, index };
    }
  });
  return found;
}

/** An error given as a command's arguments (by the output's button). */
function errorArgs(args: Record<string, unknown>): ErrorContent | null {
  if (typeof args.ename !== 'string') {
    return null;
  }
  return {
    ename: args.ename,
    evalue: String(args.evalue ?? ''),
    traceback: Array.isArray(args.traceback) ? args.traceback.map(String) : []
  };
}

/** Put `code` in a new cell below the active cell of the current notebook. */
function insertCodeCell(notebooks: INotebookTracker | null, code: string): void {
  const panel = notebooks?.currentWidget;
  if (!panel) {
    Notification.warning('Open a notebook to insert the code into it.', { autoClose: 5000 });
    return;
  }
  const notebook = panel.content;
  NotebookActions.insertBelow(notebook);
  const cell = notebook.activeCell;
  if (cell) {
    if (cell.model.type !== 'code') {
      NotebookActions.changeCellType(notebook, 'code');
    }
    notebook.activeCell?.model.sharedModel.setSource(code);
  }
}

/** Notebook outputs of `ChatWidget`, drawn from the saved notebook: they need no server and
 * no kernel to show their chat. */
const notebookOutput: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-streamchat:notebook-output',
  description: "Draws a notebook's chat from its saved output, so it outlives the kernel.",
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    notebooks: INotebookTracker | null
  ) => {
    rendermime.addFactory(
      outputRendererFactory(
        code => insertCodeCell(notebooks, code),
        labServerSettings(app.serviceManager.serverSettings)
      ),
      -20
    );
  }
};

/** Error outputs drawn with an "Ask about this error" button (the command is the Chat
 * panel's: without it, no button). */
const askErrorPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-streamchat:ask-about-error',
  description: 'Adds "Ask about this error" to error outputs: the error goes to the Chat panel.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    notebooks: INotebookTracker | null
  ) => {
    rendermime.addFactory(
      errorRendererFactory(() =>
        app.commands.hasCommand(CommandIDs.askAboutError)
          ? (error, node) => {
              const where = cellOf(notebooks, node);
              void app.commands.execute(CommandIDs.askAboutError, {
                ...error,
                ...(where ? { path: where.panel.context.path, cell: where.index } : {})
              });
            }
          : null
      )
    );
  }
};

/** The Chat panel, chat tabs, and their commands. */
const sidebarPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-streamchat:sidebar',
  description:
    'A Chat panel of every stored conversation, chats in main-area tabs, and their commands.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, INotebookTracker, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    labShell: ILabShell | null
  ) => {
    const insertCode = (code: string) => insertCodeCell(notebooks, code);
    if (pageServerSettings() === null) {
      console.warn('jupyter-streamchat: this page names no Jupyter server; the Chat panel is off.');
      return;
    }
    const server: ServerSettings = labServerSettings(app.serviceManager.serverSettings);

    const tabs = new WidgetTracker<MainAreaWidget<ChatPanel>>({ namespace: 'streamchat' });
    const openInTab = (conversationId: string, agentId: string, title: string) => {
      const existing = tabs.find(tab => tab.content.conversationId === conversationId);
      if (existing) {
        app.shell.activateById(existing.id);
        return existing;
      }
      // The tab remembers a pick made in it (restored with the layout), for a conversation with
      // no message yet; a stored one opens with the agent it last used anyway (agentchoice.ts).
      const content = new ChatPanel({
        server,
        conversationId,
        agentId,
        onInsertCode: insertCode,
        onAgentChange: () => void tabs.save(tab)
      });
      const tab = new MainAreaWidget({ content });
      tab.id = `streamchat-tab-${conversationId}`;
      tab.title.label = title || 'Chat';
      tab.title.caption = title || 'Chat';
      tab.title.icon = chatIcon;
      tab.title.closable = true;
      tab.addClass('jp-streamchat-Tab');
      void tabs.add(tab);
      app.shell.add(tab, 'main');
      app.shell.activateById(tab.id);
      return tab;
    };

    const sidebar = new ConversationSidebar({
      server,
      defaultAgent: DEFAULT_AGENT,
      onInsertCode: insertCode,
      openInTab: (id, agent, title) => void openInTab(id, agent, title)
    });
    sidebar.title.icon = chatIcon;
    sidebar.revealed = () => app.shell.activateById(sidebar.id);
    app.shell.add(sidebar, 'left', { rank: 600 });
    restorer?.add(sidebar, sidebar.id);
    restorer?.restore(tabs, {
      command: CommandIDs.openInTab,
      args: tab => ({
        conversationId: tab.content.conversationId,
        agentId: tab.content.agentId,
        title: tab.title.label
      }),
      name: tab => tab.content.conversationId
    });

    // What `@` offers in every chat of the page (this panel's, tabs', notebook outputs').
    registerLabContextSources(app, notebooks);

    const { commands } = app;
    commands.addCommand(CommandIDs.askAboutError, {
      label: 'Ask about This Error',
      caption: "Open the Chat panel with the error output (and its cell's source) attached",
      icon: chatIcon,
      execute: args => {
        let error = errorArgs(args);
        let where: { panel: NotebookPanel; index: number } | null = null;
        if (error !== null) {
          // From the output's button: the output's cell, if it is still there.
          const panel = notebooks?.find(p => p.context.path === args.path) ?? null;
          const index = typeof args.cell === 'number' ? args.cell : -1;
          where = panel && panel.content.widgets[index] ? { panel, index } : null;
        } else {
          // From the output's context menu, else (the palette) the active cell's first error.
          const node = args.fromMenu
            ? app.contextMenuHitTest(n => n.classList.contains(ERROR_OUTPUT_CLASS))
            : undefined;
          if (node) {
            error = errorAt(node) ?? null;
            where = cellOf(notebooks, node);
          } else {
            const panel = notebooks?.currentWidget;
            const cell = panel?.content.activeCell;
            const outputs = cell?.model.type === 'code' ? (cell.model as any).outputs : null;
            for (let i = 0; i < (outputs?.length ?? 0) && error === null; i++) {
              const output = outputs.get(i).toJSON();
              if (output.output_type === 'error') {
                error = errorArgs(output);
                where = { panel: panel!, index: panel!.content.activeCellIndex };
              }
            }
          }
        }
        if (error === null) {
          Notification.info('The active cell shows no error to ask about.', { autoClose: 5000 });
          return;
        }
        app.shell.activateById(sidebar.id);
        const open = sidebar.openConversation;
        const chat = open ? sidebar.open(open.conversationId) : sidebar.newChat();
        chat.view.attachContext(errorAttachments(error, where));
        chat.focusInput();
      }
    });
    app.contextMenu.addItem({
      command: CommandIDs.askAboutError,
      args: { fromMenu: true },
      selector: `.${ERROR_OUTPUT_CLASS}`,
      rank: 0
    });
    commands.addCommand(CommandIDs.openPanel, {
      label: 'Open the Chat Panel',
      caption: 'Show every stored conversation',
      icon: chatIcon,
      execute: () => app.shell.activateById(sidebar.id)
    });
    commands.addCommand(CommandIDs.newChat, {
      label: 'New Chat',
      caption: 'Start a conversation in the Chat panel',
      icon: chatIcon,
      execute: () => {
        app.shell.activateById(sidebar.id);
        sidebar.newChat();
      }
    });
    commands.addCommand(CommandIDs.newChatInTab, {
      label: 'New Chat in a Tab',
      caption: 'Start a conversation in the main area',
      execute: () => openInTab(newConversationId(), DEFAULT_AGENT, 'New chat')
    });
    commands.addCommand(CommandIDs.openInTab, {
      label: 'Open Chat in a Tab',
      caption: 'Open the conversation shown in the Chat panel as a main-area tab',
      isEnabled: args => !!args.conversationId || sidebar.openConversation !== null,
      execute: args => {
        const id = (args.conversationId as string) || sidebar.openConversation?.conversationId;
        return id
          ? openInTab(
              id,
              (args.agentId as string) || DEFAULT_AGENT,
              (args.title as string) || 'Chat'
            )
          : undefined;
      }
    });
    commands.addCommand(CommandIDs.focusInput, {
      label: 'Focus the Chat Input',
      caption: 'Put the keyboard in the chat input (the current chat tab, else the Chat panel)',
      execute: () => {
        const current = tabs.currentWidget;
        if (current && labShell?.currentWidget === current) {
          current.content.focusInput();
          return;
        }
        app.shell.activateById(sidebar.id);
        const open = sidebar.openConversation;
        if (open) {
          sidebar.open(open.conversationId); // shows the chat if the list was showing
        } else {
          sidebar.newChat();
        }
      }
    });
    commands.addCommand(CommandIDs.search, {
      label: 'Search Conversations',
      caption: 'Find conversations by the text of their messages',
      execute: () => {
        app.shell.activateById(sidebar.id);
        sidebar.focusSearch();
      }
    });
    commands.addKeyBinding({
      command: CommandIDs.focusInput,
      keys: ['Accel Shift ;'],
      selector: 'body'
    });
    for (const command of Object.values(CommandIDs)) {
      if (command !== CommandIDs.openInTab) {
        palette?.addItem({ command, category: 'Chat' });
      }
    }
    palette?.addItem({ command: CommandIDs.openInTab, category: 'Chat' });
  }
};

export default [notebookOutput, askErrorPlugin, sidebarPlugin];
