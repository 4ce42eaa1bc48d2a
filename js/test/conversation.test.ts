// The conversation model (view/conversation.ts) against every case of the shared fixture
// (tests/fixtures/conversation.json), which the kernel's Python follower runs too
// (tests/test_conversation_fixtures.py): after each step, the frames the model sent, the
// messages it holds and the sends not yet accepted must be as the case says. And what it told
// its observer (the view) must add up to what it holds, since that is all the view draws.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import data from '../../tests/fixtures/conversation.json';
import {
  Conversation,
  ConversationObserver,
  HeldMessage,
  OutgoingSend
} from '../src/view/conversation';
import { ClientFrame, parseServerFrame } from '../src/view/protocol';
import type { Transport } from '../src/view/transport';

interface Step {
  connect?: boolean;
  disconnect?: boolean;
  stop?: boolean;
  send?: { clientMessageId: string; text: string; agentId: string };
  frame?: unknown;
  raw?: string;
  sent?: unknown[];
  messages?: Record<string, unknown>[];
  sends?: Record<string, unknown>[];
}
interface Case {
  name: string;
  conversationId: string;
  steps: Step[];
}
const fixture = data as unknown as { format: Record<string, string>; cases: Case[] };

/** A transport the steps connect and drop, recording what goes out while connected. */
class RecordingTransport implements Transport {
  connected = false;
  sent: unknown[] = [];
  maxMessageBytes = 1024 * 1024;

  send(frame: ClientFrame): boolean {
    if (!this.connected) {
      return false;
    }
    this.sent.push(JSON.parse(JSON.stringify(frame)));
    return true;
  }

  close(): void {
    this.connected = false;
  }
}

interface Drawn {
  text: string;
  reasoning: string;
  status: string;
}

/** What a view would show, built from the observer's calls alone. */
class Mirror implements ConversationObserver {
  messages = new Map<string, Drawn>();
  sends = new Map<string, string>(); // clientMessageId -> status shown

  sending(send: OutgoingSend): void {
    this.sends.set(send.clientMessageId, 'pending');
  }
  added(message: HeldMessage, send: OutgoingSend | null): void {
    if (send !== null) {
      assert.equal(this.sends.get(send.clientMessageId), 'pending', 'an accepted send was shown');
      this.sends.delete(send.clientMessageId);
    }
    assert.ok(!this.messages.has(message.messageId), `${message.messageId} added twice`);
    this.messages.set(message.messageId, {
      text: message.text,
      reasoning: message.state.reasoning,
      status: message.status
    });
  }
  dropped(send: OutgoingSend): void {
    this.sends.delete(send.clientMessageId);
  }
  refused(send: OutgoingSend): void {
    this.sends.set(send.clientMessageId, 'error');
  }
  updated(message: HeldMessage, step: { append: string; appendReasoning: string }): void {
    const drawn = this.messages.get(message.messageId);
    assert.ok(drawn, `${message.messageId} updated before it was added`);
    if (message.role === 'user') {
      drawn.text = message.text;
    } else {
      drawn.text += step.append;
      drawn.reasoning += step.appendReasoning;
    }
    drawn.status = message.status;
  }
  lost(message: HeldMessage): void {
    this.messages.get(message.messageId)!.status = 'error';
  }
  cleared(): void {
    this.messages.clear();
  }
  older(messages: HeldMessage[]): void {
    for (const message of messages) {
      this.added(message, null);
    }
  }
}

/** A held message as the fixture states it: the keys it gives, compared. */
function described(
  message: HeldMessage,
  expected: Record<string, unknown>
): Record<string, unknown> {
  const all: Record<string, unknown> = {
    messageId: message.messageId,
    role: message.role,
    text: message.text,
    status: message.status,
    lastSeq: message.lastSeq,
    agentId: message.agentId,
    error: message.state.error,
    reasoning: message.state.reasoning
  };
  return Object.fromEntries(Object.keys(expected).map(key => [key, all[key]]));
}

function sendsOf(model: Conversation): Record<string, unknown>[] {
  return model.sends.map(send => ({
    clientMessageId: send.clientMessageId,
    status: send.status,
    ...(send.error ? { code: send.error.code } : {})
  }));
}

function play(item: Case): void {
  const transport = new RecordingTransport();
  const mirror = new Mirror();
  const model = new Conversation(item.conversationId, mirror);
  model.attach(transport);
  item.steps.forEach((step, index) => {
    const where = `step ${index + 1} (${JSON.stringify(step).slice(0, 80)})`;
    const before = transport.sent.length;
    if (step.connect) {
      transport.connected = true;
      model.opened();
    } else if (step.disconnect) {
      transport.connected = false;
      model.closed();
    } else if (step.stop) {
      model.stop();
    } else if (step.send) {
      const { text, agentId, clientMessageId } = step.send;
      assert.equal(model.send(text, agentId, clientMessageId), null, where);
    } else {
      const text = step.raw !== undefined ? step.raw : JSON.stringify(step.frame);
      const frame = parseServerFrame(text);
      if (frame !== null) {
        model.receive(frame);
      }
    }
    assert.deepEqual(transport.sent.slice(before), step.sent ?? [], `${where}: frames sent`);
    if (step.messages) {
      assert.deepEqual(
        model.messages.map((m, i) => described(m, step.messages![i] ?? {})),
        step.messages,
        `${where}: messages held`
      );
    }
    if (step.sends) {
      assert.deepEqual(sendsOf(model), step.sends, `${where}: sends`);
    }
    // The view draws only what it was told.
    for (const message of model.messages) {
      assert.deepEqual(
        mirror.messages.get(message.messageId),
        { text: message.text, reasoning: message.state.reasoning, status: message.status },
        `${where}: ${message.messageId} as drawn`
      );
    }
    assert.equal(mirror.messages.size, model.messages.length, `${where}: messages drawn`);
    assert.deepEqual(
      Object.fromEntries(mirror.sends),
      Object.fromEntries(model.sends.map(s => [s.clientMessageId, s.status])),
      `${where}: sends drawn`
    );
  });
}

