// Issue 6 (4): several proxies over the same member clusters.
//
// Three proxies serve one meta cluster. Nine clients, three per proxy, run
// puts, linearizable gets, deletes and compare-and-set transactions (VALUE
// compare, or VERSION == 0 to create) on a few keys for a few seconds, while
// each proxy serves a watch over the whole prefix.
//   - Each key's history is checked for linearizability (Wing & Gong search,
//     test/harness/linearizability.ts); a violation prints a minimal replay, an
//     inconclusive search (it gave up, even after a retry) skips a subtest saying so.
//   - The server-assigned revisions are checked too: unique per write, in
//     real-time order, and every read reports the revision of the write it saw.
//   - The three watch streams are identical (same events, same order, same
//     revisions, same grouping) and equal to the history the writes reported.
//   - A write acknowledged by one proxy is visible to the next linearizable
//     read through another (point read and list), for every ordered pair.
//
// LIN_SEED=<n> repeats a run's choices; LIN_MS sets how long clients run.

import assert from 'node:assert/strict';
import { after, before, test, type TestContext } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { Compare_CompareResult, Compare_CompareTarget, type Compare } from '../../src/proto/gen/rpc.js';
import { Event_EventType } from '../../src/proto/gen/kv.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { ChildProxy, describeErr, loseAndReplace, sleep, waitUntil } from '../harness/faults.js';
import { checkHistories, checkRevisions, type HistoryOp, type HistoryReport } from '../harness/linearizability.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { checkWatch, ModelHistory, prefixEnd, rng, WatchRecorder, type Change } from '../harness/watch-checker.js';

const SEED = Number(process.env.LIN_SEED ?? Math.floor(Math.random() * 2 ** 31));
const RUN_MS = Number(process.env.LIN_MS ?? 4000);
const NAMES = ['P0', 'P1', 'P2'];

let set: EtcdSet;
const proxies: TestProxy[] = [];
const clients: EtcdClient[] = [];
const recorders: WatchRecorder[] = [];

before(async () => {
  console.log(`LIN_SEED=${SEED}`);
  set = await startEtcdSet({ name: 'multi-proxy' });
  proxies.push(...(await Promise.all(NAMES.map(() => startTestProxy(set)))));
  clients.push(...proxies.map((p, i) => clientFor(p.url, NAMES[i], 20_000)));
});

after(async () => {
  for (const r of recorders) r.close();
  for (const c of clients) c.close();
  await Promise.all(proxies.map((p) => p.stop()));
  await set?.stop();
});

const B = (s: string) => Buffer.from(s);

interface LoopOptions {
  clients: EtcdClient[];
  names: string[];
  keys: string[];
  deadline: number;
  history: HistoryOp[];
  /** Records acknowledged writes (only when no write can fail). */
  model?: ModelHistory;
  ids: { n: number };
  /** The proxy client n uses; `failed`: its last call failed. */
  pick: (n: number, failed: boolean) => number;
}

/**
 * One client: puts, deletes, compare-and-sets (VALUE == what it last saw, or
 * VERSION == 0 to create) whose failure branch reads the key, and linearizable
 * gets, on random keys, recorded for the checker.
 */
