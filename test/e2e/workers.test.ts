// `metaetcd --workers N`: one address served by N worker processes. Each worker
// is a whole proxy over the same clusters; the checks here are what a client
// and an operator see: every connection gets the same meta cluster (reads and a
// watch on one connection see writes made through the others), /metrics sums
// the workers, a worker killed -9 is replaced while the others keep serving, and
// SIGTERM stops every process.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { ChildProxy, healthOf, metricFromText, sleep, waitUntil } from '../harness/faults.js';
import { clientFor } from '../harness/proxy.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { WatchRequest, type WatchResponse } from '../../src/proto/gen/rpc.js';

const WORKERS = 2;
/** Separate clients open separate HTTP/2 connections, which the primary hands to the workers in turn. */
const CONNECTIONS = 6;

let set: EtcdSet;
let proxy: ChildProxy;
let clients: EtcdClient[] = [];

before(async () => {
  set = await startEtcdSet({ name: 'workers' });
  proxy = await ChildProxy.start(set, { flags: ['--workers', String(WORKERS)] });
  clients = Array.from({ length: CONNECTIONS }, (_, i) => clientFor(proxy.url, `conn ${i}`));
});

after(async () => {
  for (const c of clients) c.close();
  await proxy?.stop();
  await set?.stop();
});

const key = (s: string) => Buffer.from(`/workers/${s}`);

test('N worker processes serve one address; every connection sees one meta cluster with one revision order', async () => {
  await waitUntil(`${WORKERS} worker processes`, () => proxy.childPids().length === WORKERS, 10_000);
  // A watch on one connection, writes spread over all of them.
  const watch = clients[0]!.watch();
  const events: { key: string; rev: bigint }[] = [];
  const created = new Promise<void>((resolve) =>
    watch.on('data', (r: WatchResponse) => {
      if (r.created) resolve();
      for (const e of r.events) events.push({ key: e.kv!.key.toString(), rev: e.kv!.modRevision });
    }),
  );
  watch.on('error', () => undefined);
  watch.write(WatchRequest.fromPartial({ requestUnion: { $case: 'createRequest', value: { key: key(''), rangeEnd: key('\xff') } } }));
  await created;

  const revisions: bigint[] = [];
  for (let i = 0; i < 30; i++) {
    const c = clients[i % CONNECTIONS]!;
    const put = await c.put({ key: key(`k${i}`), value: Buffer.from(String(i)) });
    revisions.push(put.header!.revision);
    // Read through another connection: linearizable reads see the write.
    const got = await clients[(i + 1) % CONNECTIONS]!.range({ key: key(`k${i}`) });
    assert.equal(got.kvs[0]?.value.toString(), String(i), `k${i} read through another connection`);
    assert.ok(got.header!.revision >= put.header!.revision);
  }
  for (let i = 1; i < revisions.length; i++) assert.ok(revisions[i]! > revisions[i - 1]!, `revisions increase: ${revisions.join(',')}`);
  await waitUntil('the watch saw every put', () => events.length >= 30, 10_000);
  assert.deepEqual(
    events.map((e) => e.rev),
    revisions,
    'the watch delivers every write, from every connection, once and in revision order',
  );
  watch.end();
});

test('/metrics sums the workers; /health answers', async () => {
  // The primary serves /metrics once every worker is ready, which can be a moment after the first one serves gRPC.
  await waitUntil('/metrics answers', () => fetch(`http://127.0.0.1:${proxy.metricsPort}/metrics`).then((r) => r.ok, () => false), 20_000, 100);
  const before = await scrape();
  const n = 20;
  await Promise.all(Array.from({ length: n }, (_, i) => clients[i % CONNECTIONS]!.range({ key: key('k0') })));
  const afterText = await scrape();
  const ranges = (t: string) => metricFromText(t.split('\n').filter((l) => l.includes('method="Range"')).join('\n'), 'metaetcd_request_count');
  assert.ok(ranges(afterText) - ranges(before) >= n, `Range count grew by at least ${n} across workers`);
  const h = await healthOf(proxy.metricsPort);
  assert.equal(h.status, 200, JSON.stringify(h.body));
  assert.equal(h.body.health, 'true');
});

test('a worker killed -9 is replaced; the address keeps serving through it', async () => {
  const [victim] = proxy.childPids();
  assert.ok(victim, 'a worker pid');
  process.kill(victim, 'SIGKILL');
  await waitUntil('a replacement worker', () => {
    const pids = proxy.childPids();
    return pids.length === WORKERS && !pids.includes(victim);
  }, 20_000);
  // Connections to the dead worker were cut; new ones work. Every client retries until it gets through.
  for (const [i, c] of clients.entries()) {
    await waitUntil(`connection ${i} serves again`, async () => {
      try {
        await c.put({ key: key(`after-kill-${i}`), value: Buffer.from('x') });
        return true;
      } catch {
        return false;
      }
    }, 15_000, 100);
  }
  const all = await clients[0]!.range({ key: key('after-kill-'), rangeEnd: key('after-kill.') });
  assert.equal(all.kvs.length, CONNECTIONS);
});

test('SIGTERM stops the primary and every worker', async () => {
  const workers = proxy.childPids();
  await proxy.stop(15_000);
  assert.equal(proxy.exit?.code, 0, proxy.describe());
  await sleep(100);
  for (const pid of workers) assert.equal(alive(pid), false, `worker ${pid} is gone`);
});

async function scrape(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${proxy.metricsPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(res.status, 200);
  return res.text();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('kill -9 of the primary ends its workers too (no orphan keeps a port or a stale view)', async () => {
  const p = await ChildProxy.start(set, { flags: ['--workers', String(WORKERS)] });
  await waitUntil(`${WORKERS} worker processes`, () => p.childPids().length === WORKERS, 10_000);
  const workers = p.childPids();
  await p.kill9();
  await waitUntil('every worker gone', () => workers.every((pid) => !alive(pid)), 10_000);
});
