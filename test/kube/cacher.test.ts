// kube-apiserver's watch cache (contract §4), replicated (watch-cache.ts) and run
// against etcd and against the proxy while several kube-style writers
// (GuaranteedUpdate from possibly stale cached copies, creates with event leases,
// deletes) run. Against the proxy the writers spread over TWO proxies
// (clientv3's round-robin over --etcd-servers) and the caches watch through a
// THIRD one that is stopped mid-run (its streams end with Unavailable and are
// resumed on another proxy from RV+1, as clientv3 does). Streams are also
// cancelled by the client, and one resource is made to fall behind a compaction
// so that it relists (410).
//
// Checked: no anomaly in any cache (no "PrevKv=nil", ADDED ≡ create_revision ==
// mod_revision, prev_kv equal to the cached object, no revision ever going back,
// progress never below the cache RV); consistent reads (§4.6: RequestProgress every
// 100 ms until a progress notification ≥ the /registry/<res> probe revision) finish
// within the 3 s budget and return exactly the snapshot an Exact list at their RV
// returns; and at the end every cache equals a fresh list.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { startTestProxy, type TestProxy } from '../harness/proxy.js';
import { rng } from '../harness/watch-checker.js';
import { eventRuleViolations, KubeWatch } from './kube-diff.js';
import { ResourceCache } from './watch-cache.js';
import { KubeCompactor, KubeConnection, KubeError, KubeLeaseManager, KubeStore, kubeValue, modEquals, prefixEnd, putOp, rangeOp, sleep, type StoredObject } from './storage-client.js';

let set: EtcdSet;
const proxies: TestProxy[] = [];
const closers: (() => void)[] = [];
const stopped = new Set<TestProxy>();

before(async () => {
  set = await startEtcdSet({ name: 'kube-cacher', oracle: true });
  for (let i = 0; i < 3; i++) proxies.push(await startTestProxy(set, { progressNotifyIntervalMs: 1000 }));
});

after(async () => {
  for (const c of closers.splice(0)) c();
  for (const p of proxies) if (!stopped.has(p)) await p.stop();
  await set?.stop();
});

function conn(urls: string[], name: string): KubeConnection {
  const c = new KubeConnection(urls, { name });
  c.tracing = false;
  closers.push(() => c.close());
  return c;
}

/** Resources the control plane writes: [resource prefix, namespaced]. */
const RESOURCES: [string, boolean][] = [
  ['pods', true],
  ['configmaps', true],
  ['services/specs', true],
  ['services/endpoints', true],
  ['events', true],
  ['example.com/widgets', false],
];
const KEYS_PER_RESOURCE = 24;
const COMPACTED_RESOURCE = 'configmaps';

function keyOf(st: KubeStore, namespaced: boolean, i: number): string {
  return namespaced ? st.key(`obj-${i}`, `ns-${i % 3}`) : st.key(`obj-${i}`);
}

interface WriterStats {
  ops: number;
  conflicts: number;
  staleStarts: number;
  notFound: number;
  exists: number;
  errors: string[];
}

