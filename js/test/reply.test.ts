// The reply reducer against every reply case of the shared fixture: a sequence of texts as a
// client receives them, folded the way the chat view does (parse, keep its conversation's
// frames about the reply, apply), must leave the expected text, reasoning, usage, status and
// RESUME requests; and what its steps said to show must add up to what it holds.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { parseServerFrame } from '../src/view/protocol';
import {
  applyChunk,
  applyStored,
  isEnded,
  NEW_REPLY,
  ReplyState,
  ReplyStep,
  resumed
} from '../src/view/reply';
import { fixture, ReplyCase, wireText } from './fixture';

interface Played {
  state: ReplyState;
  resumes: number[];
  /** What the steps said to add to the answer and to the reasoning shown, added up. */
  shown: string;
  shownReasoning: string;
}

function play(item: ReplyCase): Played {
  let state = NEW_REPLY;
  const resumes: number[] = [];
  let shown = '';
  let shownReasoning = '';
  const take = (step: ReplyStep) => {
    state = step.state;
    shown += step.append;
    shownReasoning += step.appendReasoning;
    if (step.resumeFrom !== null) {
      resumes.push(step.resumeFrom);
    }
  };
  for (const entry of item.frames) {
    if ('client' in entry) {
      if (!isEnded(state)) {
        // reconnected: RESUME from what is held, as the view's onOpen does
        resumes.push(state.lastSeq);
        state = resumed(state);
      }
      continue;
    }
    const frame = parseServerFrame('type' in entry ? JSON.stringify(entry) : wireText(entry));
    if (
      frame === null ||
      !('conversationId' in frame) ||
      frame.conversationId !== item.conversationId
    ) {
      continue;
    }
    if (frame.type === 'MESSAGE_CHUNK' && frame.messageId === item.messageId) {
      take(applyChunk(state, frame));
    } else if (frame.type === 'HISTORY' || frame.type === 'HISTORY_PAGE') {
      const stored = frame.messages.find(m => m.messageId === item.messageId);
      if (stored) {
        take(applyStored(state, stored));
      }
    }
  }
  return { state, resumes, shown, shownReasoning };
}

describe('reply reducer', () => {
  for (const item of fixture.replies) {
    test(item.name, () => {
      const { state, resumes, shown, shownReasoning } = play(item);
      assert.equal(state.text, item.expect.text, 'text');
      assert.equal(state.reasoning, item.expect.reasoning ?? '', 'reasoning');
      assert.deepEqual(state.usage, item.expect.usage, 'usage');
      assert.equal(shown, state.text, 'the text shown is the text held');
      assert.equal(shownReasoning, state.reasoning, 'the reasoning shown is the reasoning held');
      assert.equal(state.status, item.expect.status, 'status');
      assert.equal(state.lastSeq, item.expect.lastSeq, 'lastSeq');
      assert.deepEqual(resumes, item.expect.resumes, 'RESUME requests (afterSeq)');
      if (item.expect.error !== undefined) {
        assert.equal(state.error, item.expect.error, 'error');
      }
    });
  }

  test('a step never changes the state it was given', () => {
    const before = { ...NEW_REPLY };
    const frame = {
      type: 'MESSAGE_CHUNK' as const,
      messageId: 'm',
      conversationId: 'c',
      agentId: 'a',
      seq: 1,
      chunk: 'x',
      isComplete: false
    };
    applyChunk(before, frame);
    assert.deepEqual(before, NEW_REPLY);
  });
});