async function clientLoop(n: number, o: LoopOptions): Promise<void> {
  let via = o.pick(n, false);
  const random = rng(SEED * 100 + n);
  /** What this client last saw of each key (for its compare-and-sets). */
  const last = new Map<string, string | null>();
  let seq = 0;
  while (performance.now() < o.deadline) {
    const c = o.clients[via]!;
    const key = o.keys[Math.floor(random() * o.keys.length)]!;
    const x = random();
    const value = `c${n}:${seq++}`;
    const h: HistoryOp = { id: o.ids.n++, key, client: `c${n}`, via: o.names[via], op: { kind: 'get' }, start: performance.now(), end: 0, ok: true };
    try {
      if (x < 0.3) {
        h.op = { kind: 'put', value };
        const r = await c.put({ key: B(key), value: B(value) });
        h.revision = r.header!.revision;
        o.model?.record(Number(h.revision), [{ key: B(key), type: 'put', value: B(value) }], `${h.client} put`);
        last.set(key, value);
      } else if (x < 0.4) {
        h.op = { kind: 'delete' };
        const r = await c.deleteRange({ key: B(key), prevKv: true });
        h.revision = r.header!.revision;
        h.result = { deleted: Number(r.deleted), ...(r.prevKvs[0] ? { prev: r.prevKvs[0].value.toString() } : {}) };
        if (r.deleted > 0n) o.model?.record(Number(h.revision), [{ key: B(key), type: 'delete' }], `${h.client} delete`);
        last.set(key, null);
      } else if (x < 0.75) {
        const expect = last.has(key) ? last.get(key)! : null;
        h.op = { kind: 'cas', expect, value };
        const compare: Compare =
          expect === null
            ? { key: B(key), rangeEnd: Buffer.alloc(0), target: Compare_CompareTarget.VERSION, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'version', value: 0n } }
            : { key: B(key), rangeEnd: Buffer.alloc(0), target: Compare_CompareTarget.VALUE, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'value', value: B(expect) } };
        const r = await c.txnPartial({
          compare: [compare],
          success: [{ request: { $case: 'requestPut', value: { key: B(key), value: B(value) } } }],
          failure: [{ request: { $case: 'requestRange', value: { key: B(key) } } }],
        });
        h.revision = r.header!.revision;
        if (r.succeeded) {
          h.result = { succeeded: true };
          o.model?.record(Number(h.revision), [{ key: B(key), type: 'put', value: B(value) }], `${h.client} cas`);
          last.set(key, value);
        } else {
          const resp = r.responses[0]?.response;
          const kv = resp?.$case === 'responseRange' ? resp.value.kvs[0] : undefined;
          const seen = kv ? kv.value.toString() : null;
          h.result = { succeeded: false, value: seen };
          last.set(key, seen);
        }
      } else {
        const r = await c.range({ key: B(key) });
        h.revision = r.header!.revision;
        const kv = r.kvs[0];
        h.result = { value: kv ? kv.value.toString() : null };
        if (kv) h.modRevision = kv.modRevision;
        last.set(key, h.result.value!);
      }
      h.end = performance.now();
    } catch (err) {
      h.end = performance.now();
      h.ok = false;
      h.error = describeErr(err);
      // The client does not know the outcome, nor what the key holds now; it tries another proxy.
      last.delete(h.key);
      via = o.pick(n, true);
      await sleep(20);
    }
    o.history.push(h);
  }
}

/**
 * Checks every key's history in a subtest: a violation fails it with minimal
 * replays; keys whose search gave up (neither proven nor refuted) skip it with
 * what was tried, so an inconclusive check is reported as such, never as a pass.
 */
async function checkLinearizable(t: TestContext, history: HistoryOp[]): Promise<HistoryReport> {
  const report = checkHistories(history);
  await t.test('per-key linearizability', (st) => {
    if (report.violations.length > 0) {
      assert.fail(`not linearizable (LIN_SEED=${SEED}):\n` + report.violations.map((f) => `minimal replay:\n${f.detail}`).join('\n'));
    }
    if (report.inconclusive.length > 0) st.skip(`INCONCLUSIVE (LIN_SEED=${SEED}): ${report.inconclusive.map((f) => f.detail).join('; ')}`);
  });
  return report;
}

