// CommTransport: the view's frames through the kernel, in envelopes on the widget's custom
// messages, against a model that records what the view sends and plays what the kernel's
// relay would answer (the relay itself is tested against a real kernel:
// tests/test_widget_comm.py). Also which way a host's view goes (serverHasHub).
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';

import {
  CommModel,
  CommTransport,
  ENVELOPE,
  REOPEN_FIRST_MS,
  serverHasHub,
  TRANSPORT_NOTE,
  WAITING_NOTICE_MS
} from '../src/widget/commtransport';
import type { ConnectionState } from '../src/view/connection';
import { DEFAULT_MAX_MESSAGE_BYTES, ServerFrame } from '../src/view/protocol';
import { ServerSettings } from '../src/view/server';

class FakeModel implements CommModel {
  sent: Record<string, unknown>[] = [];
  listeners = new Set<(content: unknown) => void>();
  send(content: unknown): void {
    this.sent.push(content as Record<string, unknown>);
  }
  on(event: 'msg:custom', callback: (content: unknown) => void): void {
    assert.equal(event, 'msg:custom');
    this.listeners.add(callback);
  }
  off(event: 'msg:custom', callback: (content: unknown) => void): void {
    this.listeners.delete(callback);
  }
  /** A custom message from the kernel. */
  deliver(content: unknown): void {
    this.listeners.forEach(listener => listener(content));
  }
  kinds(): unknown[] {
    return this.sent.map(e => e[ENVELOPE]);
  }
}

function recorder() {
  const log = {
    frames: [] as ServerFrame[],
    opens: 0,
    states: [] as [ConnectionState, string][]
  };
  const handlers = {
    onFrame: (frame: ServerFrame) => void log.frames.push(frame),
    onOpen: () => void log.opens++,
    onState: (state: ConnectionState, problem: string) => void log.states.push([state, problem])
  };
  return { log, handlers };
}

const CHUNK = {
  type: 'MESSAGE_CHUNK',
  messageId: 'm1',
  conversationId: 'c1',
  agentId: 'echo',
  seq: 1,
  chunk: 'Hi',
  isComplete: false
};
const AGENTS = {
  type: 'AGENTS',
  agents: [{ id: 'echo', name: 'echo', description: '' }],
  maxMessageBytes: 10
};

beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
afterEach(() => mock.timers.reset());

