// What the view refuses locally because the server is certain to refuse it: ids over 200
// characters, ids and texts that are not valid Unicode, texts over the message limit, fields
// of the wrong kind; and a notebook's saved chat output, which may come from anyone.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ClientFrame,
  clientFrameProblem,
  DEFAULT_MAX_MESSAGE_BYTES,
  idProblem,
  isWellFormed,
  MAX_ID_LENGTH,
  parseChatOutput,
  textProblem,
  utf8Length
} from '../src/view/protocol';

const LONE_HIGH = '\ud800';
const LONE_LOW = '\udc00';
const PAIR = '\ud83d\ude00'; // 😀, one character outside the BMP

/** Values that are not strings, as JSON (and a saved notebook) can hold them. */
const NOT_STRINGS: [string, unknown][] = [
  ['a number', 42],
  ['zero', 0],
  ['a float', 1.5],
  ['true', true],
  ['false', false],
  ['null', null],
  ['a list', ['c-1']],
  ['an empty list', []],
  ['an object', { id: 'c-1' }],
  ['a nested object', { a: { b: { c: 'c-1' } } }]
];

/** Strings the server refuses as ids. */
const BAD_IDS: [string, string][] = [
  ['empty', ''],
  ['201 characters', 'x'.repeat(MAX_ID_LENGTH + 1)],
  ['5 MB', 'c'.repeat(5 * 1024 * 1024)],
  ['101 astral characters (202 UTF-16 units)', PAIR.repeat(101)],
  ['a lone high surrogate', LONE_HIGH],
  ['a lone low surrogate', LONE_LOW],
  ['a lone surrogate inside', `c-${LONE_HIGH}-1`],
  ['a lone surrogate at the end', `c-1${LONE_HIGH}`],
  ['a pair written backwards', LONE_LOW + LONE_HIGH]
];

/** Strings the server accepts as ids. */
const GOOD_IDS: [string, string][] = [
  ['short', 'c-1'],
  ['200 characters', 'x'.repeat(MAX_ID_LENGTH)],
  ['100 astral characters (200 UTF-16 units)', PAIR.repeat(100)],
  ['non-ASCII', 'café-日本-٣'],
  ['spaces and quotes', `a "b" 'c' <d>`]
];

describe('isWellFormed and utf8Length', () => {
  for (const text of ['', 'abc', 'é', '日本', PAIR, `a${PAIR}b`, 'x'.repeat(1000)]) {
    test(`well-formed: ${JSON.stringify(text).slice(0, 20)}`, () => {
      assert.equal(isWellFormed(text), true);
      assert.equal(utf8Length(text), Buffer.byteLength(text, 'utf8'));
    });
  }
  for (const text of [
    LONE_HIGH,
    LONE_LOW,
    `a${LONE_HIGH}`,
    `${LONE_LOW}a`,
    LONE_LOW + LONE_HIGH,
    `${PAIR}${LONE_HIGH}`,
    `${LONE_HIGH}${LONE_HIGH}${LONE_LOW}`
  ]) {
    test(`not well-formed: ${JSON.stringify(text)}`, () => {
      assert.equal(isWellFormed(text), false);
      // Node encodes a lone surrogate as U+FFFD, 3 bytes: the count agrees.
      assert.equal(utf8Length(text), Buffer.byteLength(text, 'utf8'));
    });
  }
});

describe('idProblem', () => {
  for (const [name, value] of GOOD_IDS) {
    test(`accepts ${name}`, () => assert.equal(idProblem(value), null));
  }
  for (const [name, value] of BAD_IDS) {
    test(`refuses ${name}`, () => {
      const problem = idProblem(value);
      assert.ok(problem, `accepted ${name}`);
      assert.ok(problem.length < 120, 'the problem does not quote the value');
    });
  }
  for (const [name, value] of NOT_STRINGS) {
    test(`refuses ${name}`, () => assert.match(idProblem(value) ?? '', /not a string/));
  }
  test('says why', () => {
    assert.equal(idProblem(undefined), 'is missing');
    assert.equal(idProblem(''), 'is empty');
    assert.equal(idProblem(7), 'is a number, not a string');
    assert.equal(idProblem({}), 'is an object, not a string');
    assert.match(
      idProblem('x'.repeat(5_000_000))!,
      /5,000,000 characters long; ids are at most 200/
    );
    assert.match(idProblem(LONE_HIGH)!, /lone surrogate/);
  });
});

