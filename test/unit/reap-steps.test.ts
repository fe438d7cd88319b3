// How a lease's keys are split into deletion steps: each step takes up to 100
// keys of every member, so a lease with at most 100 keys per member goes at one
// revision, and each member transaction stays within etcd's operation limit.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reapSteps } from '../../src/lease/lease-deletion.js';

const keys = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => Buffer.from(`${prefix}${String(i).padStart(4, '0')}`));
const str = (steps: Buffer[][]) => steps.map((s) => s.map(String));

test('up to 100 keys on each member: one step with every key, in key order', () => {
  const steps = reapSteps([keys('b/', 100), keys('a/', 80).reverse(), keys('c/', 3)]);
  assert.equal(steps.length, 1);
  assert.equal(steps[0]!.length, 183);
  assert.deepEqual(str(steps)[0], [...str([keys('a/', 80)])[0]!, ...str([keys('b/', 100)])[0]!, ...str([keys('c/', 3)])[0]!]);
});

test('more than 100 on a member: further steps, each with at most 100 of every member, every key once', () => {
  const perMember = [keys('a/', 250), keys('b/', 40), []];
  const steps = reapSteps(perMember);
  assert.deepEqual(
    steps.map((s) => [s.filter((k) => k[0] === 0x61).length, s.filter((k) => k[0] === 0x62).length]),
    [
      [100, 40],
      [100, 0],
      [50, 0],
    ],
  );
  assert.deepEqual(steps.flat().map(String).sort(), perMember.flat().map(String).sort());
});

test('no keys: no step', () => {
  assert.deepEqual(reapSteps([[], [], []]), []);
});
