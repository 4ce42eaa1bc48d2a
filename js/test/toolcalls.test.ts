// Tool calls and approvals without the DOM: their wire checks (protocol.ts), how a reply holds
// them (reply.ts: the latest state per id, in first-appearance order, none left open once the
// reply ended), how the conversation model answers a waiting call (conversation.ts), and the
// card's wording helpers (toolcalls.ts).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Conversation, ConversationObserver } from '../src/view/conversation';
import {
  ClientFrame,
  clientFrameProblem,
  ErrorFrame,
  MessageChunk,
  parseServerFrame,
  ServerFrame,
  ToolCallState
} from '../src/view/protocol';
import {
  applyChunk,
  applyStored,
  mergeToolCalls,
  NEW_REPLY,
  NOT_RUN,
  ReplyState
} from '../src/view/reply';
import { diffLines, formatDuration, prettyArguments, statusLabel } from '../src/view/toolcalls';
import type { Transport } from '../src/view/transport';

const call = (id: string, status: string, extra: Record<string, unknown> = {}) =>
  ({ id, name: 'write_file', status, arguments: '{"path":"a.txt"}', ...extra }) as ToolCallState;

const chunk = (seq: number, fields: Record<string, unknown> = {}): unknown => ({
  type: 'MESSAGE_CHUNK',
  messageId: 'r1',
  conversationId: 'c1',
  agentId: 'tools',
  seq,
  chunk: '',
  isComplete: false,
  ...fields
});

const parse = (value: unknown): ServerFrame | null => parseServerFrame(JSON.stringify(value));

function frame(value: unknown): ServerFrame {
  const parsed = parse(value);
  assert.ok(parsed, `refused ${JSON.stringify(value)}`);
  return parsed;
}

/** A MESSAGE_CHUNK of reply r1, checked as the view checks it. */
const chunkFrame = (seq: number, fields: Record<string, unknown> = {}): MessageChunk =>
  frame(chunk(seq, fields)) as MessageChunk;

describe('tool calls on the wire', () => {
  test('MESSAGE_CHUNK and HISTORY carry them; the list entry says waiting', () => {
    const full = call('c1', 'completed', {
      title: 'Write a.txt',
      kind: 'edit',
      result: 'ok',
      diff: { path: 'a.txt', oldText: 'old\n', newText: 'new\n' },
      decision: 'allow_once',
      startedAt: 1700000000.25,
      endedAt: 1700000001,
      extra: 'ignored by readers'
    });
    assert.ok(parse(chunk(1, { toolCalls: [full, call('c2', 'waiting')] })));
    assert.ok(parse(chunk(1, { toolCalls: [] })));
    assert.ok(
      parse({
        type: 'HISTORY',
        conversationId: 'c1',
        messages: [
          {
            messageId: 'r1',
            role: 'assistant',
            agentId: 'tools',
            text: '',
            status: 'streaming',
            lastSeq: 2,
            toolCalls: [call('c1', 'waiting')]
          }
        ]
      })
    );
    const entry = {
      conversationId: 'c1',
      title: 't',
      createdAt: 1,
      updatedAt: 2,
      messageCount: 2,
      agentId: 'tools',
      streaming: true
    };
    assert.ok(parse({ type: 'CONVERSATION_UPDATED', conversationId: 'c1', conversation: entry }));
    const waiting = { ...entry, waiting: true };
    const updated = parse({
      type: 'CONVERSATION_UPDATED',
      conversationId: 'c1',
      conversation: waiting
    });
    assert.equal(updated?.type === 'CONVERSATION_UPDATED' && updated.conversation.waiting, true);
    assert.equal(
      parse({
        type: 'CONVERSATION_UPDATED',
        conversationId: 'c1',
        conversation: { ...entry, waiting: 'yes' }
      }),
      null
    );
  });

  const broken: [string, unknown][] = [
    ['not a list', { id: 'c1' }],
    ['null', null],
    ['an entry without an id', [{ name: 'x', status: 'running', arguments: '' }]],
    ['an empty id', [call('', 'running')]],
    ['an unknown status', [call('c1', 'done')]],
    ['arguments not a string', [call('c1', 'running', { arguments: { path: 'a' } })]],
    ['a name not a string', [call('c1', 'running', { name: 3 })]],
    ['a null title', [call('c1', 'running', { title: null })]],
    ['a diff without newText', [call('c1', 'running', { diff: { path: 'a', oldText: '' } })]],
    ['an unknown decision', [call('c1', 'running', { decision: 'maybe' })]],
    ['a negative startedAt', [call('c1', 'running', { startedAt: -1 })]]
  ];
  for (const [what, toolCalls] of broken) {
    test(`a chunk whose toolCalls has ${what} is not a frame of the contract`, () => {
      assert.equal(parse(chunk(1, { toolCalls })), null);
    });
  }

  test('ANSWER_TOOL_CALL is checked as the server checks it', () => {
    const good: ClientFrame = {
      type: 'ANSWER_TOOL_CALL',
      messageId: 'r1',
      toolCallId: 'c1',
      decision: 'allow_always'
    };
    assert.equal(clientFrameProblem(good), null);
    for (const [name, wrong] of [
      ['messageId', ''],
      ['toolCallId', 'x'.repeat(201)],
      ['decision', 'allow'],
      ['decision', undefined]
    ] as const) {
      const bad = { ...good, [name]: wrong } as unknown as ClientFrame;
      const problem = clientFrameProblem(bad);
      assert.ok(problem?.includes(name), `${name} ${String(wrong)}: ${problem}`);
    }
  });
});

