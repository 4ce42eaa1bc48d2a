// The wire contract, version 1, as TypeScript types (see docs/protocol.md).
// Every frame is one JSON text; readers ignore unknown extra fields.

export type Status = 'streaming' | 'complete' | 'stopped' | 'interrupted' | 'error';

// Client to server.
export interface SendMessage {
  type: 'SEND_MESSAGE';
  conversationId: string;
  agentId: string;
  text: string;
  clientMessageId: string;
}
export interface StopGenerating {
  type: 'STOP_GENERATING';
  messageId: string;
}
export interface Subscribe {
  type: 'SUBSCRIBE';
  conversationId: string;
}
export interface Resume {
  type: 'RESUME';
  messageId: string;
  afterSeq: number;
}
export type ClientFrame = SendMessage | StopGenerating | Subscribe | Resume;

// Server to client.
export interface MessageAccepted {
  type: 'MESSAGE_ACCEPTED';
  clientMessageId: string;
  conversationId: string;
  userMessageId: string;
  messageId: string;
  agentId: string;
  text?: string; // the user's text, so other tabs on the conversation can show it
}
export interface MessageChunk {
  type: 'MESSAGE_CHUNK';
  messageId: string;
  conversationId: string;
  agentId: string;
  seq: number; // 1, 2, 3, ... per reply, the final frame included
  chunk: string;
  isComplete: boolean;
  status?: Status; // on the final frame
  error?: string; // on a final frame with status 'error'
}
export interface StoredMessage {
  messageId: string;
  role: 'user' | 'assistant';
  agentId: string;
  text: string;
  status: Status;
  lastSeq: number;
  error?: string;
}
export interface History {
  type: 'HISTORY';
  conversationId: string;
  messages: StoredMessage[];
}
export type ErrorCode =
  | 'bad_json'
  | 'unknown_type'
  | 'bad_field'
  | 'too_large'
  | 'unknown_message'
  | 'unknown_agent'
  | 'not_a_reply'
  | 'store_unavailable'
  | 'internal_error';
export interface ErrorFrame {
  type: 'ERROR';
  code: ErrorCode;
  message: string;
  clientMessageId?: string;
  messageId?: string;
  conversationId?: string;
}
export type ServerFrame = MessageAccepted | MessageChunk | History | ErrorFrame;
