// Issue 6 (2): a member cluster goes away.
//
// (a) kill -9 of member 0 (its data kept), with writes to its keys quiesced
//     first: every request that needs member 0 fails with Unavailable within a
//     bound (no hang; a list over every member is refused rather than returned
//     partial); requests on the other members keep working and their changes
//     keep reaching watchers (within --watch-timeout); after member 0 restarts
//     with its data, nothing acknowledged is missing and the watches opened
//     before the outage have delivered everything exactly once, in order.
// (b) member 1 hangs (SIGSTOP) while writes to every member are in flight: the
//     same bounds; writes on the other members keep succeeding; after SIGCONT
//     no acknowledged write is missing, failed writes are all-or-nothing, no
//     revision is reused, and each watch is either complete or cut off with
//     compact_revision and a reason (never silently skipping or repeating).

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { freePort } from '../../src/sandbox/etcd-process.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { Router } from '../../src/shard/layout.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { allKvs, codeOf, describeErr, hang, healthOf, killHard, metricSum, sleep, Status, timed, waitUntil, type Timed } from '../harness/faults.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { prefixEnd, WatchRecorder } from '../harness/watch-checker.js';
import { keysOnMember } from '../lease/lease-helpers.js';
import { failedKeys, judgeWatch, judgeWrites, summarize, writerLoop, type WriteRecord } from './workload.js';

const REQUEST_TIMEOUT_MS = 1500;
const FENCE_AFTER_MS = 300;
const WATCH_TIMEOUT_MS = 3000;
/** A request that needs an unreachable member must fail within this. */
const FAIL_BOUND_MS = REQUEST_TIMEOUT_MS + FENCE_AFTER_MS + 1500;
const BOUND = { timeout: 90_000 };

let set: EtcdSet;
let P: TestProxy;
let Q: TestProxy;
let p: EtcdClient;
let q: EtcdClient;
let router: Router;
const recorders: WatchRecorder[] = [];
/** Set when the file ends, so that no writer loop outlives a failed test. */
let shutdown = false;

before(async () => {
  set = await startEtcdSet({ name: 'member-outage' });
  const cfg = { requestTimeoutMs: REQUEST_TIMEOUT_MS, fenceAfterMs: FENCE_AFTER_MS, watchTimeoutMs: WATCH_TIMEOUT_MS };
  // P serves /health (on its metrics port).
  [P, Q] = await Promise.all([startTestProxy(set, { ...cfg, metricsPort: await freePort() }), startTestProxy(set, cfg)]);
  p = clientFor(P.url, 'proxy P', 20_000);
  q = clientFor(Q.url, 'proxy Q', 20_000);
  router = P.handle.router;
});

/** Whatever a failed test left behind: writers stopped, every member running and resumed. */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c().catch(() => undefined);
  for (const m of set.members) {
    if (!m.running) await m.restart();
    else m.signal('SIGCONT');
  }
});

after(async () => {
  shutdown = true;
  for (const r of recorders) r.close();
  p?.close();
  q?.close();
  await Promise.all([P?.stop(), Q?.stop()]);
  await set?.stop();
});

const keyOn = (member: number, base: string): Buffer => keysOnMember(router, base, member, 1)[0]!;

/** Every probe must fail with Unavailable within the bound. */
function assertUnavailable(what: string, t: Timed<unknown>): void {
  if (!t.err) assert.fail(`${what} succeeded although it needs the unreachable member: ${String(JSON.stringify(t.value, (_, v) => (typeof v === 'bigint' ? String(v) : v))).slice(0, 300)}`);
  assert.equal(codeOf(t.err), Status.UNAVAILABLE, `${what}: ${describeErr(t.err)}`);
  assert.ok(t.ms < FAIL_BOUND_MS, `${what} failed only after ${t.ms.toFixed(0)} ms (bound ${FAIL_BOUND_MS} ms)`);
}

const healthOfP = () => healthOf(P.handle.metricsPort);