describe('a reply holds its tool calls', () => {
  test('the latest state per id wins, in the order the calls first appeared', () => {
    const merged = mergeToolCalls(
      [call('a', 'running'), call('b', 'pending')],
      [call('c', 'pending'), call('a', 'completed'), call('c', 'running')]
    );
    assert.deepEqual(
      merged.calls.map(c => [c.id, c.status]),
      [
        ['a', 'completed'],
        ['b', 'pending'],
        ['c', 'running']
      ]
    );
    assert.deepEqual(
      merged.changed.map(c => [c.id, c.status]),
      [
        ['a', 'completed'],
        ['c', 'running']
      ]
    );
    // A state already held changes nothing.
    assert.deepEqual(mergeToolCalls(merged.calls, [call('b', 'pending')]).changed, []);
  });

  test('chunks bring states with their seq: duplicates and gaps bring none', () => {
    let state: ReplyState = NEW_REPLY;
    let step = applyChunk(state, chunkFrame(1, { chunk: 'Writing. ' }));
    state = step.state;
    step = applyChunk(state, chunkFrame(2, { toolCalls: [call('c1', 'waiting')] }));
    assert.deepEqual(
      step.toolCalls.map(c => c.status),
      ['waiting']
    );
    state = step.state;
    // The same seq again, and one past a gap: dropped.
    const again = applyChunk(state, chunkFrame(2, { toolCalls: [call('c1', 'failed')] }));
    assert.deepEqual(again.toolCalls, []);
    const gap = applyChunk(state, chunkFrame(4, { toolCalls: [call('c1', 'failed')] }));
    assert.deepEqual(gap.toolCalls, []);
    assert.equal(gap.state.toolCalls[0].status, 'waiting');
    step = applyChunk(
      state,
      chunkFrame(3, { toolCalls: [call('c1', 'running', { decision: 'allow_once' })] })
    );
    assert.equal(step.state.toolCalls.length, 1);
    assert.equal(step.state.toolCalls[0].status, 'running');
    assert.equal(step.state.text, 'Writing. ');
  });

  test('the end leaves no call open: the hub says so, and the client holds it so anyway', () => {
    let state: ReplyState = applyChunk(
      NEW_REPLY,
      chunkFrame(1, {
        toolCalls: [call('a', 'completed'), call('b', 'running'), call('c', 'waiting')]
      })
    ).state;
    const step = applyChunk(state, chunkFrame(2, { isComplete: true, status: 'stopped' }));
    state = step.state;
    assert.deepEqual(
      state.toolCalls.map(c => [c.id, c.status, c.error]),
      [
        ['a', 'completed', undefined],
        ['b', 'failed', NOT_RUN],
        ['c', 'failed', NOT_RUN]
      ]
    );
    assert.deepEqual(
      step.toolCalls.map(c => c.id),
      ['b', 'c']
    );
    // The hub's own words are kept.
    const worded = applyChunk(
      NEW_REPLY,
      chunkFrame(1, {
        isComplete: true,
        status: 'error',
        error: 'timed out',
        toolCalls: [call('x', 'failed', { error: 'not run: the reply ended first' })]
      })
    );
    assert.equal(worded.state.toolCalls[0].error, 'not run: the reply ended first');
    assert.deepEqual(
      worded.toolCalls.map(c => c.id),
      ['x']
    );
  });

  test('a stored copy ahead brings the states as of its lastSeq; one behind brings none', () => {
    const held = applyChunk(
      NEW_REPLY,
      chunkFrame(1, { chunk: 'a', toolCalls: [call('c1', 'running')] })
    ).state;
    const stored = (lastSeq: number, status: string, toolCalls: ToolCallState[]) => ({
      messageId: 'r1',
      role: 'assistant' as const,
      agentId: 'tools',
      text: 'a',
      status: status as 'streaming',
      lastSeq,
      toolCalls
    });
    const behind = applyStored(held, stored(1, 'streaming', [call('c1', 'pending')]));
    assert.equal(behind.state.toolCalls[0].status, 'running');
    assert.deepEqual(behind.toolCalls, []);
    const ahead = applyStored(
      held,
      stored(3, 'streaming', [call('c1', 'completed'), call('c2', 'waiting')])
    );
    assert.deepEqual(
      ahead.state.toolCalls.map(c => [c.id, c.status]),
      [
        ['c1', 'completed'],
        ['c2', 'waiting']
      ]
    );
    assert.equal(ahead.toolCalls.length, 2);
    const ended = applyStored(NEW_REPLY, stored(3, 'interrupted', [call('c2', 'waiting')]));
    assert.equal(ended.state.toolCalls[0].status, 'failed');
    assert.equal(ended.toolCalls[0].error, NOT_RUN);
  });
});

