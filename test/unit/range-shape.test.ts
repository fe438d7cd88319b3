// etcd 3.4's Range post-processing on merged member results: revision filters,
// sort order and target (NONE with a non-KEY target sorts ascending), limit and
// `more`, keys_only, and how much each member must fetch.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { memberFetchLimit, needsFullFetch, shapeRange } from '../../src/kv/range-shape.js';
import { KeyValue } from '../../src/proto/gen/kv.js';
import { RangeRequest, RangeRequest_SortOrder as Order, RangeRequest_SortTarget as Target } from '../../src/proto/gen/rpc.js';
import { rng } from '../harness/watch-checker.js';

const req = (p: Partial<RangeRequest>) => RangeRequest.fromPartial({ key: Buffer.from('a'), ...p });
/** Keys a..e in key order; revisions chosen so that every target orders them differently. */
const kvs = [
  ['a', 'v3', 2n, 5n, 9n],
  ['b', 'v1', 3n, 1n, 4n],
  ['c', 'v5', 1n, 4n, 8n],
  ['d', 'v2', 5n, 2n, 2n],
  ['e', 'v4', 4n, 3n, 6n],
].map(([key, value, version, createRevision, modRevision]) =>
  KeyValue.fromPartial({ key: Buffer.from(key as string), value: Buffer.from(value as string), version: version as bigint, createRevision: createRevision as bigint, modRevision: modRevision as bigint }),
);
const keys = (r: { kvs: KeyValue[] }) => r.kvs.map((kv) => kv.key.toString()).join('');

test('no options: everything in key order, no `more`', () => {
  assert.deepEqual(shapeRange(req({}), kvs), { kvs, more: false });
});

test('sort targets and orders', () => {
  const cases: [Target, Order, string][] = [
    [Target.KEY, Order.ASCEND, 'abcde'],
    [Target.KEY, Order.DESCEND, 'edcba'],
    [Target.VERSION, Order.ASCEND, 'cabed'],
    [Target.VERSION, Order.DESCEND, 'debac'],
    [Target.CREATE, Order.ASCEND, 'bdeca'],
    [Target.MOD, Order.DESCEND, 'acebd'],
    [Target.VALUE, Order.ASCEND, 'bdaec'],
    [Target.VERSION, Order.NONE, 'cabed'], // etcd: a non-KEY target with NONE sorts ascending
    [Target.KEY, Order.NONE, 'abcde'],
  ];
  for (const [sortTarget, sortOrder, want] of cases) assert.equal(keys(shapeRange(req({ sortTarget, sortOrder }), kvs)), want, `${Target[sortTarget]} ${Order[sortOrder]}`);
});

test('ties in the sort target keep key order', () => {
  const tied = kvs.map((kv, i) => ({ ...kv, version: BigInt(i % 2) }));
  assert.equal(keys(shapeRange(req({ sortTarget: Target.VERSION, sortOrder: Order.ASCEND }), tied)), 'acebd');
  assert.equal(keys(shapeRange(req({ sortTarget: Target.VERSION, sortOrder: Order.DESCEND }), tied)), 'bdace');
});

test('limit after sorting sets `more`; keys_only drops values only', () => {
  assert.deepEqual(keys(shapeRange(req({ limit: 2n, sortTarget: Target.MOD, sortOrder: Order.ASCEND }), kvs)), 'db');
  assert.equal(shapeRange(req({ limit: 2n }), kvs).more, true);
  assert.equal(shapeRange(req({ limit: 5n }), kvs).more, false);
  assert.equal(shapeRange(req({ limit: 0n }), kvs).kvs.length, 5, 'limit 0 = no limit');
  const ko = shapeRange(req({ keysOnly: true }), kvs);
  assert.ok(ko.kvs.every((kv) => kv.value.length === 0));
  assert.deepEqual(ko.kvs.map((kv) => kv.modRevision), kvs.map((kv) => kv.modRevision));
  assert.equal(kvs[0]!.value.toString(), 'v3', 'the input is not modified');
});

test('revision filters are inclusive bounds (property)', () => {
  const r = rng(30);
  for (let i = 0; i < 500; i++) {
    const pick = () => (r() < 0.5 ? 0n : BigInt(1 + Math.floor(r() * 9)));
    const f = { minModRevision: pick(), maxModRevision: pick(), minCreateRevision: pick(), maxCreateRevision: pick() };
    const want = kvs.filter(
      (kv) =>
        (f.minModRevision === 0n || kv.modRevision >= f.minModRevision) &&
        (f.maxModRevision === 0n || kv.modRevision <= f.maxModRevision) &&
        (f.minCreateRevision === 0n || kv.createRevision >= f.minCreateRevision) &&
        (f.maxCreateRevision === 0n || kv.createRevision <= f.maxCreateRevision),
    );
    const limit = BigInt(Math.floor(r() * 4));
    const got = shapeRange(req({ ...f, limit }), kvs);
    const n = limit === 0n ? want.length : Math.min(want.length, Number(limit));
    assert.deepEqual(got.kvs, want.slice(0, n), JSON.stringify(f, (_, v) => (typeof v === 'bigint' ? Number(v) : v)));
    assert.equal(got.more, n < want.length);
  }
});

test('member fetch: limit+1 in key order, everything when sorting or filtering', () => {
  assert.equal(memberFetchLimit(req({})), 0);
  assert.equal(memberFetchLimit(req({ limit: 10n })), 11);
  for (const p of [{ sortOrder: Order.ASCEND }, { sortOrder: Order.DESCEND }, { minModRevision: 1n }, { maxModRevision: 1n }, { minCreateRevision: 1n }, { maxCreateRevision: 1n }]) {
    assert.ok(needsFullFetch(req(p)), JSON.stringify(p, (_, v) => (typeof v === 'bigint' ? Number(v) : v)));
    assert.equal(memberFetchLimit(req({ ...p, limit: 10n })), 0);
  }
  // Like etcd 3.4: NONE with a non-KEY target fetches limit+1 by key, then sorts those.
  assert.equal(memberFetchLimit(req({ limit: 3n, sortTarget: Target.VERSION })), 4);
});