/** Requests that need `dead`, all at once (through P), and P's /health; returns their timings for the report. */
async function probeDead(c: EtcdClient, dead: number, prefix: string): Promise<string> {
  const k = keyOn(dead, `${prefix}probe-`);
  const all = { key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix) };
  const probes: [string, () => Promise<unknown>][] = [
    [`put of a key of member ${dead}`, () => c.put({ key: k, value: Buffer.from('x') })],
    [`linearizable get of a key of member ${dead}`, () => c.range({ key: k })],
    [`serializable get of a key of member ${dead}`, () => c.range({ key: k, serializable: true })],
    ['list of a prefix over every member', () => c.range(all)],
    ['list with limit 3', () => c.range({ ...all, limit: 3n })],
    ['count of a prefix', () => c.range({ ...all, countOnly: true })],
    ['serializable list', () => c.range({ ...all, serializable: true })],
    [
      'read-only txn over two members',
      () =>
        c.txnPartial(
          { success: [{ request: { $case: 'requestRange', value: { key: keyOn((dead + 1) % 3, prefix) } } }, { request: { $case: 'requestRange', value: { key: k } } }] },
          { readOnly: true },
        ),
    ],
    [`txn writing a key of member ${dead}`, () => c.txnPartial({ success: [{ request: { $case: 'requestPut', value: { key: k, value: Buffer.from('y') } } }] })],
  ];
  const [results, status, health] = await Promise.all([Promise.all(probes.map(([, f]) => timed(f))), timed(() => c.status()), timed(healthOfP)]);
  probes.forEach(([what], i) => assertUnavailable(what, results[i]!));
  // /health, as etcd's: 503 and a reason naming the member.
  assert.ok(health.value, `/health: ${describeErr(health.err)}`);
  assert.equal(health.value.status, 503, `/health while member ${dead} is unreachable: ${JSON.stringify(health.value.body)}`);
  assert.equal(health.value.body.health, 'false');
  assert.match(health.value.body.reason, new RegExp(`^member ${dead}: `), 'the reason names the member');
  // Status describes the proxy, which still serves: it answers and names the member it cannot reach.
  assert.ok(status.value, `Status while member ${dead} is unreachable: ${describeErr(status.err)}`);
  assert.equal(status.value.version, '3.5.13', 'Status still reports the version');
  assert.ok(
    status.value.errors.some((e) => e.startsWith(`member ${dead} unreachable`)),
    `Status lists member ${dead} as unreachable: ${JSON.stringify(status.value.errors)}`,
  );
  assert.ok(status.value.errors.every((e) => e.startsWith(`member ${dead} `)), `only member ${dead} is reported: ${JSON.stringify(status.value.errors)}`);
  return [...probes.map(([what], i) => `${what}: ${results[i]!.ms.toFixed(0)} ms`), `Status: ${status.ms.toFixed(0)} ms`, `/health: ${health.ms.toFixed(0)} ms`].join('; ');
}

/** For each acknowledged write in the window, the delay from its acknowledgement to its event on the watch. */
function watchDelays(records: WriteRecord[], w: WatchRecorder, from: number, to: number): number[] {
  const arrival = new Map<string, number>();
  w.responses.forEach((r, i) => {
    for (const e of r.events) arrival.set(e.kv!.key.toString(), w.arrivals[i]!);
  });
  const out: number[] = [];
  for (const rec of records) {
    if (rec.rev === undefined || rec.end < from || rec.end > to) continue;
    const at = arrival.get(rec.keys[0]!);
    const ackedAt = performance.timeOrigin + rec.end;
    out.push(at === undefined ? Infinity : at - ackedAt);
  }
  return out;
}

function member(rec: WriteRecord): number {
  return router.memberOf(Buffer.from(rec.keys[0]!));
}

