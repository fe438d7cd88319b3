// Transport expectations of kube-apiserver's etcd clients (contract §7, §4.2,
// §2.11) against the proxy: keepalive pings on busy connections, idle
// connections, per-call Status connections, very large list responses, and
// hundreds of connections and watch streams at once.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { after, before, test } from 'node:test';
import { RangeRequest, RangeResponse, WatchRequest, WatchResponse } from '../../src/proto/gen/rpc.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { startTestProxy, type TestProxy } from '../harness/proxy.js';
import { KubeWatch } from './kube-diff.js';
import { KubeConnection, KubeStore, prefixEnd, probeHealth, sleep } from './storage-client.js';

let set: EtcdSet;
let proxy: TestProxy;
const closers: (() => void)[] = [];

before(async () => {
  set = await startEtcdSet({ name: 'kube-transport' });
  proxy = await startTestProxy(set);
});

after(async () => {
  for (const c of closers.splice(0).reverse()) c();
  await proxy?.stop();
  await set?.stop();
});

function conn(name: string, opts: ConstructorParameters<typeof KubeConnection>[1] = {}): KubeConnection {
  const c = new KubeConnection([proxy.url], { name, ...opts });
  c.tracing = false;
  closers.push(() => c.close());
  return c;
}

// ---------------------------------------------------------------------------
// Raw HTTP/2 gRPC, to see PINGs, GOAWAYs and the connection itself

function frame(msg: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, Buffer.from(msg)]);
}

function deframe(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let b = buf;
  while (b.length >= 5) {
    const len = b.readUInt32BE(1);
    if (b.length < 5 + len) break;
    out.push(b.subarray(5, 5 + len));
    b = b.subarray(5 + len);
  }
  return out;
}

function rawUnaryRange(session: ClientHttp2Session, key: string): Promise<RangeResponse> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/etcdserverpb.KV/Range', 'content-type': 'application/grpc', te: 'trailers', hasleader: 'true' });
    let data = Buffer.alloc(0);
    req.on('data', (c: Buffer) => (data = Buffer.concat([data, c])));
    req.on('error', reject);
    req.on('end', () => {
      const [m] = deframe(data);
      if (!m) reject(new Error('no response message'));
      else resolve(RangeResponse.decode(m));
    });
    req.end(frame(RangeRequest.encode(RangeRequest.fromPartial({ key: Buffer.from(key) })).finish()));
  });
}

test('§7 keepalive: PINGs every 1 s (kube: every 30 s, 10 s timeout) on a connection with an open watch are all acknowledged promptly, no GOAWAY (too_many_pings), and the same connection still serves the watch and a Range (raw HTTP/2)', async () => {
  const session = http2Connect(proxy.url);
  closers.push(() => session.destroy());
  const goaways: string[] = [];
  session.on('goaway', (code: number, _last: number, data?: Buffer) => goaways.push(`${code} ${data?.toString() ?? ''}`));
  session.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  // A busy connection: a watch stream (with the metadata clientv3 sends).
  const w = session.request({ ':method': 'POST', ':path': '/etcdserverpb.Watch/Watch', 'content-type': 'application/grpc', te: 'trailers', hasleader: 'true' });
  w.on('error', () => undefined);
  let wbuf = Buffer.alloc(0);
  const wresps: WatchResponse[] = [];
  w.on('data', (c: Buffer) => {
    wbuf = Buffer.concat([wbuf, c]);
    for (const m of deframe(wbuf)) {
      wresps.push(WatchResponse.decode(m));
      wbuf = wbuf.subarray(5 + m.length);
    }
  });
  w.write(frame(WatchRequest.encode(WatchRequest.fromPartial({ requestUnion: { $case: 'createRequest', value: { key: Buffer.from('/registry/leases/ka/'), rangeEnd: prefixEnd('/registry/leases/ka/'), prevKv: true, progressNotify: true } } })).finish()));
  const acks: number[] = [];
  const failures: string[] = [];
  for (let i = 0; i < 6; i++) {
    await new Promise<void>((resolve) => {
      const ok = session.ping((err, duration) => {
        if (err) failures.push(err.message);
        else acks.push(duration);
        resolve();
      });
      if (!ok) {
        failures.push('ping not sent');
        resolve();
      }
    });
    await sleep(1000);
  }
  assert.deepEqual(failures, []);
  assert.deepEqual(goaways, [], 'the proxy sent GOAWAY');
  assert.equal(acks.length, 6);
  assert.ok(Math.max(...acks) < 10_000, `a PING took ${Math.max(...acks)} ms to be acknowledged (kube's timeout is 10 s)`);
  assert.ok(!session.closed && !session.destroyed, 'the connection was closed');
  // The same connection still works: a Range, and the watch gets an event.
  const r = await rawUnaryRange(session, '/registry/health');
  assert.ok(r.header && r.header.revision > 0n);
  const writer = conn('ka writer');
  await new KubeStore(writer, 'leases').create('/registry/leases/ka/node-1', Buffer.from('renew'));
  const deadline = Date.now() + 5000;
  while (!wresps.some((x) => x.events.length > 0) && Date.now() < deadline) await sleep(20);
  assert.ok(wresps[0]?.created, 'the watch was created');
  assert.ok(wresps.some((x) => x.events.length > 0), 'the watch on the pinged connection got no event');
  assert.deepEqual(goaways, []);
  w.close();
  session.close();
});