describe('the conversation model against the shared cases', () => {
  test('the fixture describes its format and has cases', () => {
    assert.ok(fixture.format.steps && fixture.format.expect);
    assert.ok(fixture.cases.length > 10);
  });

  for (const item of fixture.cases) {
    test(item.name, () => play(item));
  }
});

describe('the conversation model', () => {
  const history = (messages: unknown[], hasMore: boolean) =>
    parseServerFrame(
      JSON.stringify({
        type: 'HISTORY',
        conversationId: 'c1',
        messages,
        hasMore
      })
    )!;
  const stored = (id: string) => ({
    messageId: id,
    role: 'user',
    agentId: 'echo',
    text: id,
    status: 'complete',
    lastSeq: 0
  });

  test('pages older messages in on request, before the oldest held', () => {
    const transport = new RecordingTransport();
    const model = new Conversation('c1');
    model.attach(transport);
    assert.equal(model.loadOlder(), false, 'nothing is known to be older yet');
    transport.connected = true;
    model.opened();
    model.receive(history([stored('m3'), stored('m4')], true));
    assert.ok(model.hasOlder);
    transport.sent = [];
    assert.equal(model.loadOlder(), true);
    assert.equal(model.loadOlder(), false, 'one page at a time');
    assert.deepEqual(transport.sent, [
      { type: 'LOAD_HISTORY', conversationId: 'c1', beforeMessageId: 'm3' }
    ]);
    assert.ok(model.loadingOlder);
    // An answer to another request is not this one.
    model.receive(
      parseServerFrame(
        JSON.stringify({
          type: 'HISTORY_PAGE',
          conversationId: 'c1',
          beforeMessageId: 'm4',
          messages: [stored('x')],
          hasMore: false
        })
      )!
    );
    assert.deepEqual(
      model.messages.map(m => m.messageId),
      ['m3', 'm4']
    );
    model.receive(
      parseServerFrame(
        JSON.stringify({
          type: 'HISTORY_PAGE',
          conversationId: 'c1',
          beforeMessageId: 'm3',
          messages: [stored('m1'), stored('m2')],
          hasMore: false
        })
      )!
    );
    assert.deepEqual(
      model.messages.map(m => m.messageId),
      ['m1', 'm2', 'm3', 'm4']
    );
    assert.ok(!model.loadingOlder && !model.hasOlder);
    assert.equal(model.loadOlder(), false, 'the first message is held');
  });

  test('a page asked for before a drop is asked again after it', () => {
    const transport = new RecordingTransport();
    const model = new Conversation('c1');
    model.attach(transport);
    transport.connected = true;
    model.opened();
    model.receive(history([stored('m3')], true));
    assert.equal(model.loadOlder(), true);
    transport.connected = false;
    model.closed();
    assert.ok(!model.loadingOlder);
    transport.connected = true;
    model.opened();
    transport.sent = [];
    assert.equal(model.loadOlder(), true);
    assert.equal(transport.sent.length, 1);
  });

  test('a HISTORY that no longer joins up with what is held starts again, keeping sends', () => {
    const transport = new RecordingTransport();
    const mirror = new Mirror();
    const model = new Conversation('c1', mirror);
    model.attach(transport);
    transport.connected = true;
    model.opened();
    model.receive(history([stored('m1')], false));
    transport.connected = false;
    assert.equal(model.send('later', 'echo', 'k1'), null);
    transport.connected = true;
    model.opened();
    model.receive(history([stored('m8'), stored('m9')], true));
    assert.deepEqual(
      model.messages.map(m => m.messageId),
      ['m8', 'm9']
    );
    assert.deepEqual([...mirror.messages.keys()], ['m8', 'm9']);
    assert.deepEqual(sendsOf(model), [{ clientMessageId: 'k1', status: 'pending' }]);
  });

  test('a message the server refuses for certain is not sent, and says why', () => {
    const transport = new RecordingTransport();
    transport.connected = true;
    transport.maxMessageBytes = 4;
    const model = new Conversation('c1');
    model.attach(transport);
    assert.match(model.send('too long', 'echo') ?? '', /at most 4/);
    assert.deepEqual(model.sends, []);
    assert.deepEqual(transport.sent, []);
  });

  test('following another conversation forgets the first, and ignores its frames', () => {
    const transport = new RecordingTransport();
    const model = new Conversation('c1');
    model.attach(transport);
    transport.connected = true;
    model.opened();
    model.receive(history([stored('m1')], false));
    transport.sent = [];
    model.setConversation('c2');
    assert.deepEqual(transport.sent, [
      { type: 'UNSUBSCRIBE', conversationId: 'c1' },
      { type: 'SUBSCRIBE', conversationId: 'c2' }
    ]);
    assert.deepEqual(model.messages, []);
    model.receive(history([stored('m1')], false));
    assert.deepEqual(model.messages, []);
  });

  test('AGENTS_CHANGED goes to the observer, whatever conversation is followed', () => {
    const lists: unknown[] = [];
    const model = new Conversation('c1', { agents: agents => lists.push(agents) });
    const agents = [{ id: 'echo', name: 'echo', description: 'Replies with your words.' }];
    model.receive(parseServerFrame(JSON.stringify({ type: 'AGENTS_CHANGED', agents }))!);
    assert.deepEqual(lists, [agents]);
  });
});