describe('textProblem', () => {
  const limit = DEFAULT_MAX_MESSAGE_BYTES;
  test('accepts up to the limit, in UTF-8 bytes', () => {
    assert.equal(textProblem('hello', limit), null);
    assert.equal(textProblem('x'.repeat(limit), limit), null);
    assert.equal(textProblem('é'.repeat(limit / 2), limit), null); // 2 bytes each
    assert.equal(textProblem(PAIR.repeat(limit / 4), limit), null); // 4 bytes each
  });
  test('refuses one byte over, whatever the characters', () => {
    assert.match(
      textProblem('x'.repeat(limit + 1), limit)!,
      /1,048,577 bytes; .* at most 1,048,576/
    );
    assert.match(textProblem('é'.repeat(limit / 2) + 'x', limit)!, /1,048,577 bytes/);
    assert.equal(textProblem('日'.repeat(349_525) + 'x', limit), null); // 1,048,576 bytes
    assert.match(textProblem('日'.repeat(349_525) + 'xx', limit)!, /1,048,577 bytes/);
    assert.ok(textProblem('日'.repeat(Math.ceil((limit + 1) / 3)), limit));
    assert.ok(textProblem(PAIR.repeat(limit / 4) + 'x', limit));
  });
  test('a smaller limit the server announced holds', () => {
    assert.equal(textProblem('x'.repeat(100), 100), null);
    assert.ok(textProblem('x'.repeat(101), 100));
    assert.ok(textProblem('é'.repeat(51), 100));
  });
  test('refuses empty, lone surrogates and non-strings', () => {
    assert.equal(textProblem('', limit), 'is empty');
    assert.match(textProblem(`hi ${LONE_HIGH}`, limit)!, /lone surrogate/);
    for (const [, value] of NOT_STRINGS) {
      assert.ok(textProblem(value, limit));
    }
  });
});