async function writer(id: number, c: KubeConnection, caches: Map<string, ResourceCache>, stopAt: () => boolean, stats: WriterStats): Promise<void> {
  const rnd = rng(1000 + id);
  const leases = new KubeLeaseManager(c);
  const stores = new Map(RESOURCES.map(([r]) => [r, new KubeStore(c, r, id % 2 ? 'legacy' : 'modern', leases)]));
  let seq = 0;
  while (!stopAt()) {
    const [res, namespaced] = RESOURCES[Math.floor(rnd() * RESOURCES.length)]!;
    const st = stores.get(res)!;
    const cache = caches.get(res)!;
    const key = keyOf(st, namespaced, Math.floor(rnd() * KEYS_PER_RESOURCE));
    const value = kubeValue(rnd() < 0.5 ? 'proto' : 'enc', `w${id}/${++seq}`, 200 + Math.floor(rnd() * 1500));
    const x = rnd();
    stats.ops++;
    try {
      if (x < 0.55) {
        // Update from the watch-cache copy (CacheDelegator.GuaranteedUpdate): often stale.
        const cached: StoredObject | null = cache.state.get(key) ?? null;
        const fresh = cached ? await st.get(key, { ignoreNotFound: true }) : null;
        if (cached && fresh && fresh.rv !== cached.rv) stats.staleStarts++;
        const u = await st.guaranteedUpdate(key, () => value, { cached, ignoreNotFound: true, ...(res === 'events' ? { ttl: 3600 } : {}) });
        if (u.attempts > 1) stats.conflicts += u.attempts - 1;
        if (!u.noop) cache.noteWrite(u.obj.rv);
      } else if (x < 0.7) {
        const { obj } = await st.create(key, value, res === 'events' ? { ttl: 3600 } : {});
        cache.noteWrite(obj.rv);
      } else if (x < 0.82) {
        const cached = cache.state.get(key) ?? null;
        const d = await st.delete(key, { cached });
        if (d.attempts > 1) stats.conflicts += d.attempts - 1;
        cache.noteWrite(d.rv);
      } else {
        // Update without a cached copy (Get first), e.g. a status update with ignoreNotFound.
        const u = await st.guaranteedUpdate(key, () => value, { ignoreNotFound: true });
        if (u.attempts > 1) stats.conflicts += u.attempts - 1;
        if (!u.noop) cache.noteWrite(u.obj.rv);
      }
    } catch (e) {
      if (e instanceof KubeError && e.kind === 'NotFound') stats.notFound++;
      else if (e instanceof KubeError && e.kind === 'KeyExists') stats.exists++;
      else stats.errors.push(`${res} ${key}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}

interface Scenario {
  label: string;
  /** Endpoints of the writers' clients (round-robin). */
  writeUrls: string[];
  /** Endpoints of each cache's client (the first one is used first), by resource index. */
  cacheUrls: (i: number) => string[];
  /** A URL for verification reads. */
  verifyUrl: string;
  seconds: number;
  /** Something to do mid-run that ends the caches' streams (stopping a proxy). */
  disrupt?: () => Promise<void>;
}

function itemsDesc(items: StoredObject[]): string[] {
  return items.map((o) => `${o.key}@${o.rv}:${o.value.length}:${o.value.subarray(-8).toString('hex')}`);
}

async function runScenario(s: Scenario): Promise<void> {
  // Seed every resource.
  const seedConn = conn([s.writeUrls[0]!], `${s.label} seed`);
  for (const [res, namespaced] of RESOURCES) {
    const st = new KubeStore(seedConn, res, 'modern', new KubeLeaseManager(seedConn));
    for (let i = 0; i < KEYS_PER_RESOURCE; i += 2) await st.create(keyOf(st, namespaced, i), kubeValue('proto', `seed/${res}/${i}`), res === 'events' ? { ttl: 3600 } : {});
  }

  // One client (HTTP/2 connection) and one watch stream per resource, as the apiserver has.
  const caches = new Map<string, ResourceCache>();
  for (const [i, [res]] of RESOURCES.entries()) {
    const c = conn(s.cacheUrls(i), `${s.label} cache ${res}`);
    const cache = new ResourceCache(new KubeStore(c, res, 'modern'), { pageLimit: 7, label: `${s.label} ${res}` });
    closers.push(() => cache.stop());
    caches.set(res, cache);
  }
  await Promise.all([...caches.values()].map((c) => c.start()));

  const verifyConn = conn([s.verifyUrl], `${s.label} verify`);
  let stop = false;
  const wstats: WriterStats[] = [];
  const writers = Array.from({ length: 6 }, (_, i) => {
    const st: WriterStats = { ops: 0, conflicts: 0, staleStarts: 0, notFound: 0, exists: 0, errors: [] };
    wstats.push(st);
    return writer(i, conn(s.writeUrls, `${s.label} writer ${i}`), caches, () => stop, st);
  });

  // Consistent reads from the caches, verified against an Exact list at their revision.
  const readProblems: string[] = [];
  let verified = 0;
  let compactedSkips = 0;
  const reader = (async () => {
    let i = 0;
    while (!stop) {
      const [res] = RESOURCES[i++ % RESOURCES.length]!;
      const cache = caches.get(res)!;
      if (!cache.live) {
        await sleep(50);
        continue;
      }
      const r = await cache.consistentRead();
      if (!r.ok) {
        readProblems.push(`${res}: consistent read not served within 3 s (target ${r.target}, cache at ${cache.rv})`);
        continue;
      }
      if (i % 3 === 0) {
        try {
          const l = await new KubeStore(verifyConn, res).getList({ resourceVersion: r.snapshot!.rv.toString(), match: 'Exact' });
          const want = itemsDesc(l.items);
          const got = itemsDesc(r.snapshot!.items);
          if (JSON.stringify(got) !== JSON.stringify(want)) {
            readProblems.push(`${res}: cache snapshot at ${r.snapshot!.rv} ≠ Exact list at that revision:\n   cache ${got.filter((x) => !want.includes(x)).join(' ')}\n   list  ${want.filter((x) => !got.includes(x)).join(' ')}`);
          }
          verified++;
        } catch (e) {
          if (e instanceof KubeError && e.kind === 'Expired') compactedSkips++;
          else readProblems.push(`${res}: verification list failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      await sleep(30);
    }
  })();

  // Disruptions.
  const ms = s.seconds * 1000;
  await sleep(ms * 0.2);
  for (const res of ['pods', 'events']) caches.get(res)!.cancelStream();
  await sleep(ms * 0.15);
  await s.disrupt?.();
  await sleep(ms * 0.15);
  // Compaction-driven relist: the configmaps cache stops watching, history moves on and is compacted past it.
  const lagging = caches.get(COMPACTED_RESOURCE)!;
  lagging.pause();
  const pausedAt = lagging.rv;
  const compactor = new KubeCompactor(conn([s.verifyUrl], `${s.label} compactor`));
  const cmStore = new KubeStore(verifyConn, COMPACTED_RESOURCE);
  await cmStore.guaranteedUpdate(keyOf(cmStore, true, 1), () => kubeValue('json', 'before compaction'), { ignoreNotFound: true });
  const r1 = await compactor.round();
  await cmStore.guaranteedUpdate(keyOf(cmStore, true, 1), () => kubeValue('json', 'after round 1'), { ignoreNotFound: true });
  const r2 = await compactor.round();
  assert.ok(r1.succeeded && r2.succeeded && r2.compacted > pausedAt && !r2.compactError, `${s.label}: compaction past the paused cache (${pausedAt}): ${r2.compacted} ${JSON.stringify(r2.compactError)}`);
  lagging.resume();
  await sleep(ms * 0.5);
  stop = true;
  await Promise.all(writers);
  await reader;

  // Quiet phase: only an uncached resource (coordination leases) is written, so a cache reaches a consistent
  // read's target only through a progress notification answering RequestProgress (§4.6).
  const progressBefore = [...caches.values()].reduce((n, c) => n + c.stats.progress, 0);
  let quiet = false;
  const leaseWriter = (async () => {
    const st = new KubeStore(conn(s.writeUrls, `${s.label} lease writer`), 'leases');
    for (let i = 0; !quiet; i++) {
      await st.guaranteedUpdate(st.key(`holder-${i % 4}`, 'kube-node-lease'), () => kubeValue('proto', `renew ${i}`), { ignoreNotFound: true });
      await sleep(5);
    }
  })();
  let quietReads = 0;
  for (let round = 0; round < 3; round++) {
    for (const [res] of RESOURCES) {
      const cache = caches.get(res)!;
      const r = await cache.consistentRead();
      if (!r.ok) readProblems.push(`quiet ${res}: consistent read not served within 3 s (target ${r.target}, cache at ${cache.rv})`);
      else if (r.waited) quietReads++;
    }
  }
  quiet = true;
  await leaseWriter;
  const progressQuiet = [...caches.values()].reduce((n, c) => n + c.stats.progress, 0) - progressBefore;
  assert.ok(quietReads >= RESOURCES.length, `${s.label}: only ${quietReads} consistent reads had to wait for the cache`);
  assert.ok(progressQuiet >= quietReads, `${s.label}: ${quietReads} consistent reads waited while only uncached keys changed, but only ${progressQuiet} progress notifications came`);

  // A consistent read whose target is a revision no event carries (on the proxy, a Txn whose else branch ran takes one).
  const failer = conn(s.writeUrls, `${s.label} failing txn`);
  for (const [res, namespaced] of RESOURCES) {
    const st = new KubeStore(failer, res);
    const key = keyOf(st, namespaced, 0);
    const resp = await failer.txn({ compare: [modEquals(key, 1n)], success: [putOp(key, Buffer.from('never'), 0n)], failure: [rangeOp(key)] });
    assert.ok(!resp.succeeded);
    const r = await caches.get(res)!.consistentRead();
    assert.ok(r.ok, `${s.label} ${res}: a consistent read right after a failed Txn (target ${r.target}) was not served within 3 s (cache at ${caches.get(res)!.rv})`);
  }

  // Final: every cache equals a fresh list.
  for (const [res] of RESOURCES) {
    const cache = caches.get(res)!;
    const r = await cache.consistentRead();
    assert.ok(r.ok, `${s.label} ${res}: the final consistent read was not served within 3 s (target ${r.target}, cache at ${cache.rv})`);
    const fresh = await new KubeStore(verifyConn, res).getList({});
    assert.ok(r.snapshot!.rv >= fresh.rv || itemsDesc(fresh.items).join() === itemsDesc(r.snapshot!.items).join(), `${s.label} ${res}: cache RV ${r.snapshot!.rv} below the list's ${fresh.rv}`);
    assert.deepEqual(itemsDesc(r.snapshot!.items), itemsDesc(fresh.items), `${s.label} ${res}: the cache differs from a fresh list`);
  }

  const all = [...caches.values()];
  const anomalies = all.flatMap((c) => c.anomalies);
  const sum = (f: (c: ResourceCache) => number) => all.reduce((n, c) => n + f(c), 0);
  const reads = all.flatMap((c) => c.stats.consistentReadMs).sort((a, b) => a - b);
  const w = wstats.reduce((a, x) => ({ ops: a.ops + x.ops, conflicts: a.conflicts + x.conflicts, stale: a.stale + x.staleStarts }), { ops: 0, conflicts: 0, stale: 0 });
  console.log(
    `# ${s.label}: ${w.ops} writer ops (${w.conflicts} conflicts, ${w.stale} stale starts); caches: ${sum((c) => c.stats.events)} events, ${sum((c) => c.stats.progress)} progress, ` +
      `${sum((c) => c.stats.reconnects)} reconnects, ${sum((c) => c.stats.clientCancels)} client cancels, ${sum((c) => c.stats.relists)} relists; ` +
      `${reads.length} consistent reads p50 ${reads[Math.floor(reads.length / 2)]?.toFixed(0)} ms p99 ${reads[Math.floor(reads.length * 0.99)]?.toFixed(0)} ms max ${reads.at(-1)?.toFixed(0)} ms; ${verified} verified (${compactedSkips} compacted)`,
  );
  assert.deepEqual(anomalies, [], `${s.label}: watch-cache anomalies`);
  assert.deepEqual(readProblems, [], `${s.label}: consistent reads`);
  assert.deepEqual(wstats.flatMap((x) => x.errors).slice(0, 10), [], `${s.label}: writer errors`);
  assert.ok(w.conflicts > 0, `${s.label}: no update ever conflicted (the stale-origRev path was not exercised)`);
  assert.ok(verified > 3, `${s.label}: only ${verified} consistent reads verified`);
  assert.ok(lagging.stats.relists >= 1, `${s.label}: the compacted cache did not relist (${lagging.endings.join('; ')})`);
  for (const res of ['pods', 'events']) assert.ok(caches.get(res)!.stats.clientCancels >= 1, `${s.label} ${res}: client cancel not seen`);
  if (s.disrupt) for (const c of all) assert.ok(c.stats.reconnects >= 1, `${c.label}: no reconnect after its proxy stopped (${c.endings.join('; ')})`);
  for (const c of all) c.stop();
}

