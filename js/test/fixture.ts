// The example frames shared with the Python tests (tests/fixtures/frames.json; its `format`
// key describes it), typed for the tests here.
import data from '../../tests/fixtures/frames.json';

/** A text as received: a JSON value to serialize, or the exact text. */
export interface Wire {
  frame?: unknown;
  raw?: string;
}
export interface ServerCase extends Wire {
  name: string;
  valid: boolean;
}
export interface ReplyCase {
  name: string;
  conversationId: string;
  messageId: string;
  frames: (Wire | { client: 'reconnect' } | Record<string, unknown>)[];
  expect: {
    text: string;
    status: string;
    lastSeq: number;
    error?: string;
    resumes: number[];
    /** The reasoning held beside the text; absent when none is. */
    reasoning?: string;
    /** The usage held, as on the wire; absent when none is. */
    usage?: Record<string, unknown>;
  };
}

export const fixture = data as unknown as {
  format: Record<string, unknown>;
  serverFrames: ServerCase[];
  replies: ReplyCase[];
};

/** The text a case stands for. */
export function wireText(item: Wire): string {
  return item.raw !== undefined ? item.raw : JSON.stringify(item.frame);
}
