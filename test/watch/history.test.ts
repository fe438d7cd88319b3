// Watches that start further back than the proxy's in-memory window
// (--watch-buffer-len 10): the history is read back from the members and joined
// to the live stream (invariant 3: every change exactly once, in order), and
// "compacted" is answered only below the compacted revision (invariant 5).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import {
  ALL_KEYS,
  b,
  sameMemberKeys,
  checkHeaders,
  checkWatch,
  ModelHistory,
  ModelWriter,
  prefixEnd,
  rng,
  sleep,
  WatchRecorder,
  type ModelBatch,
  type WatchSpec,
} from '../harness/watch-checker.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';

let set: EtcdSet;
let proxy: TestProxy;
let client: EtcdClient;
const model = new ModelHistory();
let writer: ModelWriter;
const opened: WatchRecorder[] = [];
const keys = Array.from({ length: 20 }, (_, i) => b(`h/k${String(i).padStart(2, '0')}`));

before(async () => {
  set = await startEtcdSet({ name: 'watch-history' });
  proxy = await startTestProxy(set, { watchBufferLen: 10, progressNotifyIntervalMs: 100 });
  client = clientFor(proxy.url, 'proxy');
  writer = new ModelWriter(client, model, proxy.handle.router, rng(7), 'w');
});
after(async () => {
  for (const r of opened) r.close();
  client?.close();
  await proxy?.stop();
  await set?.stop();
});

function watch(label: string): WatchRecorder {
  const r = new WatchRecorder(client, label);
  opened.push(r);
  return r;
}

const count = (bs: ModelBatch[]) => bs.reduce((n, bt) => n + bt.events.length, 0);

test('history beyond the buffer (10 events): watches from revision 5 after 200 writes deliver every event exactly once, in order, joined to the live stream with no gap or duplicate while writes go on', async () => {
  // 200 writes: puts on every key first, then random puts, deletes and single-member transactions.
  for (const k of keys) await writer.put(k);
  while (writer.revisions.length < 200) await writer.randomOp(keys);
  const start = writer.revisions[4]!;
  assert.ok(model.lastRevision - start > 150, 'the start is far outside a 10-event buffer');

  // Keep writing while the watches catch up.
  let writing = true;
  const background = (async () => {
    for (let i = 0; i < 150 && writing; i++) await writer.randomOp(keys);
  })();

  const specs: { id: bigint; spec: WatchSpec }[] = [
    { id: 1n, spec: { key: b('h/'), rangeEnd: prefixEnd('h/'), startRevision: start, prevKv: true } },
    { id: 2n, spec: { key: ALL_KEYS, rangeEnd: ALL_KEYS, startRevision: 1 } },
    { id: 3n, spec: { key: keys[3]!, rangeEnd: Buffer.alloc(0), startRevision: start, prevKv: true } },
    { id: 4n, spec: { key: b('h/k1'), rangeEnd: prefixEnd('h/k1'), startRevision: start + 50, noPut: true, prevKv: true } },
  ];
  const r = watch('history');
  for (const { id, spec } of specs) {
    r.create({
      watchId: id,
      key: spec.key,
      rangeEnd: spec.rangeEnd,
      startRevision: BigInt(spec.startRevision),
      prevKv: spec.prevKv ?? false,
      filters: spec.noPut ? [0] : [],
    });
    await sleep(20); // spread the creates over the writes
  }
  await background;
  writing = false;
  // Everything written must arrive (bounded), then nothing more.
  for (const { id, spec } of specs) {
    const n = count(model.expected(spec));
    await r.until(() => r.events(id).length >= n, 20_000, `${n} events on watch ${id}`);
  }
  await sleep(300);
  for (const { id, spec } of specs) {
    assert.ok(r.forId(id)[0]?.created, `watch ${id}: created comes first`);
    checkWatch(r.forId(id), model.expected(spec), { label: `watch ${id} from ${spec.startRevision}`, oneResponsePerRevision: false, filtered: !!spec.noPut });
  }
  checkHeaders(r);
});