test('several proxies: per-key linearizable histories, identical watch streams', { timeout: 120_000 }, async (t) => {
  const prefix = 'lin/';
  // Keys on different members, and two on the same member.
  const router = proxies[0]!.handle.router;
  const keys: string[] = [];
  const perMember = new Map<number, number>();
  for (let i = 0; keys.length < 5; i++) {
    const k = `${prefix}k${i}`;
    const m = router.memberOf(B(k));
    if ((perMember.get(m) ?? 0) < 2) {
      keys.push(k);
      perMember.set(m, (perMember.get(m) ?? 0) + 1);
    }
  }
  const r0 = (await clients[0]!.range({ key: B(prefix), rangeEnd: prefixEnd(prefix) })).header!.revision;
  const watches = clients.map((c, i) => {
    const w = new WatchRecorder(c, `watch via ${NAMES[i]}`);
    recorders.push(w);
    w.create({ key: B(prefix), rangeEnd: prefixEnd(prefix), startRevision: r0 + 1n, prevKv: true });
    return w;
  });
  await waitUntil('watches created', () => watches.every((w) => w.createdResponses().length === 1), 10_000);

  const history: HistoryOp[] = [];
  const model = new ModelHistory();
  const deadline = performance.now() + RUN_MS;
  const ids = { n: 0 };
  await Promise.all(Array.from({ length: 9 }, (_, n) => clientLoop(n, { clients, names: NAMES, keys, deadline, history, model, ids, pick: () => n % 3 })));

  const errors = history.filter((h) => !h.ok);
  assert.deepEqual(errors.slice(0, 5).map((h) => `${h.client}@${h.via} ${h.op.kind}: ${h.error}`), [], `${errors.length} operations failed without any fault`);
  const counts = { put: 0, delete: 0, get: 0, cas: 0, casOk: 0 };
  for (const h of history) {
    counts[h.op.kind]++;
    if (h.op.kind === 'cas' && h.result?.succeeded) counts.casOk++;
  }

  // Linearizability of every key's history.
  const t0 = performance.now();
  const report = await checkLinearizable(t, history);
  console.log(
    `${history.length} operations on ${keys.length} keys by 9 clients over 3 proxies in ${RUN_MS} ms (${JSON.stringify(counts)}); ` +
      `checked in ${(performance.now() - t0).toFixed(0)} ms (${report.states} search steps)`,
  );
  assert.ok(counts.casOk > 20 && counts.cas - counts.casOk > 20, `compare-and-sets: ${counts.casOk} of ${counts.cas} succeeded; the workload must exercise both outcomes`);
  assert.deepEqual(checkRevisions(history).slice(0, 10), [], `revision checks (LIN_SEED=${SEED})`);

  // The three watch streams: identical, and equal to what the writes reported.
  const expected = model.expected({ key: B(prefix), rangeEnd: prefixEnd(prefix), startRevision: Number(r0) + 1, prevKv: true });
  const want = expected.reduce((n, b) => n + b.events.length, 0);
  await waitUntil('watches delivered every change', () => watches.every((w) => w.events(0n).length >= want), 15_000).catch(() => undefined);
  const shape = (w: WatchRecorder) =>
    w
      .forId(0n)
      .filter((r) => r.events.length > 0)
      .map((r) =>
        r.events
          .map((e) => `${Event_EventType[e.type]} ${e.kv!.key}=${e.kv!.value} m${e.kv!.modRevision} c${e.kv!.createRevision} v${e.kv!.version}${e.prevKv ? ` prev ${e.prevKv.value}@${e.prevKv.modRevision}` : ''}`)
          .join(' + '),
      );
  const streams = watches.map(shape);
  for (const [i, w] of watches.entries()) {
    assert.equal(w.error, undefined, `${w.label} ended: ${w.error?.message}`);
    checkWatch(w.forId(0n), expected, { label: w.label });
    if (i > 0) assert.deepEqual(streams[i], streams[0], `${w.label} differs from ${watches[0]!.label}`);
  }
  // The final state as each proxy lists it.
  const lists = await Promise.all(clients.map((c) => c.range({ key: B(prefix), rangeEnd: prefixEnd(prefix) })));
  for (const l of lists) assert.deepEqual(l.kvs, model.state(B(prefix), prefixEnd(prefix)));
});

test('a write acknowledged by one proxy is visible to the next linearizable read through any other', { timeout: 60_000 }, async () => {
  const prefix = 'ryw/';
  const random = rng(SEED);
  const misses: string[] = [];
  let n = 0;
  // Every ordered pair of proxies, on keys of every member, with background load on the same keys' members.
  let load = true;
  const background = (async () => {
    let i = 0;
    while (load) await clients[i % 3]!.put({ key: B(`${prefix}bg${i % 17}`), value: B(String(i++)) });
  })();
  try {
    for (let round = 0; round < 40; round++) {
      for (let from = 0; from < 3; from++) {
        for (let to = 0; to < 3; to++) {
          if (from === to) continue;
          const key = B(`${prefix}k${Math.floor(random() * 30)}`);
          const value = B(`${from}->${to}#${n++}`);
          const w = await clients[from]!.put({ key, value });
          const r = await clients[to]!.range({ key });
          const kv = r.kvs[0];
          if (!kv || !kv.value.equals(value) || kv.modRevision !== w.header!.revision || r.header!.revision < w.header!.revision) {
            misses.push(`put ${key}=${value} via ${NAMES[from]} at ${w.header!.revision}; get via ${NAMES[to]} at header ${r.header!.revision} saw ${kv ? `${kv.value}@${kv.modRevision}` : 'nothing'}`);
          }
          if (round % 8 === 0) {
            const l = await clients[to]!.range({ key: B(prefix), rangeEnd: prefixEnd(prefix) });
            const hit = l.kvs.find((x) => x.key.equals(key));
            if (!hit || !hit.value.equals(value)) misses.push(`list via ${NAMES[to]} after put ${key}=${value} via ${NAMES[from]} saw ${hit ? hit.value : 'nothing'}`);
          }
        }
      }
    }
  } finally {
    load = false;
    await background;
  }
  assert.deepEqual(misses.slice(0, 10), [], `${misses.length} of ${n} reads through another proxy missed an acknowledged write (LIN_SEED=${SEED})`);
});

