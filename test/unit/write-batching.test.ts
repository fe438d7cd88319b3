// The pure parts of write batching (docs/notes/write-batching.md): the Batch
// clock record, splitting a batch member revision by meta revision, the revision
// index's batch entries, the batcher's queue (what shares a batch, the batch
// transaction's shape, one transaction in flight), and the correction of a read
// inside a batch — against scripted member answers, no etcd.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { splitByMetaRevision } from '../../src/members/batch-split.js';
import { MemberWriteBatcher, type BatchPart } from '../../src/members/write-batcher.js';
import { readInsideBatch } from '../../src/kv/batch-read.js';
import type { KvContext } from '../../src/kv/context.js';
import { asTxn, cmp, op, txn } from '../../src/proto/build.js';
import { Event_EventType, type Event, type KeyValue } from '../../src/proto/gen/kv.js';
import type { RangeRequest, RangeResponse, TxnRequest, TxnResponse } from '../../src/proto/gen/rpc.js';
import { RevisionIndex } from '../../src/revision/revision-index.js';
import { ClockKind, clockGuardValue, decodeClockRecord, encodeClockRecord } from '../../src/store/clock-record.js';
import { encodeEnvelope } from '../../src/store/envelope.js';
import { InternalKey } from '../../src/store/keyspace.js';

const b = (s: string) => Buffer.from(s);
const header = (revision: number) => ({ clusterId: 0n, memberId: 0n, revision: BigInt(revision), raftTerm: 0n });
const kv = (key: string, meta: number, member: number, created = meta): KeyValue => ({
  key: b(key),
  value: encodeEnvelope({ modRevision: meta, createRevision: created, lease: 0n, versionBase: 0, value: b(`v${meta}`) }),
  createRevision: BigInt(member),
  modRevision: BigInt(member),
  version: 1n,
  lease: 0n,
});
const put = (key: string, meta: number, member: number): Event => ({ type: Event_EventType.PUT, kv: kv(key, meta, member), prevKv: undefined });

test('a Batch clock record keeps its revisions; other kinds are unchanged', () => {
  const rec = { revision: 20, kind: ClockKind.Batch, allocation: [20, 7, 3], batch: [12, 15, 20] };
  assert.deepEqual(decodeClockRecord(encodeClockRecord(rec)), rec);
  const one = { revision: 9, kind: ClockKind.Batch, allocation: [9], batch: [9] };
  assert.deepEqual(decodeClockRecord(encodeClockRecord(one)), one);
  const write = { revision: 9, kind: ClockKind.Write, allocation: [9, 4] };
  assert.deepEqual(decodeClockRecord(encodeClockRecord(write)), write);
  assert.throws(() => encodeClockRecord({ revision: 9, kind: ClockKind.Batch, allocation: [], batch: [3, 8] }), /last revision/);
  // The guard compares the 8-byte revision prefix: a batch record sorts by its top revision.
  assert.ok(Buffer.compare(encodeClockRecord(rec), clockGuardValue(21)) < 0);
  assert.ok(Buffer.compare(encodeClockRecord(rec), clockGuardValue(20)) > 0);
});

test('a batch member revision splits into one part per meta revision, each with its puts and the batch allocation', () => {
  const record = { revision: 14, kind: ClockKind.Batch, allocation: [14, 5], batch: [11, 12, 14] };
  const parts = splitByMetaRevision(record, [put('da', 11, 40), put('dc', 14, 40), put('db', 11, 40)]);
  assert.deepEqual(
    parts.map((p) => [p.record.revision, p.record.kind, p.record.allocation, p.events.map((e) => e.kv!.key.toString())]),
    [
      [11, ClockKind.Write, [14, 5], ['da', 'db']],
      [12, ClockKind.Write, [14, 5], []],
      [14, ClockKind.Write, [14, 5], ['dc']],
    ],
  );
  const lone = { revision: 9, kind: ClockKind.Write, allocation: [9] };
  assert.deepEqual(splitByMetaRevision(lone, [put('da', 9, 3)]).map((p) => p.record), [lone]);
  assert.throws(() => splitByMetaRevision(record, [put('dz', 13, 40)]), /not one of 11,12,14/);
});