test('history beyond the buffer: a watch resumed from the last received revision + 1 after its stream is broken misses nothing', async () => {
  const first = writer.revisions.at(-1)! + 1;
  for (let i = 0; i < 60; i++) await writer.randomOp(keys);
  const spec: WatchSpec = { key: b('h/'), rangeEnd: prefixEnd('h/'), startRevision: first, prevKv: true };
  let writing = true;
  const background = (async () => {
    for (let i = 0; i < 80 && writing; i++) await writer.randomOp(keys);
  })();
  const collected: import('../../src/proto/gen/rpc.js').WatchResponse[] = [];
  let next = first;
  for (let round = 0; round < 4; round++) {
    const r = watch(`resume ${round}`);
    r.create({ key: spec.key, rangeEnd: spec.rangeEnd, startRevision: BigInt(next), prevKv: true });
    await r.until(() => r.events(0n).length >= 5, 10_000, 'a few events before breaking the stream');
    r.close();
    const got = r.forId(0n).filter((x) => x.events.length > 0);
    collected.push(...got);
    next = Number(got.at(-1)!.events.at(-1)!.kv!.modRevision) + 1;
  }
  await background;
  writing = false;
  const r = watch('resume final');
  r.create({ key: spec.key, rangeEnd: spec.rangeEnd, startRevision: BigInt(next), prevKv: true });
  const want = count(model.expected(spec)) - collected.reduce((n, x) => n + x.events.length, 0);
  await r.until(() => r.events(0n).length >= want, 10_000, `the remaining ${want} events`);
  await sleep(200);
  collected.push(...r.forId(0n).filter((x) => x.events.length > 0));
  checkWatch(collected, model.expected(spec), { label: 'resumed watch', oneResponsePerRevision: false });
});

test('history beyond the buffer: progress (requested, and periodic progress_notify) never claims a revision whose events a catching-up watch has not been sent yet', async () => {
  const from = writer.revisions[10]!;
  let writing = true;
  const background = (async () => {
    for (let i = 0; i < 60 && writing; i++) await writer.randomOp(keys);
  })();
  const r = watch('progress while catching up');
  r.create({ key: b('h/'), rangeEnd: prefixEnd('h/'), watchId: 1n, startRevision: BigInt(from), progressNotify: true, prevKv: true });
  r.progress();
  const timer = setInterval(() => r.progress(), 25);
  try {
    await background;
  } finally {
    writing = false;
    clearInterval(timer);
  }
  const spec: WatchSpec = { key: b('h/'), rangeEnd: prefixEnd('h/'), startRevision: from, prevKv: true };
  const want = model.expected(spec);
  await r.until(() => r.events(1n).length >= count(want), 10_000, 'all events');
  const last = r.responses.length;
  r.progress();
  await r.until(() => r.responses.slice(last).some((x) => x.watchId === -1n), 3000, 'a final progress response');
  await sleep(250);
  checkWatch(r.forId(1n), want, { label: 'catching-up watch', oneResponsePerRevision: false });
  // Every progress response (watch_id -1 or 1) at H: all events <= H were sent before it.
  const revs = want.map((x) => BigInt(x.revision));
  let progressResponses = 0;
  r.responses.forEach((x, i) => {
    const progress = !x.created && !x.canceled && x.events.length === 0 && (x.watchId === -1n || x.watchId === 1n);
    if (!progress) return;
    progressResponses++;
    const H = x.header!.revision;
    const sent = new Set(r.responses.slice(0, i).flatMap((y) => (y.watchId === 1n ? y.events.map((e) => e.kv!.modRevision) : [])));
    const missing = revs.filter((rev) => rev <= H && !sent.has(rev));
    assert.deepEqual(missing, [], `progress (watch_id ${x.watchId}) at ${H}, response ${i}, came before the events at ${missing.join(',')}`);
  });
  assert.ok(progressResponses >= 2, `${progressResponses} progress responses`);
  checkHeaders(r);
});

