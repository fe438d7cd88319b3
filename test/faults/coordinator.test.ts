// Issue 6 (1): losing the coordinator.
//
// (a) kill -9 of the coordinator, its data wiped, a fresh empty etcd started on
//     the same address: two proxies rebuild the clock at the same time from the
//     members; both serve again within seconds; every revision after the loss
//     is above every revision any client saw before; they agree (same
//     revisions and data afterwards, no revision handed to two writes); exactly
//     one rebuild is counted in metaetcd_clock_reconstitution; watches opened
//     before the loss go on without loss or duplicate.
// (b) the same with writes in flight through both proxies during the kill: no
//     acknowledged write lost, failed writes all-or-nothing, no revision reused,
//     revisions in real-time order.
// (c) the coordinator hangs (SIGSTOP): writes and linearizable reads fail with
//     Unavailable within a bound; reads at a revision a client already holds
//     still work (a single key, and a paged list continued at the revision of
//     its first page); after SIGCONT everything recovers.
// (d) the coordinator comes back with an OLD copy of its data (a restored
//     backup, or an etcd quorum recovery from a lagging node): no revision may
//     be reused or go below one a client saw, and the proxies must recover.

import assert from 'node:assert/strict';
import { cpSync, rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { freePort } from '../../src/sandbox/etcd-process.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { allKvs, codeOf, describeErr, hang, healthOf, loseAndReplace, metricSum, sleep, Status, timed, waitUntil } from '../harness/faults.js';
import { checkRevisions, type HistoryOp } from '../harness/linearizability.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { ModelHistory, WatchRecorder, checkWatch, prefixEnd } from '../harness/watch-checker.js';
import { judgeWatch, judgeWrites, maxRev, summarize, writerLoop, type WriteRecord } from './workload.js';

const REQUEST_TIMEOUT_MS = 1500;
const BOUND = { timeout: 60_000 };

let set: EtcdSet;
let A: TestProxy;
let B: TestProxy;
let a: EtcdClient;
let b: EtcdClient;
const recorders: WatchRecorder[] = [];
const extra: (() => Promise<void>)[] = [];

before(async () => {
  set = await startEtcdSet({ name: 'coord' });
  const cfg = { requestTimeoutMs: REQUEST_TIMEOUT_MS, fenceAfterMs: 300 };
  A = await startTestProxy(set, cfg);
  B = await startTestProxy(set, { ...cfg, metricsPort: await freePort() }); // B serves /health
  a = clientFor(A.url, 'proxy A', 10_000);
  b = clientFor(B.url, 'proxy B', 10_000);
});

after(async () => {
  for (const r of recorders) r.close();
  for (const f of extra) await f().catch(() => undefined);
  a?.close();
  b?.close();
  await Promise.all([A?.stop(), B?.stop()]);
  await set?.stop(); // SIGCONT + SIGTERM, so a stopped coordinator is stopped too
});

const reconstitutions = async () => (await metricSum(A.metrics, 'metaetcd_clock_reconstitution')) + (await metricSum(B.metrics, 'metaetcd_clock_reconstitution'));

/** Retries `f` until it succeeds; returns how long the first success took. */
async function firstSuccess<T>(what: string, f: () => Promise<T>, timeoutMs: number): Promise<{ ms: number; value: T; errors: string[] }> {
  const t0 = performance.now();
  const errors: string[] = [];
  for (;;) {
    try {
      return { ms: performance.now() - t0, value: await f(), errors };
    } catch (err) {
      errors.push(describeErr(err));
      if (performance.now() - t0 > timeoutMs) throw new Error(`${what}: no success within ${timeoutMs} ms; errors: ${errors.slice(-5).join(' | ')}`);
      await sleep(50);
    }
  }
}

test('(a) coordinator lost and replaced by an empty etcd: both proxies rebuild at once, agree, never go below a seen revision', BOUND, async () => {
  const prefix = Buffer.from('c1/');
  const model = new ModelHistory();
  const r0 = (await a.range({ key: prefix, rangeEnd: prefixEnd(prefix) })).header!.revision;
  const wa = new WatchRecorder(a, 'watch via A');
  const wb = new WatchRecorder(b, 'watch via B');
  recorders.push(wa, wb);
  for (const w of [wa, wb]) w.create({ key: prefix, rangeEnd: prefixEnd(prefix), startRevision: r0 + 1n, prevKv: true });
  await waitUntil('both watches created', () => wa.createdResponses().length === 1 && wb.createdResponses().length === 1, 10_000);

  // Before: writes and reads through both proxies; remember every header revision seen.
  let seen = 0n;
  const note = (r: { header?: { revision: bigint } }) => {
    if (r.header!.revision > seen) seen = r.header!.revision;
  };
  for (let i = 0; i < 30; i++) {
    const c = i % 2 ? a : b;
    const key = Buffer.from(`c1/k${i % 12}`);
    const value = Buffer.from(`before-${i}`);
    const r = await c.put({ key, value });
    model.recordPut(r, key, value);
    note(r);
    note(await (i % 3 ? a : b).range({ key }));
  }
  note(await a.range({ key: Buffer.from([0]), rangeEnd: Buffer.from([0]), countOnly: true }));
  const baseline = await reconstitutions();

  // Lose the coordinator.
  const lost = performance.now();
  await loseAndReplace(set.coordinator);
  const replacedMs = performance.now() - lost;

  // Both proxies find an empty coordinator at the same moment.
  const writeVia = (c: EtcdClient, tag: string, i: number) => async () => {
    const key = Buffer.from(`c1/after-${tag}-${i}`);
    const value = Buffer.from(`${tag}-${i}`);
    const r = await c.put({ key, value });
    model.recordPut(r, key, value);
    return r.header!.revision;
  };
  const [fa, fb] = await Promise.all([firstSuccess('first write via A', writeVia(a, 'A', 0), 15_000), firstSuccess('first write via B', writeVia(b, 'B', 0), 15_000)]);
  // Then concurrent writes through both.
  const more = await Promise.all(Array.from({ length: 20 }, (_, i) => writeVia(i % 2 ? a : b, i % 2 ? 'A' : 'B', i + 1)()));
  const after = [fa.value, fb.value, ...more];

  console.log(
    `coordinator replaced in ${replacedMs.toFixed(0)} ms; first write after it: via A ${fa.ms.toFixed(0)} ms, via B ${fb.ms.toFixed(0)} ms ` +
      `(errors before: ${[...fa.errors, ...fb.errors].slice(0, 4).join(' | ') || 'none'}); highest revision seen before ${seen}, first after ${[fa.value, fb.value].join('/')}`,
  );
  assert.ok(fa.ms < 10_000 && fb.ms < 10_000, 'both proxies serve writes within 10 s of the new coordinator');
  for (const r of after) assert.ok(r > seen, `revision ${r} after the rebuild is not above ${seen}, the highest a client saw before`);
  assert.equal(new Set(after.map(String)).size, after.length, `a revision was handed to two writes: ${after.join(',')}`);
  assert.equal((await reconstitutions()) - baseline, 1, 'exactly one rebuild is published (and counted) for one loss');

  // They agree: same header revision and same data, through either proxy (and a new one).
  const C = await startTestProxy(set, { requestTimeoutMs: REQUEST_TIMEOUT_MS });
  extra.push(() => C.stop());
  const c = clientFor(C.url, 'proxy C');
  extra.push(async () => c.close());
  const [la, lb, lc] = [await allKvs(a, prefix), await allKvs(b, prefix), await allKvs(c, prefix)];
  assert.equal(la.revision, lb.revision, 'A and B report the same current revision');
  assert.equal(la.revision, lc.revision, 'a proxy started after the rebuild reports the same revision');
  assert.deepEqual(lb.kvs, la.kvs);
  assert.deepEqual(lc.kvs, la.kvs);
  assert.deepEqual(la.kvs, model.state(prefix, prefixEnd(prefix)), 'every acknowledged write is there, with its meta revisions');

  // The watches opened before the loss delivered everything exactly once, in order.
  const expected = model.expected({ key: prefix, rangeEnd: prefixEnd(prefix), startRevision: Number(r0) + 1, prevKv: true });
  const want = expected.reduce((n, bt) => n + bt.events.length, 0);
  await waitUntil('watches caught up', () => wa.events(0n).length >= want && wb.events(0n).length >= want, 15_000).catch(() => undefined);
  for (const w of [wa, wb]) {
    assert.equal(w.error, undefined, `${w.label} ended: ${w.error?.message}`);
    checkWatch(w.forId(0n), expected, { label: w.label });
  }
});

test('(b) coordinator lost while writes are in flight through two proxies: nothing acknowledged lost, nothing half-applied, no revision reused', BOUND, async () => {
  const prefix = 'c2/';
  const records: WriteRecord[] = [];
  const r0 = (await a.range({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix) })).header!.revision;
  const watch = new WatchRecorder(b, 'watch via B');
  recorders.push(watch);
  watch.create({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix), startRevision: r0 + 1n });
  let stopAt = Infinity;
  const writers = Array.from({ length: 8 }, (_, i) =>
    writerLoop({
      name: `w${i}`,
      via: i % 2 ? 'A' : 'B',
      client: () => (i % 2 ? a : b),
      router: A.handle.router,
      prefix,
      stop: () => performance.now() > stopAt,
      out: records,
    }),
  );
  const baseline = await reconstitutions();
  await sleep(600);
  const killAt = performance.now();
  await loseAndReplace(set.coordinator);
  const backAt = performance.now();
  await waitUntil('writes succeed again', () => records.some((w) => w.rev !== undefined && w.start > backAt), 15_000);
  stopAt = performance.now() + 1500;
  await Promise.all(writers);

  const before = records.filter((w) => w.end < killAt);
  const during = records.filter((w) => w.end >= killAt && w.start < backAt);
  const afterwards = records.filter((w) => w.start >= backAt);
  console.log(`before the kill: ${summarize(before)}\nduring: ${summarize(during)}\nafter: ${summarize(afterwards)}`);
  assert.ok(before.filter((w) => w.rev !== undefined).length > 20, 'writes were flowing before the kill');
  assert.ok(afterwards.filter((w) => w.rev !== undefined).length > 20, 'writes flow again after the rebuild');
  for (const w of records) {
    if (w.error) assert.equal(w.code, Status.UNAVAILABLE, `a write during the outage failed with a non-retryable status: ${w.error}`);
  }

  // Revisions never go below what was seen: every write acknowledged after the
  // coordinator came back is above everything acknowledged before the kill.
  const seenBefore = maxRev(records, killAt);
  for (const w of afterwards) if (w.rev !== undefined) assert.ok(w.rev > seenBefore, `write acknowledged at ${w.rev} after the rebuild, below ${seenBefore} seen before the kill`);
  // Real-time order of all acknowledged writes, and no revision acknowledged twice.
  const ops: HistoryOp[] = records.map((w, id) => ({
    id,
    key: w.keys[0]!,
    client: w.writer,
    via: w.via,
    op: { kind: 'put', value: w.value },
    start: w.start,
    end: w.end,
    ok: w.rev !== undefined,
    ...(w.rev !== undefined ? { revision: w.rev } : {}),
  }));
  assert.deepEqual(checkRevisions(ops).slice(0, 10), []);

  // Final state through a linearizable read (any write still in flight is fenced by now).
  const final = (await allKvs(a, Buffer.from(prefix))).kvs;
  const v = judgeWrites(records, final, 'coordinator loss with writes in flight');
  console.log(`verdict: ${JSON.stringify(v)}; rebuilds counted: ${(await reconstitutions()) - baseline}`);
  assert.equal((await reconstitutions()) - baseline, 1, 'one rebuild counted');
  await waitUntil('watch caught up', () => watch.events(0n).length >= final.filter((kv) => kv.modRevision > r0).length, 15_000).catch(() => undefined);
  assert.equal(watch.error, undefined, `watch ended: ${watch.error?.message}`);
  judgeWatch(watch.forId(0n), final, r0, 'watch through the loss');
});

