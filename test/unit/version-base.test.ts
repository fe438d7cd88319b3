// The envelope's version base (a key copied by a partition move): the version
// every path reports is the member's plus the base, and a write built from the
// key cache sees the same key-value a member read would give.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyCache } from '../../src/kv/key-cache.js';
import { planTxn } from '../../src/kv/txn-plan.js';
import { stateFromCache } from '../../src/kv/txn/write-state.js';
import { toClientKv } from '../../src/kv/translate.js';
import { op, txn } from '../../src/proto/build.js';
import { Event_EventType, type KeyValue } from '../../src/proto/gen/kv.js';
import { newLayout, Router } from '../../src/shard/layout.js';
import { encodeEnvelope } from '../../src/store/envelope.js';
import { toMemberKey } from '../../src/store/keyspace.js';
import { toClientEvents } from '../../src/watch/events.js';

const mkey = toMemberKey(Buffer.from('k'));
const copied: KeyValue = {
  key: mkey,
  createRevision: 40n,
  modRevision: 41n,
  version: 2n,
  value: encodeEnvelope({ modRevision: 12, createRevision: 3, lease: 0n, versionBase: 5, value: Buffer.from('v') }),
  lease: 0n,
};

test('reads and watch events report member version + base', () => {
  assert.equal(toClientKv(copied).version, 7n);
  const { events } = toClientEvents([{ type: Event_EventType.PUT, kv: copied, prevKv: undefined }], 12);
  assert.equal(events[0]!.kv!.version, 7n);
});

test('the key cache keeps the reported version and the base; a write built from it reads the same version', () => {
  const cache = new KeyCache(10);
  cache.observe(41, [{ type: Event_EventType.PUT, kv: copied, prevKv: undefined }]);
  assert.deepEqual(cache.get(mkey.toString('latin1'))?.present, { version: 7n, versionBase: 5, createRevision: 3, modRevision: 12, lease: 0n });
  const plan = planTxn(new Router(newLayout('0123456789abcdef', 1)), txn([], [op.put(Buffer.from('k'), Buffer.from('w'))]));
  const state = stateFromCache(cache, plan)!;
  const kv = state.keys.get(mkey.toString('latin1'))!;
  assert.equal(kv.version, 2n);
  assert.equal(toClientKv(kv).version, 7n);
});