test('(a) member killed (kill -9) and restarted with its data: bounded failures, the rest serves, nothing lost, watches complete', BOUND, async () => {
  const prefix = 'm1/';
  const r0 = (await p.range({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix) })).header!.revision;
  const wp = new WatchRecorder(p, 'watch via P');
  const wq = new WatchRecorder(q, 'watch via Q');
  recorders.push(wp, wq);
  for (const w of [wp, wq]) w.create({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix), startRevision: r0 + 1n, prevKv: true });

  const records: WriteRecord[] = [];
  const inflight = new Set<WriteRecord>();
  let allowed = [0, 1, 2];
  let stop = false;
  const writers = Array.from({ length: 4 }, (_, i) =>
    writerLoop({ name: `w${i}`, via: i % 2 ? 'Q' : 'P', client: () => (i % 2 ? q : p), router, prefix, stop: () => stop || shutdown, out: records, members: () => allowed, inflight }),
  );
  cleanups.push(async () => {
    stop = true;
    await Promise.all(writers);
  });
  await sleep(700);
  // Quiesce writes to member 0, so that none is in flight when it dies.
  allowed = [1, 2];
  await waitUntil('no write to member 0 in flight', () => [...inflight].every((w) => member(w) !== 0), 10_000, 5);

  await killHard(set.members[0]!);
  const downAt = performance.now();
  const timeoutsBefore = await metricSum(P.metrics, 'metaetcd_time_buffer_timeouts_count');
  const report = await probeDead(p, 0, prefix);
  // A watch can still be created from "now" (it needs nothing from member 0's history).
  const fresh = new WatchRecorder(q, 'new watch during the outage');
  recorders.push(fresh);
  fresh.create({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix) });
  const createdIn = await waitUntil('a watch created during the outage', () => fresh.createdResponses().length > 0 || fresh.ended, FAIL_BOUND_MS);
  assert.equal(fresh.error, undefined, `watch create during the outage: ${fresh.error?.message}`);
  // The other members keep serving, and watches keep receiving their changes.
  const other = keyOn(1, `${prefix}other-`);
  await p.put({ key: other, value: Buffer.from('still') });
  assert.equal((await q.range({ key: other })).kvs[0]?.value.toString(), 'still');
  await sleep(WATCH_TIMEOUT_MS + 500);
  const restartAt = performance.now();
  await set.members[0]!.restart();
  allowed = [0, 1, 2];
  const backAt = performance.now();
  await waitUntil('a write to member 0 succeeds again', () => records.some((w) => w.rev !== undefined && member(w) === 0 && w.start > backAt), 20_000);
  const recoveredMs = performance.now() - backAt;
  await waitUntil('/health says healthy again', async () => (await healthOfP()).status === 200, 20_000, 100);
  assert.deepEqual((await healthOfP()).body, { health: 'true', reason: '' });
  await sleep(500);
  stop = true;
  await Promise.all(writers);

  const during = records.filter((w) => w.start > downAt && w.end < restartAt);
  const delays = watchDelays(records, wp, downAt, restartAt);
  const maxDelay = Math.max(0, ...delays);
  const timeouts = (await metricSum(P.metrics, 'metaetcd_time_buffer_timeouts_count')) - timeoutsBefore;
  console.log(
    `(a) probes while member 0 was down — ${report}; watch created in ${createdIn} ms\n` +
      `    writes during the outage: ${summarize(during)}; watch delay on the other members: max ${maxDelay.toFixed(0)} ms over ${delays.length} writes; ` +
      `give-ups counted: ${timeouts}; member 0 writable again ${recoveredMs.toFixed(0)} ms after its restart`,
  );
  assert.ok(during.filter((w) => w.rev !== undefined).length > 10, 'writes on the other members went on during the outage');
  assert.deepEqual(during.filter((w) => w.error).map((w) => w.error), [], 'writes on the other members failed during the outage');
  assert.ok(maxDelay < WATCH_TIMEOUT_MS + 1000, `a change on a live member reached the watch only after ${maxDelay.toFixed(0)} ms (watch timeout ${WATCH_TIMEOUT_MS} ms)`);

  const final = (await allKvs(p, Buffer.from(prefix))).kvs.filter((kv) => !kv.key.toString().startsWith(`${prefix}other-`));
  const v = judgeWrites(records, final, 'member kill -9');
  // Writes fail only on member 0, only from its restart until this proxy's stream to it is back.
  const failedElsewhere = records.filter((w) => w.error && (member(w) !== 0 || w.start < restartAt));
  assert.deepEqual(failedElsewhere.map((w) => w.error).slice(0, 5), [], 'writes failed that did not need member 0 while it was down');
  for (const w of records) if (w.error) assert.equal(w.code, Status.UNAVAILABLE, w.error);
  const want = final.length;
  for (const w of [wp, wq]) {
    await waitUntil(`${w.label} caught up`, () => w.events(0n).filter((e) => !e.kv!.key.toString().startsWith(`${prefix}other-`)).length >= want, 15_000).catch(() => undefined);
    assert.equal(w.error, undefined, `${w.label} ended: ${w.error?.message}`);
    judgeWatch(
      w.forId(0n).map((r) => ({ ...r, events: r.events.filter((e) => !e.kv!.key.toString().startsWith(`${prefix}other-`)) })),
      final,
      r0,
      w.label,
    );
  }
});