describe('CommTransport', () => {
  test('opens, then carries frames both ways in envelopes of its own view', () => {
    const model = new FakeModel();
    const { log, handlers } = recorder();
    const transport = new CommTransport(handlers, model);
    assert.deepEqual(model.sent, [{ [ENVELOPE]: 'open', view: transport.viewId }]);
    assert.equal(transport.send({ type: 'SUBSCRIBE', conversationId: 'c1' }), false);
    assert.equal(log.opens, 0);
    model.deliver({ [ENVELOPE]: 'opened', view: 'someone-else' });
    assert.equal(log.opens, 0);
    model.deliver({ [ENVELOPE]: 'opened', view: transport.viewId });
    assert.equal(log.opens, 1);
    assert.deepEqual(log.states.at(-1), ['connected', '']);
    assert.equal(transport.send({ type: 'SUBSCRIBE', conversationId: 'c1' }), true);
    assert.deepEqual(model.sent.at(-1), {
      [ENVELOPE]: 'frame',
      view: transport.viewId,
      frame: { type: 'SUBSCRIBE', conversationId: 'c1' }
    });
    // Frames for this view pass; others', non-envelopes and frames off the contract do not.
    model.deliver({ [ENVELOPE]: 'frame', view: 'someone-else', frame: CHUNK });
    model.deliver({ method: 'something else' });
    model.deliver('text');
    model.deliver({ [ENVELOPE]: 'frame', view: transport.viewId, frame: { ...CHUNK, seq: 0 } });
    model.deliver({ [ENVELOPE]: 'frame', view: transport.viewId, frame: CHUNK });
    assert.deepEqual(log.frames, [CHUNK]);
    transport.close();
    assert.deepEqual(model.sent.at(-1), { [ENVELOPE]: 'close', view: transport.viewId });
    assert.equal(model.listeners.size, 0);
    assert.equal(transport.send({ type: 'SUBSCRIBE', conversationId: 'c1' }), false);
  });

  test('two views of one model keep to their own frames', () => {
    const model = new FakeModel();
    const a = recorder();
    const b = recorder();
    const ta = new CommTransport(a.handlers, model);
    const tb = new CommTransport(b.handlers, model);
    assert.notEqual(ta.viewId, tb.viewId);
    model.deliver({ [ENVELOPE]: 'opened', view: tb.viewId });
    model.deliver({ [ENVELOPE]: 'frame', view: tb.viewId, frame: CHUNK });
    assert.equal(a.log.opens, 0);
    assert.deepEqual(a.log.frames, []);
    assert.deepEqual(b.log.frames, [CHUNK]);
  });

  test('asks the kernel for the agents once open, and takes its limit', async () => {
    const model = new FakeModel();
    const { log, handlers } = recorder();
    const transport = new CommTransport(handlers, model);
    const first = transport.listAgents();
    const second = transport.listAgents();
    assert.equal(model.sent.length, 1); // only the open: not connected yet
    model.deliver({ [ENVELOPE]: 'opened', view: transport.viewId });
    const asked = model.sent.filter(e => (e.frame as { type?: string })?.type === 'LIST_AGENTS');
    assert.equal(asked.length, 1);
    model.deliver({ [ENVELOPE]: 'frame', view: transport.viewId, frame: AGENTS });
    const expected = { agents: AGENTS.agents, maxMessageBytes: 10 };
    assert.deepEqual(await first, expected);
    assert.deepEqual(await second, expected);
    assert.deepEqual(log.frames, []); // the answer is the transport's, not the view's
    assert.equal(transport.maxMessageBytes, 10);
    // A message over the hub's limit is refused here, never sent.
    const before = model.sent.length;
    assert.equal(
      transport.send({
        type: 'SEND_MESSAGE',
        conversationId: 'c1',
        agentId: 'echo',
        text: 'x'.repeat(11),
        clientMessageId: 'k1'
      }),
      false
    );
    assert.equal(model.sent.length, before);
    // Closed, a question gets no list.
    const third = transport.listAgents();
    transport.close();
    assert.equal(await third, null);
  });

  test('says what it waits for when the kernel is busy', () => {
    const model = new FakeModel();
    const { log, handlers } = recorder();
    new CommTransport(handlers, model);
    assert.deepEqual(log.states, []);
    mock.timers.tick(WAITING_NOTICE_MS);
    assert.equal(log.states.length, 1);
    assert.equal(log.states[0][0], 'reconnecting');
    assert.match(log.states[0][1], /kernel/);
  });

  test('opens again, later, when the kernel lets it go', () => {
    const model = new FakeModel();
    const { log, handlers } = recorder();
    const transport = new CommTransport(handlers, model);
    model.deliver({ [ENVELOPE]: 'opened', view: transport.viewId });
    model.deliver({ [ENVELOPE]: 'closed', view: transport.viewId, reason: 'too many views' });
    assert.equal(log.states.at(-1)![0], 'reconnecting');
    assert.match(log.states.at(-1)![1], /^too many views; reconnecting in 1 s/);
    assert.equal(transport.send({ type: 'SUBSCRIBE', conversationId: 'c1' }), false);
    assert.deepEqual(model.kinds(), ['open']);
    mock.timers.tick(REOPEN_FIRST_MS);
    assert.deepEqual(model.kinds(), ['open', 'open']);
    model.deliver({ [ENVELOPE]: 'opened', view: transport.viewId });
    assert.equal(log.opens, 2); // the view re-subscribes, as after a reconnect
    // The next loss waits as long again (the backoff starts over once open).
    model.deliver({ [ENVELOPE]: 'closed', view: transport.viewId });
    mock.timers.tick(REOPEN_FIRST_MS);
    assert.deepEqual(model.kinds(), ['open', 'open', 'open']);
    // Twice in a row without opening: it waits twice as long.
    model.deliver({ [ENVELOPE]: 'closed', view: transport.viewId });
    mock.timers.tick(REOPEN_FIRST_MS);
    assert.equal(model.kinds().length, 3);
    mock.timers.tick(REOPEN_FIRST_MS);
    assert.equal(model.kinds().length, 4);
  });

  test('follows the model a host attaches, and says when there is none', () => {
    const { log, handlers } = recorder();
    const transport = new CommTransport(handlers, null);
    assert.equal(log.states.at(-1)![0], 'offline');
    assert.equal(transport.note, TRANSPORT_NOTE);
    const model = new FakeModel();
    transport.attach(model);
    model.deliver({ [ENVELOPE]: 'opened', view: transport.viewId });
    assert.deepEqual(log.states.at(-1), ['connected', '']);
    transport.attach(null); // the kernel went
    assert.deepEqual(model.kinds(), ['open', 'close']);
    assert.equal(log.states.at(-1)![0], 'offline');
    assert.match(log.states.at(-1)![1], /kernel restart needs the jupyter_streamchat server/);
    const again = new FakeModel();
    transport.attach(again);
    assert.deepEqual(again.kinds(), ['open']);
  });

  test('a model that cannot send leaves the view offline', () => {
    const { log, handlers } = recorder();
    const model = new FakeModel();
    model.send = () => {
      throw new Error('Kernel is dead');
    };
    const transport = new CommTransport(handlers, model);
    assert.equal(log.states.at(-1)![0], 'offline');
    assert.equal(transport.maxMessageBytes, DEFAULT_MAX_MESSAGE_BYTES);
  });
});

describe('serverHasHub', () => {
  const globals = globalThis as unknown as Record<string, unknown>;
  const saved = globals.fetch;
  let answers: (number | Error)[] = [];
  let asked: string[] = [];
  beforeEach(() => {
    asked = [];
    globals.fetch = async (url: string) => {
      asked.push(url);
      const answer = answers.shift();
      if (answer instanceof Error || answer === undefined) {
        throw answer ?? new Error('no answer');
      }
      return { status: answer } as Response;
    };
  });
  afterEach(() => {
    globals.fetch = saved;
  });
  const server = (port: number): ServerSettings => ({
    baseUrl: `http://127.0.0.1:${port}/base/`,
    wsUrl: `ws://127.0.0.1:${port}/base/`,
    token: ''
  });

  test('no server on the page: through the kernel', async () => {
    assert.equal(await serverHasHub(null), false);
    assert.deepEqual(asked, []);
  });

  test('the server answers as a hub does, or 404', async () => {
    answers = [200, 403, 404];
    assert.equal(await serverHasHub(server(1)), true);
    assert.deepEqual(asked, ['http://127.0.0.1:1/base/streamchat/api/agents']);
    assert.equal(await serverHasHub(server(1)), true); // asked once per server
    assert.equal(asked.length, 1);
    assert.equal(await serverHasHub(server(2)), true); // a login to renew: the hub is there
    assert.equal(await serverHasHub(server(3)), false); // the extension is not enabled
  });

  test('no answer: through the kernel, and asked again next time', async () => {
    answers = [new TypeError('Failed to fetch'), 200];
    assert.equal(await serverHasHub(server(4)), false);
    assert.equal(await serverHasHub(server(4)), true);
    assert.equal(asked.length, 2);
  });
});
