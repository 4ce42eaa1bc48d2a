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
// - Tool calls: a frame's `toolCalls` come in with its seq, after its text; the latest state of
//   each id wins and the calls keep the order they first appeared in. A stored copy ahead of
//   what is held brings the states as of its `lastSeq`. Once the reply has ended no call is left
//   pending, running or waiting: the hub's final frame says so, and the client holds it so too
//   where it has not (an older hub, a reply lost from the store), as failed and "not run".

import { FINAL, MessageChunk, Status, StoredMessage, ToolCallState, Usage } from './protocol';

export interface ReplyState {
  /** The answer. */
  readonly text: string;
  /** The reasoning ("thinking") text, never part of the answer. */
  readonly reasoning: string;
  readonly lastSeq: number;
  readonly status: Status;
  readonly error?: string;
  readonly usage?: Usage;
  /** The latest state of each tool call, in the order they first appeared. */
  readonly toolCalls: readonly ToolCallState[];
  /** The `afterSeq` of the last RESUME asked for this reply; -1 when none was. */
  readonly resumeAsked: number;
}

export interface ReplyStep {
  readonly state: ReplyState;
  /** Text to add to the answer shown ('' when none). */
  readonly append: string;
  /** Text to add to the reasoning shown ('' when none). */
  readonly appendReasoning: string;
  /** Tool calls whose state changed, as now held, in the reply's order (none: empty). */
  readonly toolCalls: readonly ToolCallState[];
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
  toolCalls: [],
  resumeAsked: -1
};

export const isEnded = (state: ReplyState): boolean => FINAL.has(state.status);

const unchanged = (state: ReplyState): ReplyStep => ({
  state,
  append: '',
  appendReasoning: '',
  toolCalls: [],
  resumeFrom: null,
  ended: false
});

/** The error of a call the reply ended before (as the hub words it, for the same case). */
export const NOT_RUN = 'not run: the reply ended first';

/** A call still to end (pending, running, or waiting for the user). */
export const isOpenCall = (call: ToolCallState): boolean =>
  call.status !== 'completed' && call.status !== 'failed';

const sameCall = (a: ToolCallState, b: ToolCallState): boolean =>
  JSON.stringify(a) === JSON.stringify(b);

/**
 * `held` with `states` taken in, in order (a later state of an id replaces the one held, a new
 * id goes last), and the calls whose state changed, in `held`'s new order.
 */
export function mergeToolCalls(
  held: readonly ToolCallState[],
  states: readonly ToolCallState[]
): { calls: readonly ToolCallState[]; changed: readonly ToolCallState[] } {
  if (states.length === 0) {
    return { calls: held, changed: [] };
  }
  const calls = held.slice();
  const at = new Map(calls.map((call, i) => [call.id, i]));
  const changed = new Set<string>();
  for (const state of states) {
    const i = at.get(state.id);
    if (i === undefined) {
      at.set(state.id, calls.length);
      calls.push(state);
      changed.add(state.id);
    } else if (!sameCall(calls[i], state)) {
      calls[i] = state;
      changed.add(state.id);
    }
  }
  return { calls, changed: calls.filter(call => changed.has(call.id)) };
}

/** The calls of a reply that has ended: none left open (see the notes above). */
function settled(
  calls: readonly ToolCallState[],
  changed: readonly ToolCallState[]
): { calls: readonly ToolCallState[]; changed: readonly ToolCallState[] } {
  if (!calls.some(isOpenCall)) {
    return { calls, changed };
  }
  const ended = calls.map(call =>
    isOpenCall(call) ? { ...call, status: 'failed' as const, error: NOT_RUN } : call
  );
  const ids = new Set([
    ...changed.map(call => call.id),
    ...calls.filter(isOpenCall).map(call => call.id)
  ]);
  return { calls: ended, changed: ended.filter(call => ids.has(call.id)) };
}

/** The reply held as ended with `status` by the client itself (its store lost it): its open
 * calls failed too. */
export function endedHere(state: ReplyState, status: Status): ReplyState {
  return { ...state, status, toolCalls: settled(state.toolCalls, []).calls };
}

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
  let tools = mergeToolCalls(state.toolCalls, frame.toolCalls ?? []);
  if (frame.isComplete) {
    tools = settled(tools.calls, tools.changed);
  }
  const next: ReplyState = {
    ...state,
    text: state.text + frame.chunk,
    reasoning: state.reasoning + reasoning,
    toolCalls: tools.calls,
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
    toolCalls: tools.changed,
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
  // The stored states are as of its lastSeq: newer than those held when it is ahead.
  let tools = mergeToolCalls(state.toolCalls, ahead ? (message.toolCalls ?? []) : []);
  let next: ReplyState = ahead
    ? {
        ...state,
        text: message.text,
        reasoning: storedReasoning,
        toolCalls: tools.calls,
        lastSeq: message.lastSeq
      }
    : state;
  const whole = !message.truncated && message.lastSeq >= state.lastSeq;
  if (whole && FINAL.has(message.status)) {
    tools = settled(next.toolCalls, tools.changed);
    next = {
      ...next,
      status: message.status,
      error: message.error,
      usage: message.usage ?? next.usage,
      toolCalls: tools.calls
    };
    return {
      state: next,
      append,
      appendReasoning,
      toolCalls: tools.changed,
      resumeFrom: null,
      ended: true
    };
  }
  // Still streaming, or only its start is here: RESUME brings the rest, unless one was asked.
  if (next.resumeAsked < 0) {
    return {
      state: resumed(next),
      append,
      appendReasoning,
      toolCalls: tools.changed,
      resumeFrom: next.lastSeq,
      ended: false
    };
  }
  return {
    state: next,
    append,
    appendReasoning,
    toolCalls: tools.changed,
    resumeFrom: null,
    ended: false
  };
}
