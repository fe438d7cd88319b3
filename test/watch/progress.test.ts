// Progress (kubernetes-contract §4.5, §4.6, §4.9): WatchProgressRequest after a
// Range, and periodic progress_notify (proxy started with a 200 ms interval).
// A progress response at revision H promises that every event <= H for the
// watches of the stream has already been sent; header revisions never go down.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import {
  b,
  checkHeaders,
  checkWatch,
  describeResponse,
  ModelHistory,
  ModelWriter,
  prefixEnd,
  rng,
  sleep,
  WatchRecorder,
  type WatchSpec,
} from '../harness/watch-checker.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { WatchResponse } from '../../src/proto/gen/rpc.js';

let set: EtcdSet;
let proxy: TestProxy;
let client: EtcdClient;
let oracle: EtcdClient;
const opened: WatchRecorder[] = [];

before(async () => {
  set = await startEtcdSet({ name: 'watch-progress', oracle: true });
  proxy = await startTestProxy(set, { progressNotifyIntervalMs: 200 });
  client = clientFor(proxy.url, 'proxy');
  oracle = clientFor(set.oracle!.clientUrl, 'oracle');
  // A fresh meta cluster reports revision 0 (see the differential test "fresh store"); start past it.
  await client.put({ key: b('warm-up'), value: b('1') });
});
after(async () => {
  for (const r of opened) r.close();
  client?.close();
  oracle?.close();
  await proxy?.stop();
  await set?.stop();
});

function watch(label: string, c = client): WatchRecorder {
  const r = new WatchRecorder(c, label);
  opened.push(r);
  return r;
}

const isProgress = (r: WatchResponse) => !r.created && !r.canceled && r.compactRevision === 0n && r.events.length === 0 && (r.header?.revision ?? 0n) !== 0n;

/**
 * For every progress response on `rec` that concerns watch `id` (watch_id -1
 * or `id`) at header H: every expected event <= H arrived before it, and none
 * arrives after it.
 */
function checkProgressPromises(rec: WatchRecorder, id: bigint, expectedRevs: bigint[], label: string): number {
  let n = 0;
  rec.responses.forEach((r, i) => {
    if (!isProgress(r) || (r.watchId !== -1n && r.watchId !== id)) return;
    n++;
    const H = r.header!.revision;
    const before = new Set(rec.responses.slice(0, i).filter((x) => x.watchId === id).flatMap((x) => x.events.map((e) => e.kv!.modRevision)));
    const missing = expectedRevs.filter((rev) => rev <= H && !before.has(rev));
    assert.deepEqual(missing, [], `${label}: progress at ${H} (response ${i}) came before events at revisions ${missing.join(',')}\n${rec.summary()}`);
    const late = rec.responses.slice(i + 1).filter((x) => x.watchId === id).flatMap((x) => x.events.filter((e) => e.kv!.modRevision <= H));
    assert.equal(late.length, 0, `${label}: events at or below ${H} arrived after the progress response ${i}: ${late.map((e) => e.kv!.modRevision).join(',')}`);
  });
  return n;
}

test('RequestProgress: after a Range returns R, a progress request on the stream holding a prefix watch is answered with watch_id -1 and header >= R; no event <= that revision arrives later', async () => {
  const model = new ModelHistory();
  const router = proxy.handle.router;
  const mine = Array.from({ length: 8 }, (_, i) => b(`pg/k${i}`));
  const others = Array.from({ length: 8 }, (_, i) => b(`po/k${i}`));
  const writers = [
    new ModelWriter(client, model, router, rng(1), 'a'),
    new ModelWriter(client, model, router, rng(2), 'b'),
    new ModelWriter(client, model, router, rng(3), 'c'),
  ];
  const r = watch('progress-request');
  r.create({ key: b('pg/'), rangeEnd: prefixEnd('pg/'), watchId: 1n, prevKv: true });
  r.create({ key: b('po/k1'), watchId: 2n });
  await r.untilCreated(2n);
  const from = Number(r.createdFor(1n)!.header!.revision) + 1;

  const until = Date.now() + 1500;
  const writing = Promise.all([
    (async () => {
      while (Date.now() < until) await writers[0]!.randomOp(mine);
    })(),
    (async () => {
      while (Date.now() < until) await writers[1]!.randomOp(mine);
    })(),
    (async () => {
      while (Date.now() < until) await writers[2]!.randomOp(others);
    })(),
  ]);
  let rounds = 0;
  while (Date.now() < until) {
    const R = (await client.range({ key: b('pg/'), rangeEnd: prefixEnd('pg/'), limit: 1n })).header!.revision;
    const askedAt = r.responses.length;
    const deadline = Date.now() + 3000; // kube-apiserver's blockTimeout
    let answered: WatchResponse | undefined;
    while (!answered) {
      assert.ok(Date.now() < deadline, `no progress response with header >= ${R} within 3 s\n${r.summary()}`);
      r.progress();
      await r.until(() => r.responses.slice(askedAt).some((x) => x.watchId === -1n && isProgress(x) && x.header!.revision >= R), 100, `progress >= ${R}`).catch(() => undefined);
      answered = r.responses.slice(askedAt).find((x) => x.watchId === -1n && isProgress(x) && x.header!.revision >= R);
    }
    rounds++;
  }
  await writing;
  const spec: WatchSpec = { key: b('pg/'), rangeEnd: prefixEnd('pg/'), startRevision: from, prevKv: true };
  const want = model.expected(spec);
  await r.until(() => r.events(1n).length >= want.reduce((n, x) => n + x.events.length, 0), 5000, 'all events');
  // One more progress at the end: it must cover everything.
  const last = r.responses.length;
  r.progress();
  await r.until(() => r.responses.slice(last).some((x) => x.watchId === -1n), 3000, 'final progress response');
  await sleep(200);
  checkWatch(r.forId(1n), want, { label: 'prefix watch' });
  const n = checkProgressPromises(r, 1n, want.map((x) => BigInt(x.revision)), 'prefix watch');
  assert.ok(rounds >= 3 && n >= rounds, `progress rounds ${rounds}, progress responses ${n}`);
  checkHeaders(r);
});

