// parseServerFrame against every server-frame case of the shared fixture.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { parseServerFrame } from '../src/view/protocol';
import { fixture, wireText } from './fixture';

describe('parseServerFrame', () => {
  test('the fixture has cases of both kinds', () => {
    assert.ok(fixture.format, 'the fixture describes its format');
    assert.ok(fixture.serverFrames.some(c => c.valid));
    assert.ok(fixture.serverFrames.some(c => !c.valid));
  });

  for (const item of fixture.serverFrames) {
    test(`${item.name}: ${item.valid ? 'valid' : 'invalid'}`, () => {
      const text = wireText(item);
      const frame = parseServerFrame(text);
      if (item.valid) {
        assert.notEqual(frame, null, `refused ${text}`);
        // The frame is the JSON as sent, unknown extra fields included.
        assert.deepEqual(frame, JSON.parse(text));
      } else {
        assert.equal(frame, null, `accepted ${text}`);
      }
    });
  }
});