test('§4 watch cache against etcd (the replica\'s own baseline): list+watch from RV+1 with prev_kv and progress_notify, consistent reads via RequestProgress within 3 s, client cancels resumed, compaction → relist; equal to a fresh list at the end', async () => {
  const url = set.oracle!.clientUrl;
  await runScenario({ label: 'etcd', writeUrls: [url], cacheUrls: () => [url], verifyUrl: url, seconds: 5 });
});

test('§4.4–§4.9 watch cache against the proxy: kube-style writers with stale-RV conflicts through two proxies; the caches\' proxy stops mid-run (Unavailable → resumed from RV+1 on another proxy, or on a fresh proxy restarted at the same address); no PrevKv=nil, no revision going back; consistent reads (RequestProgress ≥ the /registry/<res> probe) within 3 s and exact; compaction → relist; every cache equals a fresh list', async () => {
  const [p1, p2, p3] = proxies as [TestProxy, TestProxy, TestProxy];
  await runScenario({
    label: 'proxy',
    writeUrls: [p1.url, p2.url],
    // Even resources: --etcd-servers=p3,p1 (clientv3 fails over to p1); odd ones: p3 only (they wait for p3 to come back).
    cacheUrls: (i) => (i % 2 === 0 ? [p3.url, p1.url] : [p3.url]),
    verifyUrl: p2.url,
    seconds: 10,
    disrupt: async () => {
      stopped.add(p3);
      await p3.stop();
      await sleep(300);
      // A fresh proxy process at the same address: empty watch buffer, history read from the members.
      proxies.push(await startTestProxy(set, { listenAddr: p3.endpoint, progressNotifyIntervalMs: 1000 }));
    },
  });
});