test('RequestProgress on a stream with no watches is answered with watch_id -1 and the current revision (as etcd 3.4)', async () => {
  for (const [name, c] of [
    ['oracle', oracle],
    ['proxy', client],
  ] as const) {
    const put = await c.put({ key: b('pz/a'), value: b('1') });
    const r = watch(`${name} empty`, c);
    r.progress();
    await r.until(() => r.responses.length >= 1, 3000, 'a progress response');
    await sleep(100);
    assert.equal(r.responses.length, 1, `${name}: one response`);
    const resp = r.responses[0]!;
    assert.ok(isProgress(resp) && resp.watchId === -1n, `${name}: ${describeResponse(resp)}`);
    assert.ok(resp.header!.revision >= put.header!.revision, `${name}: header ${resp.header!.revision} >= ${put.header!.revision}`);
  }
});

test('progress_notify: idle watches that asked get periodic progress (200 ms) for their watch_id, at least the latest revision; others get none; headers never decrease; no event <= a progress revision comes after it', async () => {
  const model = new ModelHistory();
  const busyKeys = Array.from({ length: 4 }, (_, i) => b(`pn/busy/${i}`));
  const otherKeys = Array.from({ length: 4 }, (_, i) => b(`pn/other/${i}`));
  const w1 = new ModelWriter(client, model, proxy.handle.router, rng(5), 'busy');
  const w2 = new ModelWriter(client, model, proxy.handle.router, rng(6), 'other');
  const r = watch('progress-notify');
  r.create({ key: b('pn/idle/'), rangeEnd: prefixEnd('pn/idle/'), watchId: 1n, progressNotify: true });
  r.create({ key: b('pn/idle/'), rangeEnd: prefixEnd('pn/idle/'), watchId: 2n });
  r.create({ key: b('pn/busy/'), rangeEnd: prefixEnd('pn/busy/'), watchId: 3n, progressNotify: true, prevKv: true });
  await r.untilCreated(3n);
  const from = Number(r.createdFor(3n)!.header!.revision) + 1;
  const until = Date.now() + 1200;
  await Promise.all([
    (async () => {
      while (Date.now() < until) {
        await w1.randomOp(busyKeys);
        await sleep(30);
      }
    })(),
    (async () => {
      while (Date.now() < until) await w2.randomOp(otherKeys);
    })(),
  ]);
  const lastWrite = model.lastRevision;
  await sleep(700);

  const progress = (id: bigint) => r.forId(id).filter(isProgress);
  assert.ok(progress(1n).length >= 5, `watch 1: ${progress(1n).length} progress notifications in ~1.9 s at 200 ms\n${r.summary()}`);
  assert.equal(progress(2n).length, 0, 'watch 2 did not ask for progress notifications');
  assert.ok(progress(1n).at(-1)!.header!.revision >= BigInt(lastWrite), `the last idle progress names at least the last write (${lastWrite})`);
  assert.ok(progress(3n).length >= 1, 'the busy watch gets progress once it is idle');
  const revs1 = progress(1n).map((x) => x.header!.revision);
  assert.deepEqual(revs1, [...revs1].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)), 'progress headers never decrease');
  const spec: WatchSpec = { key: b('pn/busy/'), rangeEnd: prefixEnd('pn/busy/'), startRevision: from, prevKv: true };
  checkWatch(r.forId(3n), model.expected(spec), { label: 'busy watch' });
  checkProgressPromises(
    r,
    3n,
    model.expected(spec).map((x) => BigInt(x.revision)),
    'busy watch',
  );
  checkHeaders(r);
});
