// The usage line under a finished reply: what it says from what is known.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { describeUsage, tokensPerSecond } from '../src/view/usage';

describe('usage line', () => {
  test('model, output tokens and speed after the first token', () => {
    const text = describeUsage(
      {
        model: 'think-1',
        inputTokens: 120,
        outputTokens: 1234,
        firstTokenSeconds: 1.5,
        durationSeconds: 23.265
      },
      'en-US'
    );
    // 1234 tokens in 21.765 s of generation.
    assert.equal(text.line, 'think-1 · 1,234 tokens · 56.7 tokens/s');
    assert.equal(
      text.detail,
      'Model: think-1, input: 120 tokens, output: 1,234 tokens, first token after 1.5 s, 23.3 s in all'
    );
  });

  test('without the time to the first token, the whole duration counts', () => {
    assert.equal(tokensPerSecond({ outputTokens: 100, durationSeconds: 4 }), 25);
    assert.equal(
      describeUsage({ outputTokens: 100, durationSeconds: 4 }, 'en-US').line,
      '100 tokens · 25.0 tokens/s'
    );
  });

  test('a first token at the very end does not divide by zero', () => {
    assert.equal(
      tokensPerSecond({ outputTokens: 1, firstTokenSeconds: 2, durationSeconds: 2 }),
      0.5
    );
    assert.equal(tokensPerSecond({ outputTokens: 0, durationSeconds: 0 }), null);
  });

  test('unknown parts are left out', () => {
    assert.equal(describeUsage({ model: 'm' }, 'en-US').line, 'm');
    assert.equal(describeUsage({ outputTokens: 1 }, 'en-US').line, '1 token');
    assert.equal(describeUsage({ inputTokens: 12 }, 'en-US').line, '');
    assert.equal(describeUsage({ inputTokens: 12 }, 'en-US').detail, 'Input: 12 tokens');
    assert.equal(
      describeUsage({ model: 'm', durationSeconds: 2.25 }, 'en-US').line,
      'm · took 2.3 s'
    );
    assert.deepEqual(describeUsage({}, 'en-US'), { line: '', detail: '' });
  });
});