test('§7 several --etcd-servers (round-robin): a resourceVersion returned through one proxy is never "too large" for the other — Get with minimum RV, NotOlderThan list and GetCurrentResourceVersion through the other proxy right after each write (both shapes)', async () => {
  const [p1, p2] = proxies as [TestProxy, TestProxy];
  const a = conn([p1.url], 'rr a');
  const b = conn([p2.url], 'rr b');
  const problems: string[] = [];
  for (let i = 0; i < 150; i++) {
    const [w, r] = i % 2 ? [a, b] : [b, a];
    const v = i % 4 < 2 ? 'legacy' : 'modern';
    const ws = new KubeStore(w, 'secrets', v);
    const rs = new KubeStore(r, 'secrets', v);
    const key = ws.key(`s-${i % 10}`, 'default');
    const u = await ws.guaranteedUpdate(key, () => kubeValue('enc', `secret ${i}`), { ignoreNotFound: true });
    try {
      const got = await rs.get(key, { minimumResourceVersion: u.obj.rv });
      if (!got || got.rv < u.obj.rv) problems.push(`#${i}: Get through the other proxy returned rv ${got?.rv} < ${u.obj.rv}`);
      const l = await rs.getList({ namespace: 'default', resourceVersion: u.obj.rv.toString(), match: 'NotOlderThan' });
      if (!l.items.some((o) => o.key === key && o.rv >= u.obj.rv)) problems.push(`#${i}: the list at ${l.rv} misses the write at ${u.obj.rv}`);
      const cur = await rs.getCurrentResourceVersion();
      if (cur < u.obj.rv) problems.push(`#${i}: GetCurrentResourceVersion ${cur} < ${u.obj.rv}`);
    } catch (e) {
      problems.push(`#${i}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  assert.deepEqual(problems, []);
});

test('§4.4 after a compaction, a watch resumed from history (RV+1 ≥ the compacted revision, served by a freshly started proxy with a 10-event buffer) still carries prev_kv on every MODIFIED and DELETED whose previous version is at or below the compacted revision (as etcd)', async () => {
  const run = async (url: string, watchUrl: () => Promise<string>) => {
    const c = conn([url], 'history writer');
    const st = new KubeStore(c, 'history');
    const keys = Array.from({ length: 6 }, (_, i) => st.key(`h-${i}`, 'default'));
    for (const k of keys) await st.guaranteedUpdate(k, () => kubeValue('proto', `${k} v1`), { ignoreNotFound: true });
    const compactor = new KubeCompactor(c);
    await st.guaranteedUpdate(st.key('filler', 'default'), () => Buffer.from('f0'), { ignoreNotFound: true });
    await compactor.round();
    await st.guaranteedUpdate(st.key('filler', 'default'), () => Buffer.from('f1'), { ignoreNotFound: true });
    const r2 = await compactor.round();
    assert.ok(r2.compacted > 0n && !r2.compactError);
    // The cache's list after the compaction.
    const listed = await st.getList({});
    assert.ok(listed.rv >= r2.compacted);
    // Changes after the list: updates and deletes of keys last written before the compacted revision, and filler.
    for (const [i, k] of keys.entries()) {
      if (i % 2) await st.delete(k);
      else await st.guaranteedUpdate(k, () => kubeValue('proto', `${k} v2`));
    }
    for (let i = 0; i < 30; i++) await st.guaranteedUpdate(st.key('filler', 'default'), () => Buffer.from(`f${i + 2}`));
    const wc = conn([await watchUrl()], 'history watcher');
    const w = new KubeWatch(wc);
    closers.push(() => w.close());
    w.create({ key: Buffer.from(st.resourcePrefix), rangeEnd: prefixEnd(st.resourcePrefix), startRevision: listed.rv + 1n, prevKv: true, progressNotify: true });
    await w.until(() => w.events().length >= 36, 10_000, '36 events from history');
    const violations = eventRuleViolations(w.responses, url, new Set(listed.items.map((o) => o.key)));
    return {
      violations,
      events: w.events().map((e) => `${e.type === 1 ? 'DELETED' : e.kv!.createRevision === e.kv!.modRevision ? 'ADDED' : 'MODIFIED'} ${e.kv!.key.toString()} ${e.kv!.value.length} prev=${e.prevKv ? e.prevKv.value.toString('latin1').slice(-12) : 'nil'}`),
    };
  };
  const etcd = await run(set.oracle!.clientUrl, async () => set.oracle!.clientUrl);
  const prox = await run(proxies[0]!.url, async () => {
    const fresh = await startTestProxy(set, { watchBufferLen: 10 });
    proxies.push(fresh);
    return fresh.url;
  });
  assert.deepEqual(etcd.violations, [], 'etcd itself');
  assert.deepEqual(prox.violations, []);
  assert.deepEqual(prox.events, etcd.events);
});

test('§2.12 LeaseGrant through two proxies at once (two apiservers): every grant succeeds with a distinct non-zero ID', async () => {
  const [p1, p2] = proxies as [TestProxy, TestProxy];
  const a = conn([p1.url], 'grant a');
  const b = conn([p2.url], 'grant b');
  const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).leaseGrant(3660n).then((r) => r.ID)));
  assert.ok(ids.every((id) => id > 0n), 'a lease ID is not positive');
  assert.equal(new Set(ids).size, ids.length, 'two grants returned the same lease ID');
});

test('§4.5/§4.9 switching proxies: a watch created at RV+1 on one proxy, where RV was just returned by a write through the other, never gets a progress notification (requested or periodic) below RV, nor an event at or below RV', async () => {
  const [p1, p2] = proxies as [TestProxy, TestProxy];
  const wconn = conn([p1.url], 'switch writer');
  const st = new KubeStore(wconn, 'switch');
  const watchConn = conn([p2.url], 'switch watcher');
  const problems: string[] = [];
  let stop = false;
  // Background writes through the first proxy keep both proxies' frontiers moving.
  const bg = (async () => {
    const bs = new KubeStore(conn([p1.url], 'switch bg'), 'switch-bg');
    for (let i = 0; !stop; i++) await bs.guaranteedUpdate(bs.key(`bg-${i % 5}`, 'default'), () => Buffer.from(`bg ${i}`), { ignoreNotFound: true });
  })();
  for (let i = 0; i < 60; i++) {
    const u = await st.guaranteedUpdate(st.key(`k-${i % 3}`, 'default'), () => Buffer.from(`v ${i}`), { ignoreNotFound: true });
    const rv = u.obj.rv;
    const w = new KubeWatch(watchConn);
    w.create({ key: Buffer.from(st.resourcePrefix), rangeEnd: prefixEnd(st.resourcePrefix), startRevision: rv + 1n, prevKv: true, progressNotify: true });
    w.progress();
    try {
      await w.until(() => w.responses.some((r) => !r.created && r.events.length === 0 && r.watchId === -1n), 3000, 'the progress response');
    } catch (e) {
      problems.push(`#${i}: ${e instanceof Error ? e.message : String(e)}`);
    }
    for (const r of w.responses) {
      if (r.created) continue;
      if (r.events.length === 0 && (r.header?.revision ?? 0n) < rv) problems.push(`#${i}: progress at ${r.header?.revision} below the RV ${rv} the watch started after`);
      for (const e of r.events) if (e.kv!.modRevision <= rv) problems.push(`#${i}: event at ${e.kv!.modRevision} ≤ RV ${rv}`);
    }
    w.close();
  }
  stop = true;
  await bg;
  assert.deepEqual(problems, []);
});

test('§2.12/§7 a lease granted through one proxy is used right away by a write through the other (clientv3 round-robins LeaseGrant and Txn over --etcd-servers): every create succeeds, carries the lease, and expires with it (DELETE with prev_kv)', async () => {
  const [p1, p2] = proxies as [TestProxy, TestProxy];
  const a = conn([p1.url], 'lease a');
  const b = conn([p2.url], 'lease b');
  const watcher = conn([p1.url], 'lease watcher');
  const w = new KubeWatch(watcher);
  closers.push(() => w.close());
  w.create({ key: Buffer.from('/registry/events/xl/'), rangeEnd: prefixEnd('/registry/events/xl/'), prevKv: true });
  await w.until(() => w.responses.some((r) => r.created), 5000, 'created');
  const problems: string[] = [];
  const keys: string[] = [];
  for (let i = 0; i < 30; i++) {
    const [g, p] = i % 2 ? [a, b] : [b, a];
    const lease = (await g.leaseGrant(i < 6 ? 2n : 3660n)).ID;
    const key = `/registry/events/xl/ev-${i}`;
    try {
      const r = await p.txn({ compare: [modEquals(key, 0n)], success: [putOp(key, kubeValue('proto', key), lease)], failure: [] });
      if (!r.succeeded) problems.push(`${key}: create did not succeed`);
      const got = await g.range({ key: Buffer.from(key) });
      if (got.kvs[0]?.lease !== lease) problems.push(`${key}: lease ${got.kvs[0]?.lease} ≠ granted ${lease}`);
      if (i < 6) keys.push(key);
    } catch (e) {
      problems.push(`${key}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  assert.deepEqual(problems, []);
  await w.until(() => keys.every((k) => w.events().some((e) => e.type === 1 && e.kv!.key.toString() === k)), 15_000, 'the short leases\' keys deleted');
  for (const e of w.events().filter((x) => x.type === 1)) assert.ok(e.prevKv, `DELETE of ${e.kv!.key} without prev_kv`);
  assert.equal(w.events().filter((x) => x.type === 1).length, keys.length, 'only the keys of the expired leases are deleted');
});