test('(c) coordinator hang (SIGSTOP): writes fail with Unavailable within a bound, reads at a held revision work, all recovers on SIGCONT', BOUND, async () => {
  const key = Buffer.from('c3/one');
  const w = await a.put({ key, value: Buffer.from('held') });
  const held = w.header!.revision;
  const bound = 2 * REQUEST_TIMEOUT_MS + 1500;

  await hang(set.coordinator);
  try {
    const writes = await Promise.all(
      Array.from({ length: 6 }, (_, i) => timed(() => (i % 2 ? a : b).put({ key: Buffer.from(`c3/hang-${i}`), value: Buffer.from('x') }))),
    );
    for (const [i, t] of writes.entries()) {
      assert.ok(t.err, `write ${i} via ${i % 2 ? 'A' : 'B'} succeeded while the coordinator was stopped, after ${t.ms.toFixed(0)} ms at revision ${t.value?.header?.revision} (held ${held})`);
      assert.equal(codeOf(t.err), Status.UNAVAILABLE, `write during the hang: ${describeErr(t.err)}`);
      assert.ok(t.ms < bound, `write failed only after ${t.ms.toFixed(0)} ms (bound ${bound} ms)`);
    }
    console.log(`writes during the hang failed after ${writes.map((t) => t.ms.toFixed(0)).join(', ')} ms: ${describeErr(writes[0]!.err)}`);

    // A read at the revision this client already holds, on the key it wrote.
    const r = await timed(() => a.range({ key, revision: held }));
    assert.equal(r.err, undefined, `read at held revision ${held}: ${describeErr(r.err)}`);
    assert.equal(r.value!.kvs[0]?.value.toString(), 'held');
    // A serializable read needs no coordinator either.
    const s = await timed(() => b.range({ key, serializable: true }));
    assert.equal(s.err, undefined, `serializable read: ${describeErr(s.err)}`);
    assert.equal(s.value!.kvs[0]?.value.toString(), 'held');
    // A linearizable read cannot be served without the clock: it fails, retryably, within the bound.
    const l = await timed(() => a.range({ key }));
    if (l.err) {
      assert.equal(codeOf(l.err), Status.UNAVAILABLE, describeErr(l.err));
      assert.ok(l.ms < bound, `linearizable read failed only after ${l.ms.toFixed(0)} ms`);
    }
    // Status (kube-apiserver's version check and size metric) still answers, at the newest revision seen.
    const st = await timed(() => b.status());
    assert.equal(st.err, undefined, `Status during the hang: ${describeErr(st.err)}`);
    assert.equal(st.value!.version, '3.5.13');
    assert.ok(st.value!.header!.revision >= held, `Status header ${st.value!.header!.revision} >= ${held}`);
    // /health says why: the coordinator.
    const { status, body } = await healthOf(B.handle.metricsPort);
    assert.equal(status, 503, JSON.stringify(body));
    assert.equal(body.health, 'false');
    assert.match(body.reason, /^coordinator: /);
  } finally {
    set.coordinator.signal('SIGCONT');
  }
  const back = await firstSuccess('write after SIGCONT', () => b.put({ key: Buffer.from('c3/after'), value: Buffer.from('y') }), 10_000);
  console.log(`first write after SIGCONT succeeded after ${back.ms.toFixed(0)} ms at revision ${back.value.header!.revision}`);
  assert.ok(back.value.header!.revision > held);
  const got = await a.range({ key: Buffer.from('c3/'), rangeEnd: prefixEnd('c3/') });
  assert.deepEqual(
    got.kvs.map((kv) => kv.key.toString()),
    ['c3/after', 'c3/one'],
    'no write that failed during the hang was applied (each failed before reaching a member)',
  );
});

