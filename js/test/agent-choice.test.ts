// Which agent answers a conversation's next message (view/agentchoice.ts): a pick in the view,
// then a host (Python) choice made after the conversation's last message, then the agent that
// last message used, then the host's agent for a conversation with no message; and the note
// beside the picker whenever the answering agent is not the one the conversation last used.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { chooseAgent, chosenAt, lastUsed } from '../src/view/agentchoice';

const DEFAULT = { agentId: 'demo', chosenAt: null };

describe('chooseAgent', () => {
  test('a new conversation starts with the host agent, with no note', () => {
    assert.deepEqual(chooseAgent(DEFAULT, null, null), { agentId: 'demo', note: '' });
    assert.deepEqual(chooseAgent({ agentId: 'echo', chosenAt: 100 }, null, null), {
      agentId: 'echo',
      note: ''
    });
  });

  test('a stored conversation opens with the agent it last used over a default', () => {
    // The bug of issue 14: the cell said demo, the conversation went on with echo.
    assert.deepEqual(chooseAgent(DEFAULT, { agentId: 'echo', at: 200 }, null), {
      agentId: 'echo',
      note: ''
    });
  });

  test('over a host choice made before the last message too', () => {
    assert.deepEqual(
      chooseAgent({ agentId: 'demo', chosenAt: 100 }, { agentId: 'echo', at: 200 }, null),
      { agentId: 'echo', note: '' }
    );
  });

  test('a host choice made after the last message wins, and the view says so', () => {
    assert.deepEqual(
      chooseAgent({ agentId: 'echo', chosenAt: 300 }, { agentId: 'demo', at: 200 }, null),
      { agentId: 'echo', note: 'This conversation last used demo; echo will answer.' }
    );
  });

  test('a host choice with the agent last used needs no note', () => {
    assert.deepEqual(
      chooseAgent({ agentId: 'demo', chosenAt: 300 }, { agentId: 'demo', at: 200 }, null),
      { agentId: 'demo', note: '' }
    );
  });

  test('a pick in the view wins over all, with the note when it differs from the last', () => {
    const last = { agentId: 'demo', at: 200 };
    assert.deepEqual(chooseAgent({ agentId: 'think', chosenAt: 300 }, last, 'echo'), {
      agentId: 'echo',
      note: 'This conversation last used demo; echo will answer.'
    });
    assert.deepEqual(chooseAgent(DEFAULT, last, 'demo'), { agentId: 'demo', note: '' });
    assert.deepEqual(chooseAgent(DEFAULT, null, 'echo'), { agentId: 'echo', note: '' });
  });

  test('an unknown message time lets an explicit host choice win, never a default', () => {
    const last = { agentId: 'demo', at: null };
    assert.equal(chooseAgent({ agentId: 'echo', chosenAt: 300 }, last, null).agentId, 'echo');
    assert.equal(chooseAgent({ agentId: 'echo', chosenAt: null }, last, null).agentId, 'demo');
  });
});

describe('lastUsed', () => {
  test('the latest message with an agent, and its time', () => {
    const messages = [
      { agentId: 'demo', createdAt: 100 },
      { agentId: 'echo', createdAt: 200 },
      { agentId: 'echo', createdAt: 201 }
    ];
    assert.deepEqual(lastUsed(messages), { agentId: 'echo', at: 201 });
    assert.equal(lastUsed([]), null);
  });

  test('skips messages without an agent and keeps no malformed time', () => {
    assert.deepEqual(lastUsed([{ agentId: 'demo', createdAt: 'yesterday' }, { agentId: '' }]), {
      agentId: 'demo',
      at: null
    });
  });
});

describe('chosenAt', () => {
  test('only a positive finite number is a time', () => {
    assert.equal(chosenAt(12.5), 12.5);
    for (const value of [0, -1, NaN, Infinity, '12', null, undefined, {}]) {
      assert.equal(chosenAt(value), null, String(value));
    }
  });
});
