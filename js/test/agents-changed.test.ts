// Agent pickers follow the hub's AGENTS_CHANGED without polling: the frame's run-time check
// (view/protocol.ts), and what the picker lists for a list that changed (`agentOptions`,
// view/agentchoice.ts): the agent chosen stays chosen, and shows as unavailable while the
// server lacks it, rather than the picker switching by itself to another.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { agentOptions } from '../src/view/agentchoice';
import { parseServerFrame } from '../src/view/protocol';

const ECHO = { id: 'echo', name: 'Echo', description: 'Replies with your own words.' };
const DEMO = { id: 'demo', name: 'Demo', description: '' };
const NOTEBOOK = { id: 'nb-summarize', name: 'summarize', description: 'A notebook agent.' };

describe('AGENTS_CHANGED on the wire', () => {
  const parse = (frame: unknown) => parseServerFrame(JSON.stringify(frame));

  test('a list of agents, extra fields kept', () => {
    const frame = { type: 'AGENTS_CHANGED', agents: [ECHO, { ...NOTEBOOK, kernel: 'k1' }], v: 2 };
    assert.deepEqual(parse(frame), frame);
    assert.deepEqual(parse({ type: 'AGENTS_CHANGED', agents: [] }), {
      type: 'AGENTS_CHANGED',
      agents: []
    });
  });

  const invalid: [string, unknown][] = [
    ['without agents', { type: 'AGENTS_CHANGED' }],
    ['agents not a list', { type: 'AGENTS_CHANGED', agents: { echo: ECHO } }],
    ['agents null', { type: 'AGENTS_CHANGED', agents: null }],
    ['an agent not an object', { type: 'AGENTS_CHANGED', agents: ['echo'] }],
    ['an agent without id', { type: 'AGENTS_CHANGED', agents: [{ name: 'x', description: '' }] }],
    ['an empty id', { type: 'AGENTS_CHANGED', agents: [{ ...ECHO, id: '' }] }],
    [
      'an id of 201 characters',
      { type: 'AGENTS_CHANGED', agents: [{ ...ECHO, id: 'i'.repeat(201) }] }
    ],
    ['a name not a string', { type: 'AGENTS_CHANGED', agents: [{ ...ECHO, name: 5 }] }],
    ['a description null', { type: 'AGENTS_CHANGED', agents: [{ ...ECHO, description: null }] }],
    ['lower case', { type: 'agents_changed', agents: [ECHO] }]
  ];
  for (const [name, frame] of invalid) {
    test(`${name}: ignored`, () => assert.equal(parse(frame), null));
  }
});

describe('agentOptions', () => {
  test('lists the agents, with their names and descriptions', () => {
    assert.deepEqual(agentOptions([ECHO, DEMO], 'echo'), {
      options: [
        { value: 'echo', label: 'Echo', title: 'Replies with your own words.', unavailable: false },
        { value: 'demo', label: 'Demo', title: '', unavailable: false }
      ],
      problem: ''
    });
  });

  test('an agent without a name shows its id', () => {
    assert.equal(agentOptions([{ ...DEMO, name: '' }], 'demo').options[0].label, 'demo');
  });

  test('an agent that comes keeps the choice, and is offered', () => {
    const before = agentOptions([ECHO], 'echo');
    const after = agentOptions([ECHO, NOTEBOOK], 'echo');
    assert.deepEqual(
      after.options.map(o => o.value),
      ['echo', 'nb-summarize']
    );
    assert.equal(after.problem, before.problem);
    assert.ok(after.options.every(o => !o.unavailable));
  });

  test('the chosen agent gone stays shown, as unavailable, and the view says so', () => {
    const { options, problem } = agentOptions([ECHO], 'nb-summarize');
    assert.deepEqual(
      options.map(o => [o.value, o.unavailable]),
      [
        ['echo', false],
        ['nb-summarize', true]
      ]
    );
    assert.match(options[1].label, /nb-summarize.*unavailable/);
    assert.match(problem, /"nb-summarize" is not available/);
  });

  test('and it is offered as before once the agent returns', () => {
    const back = agentOptions([ECHO, NOTEBOOK], 'nb-summarize');
    assert.equal(back.problem, '');
    assert.deepEqual(
      back.options.map(o => [o.value, o.label, o.unavailable]),
      [
        ['echo', 'Echo', false],
        ['nb-summarize', 'summarize', false]
      ]
    );
  });

  test('with no agent at all, the chosen one shows, and the connection says what is wrong', () => {
    assert.deepEqual(agentOptions([], 'echo'), {
      options: [
        {
          value: 'echo',
          label: 'echo (unavailable)',
          title: 'This agent is not available on this server now.',
          unavailable: true
        }
      ],
      problem: ''
    });
  });

  test('no agent chosen adds nothing', () => {
    assert.deepEqual(
      agentOptions([ECHO], '').options.map(o => o.value),
      ['echo']
    );
  });
});
