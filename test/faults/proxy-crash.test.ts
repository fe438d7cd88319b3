// Issue 6 (3): a proxy is killed (kill -9) while many writes are in flight.
//
// Proxy P1 runs as a child process (bin/metaetcd.js, --fence-after 200ms) and
// serves 24 concurrent writers; proxy P2 (in-process, same fence delay) serves
// another writer and a watch. P1 is SIGKILLed mid-stream. Then:
//   - every write P1 acknowledged is in the members, with its revision;
//   - every write P1 did not acknowledge is applied completely or not at all
//     (3-key transactions included), and no revision is used twice;
//   - revisions P1 took for writes that never landed hold back P2's watchers
//     only until they are fenced (well under --watch-timeout; nothing given up);
//   - clients that retry their failed writes through P2 succeed;
//   - P2's watch delivered every change exactly once, in order.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { KeyValue } from '../../src/proto/gen/kv.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { allKvs, ChildProxy, describeErr, hang, metricSum, sleep, Status, timed, waitUntil } from '../harness/faults.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { prefixEnd, WatchRecorder } from '../harness/watch-checker.js';
import { judgeWatch, judgeWrites, summarize, writerLoop, type WriteRecord } from './workload.js';

const FENCE_AFTER_MS = 200;
const WATCH_TIMEOUT_MS = 5000;

let set: EtcdSet;
let P2: TestProxy;
let c2: EtcdClient;
const children: ChildProxy[] = [];
const closers: (() => void)[] = [];
let shutdown = false;

before(async () => {
  set = await startEtcdSet({ name: 'proxy-crash' });
  P2 = await startTestProxy(set, { fenceAfterMs: FENCE_AFTER_MS, watchTimeoutMs: WATCH_TIMEOUT_MS });
  c2 = clientFor(P2.url, 'proxy P2', 10_000);
});

after(async () => {
  shutdown = true;
  for (const c of closers) c();
  c2?.close();
  for (const c of children) await c.stop();
  await P2?.stop();
  for (const m of set?.members ?? []) if (m.running) m.signal('SIGCONT');
  await set?.stop();
});

test('kill -9 of a proxy with writes in flight: acknowledged writes durable, the rest all-or-nothing, other proxies not stalled, retries succeed', { timeout: 90_000 }, async () => {
  await crash('pc/', undefined);
});

test('kill -9 of a proxy holding revisions whose writes never reach their member: other proxies fence them within --fence-after', { timeout: 90_000 }, async () => {
  // Member 0 pauses for a moment, so P1 holds revisions for member-0 writes it
  // has not sent yet when it dies; they can only be closed by fences.
  const { fences, maxDelay } = await crash('pd/', 0);
  assert.ok(fences > 0, 'the dead proxy left no revision to fence: the scenario did not happen');
  assert.ok(maxDelay < 4 * FENCE_AFTER_MS + 1500, `P2's watch was held back ${maxDelay.toFixed(0)} ms; fences should close the dead proxy's revisions within about ${FENCE_AFTER_MS} ms`);
});

