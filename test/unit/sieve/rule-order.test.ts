// sieve/rule-order.ts: defaults for rules without metadata, run order, and moves (`place`).
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

  it('without metadata: envelope-only at rcpt, others at data, name order, active; positioned rules first', () => {
    const scripts = { b: 'data', a: 'data', e2: 'env', e1: 'env', z: 'data' };
    assert.deepEqual(show(orderRules(scripts, {}, envelopeOnly)), ['rcpt:1:e1', 'rcpt:2:e2', 'data:1:a', 'data:2:b', 'data:3:z']);
    const meta = { z: { position: 1 }, b: { active: false }, e2: { stage: 'data' as const, position: 5 } };
    assert.deepEqual(show(orderRules(scripts, meta, envelopeOnly)), ['rcpt:1:e1', 'data:1:z', 'data:2:e2', 'data:3:a', 'data:4:b-']);
  });

  it('place: moves within and across stages, inserts new rules at their name-order place, keeps activation', () => {
    const rules = orderRules({ a: 'data', c: 'data', e: 'env' }, { c: { active: false } }, envelopeOnly);
    const after = (m: ReturnType<typeof place>, extra: Record<string, string> = {}) => show(orderRules({ a: 'data', c: 'data', e: 'env', ...extra }, m, envelopeOnly));
    assert.deepEqual(after(place(rules, 'c', { position: 1 })), ['rcpt:1:e', 'data:1:c-', 'data:2:a']);
    assert.deepEqual(after(place(rules, 'b', {}), { b: 'data' }), ['rcpt:1:e', 'data:1:a', 'data:2:b', 'data:3:c-']);
    assert.deepEqual(after(place(rules, 'e', { stage: 'data' })), ['data:1:a', 'data:2:c-', 'data:3:e']);
    assert.deepEqual(after(place(rules, 'c', { active: true, stage: 'rcpt', position: 1 })), ['rcpt:1:c', 'rcpt:2:e', 'data:1:a']);
    assert.throws(
      () => place(rules, 'a', { position: 3 }),
      (e: unknown) => e instanceof PositionOutOfRange && e.max === 2 && /position 3 is past the end of the stage \(1 to 2\)/.test(e.message),
    );
    assert.deepEqual(after(place(rules, 'a', { stage: 'rcpt', position: 2 })), ['rcpt:1:e', 'rcpt:2:a', 'data:1:c-']);
  });
});
