// The usage line of an agent that reports no token counts says what its number is.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { describeUsage } from '../src/view/usage';

describe('usage line wording', () => {
  test('a duration alone says that it is the time the reply took', () => {
    assert.equal(describeUsage({ durationSeconds: 3.7 }, 'en-US').line, 'took 3.7 s');
    assert.equal(
      describeUsage({ model: 'demo', durationSeconds: 3.66 }, 'en-US').line,
      'demo · took 3.7 s'
    );
  });

  test('with token counts, the speed says its unit and no "took" is added', () => {
    const line = describeUsage({ outputTokens: 10, durationSeconds: 2 }, 'en-US').line;
    assert.equal(line, '10 tokens · 5.0 tokens/s');
  });
});
