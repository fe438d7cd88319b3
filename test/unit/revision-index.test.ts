// The per-member index from meta revisions to member revisions: lookups against
// a model (a plain list of entries), bounded size, ordering enforced.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RevisionIndex } from '../../src/revision/revision-index.js';
import { rng } from '../harness/watch-checker.js';

test('lookups match a plain list of entries, across eviction and growth (property)', () => {
  const r = rng(50);
  for (const max of [1, 2, 3, 7, 50, 3000]) {
    const idx = new RevisionIndex(max);
    const all: [number, number][] = [];
    let meta = 0;
    let member = 0;
    for (let i = 0; i < 2500; i++) {
      meta += 1 + Math.floor(r() * 3);
      member += 1 + Math.floor(r() * 3);
      idx.append(meta, member);
      all.push([meta, member]);
      const kept = all.slice(-max);
      assert.equal(idx.size, kept.length);
      assert.equal(idx.firstMeta, kept[0]![0]);
      assert.equal(idx.firstMember, kept[0]![1]);
      assert.equal(idx.lastMeta, meta);
      if (i % 17 !== 0) continue;
      const processed = member + Math.floor(r() * 3);
      for (let q = 0; q < 5; q++) {
        const m = Math.floor(r() * (meta + 3));
        const j = kept.findLastIndex(([mm]) => mm <= m);
        const want = j < 0 ? undefined : j === kept.length - 1 ? processed : kept[j + 1]![1] - 1;
        assert.equal(idx.lookup(m, processed), want, `max ${max} lookup(${m})`);
        assert.equal(idx.recordRevision(m), j < 0 ? undefined : kept[j]![1]);
        const mr = Math.floor(r() * (member + 3));
        const k = kept.findLastIndex(([, b]) => b <= mr);
        assert.equal(idx.metaAt(mr), k < 0 ? undefined : kept[k]![0], `max ${max} metaAt(${mr})`);
      }
    }
  }
});

test('empty, cleared, and out-of-order appends', () => {
  const idx = new RevisionIndex(10);
  assert.equal(idx.lookup(5, 5), undefined);
  assert.equal(idx.metaAt(5), undefined);
  assert.equal(idx.lastMeta, undefined);
  idx.append(10, 100);
  assert.throws(() => idx.append(10, 101), /out of order/);
  assert.throws(() => idx.append(11, 99), /out of order/);
  assert.equal(idx.lookup(9, 120), undefined, 'older than the oldest entry');
  assert.equal(idx.lookup(10, 120), 120);
  idx.append(12, 105);
  assert.equal(idx.lookup(11, 120), 104, 'up to just before the next record');
  idx.clear();
  assert.equal(idx.size, 0);
  idx.append(1, 1);
  assert.equal(idx.lastMeta, 1);
});
