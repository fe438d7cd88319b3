// Slow consumers: a client that never reads its watch stream while a lot of
// traffic flows must not hold back other watchers (they keep receiving
// promptly and completely), and is cut off with a retryable status
// (UNAVAILABLE), counted in metaetcd_stale_watch_count. (etcd 3.4 itself never
// cuts a slow stream off — docs/notes §10 — this is the proxy's documented bound.)

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { checkWatch, b, ModelHistory, ModelWriter, prefixEnd, RawWatchStream, rng, sleep, WatchRecorder, type WatchSpec } from '../harness/watch-checker.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';

let set: EtcdSet;
let proxy: TestProxy;
let fastClient: EtcdClient;
const opened: { close(): void }[] = [];

before(async () => {
  set = await startEtcdSet({ name: 'watch-slow' });
  proxy = await startTestProxy(set);
  fastClient = clientFor(proxy.url, 'fast');
  await fastClient.put({ key: b('warm-up'), value: b('1') });
});
after(async () => {
  for (const r of opened) r.close();
  fastClient?.close();
  await proxy?.stop();
  await set?.stop();
});

async function staleCount(): Promise<number> {
  const m = proxy.metrics.registry.getSingleMetric('metaetcd_stale_watch_count');
  assert.ok(m, 'metaetcd_stale_watch_count is registered');
  const v = await m.get();
  return v.values.reduce((n, x) => n + x.value, 0);
}

test('slow consumer: a stream that is never read does not hold back other watchers, and is cut off with UNAVAILABLE (metaetcd_stale_watch_count)', async () => {
  const model = new ModelHistory();
  const writer = new ModelWriter(fastClient, model, proxy.handle.router, rng(1), 'w');
  const range = { key: b('sc/'), rangeEnd: prefixEnd('sc/') };
  const staleBefore = await staleCount();

  // A raw HTTP/2 client that does not read (grpc-js clients buffer in memory instead, see RawWatchStream).
  const slow = new RawWatchStream(proxy.url);
  opened.push(slow);
  slow.create({ ...range, watchId: 1n, prevKv: true });
  const fast = new WatchRecorder(fastClient, 'fast');
  opened.push(fast);
  fast.create({ ...range, watchId: 1n, prevKv: true });
  await fast.untilCreated(1n);
  await sleep(200); // the slow watch is created too (its created response waits unread)
  const from = Number(fast.createdFor(1n)!.header!.revision) + 1;

  // ~40 MiB for a prev_kv watcher: 40 puts of 512 KiB over 4 keys.
  const keys = [0, 1, 2, 3].map((i) => b(`sc/k${i}`));
  const lags: number[] = [];
  for (let i = 0; i < 40; i++) {
    const value = Buffer.alloc(512 * 1024, 97 + (i % 26));
    const rev = await writer.put(keys[i % 4]!, value);
    const acked = Date.now();
    await fast.until(() => fast.events(1n).some((e) => Number(e.kv!.modRevision) === rev), 5000, `fast watcher: event at ${rev}`);
    const idx = fast.responses.findIndex((r) => r.events.some((e) => Number(e.kv!.modRevision) === rev));
    lags.push(fast.arrivals[idx]! - acked);
  }
  const maxLag = Math.max(...lags);
  assert.ok(maxLag < 2000, `the fast watcher kept receiving promptly (max lag ${maxLag} ms after the write was acknowledged)`);

  // The slow stream is cut off and counted.
  const deadline = Date.now() + 10_000;
  while ((await staleCount()) <= staleBefore) {
    assert.ok(Date.now() < deadline, 'metaetcd_stale_watch_count did not increase within 10 s');
    await sleep(50);
  }
  // Once the client reads again it sees what was already in flight, then a retryable status.
  slow.startReading();
  const end = Date.now() + 10_000;
  while (!slow.status && !slow.closed) {
    assert.ok(Date.now() < end, 'the slow stream did not end within 10 s of reading again');
    await sleep(20);
  }
  await sleep(50);
  assert.deepEqual({ code: slow.status?.code, rst: slow.rstCode ?? 0 }, { code: 14 /* UNAVAILABLE */, rst: 0 }, `slow stream ended with ${JSON.stringify(slow.status)}`);

  const active = proxy.metrics.registry.getSingleMetric('metaetcd_active_watch_count');
  assert.equal((await active!.get()).values.reduce((n, x) => n + x.value, 0), 1, 'only the fast watcher is still active');

  // What it did get is an exact prefix of its history (no gap, no reordering).
  const spec: WatchSpec = { ...range, startRevision: from, prevKv: true };
  assert.ok(slow.responses[0]?.created, 'the slow stream got its created response first');
  const got = slow.responses.filter((r) => r.watchId === 1n && r.events.length > 0);
  const expected = model.expected(spec).slice(0, got.reduce((n, r) => n + r.events.length, 0));
  checkWatch(got, expected, { label: 'slow watcher (prefix)' });
  assert.ok(got.length < 40, `the slow watcher was cut off before the end (${got.length} responses)`);
  // The fast watcher got everything, once, in order.
  await sleep(200);
  checkWatch(fast.forId(1n), model.expected(spec), { label: 'fast watcher' });
});