describe('clientFrameProblem', () => {
  const good: ClientFrame[] = [
    {
      type: 'SEND_MESSAGE',
      conversationId: 'c',
      agentId: 'echo',
      text: 'hi',
      clientMessageId: 'm'
    },
    { type: 'STOP_GENERATING', messageId: 'r' },
    { type: 'SUBSCRIBE', conversationId: 'c' },
    { type: 'UNSUBSCRIBE', conversationId: 'c' },
    { type: 'RESUME', messageId: 'r', afterSeq: 0 },
    { type: 'LOAD_HISTORY', conversationId: 'c', beforeMessageId: 'm' },
    { type: 'WATCH_CONVERSATIONS' },
    { type: 'UNWATCH_CONVERSATIONS' }
  ];
  for (const frame of good) {
    test(`${frame.type} as the server accepts it`, () => {
      assert.equal(clientFrameProblem(frame), null);
    });
    // Every field, broken every way the server refuses.
    for (const [name, value] of Object.entries(frame)) {
      if (name === 'type') {
        continue;
      }
      const bad: [string, unknown][] =
        name === 'afterSeq'
          ? [
              ['-1', -1],
              ['1.5', 1.5],
              ['2^53', 2 ** 53],
              ['a string', '3'],
              ['NaN', NaN],
              ['missing', undefined]
            ]
          : name === 'text'
            ? [
                ['empty', ''],
                ['over 1 MiB', 'x'.repeat(DEFAULT_MAX_MESSAGE_BYTES + 1)],
                ['a lone surrogate', LONE_LOW],
                ['missing', undefined],
                ...NOT_STRINGS
              ]
            : [...BAD_IDS, ['missing', undefined], ...NOT_STRINGS];
      for (const [what, wrong] of bad) {
        test(`${frame.type}.${name} ${what} is refused`, () => {
          const broken = { ...frame, [name]: wrong } as unknown as ClientFrame;
          if (wrong === undefined) {
            delete (broken as unknown as Record<string, unknown>)[name];
          }
          const problem = clientFrameProblem(broken);
          assert.ok(problem, `${JSON.stringify(value)} -> ${String(wrong).slice(0, 20)} accepted`);
          assert.ok(problem.includes(name === 'text' ? 'message' : name), problem);
          assert.ok(problem.length < 160, 'the problem does not quote the value');
        });
      }
    }
  }
  test('the limit given is the one that holds', () => {
    const frame: ClientFrame = {
      type: 'SEND_MESSAGE',
      conversationId: 'c',
      agentId: 'a',
      text: 'x'.repeat(2000),
      clientMessageId: 'm'
    };
    assert.equal(clientFrameProblem(frame, 2000), null);
    assert.match(clientFrameProblem(frame, 1999)!, /^the message is 2,000 bytes/);
    assert.equal(
      clientFrameProblem({ ...frame, text: 'x'.repeat(DEFAULT_MAX_MESSAGE_BYTES) }),
      null
    );
  });
  test('an unknown type is refused', () => {
    assert.ok(clientFrameProblem({ type: 'NOPE' } as unknown as ClientFrame));
  });
});

describe('parseChatOutput (a saved notebook output, from anyone)', () => {
  test('a well-formed output', () => {
    assert.deepEqual(
      parseChatOutput({ conversationId: 'c-1', agentId: 'echo', outputKey: 'k', extra: [1] }),
      { output: { conversationId: 'c-1', agentId: 'echo', outputKey: 'k' } }
    );
  });
  test('agentId and outputKey may be absent or empty', () => {
    for (const value of [
      { conversationId: 'c' },
      { conversationId: 'c', agentId: '', outputKey: '' }
    ]) {
      assert.deepEqual(parseChatOutput(value), {
        output: { conversationId: 'c', agentId: '', outputKey: '' }
      });
    }
  });
  for (const [name, value] of NOT_STRINGS) {
    test(`the whole output is ${name}`, () => {
      const parsed = parseChatOutput(value);
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
        assert.ok('problem' in parsed && /conversationId is missing/.test(parsed.problem));
      } else {
        assert.ok('problem' in parsed && /not an object/.test(parsed.problem));
      }
    });
  }
  test('the whole output is a string or missing', () => {
    for (const value of ['c-1', undefined, '']) {
      const parsed = parseChatOutput(value);
      assert.ok('problem' in parsed && /not an object/.test(parsed.problem), String(value));
    }
  });
  for (const field of ['conversationId', 'agentId', 'outputKey']) {
    const base = { conversationId: 'c-1', agentId: 'echo', outputKey: 'k' };
    const wrongs: [string, unknown][] = [...NOT_STRINGS, ...BAD_IDS.filter(([, v]) => v !== '')];
    if (field === 'conversationId') {
      wrongs.push(['empty', ''], ['missing', undefined]);
    }
    for (const [name, wrong] of wrongs) {
      test(`${field} ${name}: refused, and named`, () => {
        const value: Record<string, unknown> = { ...base, [field]: wrong };
        if (wrong === undefined) {
          delete value[field];
        }
        const parsed = parseChatOutput(value);
        assert.ok('problem' in parsed, `accepted ${name}`);
        assert.ok(
          parsed.problem.startsWith('This chat output cannot be shown: its ' + field),
          parsed.problem
        );
        assert.ok(parsed.problem.length < 160, 'the problem does not quote the value');
      });
    }
  }
});