test('per-key histories stay linearizable through a coordinator loss and a proxy crash', { timeout: 120_000 }, async (t) => {
  const prefix = 'flin/';
  const router = proxies[0]!.handle.router;
  const keys = [0, 1, 2, 0].map((m, i) => {
    for (let j = 0; ; j++) if (router.memberOf(B(`${prefix}k${i}-${j}`)) === m) return `${prefix}k${i}-${j}`;
  });
  const child = await ChildProxy.start(set, { flags: ['--fence-after', '300ms'] });
  const cc = clientFor(child.url, 'P3 (child process)', 5000);
  try {
    const fclients = [clients[0]!, clients[1]!, cc];
    const names = ['P0', 'P1', 'P3'];
    const r0 = (await clients[0]!.range({ key: B(prefix), rangeEnd: prefixEnd(prefix) })).header!.revision;
    const watches = [0, 1].map((i) => {
      const w = new WatchRecorder(clients[i]!, `watch via ${NAMES[i]}`);
      recorders.push(w);
      w.create({ key: B(prefix), rangeEnd: prefixEnd(prefix), startRevision: r0 + 1n, prevKv: true });
      return w;
    });
    const history: HistoryOp[] = [];
    const ids = { n: 0 };
    const t0 = performance.now();
    const deadline = t0 + Math.max(RUN_MS, 5000) + 1500;
    let childDead = false;
    const via = new Map<number, number>();
    const pick = (n: number, failed: boolean): number => {
      let v = via.get(n) ?? n % 3;
      if (failed) v = (v + 1) % 3;
      if (v === 2 && childDead) v = 0;
      via.set(n, v);
      return v;
    };
    const faults = (async () => {
      await sleep(1500);
      await loseAndReplace(set.coordinator);
      await sleep(1500);
      childDead = true;
      await child.kill9();
    })();
    await Promise.all([...Array.from({ length: 9 }, (_, n) => clientLoop(n, { clients: fclients, names, keys, deadline, history, ids, pick })), faults]);

    const failed = history.filter((h) => !h.ok);
    const t1 = performance.now();
    const report = await checkLinearizable(t, history);
    console.log(
      `${history.length} operations (${failed.length} failed, outcome unknown) through a coordinator loss at +1.5 s and a proxy kill -9 at +3 s; ` +
        `checked in ${(performance.now() - t1).toFixed(0)} ms (${report.states} search steps); e.g. ${failed.slice(0, 2).map((h) => h.error?.slice(0, 90)).join(' | ')}`,
    );
    assert.ok(failed.length > 0, 'no operation failed: the faults did not happen while clients ran');
    assert.deepEqual(checkRevisions(history).slice(0, 10), [], `revision checks (LIN_SEED=${SEED})`);

    // The surviving proxies' watches: identical, ordered, and ending in each key's final state.
    const final = await clients[1]!.range({ key: B(prefix), rangeEnd: prefixEnd(prefix) });
    const lastEvent = (w: WatchRecorder) => {
      const m = new Map<string, string>();
      for (const e of w.events(0n)) m.set(e.kv!.key.toString(), e.type === Event_EventType.PUT ? `${e.kv!.value}@${e.kv!.modRevision}` : 'deleted');
      return m;
    };
    const want = new Map(final.kvs.map((kv) => [kv.key.toString(), `${kv.value}@${kv.modRevision}`]));
    await waitUntil('watches reflect the final state', () => watches.every((w) => keys.every((k) => (lastEvent(w).get(k) ?? 'deleted') === (want.get(k) ?? 'deleted'))), 15_000).catch(() => undefined);
    for (const w of watches) {
      assert.equal(w.error, undefined, `${w.label}: ${w.error?.message}`);
      assert.ok(!w.responses.some((r) => r.canceled), `${w.label} was canceled`);
      let lastRev = 0n;
      for (const r of w.forId(0n).filter((x) => x.events.length > 0)) {
        const rev = r.events[0]!.kv!.modRevision;
        assert.ok(rev > lastRev, `${w.label}: revision ${rev} after ${lastRev}`);
        lastRev = rev;
      }
      for (const k of keys) assert.equal(lastEvent(w).get(k) ?? 'deleted', want.get(k) ?? 'deleted', `${w.label}: last event of ${k}`);
    }
    const shape = (w: WatchRecorder) => w.events(0n).map((e) => `${Event_EventType[e.type]} ${e.kv!.key}=${e.kv!.value}@${e.kv!.modRevision}`);
    assert.deepEqual(shape(watches[1]!), shape(watches[0]!), 'the two surviving proxies delivered different streams');
  } finally {
    cc.close();
    await child.stop();
  }
});