test('the revision index: entries of a batch share a member revision; inside it, lookups say so', () => {
  const idx = new RevisionIndex(100);
  idx.append(5, 10);
  idx.append(11, 20); // a batch at member revision 20 carrying 11, 12 and 14
  idx.append(12, 20);
  idx.append(14, 20);
  idx.append(16, 25);
  assert.throws(() => idx.append(17, 24), /out of order/);
  assert.equal(idx.lookup(10, 30), 19, 'before the batch');
  assert.deepEqual(idx.locate(10, 30), { memberRevision: 19, insideBatch: false });
  for (const r of [11, 12, 13]) {
    assert.equal(idx.lookup(r, 30), 20, `meta ${r} is read at the batch's member revision`);
    assert.deepEqual(idx.locate(r, 30), { memberRevision: 20, insideBatch: true });
    assert.equal(idx.recordRevision(r), 19, `compaction at ${r} keeps the batch readable`);
  }
  assert.equal(idx.lookup(14, 30), 24, 'the batch top is an ordinary entry');
  assert.deepEqual(idx.locate(14, 30), { memberRevision: 24, insideBatch: false });
  assert.equal(idx.recordRevision(14), 20);
  assert.equal(idx.metaAt(20), 14);
  assert.equal(idx.metaAt(22), 14);
});

/** A member that records the transactions sent and answers them one at a time, when told. */
function scriptedMember() {
  const sent: TxnRequest[] = [];
  const answers: ((r: TxnResponse) => void)[] = [];
  const client = {
    txn: (req: TxnRequest) =>
      new Promise<TxnResponse>((resolve) => {
        sent.push(req);
        answers.push(resolve);
      }),
  } as unknown as EtcdClient;
  return { client, sent, answer: (r: TxnResponse) => answers.shift()!(r) };
}

const part = (revision: number, keys: string[], bytes = 10): BatchPart => ({
  revision,
  allocation: [revision],
  guards: [cmp.modEqual(b(keys[0]!), 0)],
  ops: keys.map((k) => op.put(b(k), b(`v${revision}`))),
  reads: [op.range(b(keys[0]!))],
  keys,
  bytes,
});
const tick = () => new Promise((r) => setImmediate(r));
const applied = (n: number, ok: boolean[]): TxnResponse => ({
  header: header(n),
  succeeded: true,
  responses: [...ok.map((s) => ({ response: { $case: 'responseTxn' as const, value: { header: header(n), succeeded: s, responses: [] } } })), { response: { $case: 'responsePut' as const, value: { header: header(n), prevKv: undefined } } }],
});

test('the batcher: one transaction in flight; writes ready meanwhile go out together, cut at a shared key or a lone write', async () => {
  const m = scriptedMember();
  const sizes: number[] = [];
  const batcher = new MemberWriteBatcher(m.client, (n) => sizes.push(n));
  const first = batcher.submit(part(10, ['da']));
  await tick();
  assert.equal(m.sent.length, 1, 'the first write goes out at once, alone');
  const second = batcher.submit(part(11, ['db']));
  const third = batcher.submit(part(12, ['dc', 'dd']));
  const conflicting = batcher.submit(part(13, ['dd']));
  const solo = batcher.submitSolo(txn([], [op.deleteRange(b('de'))]));
  const after = batcher.submit(part(15, ['df']));
  await tick();
  assert.equal(m.sent.length, 1, 'nothing more while the first is in flight');

  m.answer(applied(100, [true]));
  assert.deepEqual(await first, { kind: 'applied', nested: asTxn(applied(100, [true]).responses[0]), header: header(100) });
  await tick();
  assert.equal(m.sent.length, 2);
  const batch = m.sent[1]!;
  assert.deepEqual(batch.compare, [cmp.valueLess(InternalKey.clock, clockGuardValue(11))], 'the order guard of the lowest revision');
  assert.equal(batch.success.length, 3, 'two writes (11, 12) and the clock record; 13 shares dd with 12');
  const record = batch.success[2]!.request!;
  assert.equal(record.$case, 'requestPut');
  assert.deepEqual(decodeClockRecord((record.value as { value: Buffer }).value), { revision: 12, kind: ClockKind.Batch, allocation: [12], batch: [11, 12] });
  const nested = asTxnRequest(batch.success[0]!);
  assert.deepEqual(nested.compare, part(11, ['db']).guards);
  assert.deepEqual(nested.failure, [op.range(InternalKey.clock), ...part(11, ['db']).reads]);

  m.answer(applied(101, [true, false]));
  assert.equal(((await second) as { nested: TxnResponse }).nested.succeeded, true);
  assert.equal(((await third) as { nested: TxnResponse }).nested.succeeded, false, 'each write keeps its own outcome');
  await tick();
  assert.equal(m.sent.length, 3, '13 goes next, alone: the lone write after it is a boundary');
  m.answer({ header: header(102), succeeded: false, responses: [] });
  assert.equal((await conflicting).kind, 'order-lost');
  await tick();
  assert.deepEqual(m.sent[3], txn([], [op.deleteRange(b('de'))]), 'the lone write, unchanged');
  m.answer({ header: header(103), succeeded: true, responses: [] });
  assert.equal((await solo).header!.revision, 103n);
  await tick();
  m.answer(applied(104, [true]));
  assert.equal((await after).kind, 'applied');
  assert.deepEqual(sizes, [1, 2, 1, 1, 1]);
});

