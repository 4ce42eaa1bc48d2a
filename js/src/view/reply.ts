// One reply as a client holds it, and how each frame about it changes that: a pure reducer,
// kept apart from the DOM so the rules of the contract (docs/protocol.md) are tested alone.
//
// - A reply's text is the concatenation of its chunks in `seq` order; the client holds the
//   text up to `lastSeq`. Its reasoning is the concatenation of the frames' `reasoning` fields,
//   held beside the text by the same rules (a frame's reasoning comes in with its chunk).
// - A frame with a `seq` already held is a duplicate: dropped.
// - A frame past a gap is dropped too, and the client asks `RESUME {afterSeq: lastSeq}` (once
//   per `lastSeq`: frames that keep coming meanwhile wait in the store).
// - A stored copy (in HISTORY or HISTORY_PAGE) adds only the text (and reasoning) past what is
//   held. One that is `truncated` or still streaming is completed with RESUME.
// - The final frame (`isComplete`) sets the final status and brings the `usage`; nothing
//   changes an ended reply.

import { FINAL, MessageChunk, Status, StoredMessage, Usage } from './protocol';

export interface ReplyState {
  /** The answer. */
  readonly text: string;
  /** The reasoning ("thinking") text, never part of the answer. */
  readonly reasoning: string;
  readonly lastSeq: number;
  readonly status: Status;
  readonly error?: string;
  readonly usage?: Usage;
  /** The `afterSeq` of the last RESUME asked for this reply; -1 when none was. */
  readonly resumeAsked: number;
}

export interface ReplyStep {
  readonly state: ReplyState;
  /** Text to add to the answer shown ('' when none). */
  readonly append: string;
  /** Text to add to the reasoning shown ('' when none). */
  readonly appendReasoning: string;
  /** Send `RESUME {afterSeq: resumeFrom}` for this reply, unless null. */
  readonly resumeFrom: number | null;
  /** This step ended the reply (its status is now final). */
  readonly ended: boolean;
}

export const NEW_REPLY: ReplyState = {
  text: '',
  reasoning: '',
  lastSeq: 0,
  status: 'streaming',
  resumeAsked: -1
};

export const isEnded = (state: ReplyState): boolean => FINAL.has(state.status);

const unchanged = (state: ReplyState): ReplyStep => ({
  state,
  append: '',
  appendReasoning: '',
  resumeFrom: null,
  ended: false
});

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
    return { ...unchanged(resumed(state)), resumeFrom: state.lastSeq };
  }
  const reasoning = frame.reasoning ?? '';
  const next: ReplyState = {
    ...state,
    text: state.text + frame.chunk,
    reasoning: state.reasoning + reasoning,
    lastSeq: frame.seq,
    ...(frame.isComplete
      ? {
          status: frame.status ?? 'complete',
          error: frame.error,
          usage: frame.usage ?? state.usage
        }
      : {})
  };
  return {
    state: next,
    append: frame.chunk,
    appendReasoning: reasoning,
    resumeFrom: null,
    ended: frame.isComplete
  };
}

/** The reply's stored copy, from HISTORY or HISTORY_PAGE. */
export function applyStored(state: ReplyState, message: StoredMessage): ReplyStep {
  if (isEnded(state)) {
    return unchanged(state);
  }
  // Both texts are the start of the same concatenation: the longer one holds the other. So are
  // both reasonings.
  const storedReasoning = message.reasoning ?? '';
  const ahead =
    message.lastSeq > state.lastSeq &&
    message.text.length >= state.text.length &&
    storedReasoning.length >= state.reasoning.length;
  const append = ahead ? message.text.slice(state.text.length) : '';
  const appendReasoning = ahead ? storedReasoning.slice(state.reasoning.length) : '';
  let next: ReplyState = ahead
    ? { ...state, text: message.text, reasoning: storedReasoning, lastSeq: message.lastSeq }
    : state;
  const whole = !message.truncated && message.lastSeq >= state.lastSeq;
  if (whole && FINAL.has(message.status)) {
    next = {
      ...next,
      status: message.status,
      error: message.error,
      usage: message.usage ?? next.usage
    };
    return { state: next, append, appendReasoning, resumeFrom: null, ended: true };
  }
  // Still streaming, or only its start is here: RESUME brings the rest, unless one was asked.
  if (next.resumeAsked < 0) {
    return {
      state: resumed(next),
      append,
      appendReasoning,
      resumeFrom: next.lastSeq,
      ended: false
    };
  }
  return { state: next, append, appendReasoning, resumeFrom: null, ended: false };
}
