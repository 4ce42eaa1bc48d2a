// One reply as a client holds it, and how each frame about it changes that: a pure reducer,
// kept apart from the DOM so the rules of the contract (docs/protocol.md) are tested alone.
//
// - A reply's text is the concatenation of its chunks in `seq` order; the client holds the
//   text up to `lastSeq`.
// - A frame with a `seq` already held is a duplicate: dropped.
// - A frame past a gap is dropped too, and the client asks `RESUME {afterSeq: lastSeq}` (once
//   per `lastSeq`: frames that keep coming meanwhile wait in the store).
// - A stored copy (in HISTORY or HISTORY_PAGE) adds only the text past what is held. One that
//   is `truncated` or still streaming is completed with RESUME.
// - The final frame (`isComplete`) sets the final status; nothing changes an ended reply.

import { FINAL, MessageChunk, Status, StoredMessage } from './protocol';

export interface ReplyState {
  readonly text: string;
  readonly lastSeq: number;
  readonly status: Status;
  readonly error?: string;
  /** The `afterSeq` of the last RESUME asked for this reply; -1 when none was. */
  readonly resumeAsked: number;
}

export interface ReplyStep {
  readonly state: ReplyState;
  /** Text to add to what is shown ('' when none). */
  readonly append: string;
  /** Send `RESUME {afterSeq: resumeFrom}` for this reply, unless null. */
  readonly resumeFrom: number | null;
  /** This step ended the reply (its status is now final). */
  readonly ended: boolean;
}

export const NEW_REPLY: ReplyState = { text: '', lastSeq: 0, status: 'streaming', resumeAsked: -1 };

export const isEnded = (state: ReplyState): boolean => FINAL.has(state.status);

const unchanged = (state: ReplyState): ReplyStep =>
  ({ state, append: '', resumeFrom: null, ended: false });

/** The reply after a RESUME from its `lastSeq` was sent (as on every reconnection). */
export function resumed(state: ReplyState): ReplyState {
  return { ...state, resumeAsked: state.lastSeq };
}

/** A MESSAGE_CHUNK of this reply. */
export function applyChunk(state: ReplyState, frame: MessageChunk): ReplyStep {
  if (isEnded(state) || frame.seq <= state.lastSeq) {
    return unchanged(state);
  }
  if (frame.seq > state.lastSeq + 1) {
    if (state.resumeAsked === state.lastSeq) {
      return unchanged(state); // already asked from here; the missing frames are on their way
    }
    return { state: resumed(state), append: '', resumeFrom: state.lastSeq, ended: false };
  }
  const next: ReplyState = {
    ...state,
    text: state.text + frame.chunk,
    lastSeq: frame.seq,
    ...(frame.isComplete ? { status: frame.status ?? 'complete', error: frame.error } : {})
  };
  return { state: next, append: frame.chunk, resumeFrom: null, ended: frame.isComplete };
}

/** The reply's stored copy, from HISTORY or HISTORY_PAGE. */
export function applyStored(state: ReplyState, message: StoredMessage): ReplyStep {
  if (isEnded(state)) {
    return unchanged(state);
  }
  // Both texts are the start of the same concatenation: the longer one holds the other.
  const ahead = message.lastSeq > state.lastSeq && message.text.length >= state.text.length;
  const append = ahead ? message.text.slice(state.text.length) : '';
  let next: ReplyState = ahead
    ? { ...state, text: message.text, lastSeq: message.lastSeq }
    : state;
  const whole = !message.truncated && message.lastSeq >= state.lastSeq;
  if (whole && FINAL.has(message.status)) {
    next = { ...next, status: message.status, error: message.error };
    return { state: next, append, resumeFrom: null, ended: true };
  }
  // Still streaming, or only its start is here: RESUME brings the rest, unless one was asked.
  if (next.resumeAsked < 0) {
    return { state: resumed(next), append, resumeFrom: next.lastSeq, ended: false };
  }
  return { state: next, append, resumeFrom: null, ended: false };
}