async function crash(prefix: string, pauseMember: number | undefined): Promise<{ fences: number; maxDelay: number }> {
  const P1 = await ChildProxy.start(set, { flags: ['--fence-after', `${FENCE_AFTER_MS}ms`, '--watch-timeout', `${WATCH_TIMEOUT_MS}ms`] });
  children.push(P1);
  const c1 = clientFor(P1.url, 'proxy P1 (child)', 10_000);
  closers.push(() => c1.close());
  const router = P2.handle.router;
  // Make sure P1 serves before the load starts.
  await waitUntil('P1 serves', async () => (await c1.range({ key: Buffer.from('pc/'), rangeEnd: prefixEnd(prefix), countOnly: true }), true), 20_000, 100);
  const r0 = (await c2.range({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix) })).header!.revision;
  const watch = new WatchRecorder(c2, 'watch via P2');
  closers.push(() => watch.close());
  watch.create({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix), startRevision: r0 + 1n });

  const viaP1: WriteRecord[] = [];
  const viaP2: WriteRecord[] = [];
  let p1Done = false;
  let p2Done = false;
  const p1Writers = Array.from({ length: 24 }, (_, i) =>
    writerLoop({ name: `a${i}`, via: 'P1', client: () => c1, router, prefix, stop: () => p1Done || shutdown, out: viaP1, timeoutMs: 5000 }),
  );
  // With a paused member, P2 writes only to the others: its own writes would otherwise close P1's revisions on that member.
  const p2Members = router.allMembers().filter((m) => m !== pauseMember);
  const p2Writer = writerLoop({ name: 'b', via: 'P2', client: () => c2, router, prefix, stop: () => p2Done || shutdown, out: viaP2, txnShare: 0.2, members: () => p2Members });
  await waitUntil('P1 under load', () => viaP1.filter((w) => w.rev !== undefined).length > 300, 20_000);

  const timeoutsBefore = await metricSum(P2.metrics, 'metaetcd_time_buffer_timeouts_count');
  const fencesBefore = await metricSum(P2.metrics, 'metaetcd_fences_total');
  if (pauseMember !== undefined) {
    await hang(set.members[pauseMember]!);
    await sleep(150); // P1 takes revisions for the hung member that cannot land
  }
  const killAt = performance.now();
  try {
    await P1.kill9();
  } finally {
    if (pauseMember !== undefined) set.members[pauseMember]!.signal('SIGCONT');
  }
  // P1's clients see their calls fail and stop; P2's writer goes on.
  p1Done = true;
  await Promise.all(p1Writers);
  const inFlight = viaP1.filter((w) => w.rev === undefined);
  assert.ok(inFlight.length > 0, 'no write was in flight when P1 died');
  for (const w of inFlight) assert.equal(w.code, Status.UNAVAILABLE, `a write cut off by the crash: ${w.error}`);

  // A linearizable read through P2 right after the crash: any revision P1 took is fenced, within a bound.
  const read = await timed(() => c2.range({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix) }));
  assert.equal(read.err, undefined, `linearizable list through P2 after the crash: ${describeErr(read.err)}`);
  assert.ok(read.ms < 5 * FENCE_AFTER_MS + 2000, `the first linearizable read after the crash took ${read.ms.toFixed(0)} ms`);
  const snapshot = read.value!.kvs;
  await sleep(2 * FENCE_AFTER_MS + 500);
  p2Done = true;
  await p2Writer;

  // Judge the crash by itself, before any retry: P1's acknowledged writes are there; its unacknowledged ones all-or-nothing.
  const atCrash = snapshot.filter((kv) => !kv.key.toString().startsWith(`${prefix}b-`));
  const v = judgeWrites(viaP1, atCrash, 'writes through the crashed proxy');
  // Nothing more of P1's can land later (they would have had to beat the fences).
  const later = (await allKvs(c2, Buffer.from(prefix))).kvs.filter((kv) => !kv.key.toString().startsWith(`${prefix}b-`));
  assert.deepEqual(
    later.map((kv) => `${kv.key}@${kv.modRevision}`),
    atCrash.map((kv) => `${kv.key}@${kv.modRevision}`),
    'a write of the dead proxy landed after the first linearizable read',
  );

  // P2's watchers were held back by P1's unresolved revisions only until they were fenced.
  const afterKill = viaP2.filter((w) => w.rev !== undefined && w.end > killAt);
  const arrival = new Map<string, number>();
  watch.responses.forEach((r, i) => r.events.forEach((e) => arrival.set(e.kv!.key.toString(), watch.arrivals[i]!)));
  await waitUntil('watch shows P2 writes', () => afterKill.every((w) => arrival.has(w.keys[0]!) || (watch.responses.forEach((r, i) => r.events.forEach((e) => arrival.set(e.kv!.key.toString(), watch.arrivals[i]!))), false)), 10_000).catch(() => undefined);
  const delays = afterKill.map((w) => (arrival.get(w.keys[0]!) ?? Infinity) - (performance.timeOrigin + w.end));
  const maxDelay = Math.max(0, ...delays);
  const giveUps = (await metricSum(P2.metrics, 'metaetcd_time_buffer_timeouts_count')) - timeoutsBefore;
  const fences = (await metricSum(P2.metrics, 'metaetcd_fences_total')) - fencesBefore;

  // Clients retry their failed writes through P2: every retry succeeds.
  const retried: WriteRecord[] = [];
  for (const w of inFlight) {
    const start = performance.now();
    try {
      const r = await c2.txnPartial({ success: w.keys.map((k) => ({ request: { $case: 'requestPut' as const, value: { key: Buffer.from(k), value: Buffer.from(w.value) } } })) });
      retried.push({ ...w, via: 'P2 (retry)', start, end: performance.now(), rev: r.header!.revision, error: undefined });
    } catch (err) {
      assert.fail(`retrying ${w.keys.join(',')} through P2 failed: ${describeErr(err)}`);
    }
  }
  console.log(
    `through P1: ${summarize(viaP1)}; verdict at the crash: ${JSON.stringify(v)}\n` +
      `through P2: ${summarize(viaP2)}; ${afterKill.length} acknowledged after the kill, watch delay max ${maxDelay.toFixed(0)} ms ` +
      `(fence after ${FENCE_AFTER_MS} ms, watch timeout ${WATCH_TIMEOUT_MS} ms); fences by P2: ${fences}; give-ups: ${giveUps}; ` +
      `first read after the crash: ${read.ms.toFixed(0)} ms; ${retried.length} retries through P2 succeeded`,
  );
  assert.ok(afterKill.length > 0, 'P2 kept acknowledging writes after the crash');
  assert.equal(giveUps, 0, 'P2 gave up on revisions (waited out --watch-timeout) instead of fencing them');
  assert.ok(maxDelay < WATCH_TIMEOUT_MS, `P2's watch was held back ${maxDelay.toFixed(0)} ms by the dead proxy's revisions`);

  // Final state: everything, with the retries' revisions for retried writes.
  const final = (await allKvs(c2, Buffer.from(prefix))).kvs;
  const records = [...viaP1.filter((w) => w.rev !== undefined), ...retried, ...viaP2];
  judgeWritesAfterRetry(records, final);
  await waitUntil('watch complete', () => watch.events(0n).length >= final.filter((kv) => kv.modRevision > r0).length, 10_000).catch(() => undefined);
  assert.equal(watch.error, undefined, `P2's watch stream failed: ${watch.error?.message}`);
  // A retried write that had also landed before the crash shows up twice (two revisions of one key): compare with the retry-aware final state.
  judgeWatchWithRetries(watch, final, r0, inFlight);
  return { fences, maxDelay };
}

