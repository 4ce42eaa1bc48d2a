// A Lumino widget around the shared ChatView: the chat inside the side panel and in a
// main-area tab.

import { Widget } from '@lumino/widgets';
import { ChatView } from '../view/chatview';
import { ServerSettings } from '../view/server';
import { showing } from './shown';

export interface ChatPanelOptions {
  server: ServerSettings;
  conversationId: string;
  /** A default: a stored conversation opens with the agent it last used (agentchoice.ts). */
  agentId: string;
  /** The user picked another agent in this chat. */
  onAgentChange?: (agentId: string) => void;
  onInsertCode?: (code: string, language: string) => void;
}

export class ChatPanel extends Widget {
  readonly view: ChatView;
  private conversation: string;
  private unshow: () => void;

  constructor(options: ChatPanelOptions) {
    super();
    this.addClass('jp-streamchat-ChatPanel');
    this.conversation = options.conversationId;
    this.view = new ChatView(this.node, {
      server: options.server,
      conversationId: options.conversationId,
      agentId: options.agentId,
      onAgentChange: options.onAgentChange,
      onInsertCode: options.onInsertCode
    });
    this.unshow = showing(this.conversation, this.node);
  }

  get conversationId(): string {
    return this.conversation;
  }

  /** The agent the next message goes to. */
  get agentId(): string {
    return this.view.agent;
  }

  /** Show another conversation in the same view. */
  setConversation(conversationId: string, agentId?: string): void {
    this.unshow();
    this.conversation = conversationId;
    this.view.setConversation(conversationId);
    if (agentId) {
      this.view.setAgent(agentId);
    }
    this.unshow = showing(conversationId, this.node);
  }

  /** Put the keyboard in the chat input. */
  focusInput(): void {
    this.node.querySelector<HTMLTextAreaElement>('[data-testid="streamchat-input"]')?.focus();
  }

  protected onActivateRequest(): void {
    this.focusInput();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.unshow();
    this.view.dispose();
    super.dispose();
  }
}
