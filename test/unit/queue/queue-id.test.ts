import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isQueueId, newQueueId, queueIdTime } from '../../../src/queue/queue-id.js';

test('queue ids are unique, filename-safe and sort in creation order', () => {
  const ids = Array.from({ length: 20_000 }, () => newQueueId());
  assert.equal(new Set(ids).size, ids.length);
  for (const id of ids) assert.ok(isQueueId(id), id);
  assert.deepEqual([...ids].sort(), ids);
});

test('the time part round-trips and orders across milliseconds', () => {
  const a = newQueueId(3_000_000_000_000);
  const b = newQueueId(3_000_000_000_001);
  assert.equal(queueIdTime(a), 3_000_000_000_000);
  assert.ok(a < b);
});

test('a clock stepping back still gives increasing ids', () => {
  const a = newQueueId(3_500_000_000_000);
  const b = newQueueId(3_400_000_000_000);
  assert.ok(b > a);
});

test('isQueueId rejects path tricks and wrong lengths', () => {
  for (const bad of ['', '../etc/passwd', 'abc', '0000000000000000000', '00000000000000000I', '00000000000000000/']) assert.equal(isQueueId(bad), false, bad);
});
