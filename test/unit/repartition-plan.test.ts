// The mover's pure planning (src/repartition/plan.ts), its copy envelope
// (src/repartition/copy-envelope.ts), and the layouts `members add` and
// `members remove` write (members-add.ts grownLayout, remove.ts removedLayout).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { retargetEnvelope } from '../../src/repartition/copy-envelope.js';
import { grownLayout } from '../../src/repartition/members-add.js';
import { describePlan, parsePartitionList, planDrain, planMove, planRebalance, type PlannedMove } from '../../src/repartition/plan.js';
import { removedLayout } from '../../src/repartition/remove.js';
import { decodeLayout, encodeLayout, newLayout } from '../../src/shard/layout.js';
import { decodeEnvelope, encodeEnvelope } from '../../src/store/envelope.js';

const roundRobin = (n: number, m: number) => Array.from({ length: n }, (_, p) => p % m);

function apply(assignment: number[], plan: PlannedMove[]): number[] {
  const out = [...assignment];
  for (const m of plan) for (const p of m.partitions) {
    assert.equal(out[p], m.from, `partition ${p} planned from ${m.from} but held by ${out[p]}`);
    out[p] = m.to;
  }
  return out;
}

const counts = (a: number[], m: number) => Array.from({ length: m }, (_, i) => a.filter((x) => x === i).length);
const moved = (plan: PlannedMove[]) => plan.reduce((n, m) => n + m.partitions.length, 0);

test('rebalance of an even layout moves nothing', () => {
  assert.deepEqual(planRebalance(roundRobin(1024, 3), 3), []);
  assert.equal(describePlan([]), 'nothing to move\n');
});

test('rebalance moves exactly the surplus, every member ends within one of the others', () => {
  const a = roundRobin(1024, 3).map((m, p) => (p < 300 ? 0 : m)); // member 0 took many
  const plan = planRebalance(a, 3);
  const after = apply(a, plan);
  const c = counts(after, 3);
  assert.ok(Math.max(...c) - Math.min(...c) <= 1, JSON.stringify(c));
  const surplus = counts(a, 3).reduce((n, x, i) => n + Math.max(0, x - c[i]!), 0);
  assert.equal(moved(plan), surplus);
  assert.ok(plan.every((m) => m.from === 0));
});

test('rebalance with an empty member fills it from the fullest ones', () => {
  const a = roundRobin(12, 3); // 4 each, member 3 (new) empty
  const plan = planRebalance(a, 4);
  assert.deepEqual(counts(apply(a, plan), 4), [3, 3, 3, 3]);
  assert.equal(moved(plan), 3);
  assert.equal(describePlan(plan), 'move 1 partition from member 0 to member 3\nmove 1 partition from member 1 to member 3\nmove 1 partition from member 2 to member 3\n');
});

test('drain moves every partition of N to the others, evenly', () => {
  const a = roundRobin(1024, 3);
  const plan = planDrain(a, 3, 2);
  const after = apply(a, plan);
  assert.deepEqual(counts(after, 3), [512, 512, 0]);
  assert.equal(describePlan(plan), 'move 170 partitions from member 2 to member 0\nmove 171 partitions from member 2 to member 1\n');
  assert.throws(() => planDrain(a, 3, 3), /not a member/);
  assert.throws(() => planDrain([0, 0], 1, 0), /only member/);
});

test('move groups partitions by source and skips those already on the target', () => {
  const plan = planMove(roundRobin(9, 3), 3, [0, 1, 2, 3, 4, 4], 1);
  assert.deepEqual(plan, [
    { from: 0, to: 1, partitions: [0, 3] },
    { from: 2, to: 1, partitions: [2] },
  ]);
  assert.throws(() => planMove(roundRobin(9, 3), 3, [9], 1), /does not exist/);
  assert.throws(() => planMove(roundRobin(9, 3), 3, [0], 5), /not a member/);
});

test('partition lists: numbers, ranges, commas', () => {
  assert.deepEqual(parsePartitionList(['1', '3-5,9', '']), [1, 3, 4, 5, 9]);
  assert.throws(() => parsePartitionList(['x']), /invalid partition/);
  assert.throws(() => parsePartitionList(['5-3']), /invalid partition range/);
});

test('copy envelope: retargeting keeps the reported version (member version + versionBase)', () => {
  const f1 = encodeEnvelope({ modRevision: 300, createRevision: 12, lease: 7n, versionBase: 0, value: Buffer.from('x') });
  // Source version 5 (format 1), copied as a create on T (version 1): base 4.
  const copied = retargetEnvelope(f1, 5, 1);
  assert.equal(copied[0], 0x02);
  assert.deepEqual(decodeEnvelope(copied), { modRevision: 300, createRevision: 12, lease: 7n, versionBase: 4, value: Buffer.from('x') });
  // A copy of a copy: source member version 2 + base 4 = 6, written as T's version 3: base 3.
  assert.equal(decodeEnvelope(retargetEnvelope(copied, 2, 3)).versionBase, 3);
  // Same version on both sides: base 0, written as format 1.
  assert.equal(retargetEnvelope(f1, 5, 5)[0], 0x01);
  assert.throws(() => retargetEnvelope(f1, 1, 2), /above the source/);
});

test('members add records one endpoints entry per member; members remove drops the removed slot\'s, so the layout stays decodable', () => {
  const base = newLayout('0123456789abcdef', 2);
  const grown = grownLayout(base, ['http://a:1', 'http://b:1;http://b:2', 'http://c:1']);
  assert.deepEqual([grown.generation, grown.members, grown.format], [2, 3, 2]);
  assert.deepEqual(grown.leaseAssignment, base.assignment, 'lease homes pinned before the count changes');
  assert.deepEqual(decodeLayout(encodeLayout(grown)).endpoints, grown.endpoints);
  const removed = removedLayout(grown, 2);
  assert.deepEqual([removed.generation, removed.members], [3, 2]);
  assert.deepEqual(removed.endpoints, ['http://a:1', 'http://b:1;http://b:2']);
  assert.deepEqual(decodeLayout(encodeLayout(removed)), removed);
  // A layout without endpoints (no member ever added) gets none.
  assert.equal(removedLayout({ ...base, members: 3, assignment: base.assignment }, 2).endpoints, undefined);
  // A stale endpoints list (one per member no longer) is refused by the proxies' decoder.
  assert.throws(() => decodeLayout(encodeLayout({ ...removed, endpoints: grown.endpoints! })), /malformed metaetcd layout record/);
});
