// sieve/rule-order.ts: the run order (name order unless ordered otherwise), the stage that follows
// from it (rcpt only for the envelope-only rules that lead it), and moves (`place`).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { orderRules, parseMeta, place, PositionOutOfRange, type OrderedRule } from '../../../src/sieve/rule-order.js';

const envelopeOnly = (_name: string, script: string) => script.startsWith('env');
const show = (rules: OrderedRule[]) => rules.map((r) => `${r.stage}:${r.position}:${r.name}${r.active ? '' : '-'}`);

describe('rule order', () => {
  it('parseMeta keeps what is well-formed and drops the rest', () => {
    const cases: [string | null, unknown][] = [
      [null, {}],
      ['not json', {}],
      ['{"stage":"rcpt","position":2,"active":false}', { stage: 'rcpt', position: 2, active: false }],
      ['{"stage":"queue","position":"1","active":"yes"}', {}],
      ['[]', {}],
    ];
    for (const [raw, want] of cases) assert.deepEqual(parseMeta(raw), want, String(raw));
  });

  it('never ordered: name order, whatever the scripts ask', () => {
    // The contract's "name order unless ordered otherwise": zzz, envelope-only, does not jump ahead.
    assert.deepEqual(show(orderRules({ zzz: 'env', aaa: 'data' }, {}, envelopeOnly)), ['data:1:aaa', 'data:2:zzz']);
    const scripts = { b: 'data', a: 'data', e2: 'env', e1: 'env', z: 'data' };
    assert.deepEqual(show(orderRules(scripts, {}, envelopeOnly)), ['data:1:a', 'data:2:b', 'data:3:e1', 'data:4:e2', 'data:5:z']);
  });

  it('stage rcpt is the envelope-only prefix of the order; every rule from the first that reads the message on is at data', () => {
    const cases: [Record<string, string>, string[]][] = [
      [{ e1: 'env', e2: 'env' }, ['rcpt:1:e1', 'rcpt:2:e2']],
      [{ e1: 'env', e2: 'env', f: 'data', g: 'env' }, ['rcpt:1:e1', 'rcpt:2:e2', 'data:1:f', 'data:2:g']],
      [{ a: 'data', e: 'env' }, ['data:1:a', 'data:2:e']],
      [{}, []],
    ];
    for (const [scripts, want] of cases) assert.deepEqual(show(orderRules(scripts, {}, envelopeOnly)), want, JSON.stringify(scripts));
    // Files that read the message run before the store rules: nothing is decided at RCPT.
    assert.deepEqual(show(orderRules({ e1: 'env', e2: 'env' }, {}, envelopeOnly, false)), ['data:1:e1', 'data:2:e2']);
  });

  it('stored order: stage, then position, then name; the stage that comes out follows from the order', () => {
    const scripts = { b: 'data', a: 'data', e2: 'env', e1: 'env', z: 'data' };
    // Positioned first, then the rules without a position, by name; z leads and reads the message.
    const meta = { z: { position: 1 }, b: { active: false }, e2: { stage: 'data' as const, position: 5 } };
    assert.deepEqual(show(orderRules(scripts, meta, envelopeOnly)), ['data:1:z', 'data:2:e2', 'data:3:a', 'data:4:b-', 'data:5:e1']);
    // A stored order keeps its order; an envelope-only rule at the head of stage data joins rcpt,
    // and a rule stored at rcpt whose script reads the message is at data, with all after it.
    const stored = { e1: { stage: 'rcpt' as const, position: 1 }, e2: { stage: 'data' as const, position: 1 }, a: { stage: 'data' as const, position: 2 } };
    assert.deepEqual(show(orderRules({ e1: 'env', e2: 'env', a: 'data' }, stored, envelopeOnly)), ['rcpt:1:e1', 'rcpt:2:e2', 'data:1:a']);
    const handWritten = { a: { stage: 'rcpt' as const, position: 1 }, e1: { stage: 'rcpt' as const, position: 2 } };
    assert.deepEqual(show(orderRules({ e1: 'env', a: 'data' }, handWritten, envelopeOnly)), ['data:1:a', 'data:2:e1']);
  });

  it('an inactive rule keeps its place and its effect on the stages of the rules after it', () => {
    const meta = { a: { position: 1, active: false }, e: { position: 2 } };
    assert.deepEqual(show(orderRules({ a: 'data', e: 'env' }, meta, envelopeOnly)), ['data:1:a-', 'data:2:e']);
    assert.deepEqual(show(orderRules({ e0: 'env', e: 'env' }, { e0: { position: 1, active: false } }, envelopeOnly)), ['rcpt:1:e0-', 'rcpt:2:e']);
  });

  it('place: moves within and across stages, new rules at their name-order place in the whole list, keeps activation', () => {
    const scripts = { e1: 'env', e3: 'env', b: 'data', d: 'data' };
    const stored = { e1: { stage: 'rcpt' as const, position: 1 }, e3: { stage: 'rcpt' as const, position: 2 }, b: { stage: 'data' as const, position: 1 }, d: { stage: 'data' as const, position: 2, active: false } };
    const rules = orderRules(scripts, stored, envelopeOnly);
    assert.deepEqual(show(rules), ['rcpt:1:e1', 'rcpt:2:e3', 'data:1:b', 'data:2:d-']);
    const after = (m: ReturnType<typeof place>, extra: Record<string, string> = {}) => show(orderRules({ ...scripts, ...extra }, m, envelopeOnly));
    assert.deepEqual(after(place(rules, 'e3', { position: 1 })), ['rcpt:1:e3', 'rcpt:2:e1', 'data:1:b', 'data:2:d-']);
    assert.deepEqual(after(place(rules, 'd', { position: 1 })), ['rcpt:1:e1', 'rcpt:2:e3', 'data:1:d-', 'data:2:b']);
    // New, without a place: after the last rule whose name sorts before its own.
    assert.deepEqual(after(place(rules, 'c', {}), { c: 'data' }), ['rcpt:1:e1', 'rcpt:2:e3', 'data:1:b', 'data:2:c', 'data:3:d-']);
    assert.deepEqual(after(place(rules, 'e2', {}), { e2: 'env' }), ['rcpt:1:e1', 'rcpt:2:e3', 'data:1:b', 'data:2:d-', 'data:3:e2']);
    // A rule that reads the message placed first: every rule after it is at data.
    assert.deepEqual(after(place(rules, 'a', {}), { a: 'data' }), ['data:1:a', 'data:2:e1', 'data:3:e3', 'data:4:b', 'data:5:d-']);
    assert.deepEqual(after(place(rules, 'b', { stage: 'rcpt' })), ['data:1:b', 'data:2:e1', 'data:3:e3', 'data:4:d-']);
    // An envelope-only rule moved to the head of stage data is decided at RCPT like those before it.
    assert.deepEqual(after(place(rules, 'e1', { stage: 'data', position: 1 })), ['rcpt:1:e3', 'rcpt:2:e1', 'data:1:b', 'data:2:d-']);
    assert.deepEqual(after(place(rules, 'e1', { stage: 'data' })), ['rcpt:1:e3', 'data:1:b', 'data:2:d-', 'data:3:e1']);
    assert.deepEqual(after(place(rules, 'd', { active: true, stage: 'rcpt', position: 3 })), ['rcpt:1:e1', 'rcpt:2:e3', 'data:1:d', 'data:2:b']);
    assert.throws(
      () => place(rules, 'b', { position: 3 }),
      (e: unknown) => e instanceof PositionOutOfRange && e.max === 2 && /position 3 is past the end of the stage \(1 to 2\)/.test(e.message),
    );
  });
});