/** A transport the test connects and drops, recording what goes out while connected. */
class Recording implements Transport {
  connected = true;
  sent: ClientFrame[] = [];
  maxMessageBytes = 1024 * 1024;
  send(frame: ClientFrame): boolean {
    if (this.connected) {
      this.sent.push(frame);
    }
    return this.connected;
  }
  close(): void {
    this.connected = false;
  }
}

function waitingReply(): { model: Conversation; transport: Recording; problems: ErrorFrame[] } {
  const transport = new Recording();
  const problems: ErrorFrame[] = [];
  const observer: ConversationObserver = { problem: f => problems.push(f) };
  const model = new Conversation('c1', observer);
  model.attach(transport);
  model.opened();
  model.receive(frame(chunk(1, { chunk: 'Writing 1. ' })));
  model.receive(
    frame(chunk(2, { toolCalls: [call('call-1', 'waiting'), call('call-2', 'completed')] }))
  );
  transport.sent = [];
  return { model, transport, problems };
}

const answerOf = (toolCallId: string, decision: string) => ({
  type: 'ANSWER_TOOL_CALL',
  messageId: 'r1',
  toolCallId,
  decision
});

describe('answering a tool call', () => {
  test('sends ANSWER_TOOL_CALL once; the call is answered until its next state comes', () => {
    const { model, transport } = waitingReply();
    assert.equal(model.waitingCount, 1);
    assert.equal(model.message('r1')?.waiting, true);
    assert.equal(model.answered('r1', 'call-1'), false);
    assert.equal(model.answer('r1', 'call-1', 'allow_once'), true);
    assert.equal(model.answer('r1', 'call-1', 'reject'), true, 'a second click sends nothing');
    assert.deepEqual(transport.sent, [answerOf('call-1', 'allow_once')]);
    assert.equal(model.answered('r1', 'call-1'), true);
    // Calls that do not wait, and replies unknown, are not answered.
    assert.equal(model.answer('r1', 'call-2', 'allow_once'), false);
    assert.equal(model.answer('r1', 'nope', 'allow_once'), false);
    assert.equal(model.answer('r9', 'call-1', 'allow_once'), false);
    assert.equal(transport.sent.length, 1);

    model.receive(frame(chunk(3, { toolCalls: [call('call-1', 'running')] })));
    assert.equal(model.answered('r1', 'call-1'), false);
    assert.equal(model.waitingCount, 0);
    assert.equal(model.answer('r1', 'call-1', 'allow_once'), false, 'it runs: too late');
  });

  test('an answer not yet taken goes again after a reconnection, before SUBSCRIBE', () => {
    const { model, transport } = waitingReply();
    transport.connected = false;
    assert.equal(model.answer('r1', 'call-1', 'allow_always'), true, 'held while offline');
    model.closed();
    transport.connected = true;
    model.opened();
    assert.deepEqual(transport.sent, [
      { type: 'RESUME', messageId: 'r1', afterSeq: 2 },
      answerOf('call-1', 'allow_always'),
      { type: 'SUBSCRIBE', conversationId: 'c1' }
    ]);
  });

  test('not_waiting (another view answered first) is no problem and changes nothing', () => {
    const { model, transport, problems } = waitingReply();
    model.answer('r1', 'call-1', 'reject');
    model.receive(
      frame({ type: 'ERROR', code: 'not_waiting', message: 'not waiting', messageId: 'r1' })
    );
    assert.deepEqual(problems, []);
    assert.equal(model.answered('r1', 'call-1'), true, 'the buttons stay disabled');
    assert.equal(model.message('r1')?.status, 'streaming');
    // It is not sent again on a reconnection; the state the other view caused comes instead.
    transport.sent = [];
    model.opened();
    assert.ok(!transport.sent.some(f => f.type === 'ANSWER_TOOL_CALL'));
    model.receive(
      frame(chunk(3, { toolCalls: [call('call-1', 'running', { decision: 'allow_once' })] }))
    );
    assert.equal(model.answered('r1', 'call-1'), false);
    assert.equal(model.message('r1')?.state.toolCalls[0].decision, 'allow_once');
  });

  test('a reply that ends while its call waits leaves it failed, and no answer held', () => {
    const { model } = waitingReply();
    model.answer('r1', 'call-1', 'allow_once');
    model.receive(frame(chunk(3, { isComplete: true, status: 'stopped' })));
    assert.equal(model.waitingCount, 0);
    assert.equal(model.answered('r1', 'call-1'), false);
    const [first] = model.message('r1')!.state.toolCalls;
    assert.deepEqual([first.status, first.error], ['failed', NOT_RUN]);
  });

  test('a reply lost from the store leaves its calls failed', () => {
    const { model } = waitingReply();
    model.receive(
      frame({ type: 'ERROR', code: 'unknown_message', message: 'gone', messageId: 'r1' })
    );
    assert.equal(model.message('r1')?.status, 'error');
    assert.equal(model.message('r1')?.state.toolCalls[0].status, 'failed');
    assert.equal(model.waitingCount, 0);
  });

  test('a HISTORY after a reload shows the call waiting, and it can be answered', () => {
    const transport = new Recording();
    const model = new Conversation('c1');
    model.attach(transport);
    model.opened();
    model.receive(
      frame({
        type: 'HISTORY',
        conversationId: 'c1',
        messages: [
          {
            messageId: 'r1',
            role: 'assistant',
            agentId: 'tools',
            text: 'Writing 1. ',
            status: 'streaming',
            lastSeq: 2,
            toolCalls: [call('call-1', 'waiting')]
          }
        ]
      })
    );
    assert.equal(model.waitingCount, 1);
    transport.sent = [];
    assert.equal(model.answer('r1', 'call-1', 'allow_once'), true);
    assert.deepEqual(transport.sent, [answerOf('call-1', 'allow_once')]);
  });
});

