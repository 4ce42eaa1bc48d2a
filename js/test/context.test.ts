// Attached context (src/view/context.ts): the limits on what goes, the checks on what comes
// back from the store, and the conversation model carrying it both ways.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  contextItems,
  cutText,
  CUT,
  cappedItem,
  fitContext,
  matches,
  MAX_ITEM_TEXT_BYTES
} from '../src/view/context';
import { Conversation, HeldMessage } from '../src/view/conversation';
import { ClientFrame, ContextItem, utf8Length } from '../src/view/protocol';
import type { Transport } from '../src/view/transport';

const item = (text: string, label = 'cell 1'): ContextItem => ({ kind: 'cell', label, text });

describe('context limits', () => {
  test('a short text is left as it is', () => {
    assert.equal(cutText('print(1)', 100), 'print(1)');
  });

  test('a long text is cut within the limit and says so', () => {
    const cut = cutText('x'.repeat(50_000), MAX_ITEM_TEXT_BYTES);
    assert.ok(utf8Length(cut) <= MAX_ITEM_TEXT_BYTES);
    assert.ok(cut.endsWith(`\n${CUT}`));
    assert.ok(cut.startsWith('xxxx'));
  });

  test('a cut never splits a character', () => {
    const text = '😀'.repeat(100); // 4 bytes and 2 UTF-16 units each
    const cut = cutText(text, 41);
    assert.ok(utf8Length(cut) <= 41);
    assert.equal(cut, `${'😀'.repeat(8)}\n${CUT}`);
  });

  test('an item keeps its fields, with label and text within limits', () => {
    const capped = cappedItem({ ...item('y'.repeat(40_000), 'z'.repeat(300)), path: 'a.ipynb' });
    assert.equal(capped.path, 'a.ipynb');
    assert.equal(capped.label.length, 200);
    assert.ok(utf8Length(capped.text) <= MAX_ITEM_TEXT_BYTES);
  });

  test('items are cut, the longest first, until their JSON fits', () => {
    const items = [item('a'.repeat(10_000)), item('b'.repeat(100), 'cell 2')];
    const fitted = fitContext(items, 4_000)!;
    assert.ok(utf8Length(JSON.stringify(fitted)) <= 4_000);
    assert.equal(fitted[1].text, 'b'.repeat(100)); // the short one untouched
    assert.ok(fitted[0].text.endsWith(CUT));
    assert.equal(items[0].text.length, 10_000); // the originals are not changed
    assert.deepEqual(fitContext(items, 1_000_000), items);
  });

  test('items that cannot fit even cut give null', () => {
    assert.equal(fitContext([item('a'.repeat(1000))], 20), null);
  });

  test("the picker's matching: every word, any case", () => {
    assert.ok(matches('', 'anything'));
    assert.ok(matches('CELL', 'cell 3'));
    assert.ok(matches('cell df', 'cell 3', 'df.head()'));
    assert.ok(!matches('cell x', 'cell 3', 'df.head()'));
  });
});

describe('context from the store', () => {
  test('well-formed items are kept, the rest skipped', () => {
    const stored = [
      {
        kind: 'cell',
        label: 'cell 1',
        text: 'x = 1',
        path: 'a.ipynb',
        cell: 0,
        language: 'python'
      },
      { kind: 'variable', label: 'df', text: 'DataFrame', cell: -1, path: 7 },
      { kind: 'script', label: 'x', text: 'no such kind' },
      { kind: 'file', label: 'a.txt' },
      'not an object',
      null
    ];
    assert.deepEqual(contextItems(stored), [
      {
        kind: 'cell',
        label: 'cell 1',
        text: 'x = 1',
        path: 'a.ipynb',
        cell: 0,
        language: 'python'
      },
      { kind: 'variable', label: 'df', text: 'DataFrame' }
    ]);
    assert.deepEqual(contextItems('nope'), []);
    assert.deepEqual(contextItems(undefined), []);
  });
});

class Recording implements Transport {
  sent: ClientFrame[] = [];
  maxMessageBytes = 1024 * 1024;
  send(frame: ClientFrame): boolean {
    this.sent.push(JSON.parse(JSON.stringify(frame)));
    return true;
  }
  close(): void {}
}

describe('the conversation model carries context', () => {
  test('on SEND_MESSAGE, and on the user message once accepted', () => {
    const added: HeldMessage[] = [];
    const model = new Conversation('c1', { added: m => void added.push(m) });
    const transport = new Recording();
    model.attach(transport);
    model.opened();
    const context = [item('x = 1')];
    assert.equal(model.send('look', 'echo', 'k1', context), null);
    assert.equal(model.send('plain', 'echo', 'k2'), null);
    const sends = transport.sent.filter(f => f.type === 'SEND_MESSAGE');
    assert.deepEqual((sends[0] as any).context, context);
    assert.ok(!('context' in sends[1])); // nothing attached: no field
    model.receive({
      type: 'MESSAGE_ACCEPTED',
      clientMessageId: 'k1',
      conversationId: 'c1',
      userMessageId: 'u1',
      messageId: 'r1',
      agentId: 'echo'
    });
    assert.deepEqual(added.find(m => m.messageId === 'u1')?.context, context);
  });

  test('sent from another tab: the context MESSAGE_ACCEPTED tells', () => {
    const added: HeldMessage[] = [];
    const model = new Conversation('c1', { added: m => void added.push(m) });
    const context = [item('y = 2', 'cell 2')];
    model.receive({
      type: 'MESSAGE_ACCEPTED',
      clientMessageId: 'elsewhere',
      conversationId: 'c1',
      userMessageId: 'u2',
      messageId: 'r2',
      agentId: 'echo',
      text: 'from the other tab',
      context
    });
    assert.deepEqual(added.find(m => m.messageId === 'u2')?.context, context);
  });

  test("from HISTORY: a stored user message's context", () => {
    const added: HeldMessage[] = [];
    const model = new Conversation('c1', { added: m => void added.push(m) });
    const context = [{ kind: 'error', label: 'error in cell 2', text: 'ZeroDivisionError' }];
    model.receive({
      type: 'HISTORY',
      conversationId: 'c1',
      messages: [
        {
          messageId: 'u1',
          role: 'user',
          agentId: 'echo',
          text: 'why',
          status: 'complete',
          lastSeq: 0,
          context
        }
      ]
    });
    assert.deepEqual(added[0].context, context);
  });
});