test('the batcher stops a batch at its byte bound; a failed call fails every write of it', async () => {
  const m = scriptedMember();
  const batcher = new MemberWriteBatcher(m.client);
  const p0 = batcher.submit(part(1, ['da']));
  const big = [batcher.submit(part(2, ['db'], 300 * 1024)), batcher.submit(part(3, ['dc'], 300 * 1024))];
  await tick();
  m.answer(applied(10, [true]));
  await p0;
  await tick();
  assert.equal(m.sent[1]!.success.length, 2, 'one write and the clock record: the next would pass 512 KiB');
  (m.client as unknown as { txn: () => Promise<never> }).txn = () => Promise.reject(new Error('member gone'));
  m.answer(applied(11, [true]));
  await big[0];
  await assert.rejects(big[1]!, /member gone/);
});

function asTxnRequest(o: TxnRequest['success'][number]): TxnRequest {
  assert.equal(o.request?.$case, 'requestTxn');
  return o.request.value as TxnRequest;
}

test('a read inside a batch: keys written above the revision read as before the batch, created ones left out and not counted', async () => {
  // Member revision 40 is a batch of meta revisions 11 (da), 12 (db, created), 14 (dc).
  const writes = [
    { key: 'da', revision: 11 },
    { key: 'db', revision: 12 },
    { key: 'dc', revision: 14 },
  ];
  const atX: KeyValue[] = [kv('da', 11, 40, 2), kv('db', 12, 40), kv('dc', 14, 40, 3), kv('dd', 5, 30)];
  const before: Record<string, KeyValue | undefined> = { da: kv('da', 2, 20), db: undefined, dc: kv('dc', 3, 21) };
  const reads: Partial<RangeRequest>[] = [];
  const read = async (r: Partial<RangeRequest>): Promise<RangeResponse> => {
    reads.push(r);
    const kvs = Number(r.limit ?? 0n) > 0 ? atX.slice(0, Number(r.limit)) : atX;
    return { header: header(50), kvs: r.countOnly ? [] : kvs, more: false, count: BigInt(atX.length) };
  };
  const ctx = {
    members: {
      get: () => ({
        client: {
          txn: async (t: TxnRequest) => ({
            header: header(50),
            succeeded: true,
            responses: t.success.map((o) => {
              const key = (o.request!.value as RangeRequest).key.toString();
              assert.equal((o.request!.value as RangeRequest).revision, 39n, 'the later keys are read just before the batch');
              const got = before[key];
              return { response: { $case: 'responseRange', value: { header: header(39), kvs: got ? [got] : [], more: false, count: got ? 1n : 0n } } };
            }),
          }),
        },
      }),
    },
  } as unknown as KvContext;
  const all = { key: b('d'), rangeEnd: b('e') };
  const batch = { memberRevision: 40, writes };

  const at12 = await readInsideBatch(ctx, 0, all, 12, batch, read);
  assert.deepEqual(at12.kvs.map((k) => k.key.toString()), ['da', 'db', 'dc', 'dd']);
  assert.deepEqual(at12.kvs[2], before.dc, 'dc (written at 14) as it was before');
  assert.equal(at12.count, 4n);

  const at11 = await readInsideBatch(ctx, 0, { ...all, limit: 2n }, 11, batch, read);
  assert.equal(reads.at(-1)!.limit, 4n, 'asked for as many more keys as the batch wrote above 11');
  assert.deepEqual(at11.kvs, [atX[0], before.dc], 'db (created at 12) is left out');
  assert.equal(at11.count, 3n);
  assert.equal(at11.more, true);

  const counted = await readInsideBatch(ctx, 0, { ...all, countOnly: true }, 11, batch, read);
  assert.equal(counted.count, 3n);

  const one = await readInsideBatch(ctx, 0, { key: b('dd') }, 11, batch, read);
  assert.equal(reads.at(-1)!.revision, 40n, 'a key the batch did not write: one plain read at the batch revision');
  assert.equal(one.count, 4n);
});