test('(c2) coordinator hang: a paged list continued at the revision of its first page still works', BOUND, async () => {
  // kube-apiserver pages a list: the first page is a linearizable read at R, the
  // next pages read at R explicitly. The proxy has already seen every member
  // complete up to R's allocation, so no coordinator round trip is needed.
  const keys = Array.from({ length: 12 }, (_, i) => Buffer.from(`c4/k${String(i).padStart(2, '0')}`));
  for (const k of keys) await a.put({ key: k, value: k });
  const first = await a.range({ key: Buffer.from('c4/'), rangeEnd: prefixEnd('c4/'), limit: 4n });
  const R = first.header!.revision;
  assert.equal(first.kvs.length, 4);
  await hang(set.coordinator);
  try {
    const next = await timed(() => a.range({ key: Buffer.concat([first.kvs[3]!.key, Buffer.from([0])]), rangeEnd: prefixEnd('c4/'), revision: R }));
    assert.equal(next.err, undefined, `second page at revision ${R} while the coordinator hangs: ${describeErr(next.err)} after ${next.ms.toFixed(0)} ms`);
    assert.deepEqual(
      next.value!.kvs.map((kv) => kv.key.toString()),
      keys.slice(4).map(String),
    );
  } finally {
    set.coordinator.signal('SIGCONT');
  }
});