/** Like judgeWrites, but a key may have been written twice (the original landed, and the retry). */
function judgeWritesAfterRetry(records: WriteRecord[], final: KeyValue[]): void {
  const byKey = new Map(final.map((kv) => [kv.key.toString(), kv]));
  const problems: string[] = [];
  for (const w of records) {
    for (const k of w.keys) {
      const kv = byKey.get(k);
      if (!kv) problems.push(`acknowledged write lost: ${k} (${w.via}, rev ${w.rev}, error ${w.error})`);
      else if (kv.value.toString() !== w.value || kv.modRevision !== w.rev) problems.push(`${k}: holds ${kv.value}@${kv.modRevision}, expected ${w.value}@${w.rev}`);
    }
  }
  const known = new Set(records.flatMap((w) => w.keys));
  for (const kv of final) if (!known.has(kv.key.toString())) problems.push(`key nobody wrote: ${kv.key}`);
  assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems after the retries`);
}

/** The watch saw every key's final version last, in strictly increasing revisions, nothing twice. */
function judgeWatchWithRetries(w: WatchRecorder, final: KeyValue[], r0: bigint, retried: WriteRecord[]): void {
  const retriedKeys = new Set(retried.flatMap((r) => r.keys));
  // Keys written once: the general judge applies to them.
  const once = final.filter((kv) => !retriedKeys.has(kv.key.toString()));
  judgeWatch(
    w.forId(0n).map((r) => ({ ...r, events: r.events.filter((e) => !retriedKeys.has(e.kv!.key.toString())) })),
    once,
    r0,
    'watch via P2 (keys written once)',
  );
  // Retried keys: their last event is the final state, and there are at most two.
  const events = new Map<string, bigint[]>();
  for (const e of w.events(0n)) {
    const k = e.kv!.key.toString();
    if (retriedKeys.has(k)) events.set(k, [...(events.get(k) ?? []), e.kv!.modRevision]);
  }
  for (const kv of final.filter((x) => retriedKeys.has(x.key.toString()))) {
    const revs = events.get(kv.key.toString()) ?? [];
    assert.ok(revs.length >= 1 && revs.length <= 2, `retried key ${kv.key}: events at ${revs.join(',')}`);
    assert.equal(revs.at(-1), kv.modRevision, `retried key ${kv.key}: last event at ${revs.at(-1)}, final mod ${kv.modRevision}`);
    if (revs.length === 2) assert.ok(revs[0]! < revs[1]!, `retried key ${kv.key}: ${revs.join(',')}`);
  }
}
