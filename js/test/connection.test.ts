// HubConnection's reconnect schedule and local refusals, against a fake WebSocket on a fake
// clock: a server that closes every socket right after it opens (or after one ERROR) must see
// attempts spaced ever wider with jitter, capped; only a connection that stayed up resets the
// backoff; a frame the server would refuse never goes out.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';

import {
  FIRST_DELAY_MS,
  HEALTHY_AFTER_MS,
  HubConnection,
  MAX_DELAY_MS
} from '../src/view/connection';
import { ClientFrame, ServerFrame } from '../src/view/protocol';
import { ServerSettings } from '../src/view/server';

class FakeWebSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  static made: FakeWebSocket[] = [];

  readyState = FakeWebSocket.CONNECTING;
  sent: string[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: (() => void) | null = null;
  readonly openedAt = Date.now();

  constructor(readonly url: string) {
    FakeWebSocket.made.push(this);
  }
  send(text: string): void {
    assert.equal(this.readyState, FakeWebSocket.OPEN, 'sent on a socket not open');
    this.sent.push(text);
  }
  close(): void {
    this.readyState = FakeWebSocket.CLOSED;
  }
  // -- the server's side --
  accept(): void {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.();
  }
  answer(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(): void {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.();
  }
}

const SERVER: ServerSettings = {
  baseUrl: 'http://127.0.0.1:8888/',
  wsUrl: 'ws://127.0.0.1:8888/',
  token: 't'
};
const SUBSCRIBE: ClientFrame = { type: 'SUBSCRIBE', conversationId: 'c-1' };
const REFUSED = { type: 'ERROR', code: 'bad_field', message: 'SUBSCRIBE.conversationId ...' };

const globals = globalThis as unknown as Record<string, unknown>;
const saved = { WebSocket: globals.WebSocket, window: globals.window, fetch: globals.fetch };
let fetches = 0;

/** Let the connection's promises (its REST diagnosis) settle. */
const settle = () => new Promise<void>(resolve => setImmediate(resolve));

interface Harness {
  connection: HubConnection;
  states: string[];
  frames: ServerFrame[];
}

function connect(): Harness {
  const states: string[] = [];
  const frames: ServerFrame[] = [];
  const harness: Harness = { connection: null as unknown as HubConnection, states, frames };
  harness.connection = new HubConnection(SERVER, {
    onFrame: frame => frames.push(frame),
    onOpen: () => harness.connection.send(SUBSCRIBE), // as the chat view does
    onState: state => states.push(state)
  });
  return harness;
}

/** Run the clock to the next attempt; the ms it waited, or null if none came in `within`. */
async function nextAttempt(within = 60_000): Promise<number | null> {
  const before = FakeWebSocket.made.length;
  const start = Date.now();
  for (let waited = 0; waited <= within; waited += 5) {
    await settle();
    if (FakeWebSocket.made.length > before) {
      return Date.now() - start;
    }
    mock.timers.tick(5);
  }
  return null;
}

const last = () => FakeWebSocket.made[FakeWebSocket.made.length - 1];
const ceiling = (retry: number) => Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** retry);

beforeEach(() => {
  FakeWebSocket.made = [];
  fetches = 0;
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  globals.window = globalThis;
  globals.WebSocket = FakeWebSocket;
  // The REST diagnosis of a socket that never opened: the server looks fine.
  globals.fetch = async () => {
    fetches++;
    return new Response('{"agents": []}', { status: 200 });
  };
});

afterEach(() => {
  mock.timers.reset();
  Object.assign(globals, saved);
});