describe('what a card says', () => {
  test('arguments as indented JSON, or as written', () => {
    assert.equal(
      prettyArguments('{"path":"a","n":[1]}'),
      '{\n  "path": "a",\n  "n": [\n    1\n  ]\n}'
    );
    assert.equal(prettyArguments('not json {'), 'not json {');
    assert.equal(prettyArguments('  '), '');
  });

  test('durations', () => {
    assert.equal(formatDuration(0.1234), '123 ms');
    assert.equal(formatDuration(3.44), '3.4 s');
    assert.equal(formatDuration(125), '2 min 5 s');
  });

  test('the badge says what became of the call', () => {
    assert.equal(statusLabel(call('a', 'waiting')), 'Needs approval');
    assert.equal(statusLabel(call('a', 'completed')), 'Done');
    assert.equal(statusLabel(call('a', 'failed', { error: 'exit status 1' })), 'Failed');
    assert.equal(statusLabel(call('a', 'failed', { error: NOT_RUN })), 'Not run');
    assert.equal(
      statusLabel(call('a', 'failed', { decision: 'reject', error: 'rejected by the user' })),
      'Rejected'
    );
  });

  test('a diff: the changed lines between a little context', () => {
    const oldText = 'a\nb\nc\nd\ne\nf\n';
    const newText = 'a\nb\nc\nD\ne\nf\n';
    assert.deepEqual(diffLines(oldText, newText), [
      { sign: ' ', text: 'b' },
      { sign: ' ', text: 'c' },
      { sign: '-', text: 'd' },
      { sign: '+', text: 'D' },
      { sign: ' ', text: 'e' },
      { sign: ' ', text: 'f' }
    ]);
    assert.deepEqual(diffLines('', 'new\n'), [{ sign: '+', text: 'new' }]);
    assert.deepEqual(diffLines('old\n', ''), [{ sign: '-', text: 'old' }]);
    assert.deepEqual(diffLines('same\n', 'same\n'), []);
    // Repeated lines are not counted twice in the prefix and the suffix.
    assert.deepEqual(diffLines('x\nx\n', 'x\n'), [
      { sign: ' ', text: 'x' },
      { sign: '-', text: 'x' }
    ]);
  });
});