test('§7 keepalive with a grpc-js client (keepalive_time 1 s, timeout 10 s, permit without calls): a watch and unary calls keep working for 6 s with no stream broken; an idle unary-only client (the health prober) is still answered after 6 s idle', async () => {
  const busy = conn('keepalive busy', { keepaliveTimeMs: 1000, keepaliveTimeoutMs: 10_000, keepalivePermitWithoutCalls: true });
  const idle = conn('idle prober');
  assert.ok((await probeHealth(idle)).healthy);
  const w = new KubeWatch(busy);
  closers.push(() => w.close());
  w.create({ key: Buffer.from('/registry/leases/ka2/'), rangeEnd: prefixEnd('/registry/leases/ka2/'), prevKv: true, progressNotify: true });
  await w.until(() => w.responses.some((r) => r.created), 5000, 'created');
  const st = new KubeStore(busy, 'leases');
  for (let i = 0; i < 6; i++) {
    await sleep(1000);
    await st.guaranteedUpdate('/registry/leases/ka2/node', () => Buffer.from(`renew ${i}`), { ignoreNotFound: true });
  }
  await w.until(() => w.events().length >= 6, 5000, '6 events');
  assert.equal(w.status, undefined, 'the watch stream ended');
  const h = await probeHealth(idle);
  assert.ok(h.healthy, `the idle prober's next probe failed: ${h.error}`);
});

test('§2.11 Status on a fresh connection per call (the /metrics collector and the DB-size monitor): 20 calls in a row, each answered within 1 s with a version and db_size', async () => {
  for (let i = 0; i < 20; i++) {
    const c = new KubeConnection([proxy.url], { name: `status ${i}` });
    try {
      const s = await c.status(1000);
      assert.ok(s.version && s.dbSize > 0n);
    } finally {
      c.close();
    }
  }
});

