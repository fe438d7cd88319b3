// The watch hub's window of released revisions (src/watch/event-buffer.ts):
// bounded by events and bytes, `start` below the oldest revision kept, and
// `since` returning every kept batch from a revision on. (The hub's release
// rule itself needs member timelines and a clock; the watch suites drive it.)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Event } from '../../src/proto/gen/kv.js';
import type { RevisionBatch } from '../../src/watch/events.js';
import { EventBuffer } from '../../src/watch/event-buffer.js';
import { rng } from '../harness/watch-checker.js';

const batch = (revision: number, events: number, bytes: number): RevisionBatch => ({ revision, events: Array.from({ length: events }, () => Event.fromPartial({})), bytes });

test('bounds by events and bytes keep the newest batches; start is the newest dropped revision (property)', () => {
  const r = rng(60);
  for (let round = 0; round < 50; round++) {
    const maxEvents = 1 + Math.floor(r() * 20);
    const maxBytes = 100 + Math.floor(r() * 2000);
    const buf = new EventBuffer(maxEvents, maxBytes, 7);
    const all: RevisionBatch[] = [];
    let rev = 7;
    for (let i = 0; i < 3000; i++) {
      rev += 1 + Math.floor(r() * 3);
      const b = batch(rev, 1 + Math.floor(r() * 4), 10 + Math.floor(r() * 200));
      buf.append(b);
      all.push(b);
      const kept = buf.since(buf.start + 1);
      assert.deepEqual(kept, all.slice(all.length - kept.length), 'a suffix of what was appended');
      assert.ok(kept.length >= 1, 'the newest batch is always kept');
      const events = kept.reduce((n, x) => n + x.events.length, 0);
      const bytes = kept.reduce((n, x) => n + x.bytes, 0);
      assert.equal(buf.events, events);
      assert.equal(buf.bytes, bytes);
      if (kept.length > 1) assert.ok(events <= maxEvents && bytes <= maxBytes, 'within bounds unless one batch alone exceeds them');
      const dropped = all.length - kept.length;
      if (dropped > 0) {
        assert.equal(buf.start, all[dropped - 1]!.revision);
        const withOneMore = [all[dropped - 1]!, ...kept];
        assert.ok(withOneMore.reduce((n, x) => n + x.events.length, 0) > maxEvents || withOneMore.reduce((n, x) => n + x.bytes, 0) > maxBytes, 'nothing dropped that fit');
      } else assert.equal(buf.start, 7);
    }
  }
});

test('since(from) returns the batches with revision >= from; reset empties the window', () => {
  const buf = new EventBuffer(100, 1e6, 0);
  for (const rev of [2, 3, 5, 9]) buf.append(batch(rev, 1, 1));
  assert.deepEqual(buf.since(1).map((b) => b.revision), [2, 3, 5, 9]);
  assert.deepEqual(buf.since(4).map((b) => b.revision), [5, 9]);
  assert.deepEqual(buf.since(9).map((b) => b.revision), [9]);
  assert.deepEqual(buf.since(10), []);
  buf.reset(20);
  assert.deepEqual([buf.start, buf.events, buf.bytes, buf.since(21).length], [20, 0, 0, 0]);
});
