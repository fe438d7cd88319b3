// The slot group's lifecycle: its top revision is released only once every write
// of the group is done, and only when none of them landed at the top.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SLOT_GROUP, SlotGroup } from '../../src/clock/slot-group.js';

function group(...revisions: number[]): SlotGroup {
  const g = new SlotGroup();
  for (const revision of revisions) g.add({ revision, allocation: [revision] });
  return g;
}

test('a group of one: released when its write gives up, not when it lands', () => {
  assert.equal(group(5).finish(undefined), true);
  assert.equal(group(5).finish(5), false);
});

test('nothing is released while a write of the group is still going', () => {
  const g = group(10, 11, 12);
  assert.equal(g.finish(10), false);
  assert.equal(g.finish(undefined), false);
  assert.equal(g.finish(11), true, 'the last write is done and nobody took 12');
});

test('no release when some write took the top slot, whatever order they finish in', () => {
  const g = group(10, 11, 12);
  assert.equal(g.finish(12), false);
  assert.equal(g.finish(undefined), false);
  assert.equal(g.finish(undefined), false);
});

test('a write may land at a sibling slot: it is the slot taken that counts, not whose it was', () => {
  const g = group(20, 21);
  assert.equal(g.finish(21), false, 'the write holding 20 landed at 21 (its sibling reached the member later)');
  assert.equal(g.finish(undefined), false, 'the sibling moved on; 21 was taken, nothing to release');
});

test('top, slots and full', () => {
  const g = group(3, 4);
  assert.equal(g.top.revision, 4);
  assert.deepEqual(g.slots.map((s) => s.revision), [3, 4]);
  assert.equal(g.full, false);
  const big = group(...Array.from({ length: SLOT_GROUP }, (_, i) => i + 1));
  assert.equal(big.full, true);
});
