// Placement rules in the router (shard/placement.ts): the longest matching
// prefix wins, keys under no rule keep their partition's owner, ranges inside
// one rule reach one member, an empty prefix is refused, the layout refuses
// malformed rules, and a partition move never carries a pinned key.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planTxn } from '../../src/kv/txn-plan.js';
import { PartitionFilter } from '../../src/repartition/member-io.js';
import { placedLayout, type PlacementState } from '../../src/repartition/placement.js';
import { partitionOf } from '../../src/shard/hash.js';
import { decodeLayout, encodeLayout, newLayout, Router, type Layout } from '../../src/shard/layout.js';
import { encodePrefix, PlacementRules, route } from '../../src/shard/placement.js';
import { toMemberKey } from '../../src/store/keyspace.js';
import { TxnRequest } from '../../src/proto/gen/rpc.js';
import { prefixEnd } from '../../src/util/bytes.js';

const b = (s: string) => Buffer.from(s);
const rule = (prefix: string, member: number) => ({ prefix: encodePrefix(b(prefix)), member });
const withRules = (rules: { prefix: string; member: number }[], members = 3): Layout => ({ ...newLayout('c0ffee0000000000', members), format: 2, rules });
const hashed = (l: Layout, k: string) => l.assignment[partitionOf(b(k), l.partitions)]!;

test('routing: the longest matching rule wins, keys under no rule go to their partition owner', () => {
  const l = withRules([rule('/registry/', 1), rule('/registry/events/', 2), rule('/registry/events/x', 0)]);
  const r = new Router(l);
  assert.equal(r.memberOf(b('/registry/pods/a')), 1);
  assert.equal(r.memberOf(b('/registry/events/a')), 2);
  assert.equal(r.memberOf(b('/registry/events/xy')), 0);
  assert.equal(r.memberOf(b('/registry/')), 1, 'the prefix itself is under its rule');
  assert.equal(r.memberOf(b('/registry')), hashed(l, '/registry'), 'shorter than the prefix: hashed');
  for (const k of ['a', '/other/x', '', '/registr']) {
    assert.equal(r.memberOf(b(k)), hashed(l, k), k);
    assert.deepEqual(r.route(b(k)), { member: hashed(l, k), partition: partitionOf(b(k), 1024) });
  }
  assert.deepEqual(r.route(b('/registry/events/q')), { member: 2, rule: rule('/registry/events/', 2) });
  // No rules at all: exactly the hash routing of before.
  const plain = new Router(newLayout('c0ffee0000000000', 3));
  for (const k of ['/registry/pods/a', 'x', '']) assert.equal(plain.memberOf(b(k)), hashed(plain.layout, k));
  assert.equal(route(new PlacementRules(), plain.layout.assignment, b('k')).member, hashed(plain.layout, 'k'));
});

test('routing of ranges: inside one rule one member, unless a nested rule names another; otherwise all', () => {
  const r = new Router(withRules([rule('/a/', 1), rule('/a/b/', 2), rule('/a/c/', 1)]));
  const all = [0, 1, 2];
  const prefix = (p: string) => [b(p), prefixEnd(b(p))] as const;
  assert.deepEqual(r.membersOf(...prefix('/a/b/')), [2]);
  assert.deepEqual(r.membersOf(...prefix('/a/b/x')), [2]);
  assert.deepEqual(r.membersOf(...prefix('/a/c/')), [1]);
  assert.deepEqual(r.membersOf(...prefix('/a/')), all, '/a/b/ lies inside on member 2');
  assert.deepEqual(r.membersOf(b('/a/c'), b('/a/d')), [1], 'a nested rule to the same member does not split it');
  assert.deepEqual(r.membersOf(b('/a/0'), b('/a/a')), [1], 'a range of /a/ beside /a/b/');
  assert.deepEqual(r.membersOf(b('/a/0'), b('/a/bz')), all, 'a range reaching into /a/b/');
  assert.deepEqual(r.membersOf(b('/a/'), b('/b/')), all, 'a range reaching past the prefix');
  assert.deepEqual(r.membersOf(b('/a/b/'), Buffer.from([0])), all, 'from key');
  assert.deepEqual(r.membersOf(...prefix('/z/')), all);
  // A rule of 0xff bytes has no prefix end: from-key ranges inside it are covered.
  const ff = new Router({ ...withRules([]), rules: [{ prefix: encodePrefix(Buffer.from([0xff, 0xff])), member: 2 }] });
  assert.deepEqual(ff.membersOf(Buffer.from([0xff, 0xff, 1]), Buffer.from([0])), [2]);
});