test('(b) member hangs (SIGSTOP) with writes in flight: bounded failures, other members keep serving, all recovers on SIGCONT', BOUND, async () => {
  const prefix = 'm2/';
  const r0 = (await p.range({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix) })).header!.revision;
  const wq = new WatchRecorder(q, 'watch via Q');
  recorders.push(wq);
  wq.create({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix), startRevision: r0 + 1n });
  const records: WriteRecord[] = [];
  let stop = false;
  const writers = Array.from({ length: 6 }, (_, i) =>
    writerLoop({ name: `h${i}`, via: i % 2 ? 'Q' : 'P', client: () => (i % 2 ? q : p), router, prefix, stop: () => stop || shutdown, out: records }),
  );
  cleanups.push(async () => {
    stop = true;
    await Promise.all(writers);
  });
  await sleep(700);
  await hang(set.members[1]!);
  const stopAt = performance.now();
  let report: string;
  try {
    report = await probeDead(p, 1, prefix);
    // Keep the whole hang shorter than the watch timeout: this test is about watches on live
    // members staying prompt while a member hangs. (A hang longer than the timeout makes the
    // proxy give up on the hung member's revisions; a write already sent to it that lands
    // afterwards is late, and the watches it concerns are cut off with compact_revision.)
    const left = WATCH_TIMEOUT_MS - 600 - (performance.now() - stopAt);
    if (left > 0) await sleep(left);
  } finally {
    set.members[1]!.signal('SIGCONT');
  }
  const contAt = performance.now();
  await waitUntil('a write to member 1 succeeds again', () => records.some((w) => w.rev !== undefined && member(w) === 1 && w.start > contAt), 20_000);
  const recoveredMs = performance.now() - contAt;
  await waitUntil('/health says healthy again', async () => (await healthOfP()).status === 200, 20_000, 100);
  assert.deepEqual((await healthOfP()).body, { health: 'true', reason: '' });
  await sleep(500);
  stop = true;
  await Promise.all(writers);

  const during = records.filter((w) => w.start > stopAt + 50 && w.end < contAt);
  const onHung = during.filter((w) => member(w) === 1);
  const onOthers = during.filter((w) => member(w) !== 1);
  const delays = watchDelays(onOthers, wq, stopAt, contAt);
  const maxDelay = Math.max(0, ...delays);
  const giveUps = (await metricSum(Q.metrics, 'metaetcd_time_buffer_timeouts_count')) + (await metricSum(P.metrics, 'metaetcd_time_buffer_timeouts_count'));
  console.log(
    `(b) probes while member 1 was stopped — ${report}\n` +
      `    writes to member 1 during the hang: ${summarize(onHung)}; to the others: ${summarize(onOthers)}; ` +
      `slowest failure ${Math.max(0, ...onHung.filter((w) => w.error).map((w) => w.end - w.start)).toFixed(0)} ms; member 1 writable again ${recoveredMs.toFixed(0)} ms after SIGCONT\n` +
      `    watch delay for changes on live members: max ${maxDelay.toFixed(0)} ms over ${delays.length}; give-ups counted (P+Q): ${giveUps}`,
  );
  assert.ok(maxDelay < WATCH_TIMEOUT_MS + 1500, `a change on a live member reached the watch only after ${maxDelay.toFixed(0)} ms (watch timeout ${WATCH_TIMEOUT_MS} ms)`);
  for (const w of onHung) {
    if (w.rev !== undefined) continue;
    assert.equal(w.code, Status.UNAVAILABLE, `write to the hung member: ${w.error}`);
    assert.ok(w.end - w.start < FAIL_BOUND_MS, `a write to the hung member failed only after ${(w.end - w.start).toFixed(0)} ms`);
  }
  // (Writers also block on the hung member, so the short hang leaves room for a few writes only.)
  assert.ok(onOthers.filter((w) => w.rev !== undefined).length >= 3, 'writes on the other members went on during the hang');
  assert.deepEqual(onOthers.filter((w) => w.error).map((w) => w.error).slice(0, 5), [], 'writes on the live members failed during the hang');

  const final = (await allKvs(p, Buffer.from(prefix))).kvs;
  const v = judgeWrites(records, final, 'member SIGSTOP');
  await waitUntil('watch caught up', () => wq.ended || wq.responses.some((r) => r.canceled) || wq.events(0n).length >= final.filter((kv) => kv.modRevision > r0).length, 15_000).catch(() => undefined);
  assert.equal(wq.error, undefined, `watch stream ended: ${wq.error?.message}`);
  const outcome = judgeWatch(wq.forId(0n), final, r0, 'watch through the hang', { allowCancel: true, failedKeys: failedKeys(records) });
  console.log(`    verdict: ${JSON.stringify(v)}; watch ${outcome.canceled ? `cut off: ${outcome.canceled.cancelReason}` : 'complete'}`);
});