test('(d) coordinator rolled back to an older copy of its data (a restored backup, or a quorum recovery from a lagging node): no revision reused or lowered', BOUND, async () => {
  // The design makes the coordinator disposable; an operator (or an etcd
  // disaster recovery) may bring back an OLD clock record instead of none. The
  // proxies must not hand out revisions already used, and must recover.
  for (let i = 0; i < 5; i++) await a.put({ key: Buffer.from(`c5/k${i}`), value: Buffer.from('old') });
  await set.coordinator.stop();
  const backup = `${set.coordinator.dataDir}.bak`;
  cpSync(set.coordinator.dataDir, backup, { recursive: true });
  await set.coordinator.restart();
  // After the backup, many writes on member 0 only: the other members' clocks stay far behind.
  const router = A.handle.router;
  const keyOn = (m: number, base: string) => {
    for (let i = 0; ; i++) if (router.memberOf(Buffer.from(`${base}${i}`)) === m) return `${base}${i}`;
  };
  const hot = keyOn(0, 'c5/hot');
  let seen = 0n;
  for (let i = 0; i < 30; i++) {
    const r = await (i % 2 ? a : b).put({ key: Buffer.from(hot), value: Buffer.from(`new-${i}`) });
    if (r.header!.revision > seen) seen = r.header!.revision;
  }
  // Roll the coordinator back.
  await set.coordinator.stop();
  rmSync(set.coordinator.dataDir, { recursive: true, force: true });
  cpSync(backup, set.coordinator.dataDir, { recursive: true });
  rmSync(backup, { recursive: true, force: true });
  await set.coordinator.restart();

  const D = await startTestProxy(set, { requestTimeoutMs: REQUEST_TIMEOUT_MS });
  extra.push(() => D.stop());
  const d = clientFor(D.url, 'proxy D (started after the rollback)');
  extra.push(async () => d.close());
  const acked: { via: string; key: string; rev: bigint }[] = [];
  const errors: string[] = [];
  for (const [via, c] of [['D', d], ['A', a], ['B', b]] as const) {
    for (const m of [1, 2, 0]) {
      const key = keyOn(m, `c5/after-${via}-`);
      const r = await firstSuccess(`write via ${via} to member ${m} after the rollback`, () => c.put({ key: Buffer.from(key), value: Buffer.from(via) }), 10_000).catch(
        (err: unknown) => {
          errors.push(String(err).slice(0, 300));
          return undefined;
        },
      );
      if (r) acked.push({ via: `${via}/member ${m}`, key, rev: r.value.header!.revision });
    }
  }
  console.log(`(d) highest revision seen before the rollback: ${seen}; after it: ${acked.map((x) => `${x.via}@${x.rev}`).join(', ')}${errors.length ? `; ${errors.join(' | ')}` : ''}`);
  for (const x of acked) assert.ok(x.rev > seen, `write via proxy ${x.via} acknowledged at revision ${x.rev}, not above ${seen} which clients had already seen`);
  assert.deepEqual(errors, [], 'every proxy writes again after the rollback');
  const mods = new Map<bigint, string[]>();
  for (const kv of (await allKvs(d, Buffer.from('c5/'))).kvs) mods.set(kv.modRevision, [...(mods.get(kv.modRevision) ?? []), kv.key.toString()]);
  for (const [rev, keys] of mods) assert.equal(keys.length, 1, `revision ${rev} used by two writes: ${keys.join(', ')}`);
});