test('§7 large lists: 10 000 objects of 10 KiB (~100 MiB) are served in full — unpaged in one response, in the cacher\'s 10 000-item page, and in pinned pages of 500 — every value intact, sorted, count 10 000', async () => {
  const N = 10_000;
  const conns = Array.from({ length: 4 }, (_, i) => conn(`loader ${i}`));
  const stores = conns.map((c) => new KubeStore(c, 'configmaps'));
  const value = (i: number) => {
    const v = Buffer.alloc(10 * 1024, i % 251);
    v.write(`k8s\0cm-${i}`, 0, 'latin1');
    return v;
  };
  let next = 0;
  const loadStart = performance.now();
  await Promise.all(
    Array.from({ length: 48 }, async (_, w) => {
      for (;;) {
        const i = next++;
        if (i >= N) return;
        await stores[w % 4]!.create(stores[0]!.key(`cm-${String(i).padStart(5, '0')}`, `ns-${i % 7}`), value(i));
      }
    }),
  );
  console.log(`# loaded ${N} objects in ${(performance.now() - loadStart).toFixed(0)} ms`);
  const reader = new KubeStore(conn('big reader'), 'configmaps');
  const check = (items: { key: string; value: Buffer }[], what: string) => {
    assert.equal(items.length, N, `${what}: ${items.length} items`);
    for (let i = 1; i < items.length; i++) assert.ok(items[i - 1]!.key < items[i]!.key, `${what}: not sorted at ${i}`);
    for (const o of items) {
      const i = Number(/cm-(\d+)$/.exec(o.key)![1]);
      assert.ok(o.value.equals(value(i)), `${what}: value of ${o.key} damaged`);
    }
  };
  const timed = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
    const r = await f();
    clearInterval(sampler);
    console.log(`# ${what}: ${(performance.now() - t0).toFixed(0)} ms, peak rss ${(peak / 2 ** 20).toFixed(0)} MiB (proxy and client in this process)`);
    return r;
  };
  const full = await timed('unpaged list', () => reader.getList({}));
  check(full.items, 'unpaged');
  const page = await timed('list with limit 10000', () => reader.getList({ limit: 10_000 }));
  check(page.items, 'limit 10000');
  assert.equal(page.continueToken, undefined);
  const items: { key: string; value: Buffer }[] = [];
  let token: string | undefined;
  let pages = 0;
  let rv: bigint | undefined;
  do {
    const l = await reader.getList({ limit: 500, ...(token ? { continueToken: token } : {}) });
    rv ??= l.rv;
    assert.equal(l.rv, rv, 'pages pinned to the first page\'s revision');
    items.push(...l.items);
    token = l.continueToken;
    pages++;
  } while (token);
  assert.equal(pages, 20);
  check(items, 'pages of 500');
  assert.equal(await reader.count(), BigInt(N));
  const h = createHash('sha1');
  for (const o of full.items) h.update(o.value);
  console.log(`# 10 000 × 10 KiB: unpaged list ok (sha1 ${h.digest('hex').slice(0, 12)})`);
});

test('§4.2/§7 hundreds of connections and watch streams: 200 clients (one HTTP/2 connection each, as one client per resource), each with a hasleader watch stream on its own prefix, plus one connection carrying 300 watch streams; every write reaches exactly its watchers; every client still serves a Range', async () => {
  const clients = Array.from({ length: 200 }, (_, i) => conn(`resource client ${i}`));
  const watches = clients.map((c, i) => {
    const w = new KubeWatch(c);
    closers.push(() => w.close());
    const p = `/registry/crd${i}.example.com/things/`;
    w.create({ key: Buffer.from(p), rangeEnd: prefixEnd(p), prevKv: true, progressNotify: true });
    return w;
  });
  const shared = conn('many streams');
  const streams = Array.from({ length: 300 }, (_, i) => {
    const w = new KubeWatch(shared);
    closers.push(() => w.close());
    const p = `/registry/crd${i % 200}.example.com/things/`;
    w.create({ key: Buffer.from(p), rangeEnd: prefixEnd(p), prevKv: true });
    return w;
  });
  await Promise.all([...watches, ...streams].map((w) => w.until(() => w.responses.some((r) => r.created), 20_000, 'created')));
  const writer = conn('many writer');
  await Promise.all(
    Array.from({ length: 200 }, (_, i) => new KubeStore(writer, `crd${i}.example.com/things`).create(`/registry/crd${i}.example.com/things/default/t`, Buffer.from(`thing ${i}`))),
  );
  await Promise.all(watches.map((w, i) => w.until(() => w.events().length >= 1, 20_000, `event on watch ${i}`)));
  await Promise.all(streams.map((w, i) => w.until(() => w.events().length >= 1, 20_000, `event on stream ${i}`)));
  watches.forEach((w, i) => {
    assert.equal(w.events().length, 1, `watch ${i} got ${w.events().length} events`);
    assert.equal(w.events()[0]!.kv!.key.toString(), `/registry/crd${i}.example.com/things/default/t`);
  });
  streams.forEach((w, i) => assert.deepEqual(w.events().map((e) => e.kv!.key.toString()), [`/registry/crd${i % 200}.example.com/things/default/t`]));
  const ranges = await Promise.all(clients.map((c, i) => c.range({ key: Buffer.from(`/registry/crd${i}.example.com/things/default/t`) })));
  ranges.forEach((r, i) => assert.equal(r.kvs[0]?.value.toString(), `thing ${i}`));
  for (const w of [...watches, ...streams]) assert.equal(w.status, undefined, 'a watch stream ended');
});