test('history beyond the buffer: a watch canceled while it catches up gets its canceled reply and nothing after it', async () => {
  for (let round = 0; round < 5; round++) {
    const r = watch(`cancel while catching up ${round}`);
    r.create({ key: ALL_KEYS, rangeEnd: ALL_KEYS, watchId: 1n, startRevision: 1n, prevKv: true });
    if (round > 0) await sleep(round * 3);
    r.cancel(1n);
    r.create({ key: b('h/none'), watchId: 2n });
    await r.untilCreated(2n);
    await r.until(() => r.forId(1n).some((x) => x.canceled), 5000, 'the canceled reply');
    await writer.put(keys[1]!);
    await sleep(150);
    const mine = r.forId(1n);
    const at = mine.findIndex((x) => x.canceled);
    assert.deepEqual(mine.slice(at + 1).map((x) => x.events.length), [], `round ${round}: responses for watch 1 after its canceled reply`);
    const got = mine.filter((x) => x.events.length > 0);
    // What was sent before the cancel is an exact prefix of the history.
    const want = model.expected({ key: ALL_KEYS, rangeEnd: ALL_KEYS, startRevision: 1, prevKv: true });
    const n = got.reduce((k, x) => k + x.events.length, 0);
    const prefix: ModelBatch[] = [];
    let left = n;
    for (const bt of want) {
      if (left <= 0) break;
      prefix.push({ revision: bt.revision, events: bt.events.slice(0, left) });
      left -= bt.events.length;
    }
    checkWatch(got, prefix, { label: `round ${round}: events before the cancel`, oneResponsePerRevision: false });
    r.close();
  }
});

test('compaction with history beyond the buffer: "compacted" only below the compacted revision; from it, the full history as etcd gives it (events at it without prev_kv, a DELETE at it gone)', async () => {
  const from = writer.revisions.at(-1)! + 1;
  for (let i = 0; i < 40; i++) await writer.randomOp(keys);
  // Compact at a revision that changed something under h/.
  const batches = model.expected({ key: b('h/'), rangeEnd: prefixEnd('h/'), startRevision: from });
  const C = batches[10]!.revision;
  for (let i = 0; i < 30; i++) await writer.randomOp(keys);
  await client.compact({ revision: BigInt(C), physical: true });
  await writer.put(keys[0]!);

  const r = watch('compacted');
  const range = { key: b('h/'), rangeEnd: prefixEnd('h/') };
  r.create({ ...range, watchId: 1n, startRevision: BigInt(C - 1) });
  r.create({ ...range, watchId: 2n, startRevision: BigInt(C) });
  r.create({ ...range, watchId: 3n, startRevision: BigInt(C), prevKv: true });
  r.create({ ...range, watchId: 4n, startRevision: BigInt(C + 5) });
  r.create({ ...range, watchId: 5n, startRevision: 1n });
  const specs = [2n, 3n, 4n].map((id) => ({
    id,
    spec: { ...range, startRevision: id === 4n ? C + 5 : C, prevKv: id === 3n },
  }));
  // etcd's view of a watch from exactly C (docs/notes §4, and the differential tests): the events at C
  // have no prev_kv (C - 1 is compacted), and a DELETE at C is gone with its tombstone.
  const etcdView = (spec: WatchSpec): ModelBatch[] =>
    model.expected(spec).flatMap((bt) =>
      bt.revision !== C ? [bt] : [{ ...bt, events: bt.events.filter((e) => e.type === 0).map((e) => ({ ...e, prevKv: undefined })) }].filter((x) => x.events.length > 0),
    );
  for (const { id, spec } of specs) {
    const n = count(etcdView(spec));
    await r.until(() => r.events(id).length >= n, 10_000, `${n} events on watch ${id}`);
  }
  await r.until(() => [1n, 5n].every((id) => r.forId(id).some((x) => x.canceled)), 5000, 'compacted cancels');
  await sleep(200);
  for (const id of [1n, 5n]) {
    assert.deepEqual(
      r.forId(id).map((x) => [x.created, x.canceled, x.compactRevision, x.events.length]),
      [
        [true, false, 0n, 0],
        [false, true, BigInt(C), 0],
      ],
      `watch ${id} below the compacted revision`,
    );
  }
  for (const { id, spec } of specs) {
    const want = etcdView(spec);
    checkWatch(r.forId(id), want, { label: `watch ${id} from ${spec.startRevision} (compacted at ${C})`, oneResponsePerRevision: false });
  }
});