describe('reconnect backoff', () => {
  for (const how of ['closes at once', 'answers an ERROR, then closes']) {
    test(`a server that ${how} sees attempts spaced ever wider, capped`, async () => {
      const { connection } = connect();
      const gaps: number[] = [];
      for (let retry = 0; retry < 12; retry++) {
        const ws = last();
        ws.accept();
        assert.deepEqual(
          ws.sent.map(t => JSON.parse(t)),
          [SUBSCRIBE]
        ); // one small frame
        if (how !== 'closes at once') {
          ws.answer(REFUSED);
        }
        mock.timers.tick(20);
        ws.drop();
        const gap = await nextAttempt();
        assert.notEqual(gap, null, `no retry ${retry}`);
        gaps.push(gap! + 20);
      }
      connection.close();
      // Retry n waits between half and all of 250 ms * 2^n, capped at 10 s: never reset.
      gaps.forEach((gap, retry) => {
        const most = ceiling(retry);
        assert.ok(gap >= most / 2 && gap <= most + 40, `retry ${retry}: ${gap} ms (${gaps})`);
      });
      assert.ok(
        new Set(gaps.map((g, r) => Math.round((100 * g) / ceiling(r)))).size > 3,
        `jitter: ${gaps}`
      );
      // So in a minute: a dozen attempts at most, not hundreds.
      const inAMinute = gaps.reduce(
        (n, _, i) => (gaps.slice(0, i + 1).reduce((a, b) => a + b, 0) <= 60_000 ? n + 1 : n),
        1
      );
      assert.ok(inAMinute <= 13, `${inAMinute} attempts in 60 s: ${gaps}`);
      assert.equal(fetches, 0, 'a socket that opened needs no diagnosis');
    });
  }

  test('a connection that stayed up resets the backoff; a short one does not', async () => {
    const { connection, states } = connect();
    // Four quick drops: 250, 500, 1000, 2000 ms ceilings.
    for (let retry = 0; retry < 4; retry++) {
      last().accept();
      last().drop();
      await nextAttempt();
    }
    // Up for just under the healthy time, answering: still backing off.
    last().accept();
    last().answer({ type: 'HISTORY', conversationId: 'c-1', messages: [] });
    mock.timers.tick(HEALTHY_AFTER_MS - 10);
    last().drop();
    let gap = (await nextAttempt())!;
    assert.ok(gap >= ceiling(4) / 2, `reset too early: ${gap}`);
    // Up for the healthy time: the next drop retries at once (the first step).
    last().accept();
    mock.timers.tick(HEALTHY_AFTER_MS);
    last().drop();
    gap = (await nextAttempt())!;
    assert.ok(gap <= FIRST_DELAY_MS, `not reset: ${gap}`);
    // ...and backs off again from there.
    last().accept();
    last().drop();
    gap = (await nextAttempt())!;
    assert.ok(gap >= ceiling(1) / 2 && gap <= ceiling(1) + 5, `${gap}`);
    assert.ok(states.includes('connected') && states.includes('reconnecting'));
    connection.close();
  });

  test('a server that never accepts: diagnosed, and spaced the same way', async () => {
    const { connection, states } = connect();
    const gaps: number[] = [];
    for (let retry = 0; retry < 8; retry++) {
      last().drop();
      gaps.push((await nextAttempt())!);
    }
    gaps.forEach((gap, retry) =>
      assert.ok(gap >= ceiling(retry) / 2 && gap <= ceiling(retry) + 10, `${gaps}`)
    );
    assert.equal(fetches, 8);
    assert.ok(!states.includes('connected'));
    connection.close();
  });

  test('close() stops every retry', async () => {
    const { connection } = connect();
    last().accept();
    last().drop();
    connection.close();
    assert.equal(await nextAttempt(30_000), null);
    assert.equal(FakeWebSocket.made.length, 1);
  });
});

describe('frames the server would refuse are not sent', () => {
  test('ids too long or not valid Unicode, texts over the limit', () => {
    const { connection } = connect();
    const ws = last();
    ws.accept();
    ws.sent = [];
    const warn = mock.method(console, 'warn', () => undefined);
    const refused: ClientFrame[] = [
      { type: 'SUBSCRIBE', conversationId: 'c'.repeat(5 * 1024 * 1024) },
      { type: 'SUBSCRIBE', conversationId: 'x'.repeat(201) },
      { type: 'UNSUBSCRIBE', conversationId: '\ud800' },
      { type: 'RESUME', messageId: 'r', afterSeq: -1 },
      { type: 'STOP_GENERATING', messageId: '' },
      {
        type: 'SEND_MESSAGE',
        conversationId: 'c',
        agentId: 'a',
        clientMessageId: 'm',
        text: 'x'.repeat(1024 * 1024 + 1)
      },
      {
        type: 'SEND_MESSAGE',
        conversationId: 'c',
        agentId: 'a',
        clientMessageId: 'm',
        text: 'lone \udc00'
      },
      {
        type: 'SEND_MESSAGE',
        conversationId: 'c',
        agentId: 42,
        clientMessageId: 'm',
        text: 'hi'
      } as unknown as ClientFrame
    ];
    for (const frame of refused) {
      assert.equal(connection.send(frame), false, frame.type);
    }
    assert.deepEqual(ws.sent, []);
    assert.equal(warn.mock.callCount(), refused.length);
    // A smaller limit the server announced holds too; within it, frames go.
    connection.maxMessageBytes = 10;
    const text = (n: number): ClientFrame => ({
      type: 'SEND_MESSAGE',
      conversationId: 'c',
      agentId: 'a',
      clientMessageId: 'm',
      text: 'x'.repeat(n)
    });
    assert.equal(connection.send(text(11)), false);
    assert.equal(connection.send(text(10)), true);
    assert.equal(connection.send(SUBSCRIBE), true);
    assert.equal(ws.sent.length, 2);
    warn.mock.restore();
    connection.close();
  });
});