test('an empty prefix is refused by the rules and by the layout; malformed rules are refused', () => {
  assert.throws(() => new PlacementRules([{ prefix: '', member: 0 }]), /non-empty prefix/);
  const base = withRules([]);
  const bad = (rules: unknown) => assert.throws(() => decodeLayout(Buffer.from(JSON.stringify({ ...base, rules }))), /malformed/);
  bad([{ prefix: '', member: 0 }]);
  bad([{ prefix: encodePrefix(b('/a/')), member: 3 }]);
  bad([{ prefix: encodePrefix(b('/a/')), member: -1 }]);
  bad([rule('/a/', 0), rule('/a/', 1)]);
  bad([{ prefix: 'not base64!', member: 0 }]);
  bad({});
  const good = withRules([rule('/a/', 2)]);
  assert.deepEqual(decodeLayout(encodeLayout(good)), { ...good, format: 3 }, 'format 3: a proxy without rules refuses it');
  assert.equal(decodeLayout(encodeLayout({ ...good, rules: [] })).format, 2, 'no rules, no history: the format is kept');
});

test('a multi-key transaction under one rule plans onto its member; with a key of another member it is a cross-member transaction over both', () => {
  const l = withRules([rule('/pin/', 2)]);
  const r = new Router(l);
  const put = (k: string) => ({ request: { $case: 'requestPut' as const, value: { key: b(k), value: b('v'), lease: 0n, prevKv: false, ignoreValue: false, ignoreLease: false } } });
  const del = (k: string, end: Buffer) => ({ request: { $case: 'requestDeleteRange' as const, value: { key: b(k), rangeEnd: end, prevKv: false } } });
  const inside = TxnRequest.fromPartial({ success: [put('/pin/a'), put('/pin/b'), put('/pin/zz'), del('/pin/', prefixEnd(b('/pin/x')))] });
  assert.equal(planTxn(r, inside).writeMember, 2);
  // An outside key whose partition lives elsewhere than member 2.
  const outside = Array.from({ length: 100 }, (_, i) => `/out/${i}`).find((k) => hashed(l, k) !== 2)!;
  const across = planTxn(r, TxnRequest.fromPartial({ success: [put('/pin/a'), put(outside)] }));
  assert.equal(across.writeMember, undefined);
  assert.deepEqual(across.crossMembers, [2, hashed(l, outside)].sort((x, y) => x - y));
  assert.equal(planTxn(r, inside).crossMembers, undefined, 'inside the rule: one member, no cross-member commit');
});

test('a partition move never carries a pinned key; placedLayout adds and drops the rule with a history entry', () => {
  const l = withRules([rule('/pin/', 2)]);
  const k = '/pin/k';
  const p = partitionOf(b(k), l.partitions);
  assert.equal(new PartitionFilter([p], l).carries(toMemberKey(b(k))), false);
  assert.equal(new PartitionFilter([p], l.partitions).carries(toMemberKey(b(k))), true, 'without the layout: by partition alone');
  const other = '/free/k';
  assert.equal(new PartitionFilter([partitionOf(b(other), l.partitions)], l).carries(toMemberKey(b(other))), true);
  const state = (member: number | undefined, generation: number): PlacementState => ({
    kind: 'placement', id: 'x', prefix: encodePrefix(b('/ev/')), ...(member !== undefined ? { member } : {}), generation, phase: 'copy', startedAt: '',
  });
  const base = { ...newLayout('c0ffee0000000000', 3) };
  const added = placedLayout(base, state(1, 1), 0);
  assert.equal(added.generation, 2);
  assert.deepEqual(added.rules, [rule('/ev/', 1)]);
  assert.deepEqual(added.leaseAssignment, base.assignment, 'lease homes made explicit (they never move)');
  assert.deepEqual(added.placementChanges, [{ generation: 2, prefix: encodePrefix(b('/ev/')), member: 1, doneAt: 0 }]);
  const done = { ...added, placementChanges: [{ ...added.placementChanges![0]!, doneAt: 50 }] };
  const removed = placedLayout(done, state(undefined, 2), 60);
  assert.equal(removed.rules, undefined);
  assert.deepEqual(removed.placementChanges, [{ generation: 3, prefix: encodePrefix(b('/ev/')), doneAt: 0 }], 'entries compacted past are pruned');
  assert.throws(() => placedLayout(done, state(0, 1), 0), /generation 1, got 2/);
});