test('compaction at a revision whose member later got only bookkeeping writes (a history read nudged it): a watch from exactly the compacted revision still works (as etcd)', async () => {
  const router = proxy.handle.router;
  const onX = sameMemberKeys(router, 'nx/x', 1, 0)[0]!;
  const elsewhere = [...sameMemberKeys(router, 'nx/y', 2, 1), ...sameMemberKeys(router, 'nx/z', 2, 2)];
  await writer.put(onX);
  const C = await writer.put(onX); // member 0's latest write
  // More than a buffer's worth of writes on the other members only: the buffer now starts after C.
  for (let i = 0; i < 15; i++) await writer.put(elsewhere[i % elsewhere.length]!);
  // A watch reading history up to the buffer makes the proxy nudge member 0 (it has no revision past C).
  const h = watch('history reader');
  h.create({ key: b('nx/'), rangeEnd: prefixEnd('nx/'), watchId: 1n, startRevision: BigInt(C - 1) });
  const before = model.expected({ key: b('nx/'), rangeEnd: prefixEnd('nx/'), startRevision: C - 1 });
  await h.until(() => h.events(1n).length >= count(before), 5000, 'the history');
  h.close();
  await client.compact({ revision: BigInt(C), physical: true });

  const r = watch('from the compacted revision');
  r.create({ key: b('nx/'), rangeEnd: prefixEnd('nx/'), watchId: 1n, startRevision: BigInt(C) });
  r.create({ key: b('nx/'), rangeEnd: prefixEnd('nx/'), watchId: 2n, startRevision: BigInt(C - 1) });
  await r.until(() => r.forId(2n).some((x) => x.canceled), 5000, 'the compacted cancel of the watch below C');
  const spec: WatchSpec = { key: b('nx/'), rangeEnd: prefixEnd('nx/'), startRevision: C };
  const want = count(model.expected(spec));
  await r.until(() => r.events(1n).length >= want || r.forId(1n).some((x) => x.canceled), 5000, `${want} events on the watch from C`);
  assert.ok(!r.forId(1n).some((x) => x.canceled), `a watch from the compacted revision ${C} itself must not be canceled as compacted:\n${r.summary()}`);
  checkWatch(r.forId(1n), model.expected(spec), { label: `watch from ${C}`, oneResponsePerRevision: false });
});

test('two compactions in a row (the first one writes its bookkeeping to every member): a watch from exactly the second compacted revision still works (as etcd)', async () => {
  const router = proxy.handle.router;
  const onX = sameMemberKeys(router, 'ny/x', 1, 0)[0]!;
  const elsewhere = [...sameMemberKeys(router, 'ny/y', 2, 1), ...sameMemberKeys(router, 'ny/z', 2, 2)];
  const C1 = await writer.put(onX);
  const C = await writer.put(onX); // member 0's latest write
  for (let i = 0; i < 15; i++) await writer.put(elsewhere[i % elsewhere.length]!);
  await client.compact({ revision: BigInt(C1), physical: true });
  await client.compact({ revision: BigInt(C), physical: true });

  const r = watch('from the second compacted revision');
  r.create({ key: b('ny/'), rangeEnd: prefixEnd('ny/'), watchId: 1n, startRevision: BigInt(C) });
  const spec: WatchSpec = { key: b('ny/'), rangeEnd: prefixEnd('ny/'), startRevision: C };
  const want = count(model.expected(spec));
  await r.until(() => r.events(1n).length >= want || r.forId(1n).some((x) => x.canceled), 5000, `${want} events on the watch from C`);
  assert.ok(!r.forId(1n).some((x) => x.canceled), `a watch from the compacted revision ${C} itself must not be canceled as compacted:\n${r.summary()}`);
  checkWatch(r.forId(1n), model.expected(spec), { label: `watch from ${C}`, oneResponsePerRevision: false });
});
