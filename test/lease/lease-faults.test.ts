// Lease expiry under faults: a member etcd down while a lease whose keys span
// every member expires, and the proxy itself restarted across an expiry. After
// recovery no key of the lease may remain, and a watcher must see every
// deletion exactly once, in order, with prev_kv.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { freePort } from '../../src/sandbox/etcd-process.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { countUnder, homeOfLease, keysOnEveryMember, leaseIdWithHome, sleep, waitFor, WatchRecorder, type SeenEvent } from './lease-helpers.js';

/** Every test is bounded (node:test fails it after this long). */
const BOUND = { timeout: 60_000 };

let set: EtcdSet;
/** Unhandled promise rejections in this process (the in-process proxies run here); each would crash a real proxy process. */
const unhandled: unknown[] = [];
process.on('unhandledRejection', (err) => unhandled.push(err));

before(async () => {
  set = await startEtcdSet({ name: 'lease-faults' });
});
after(async () => {
  await set?.stop();
});

/** Runs `body` with a fresh in-process proxy and client, stopping both (and any watch) afterwards. */
async function withProxy(body: (proxy: TestProxy, client: EtcdClient, track: (w: WatchRecorder) => WatchRecorder) => Promise<void>): Promise<void> {
  const proxy = await startTestProxy(set);
  const client = clientFor(proxy.url, 'proxy');
  const watches: WatchRecorder[] = [];
  try {
    await body(proxy, client, (w) => (watches.push(w), w));
  } finally {
    for (const w of watches) w.close();
    client.close();
    await proxy.stop();
  }
}

function assertEachDeletedOnce(w: WatchRecorder, keys: Buffer[], lease: bigint, putRevs: Map<string, bigint>): void {
  assert.equal(w.error, undefined, `watch stream failed: ${w.error?.message}`);
  const names = keys.map(String);
  const ds = w.deletesOf(names);
  const counts = new Map<string, number>();
  for (const d of ds) counts.set(d.key, (counts.get(d.key) ?? 0) + 1);
  assert.deepEqual(Object.fromEntries([...counts].sort()), Object.fromEntries(names.sort().map((k) => [k, 1])), 'every key deleted exactly once');
  for (const d of ds) {
    assert.ok(d.modRevision > putRevs.get(d.key)!, `DELETE ${d.key}@${d.modRevision} above its put`);
    assert.deepEqual(d.prevKv, { value: 'v', lease, modRevision: putRevs.get(d.key)! }, `prev_kv of ${d.key}`);
  }
  let last = 0n;
  let lastResponse = -1;
  for (const e of w.events as SeenEvent[]) {
    if (e.response !== lastResponse) {
      assert.ok(e.modRevision > last, `watch revisions increase: ${e.modRevision} after ${last}`);
      last = e.modRevision;
      lastResponse = e.response;
    }
  }
}

async function putAll(c: EtcdClient, keys: Buffer[], lease: bigint): Promise<Map<string, bigint>> {
  const revs = new Map<string, bigint>();
  for (const k of keys) revs.set(k.toString(), (await c.put({ key: k, value: Buffer.from('v'), lease })).header!.revision);
  return revs;
}

test('a member stopped while a lease spanning every member expires: keys on the others go at once, its own after it restarts; each DELETE seen once', BOUND, async () => {
  await withProxy(async (proxy, client, track) => {
    const router = proxy.handle.router;
    const down = 1;
    const keys = keysOnEveryMember(router, 'f/member/', 3);
    const id = leaseIdWithHome(router, down, 51_000n, true);
    assert.notEqual(homeOfLease(router, id), down);
    const w = await track(new WatchRecorder(client, { key: Buffer.from('f/member/'), prefix: true, prevKv: true })).ready();
    await client.leaseGrant({ ID: id, TTL: 2n });
    const putRevs = await putAll(client, keys, id);

    await set.members[down]!.stop();
    try {
      const healthy = keys.filter((k) => router.memberOf(k) !== down);
      await waitFor(
        'the keys on the running members to be deleted',
        async () => {
          for (const k of healthy) if ((await client.range({ key: k })).kvs.length > 0) return false;
          return true;
        },
        15_000,
        200,
      );
      await sleep(1500); // the deletions on the stopped member fail meanwhile (and are retried)
    } finally {
      await set.members[down]!.restart();
    }
    await waitFor('no key of the lease to remain', async () => (await countUnder(client, 'f/member/')) === 0, 20_000, 200);
    await w.waitForEvents('a DELETE for every key', () => w.deletesOf(keys.map(String)).length >= keys.length, 20_000);
    await sleep(500); // duplicates would arrive now
    assertEachDeletedOnce(w, keys, id, putRevs);
    assert.equal((await client.leaseTimeToLive({ ID: id })).TTL, -1n);
    assert.deepEqual(unhandled.map(String), [], 'no unhandled promise rejection in the proxy while the member was down');
  });
});

test('the lease’s home member stopped across its deadline: after it restarts the lease still ends and every key goes, each DELETE seen once', BOUND, async () => {
  await withProxy(async (proxy, client, track) => {
    const router = proxy.handle.router;
    const down = 2;
    const keys = keysOnEveryMember(router, 'f/home/', 2);
    const id = leaseIdWithHome(router, down, 52_000n);
    const w = await track(new WatchRecorder(client, { key: Buffer.from('f/home/'), prefix: true, prevKv: true })).ready();
    await client.leaseGrant({ ID: id, TTL: 2n });
    const putRevs = await putAll(client, keys, id);
    await set.members[down]!.stop();
    try {
      await sleep(3000); // past the deadline
    } finally {
      await set.members[down]!.restart();
    }
    // etcd extends leases when a lessor starts (as on a leader change): the lease ends one TTL or so later.
    await waitFor('no key of the lease to remain', async () => (await countUnder(client, 'f/home/')) === 0, 20_000, 200);
    await w.waitForEvents('a DELETE for every key', () => w.deletesOf(keys.map(String)).length >= keys.length, 20_000);
    await sleep(500);
    assertEachDeletedOnce(w, keys, id, putRevs);
  });
});

test('the proxy stopped while a lease expires and a new one started: the lease’s keys on every member are still deleted, each DELETE seen once', BOUND, async () => {
  const first = await startTestProxy(set);
  const c1 = clientFor(first.url, 'proxy-1');
  const router = first.handle.router;
  const keys = keysOnEveryMember(router, 'f/proxy/', 3);
  let putRevs: Map<string, bigint>;
  let id: bigint;
  try {
    id = (await c1.leaseGrant({ TTL: 2n })).ID;
    putRevs = await putAll(c1, keys, id);
  } finally {
    c1.close();
    await first.stop();
  }
  await sleep(3500); // the lease ends while no proxy runs
  await withProxy(async (_proxy, client, track) => {
    const from = [...putRevs.values()].reduce((a, b) => (a > b ? a : b)) + 1n;
    const w = await track(new WatchRecorder(client, { key: Buffer.from('f/proxy/'), prefix: true, prevKv: true, startRevision: from })).ready();
    await waitFor('no key of the lease to remain', async () => (await countUnder(client, 'f/proxy/')) === 0, 15_000, 200);
    await w.waitForEvents('a DELETE for every key', () => w.deletesOf(keys.map(String)).length >= keys.length, 15_000);
    await sleep(500);
    assertEachDeletedOnce(w, keys, id, putRevs);
  });
});

test('a lease granted through a proxy that then stops keeps working through a new proxy: TimeToLive lists its keys on every member, expiry deletes them', BOUND, async () => {
  const first = await startTestProxy(set);
  const c1 = clientFor(first.url, 'proxy-1');
  const router = first.handle.router;
  const keys = keysOnEveryMember(router, 'f/handover/', 2);
  let id: bigint;
  try {
    id = (await c1.leaseGrant({ TTL: 3n })).ID;
    await putAll(c1, keys, id);
  } finally {
    c1.close();
    await first.stop();
  }
  await withProxy(async (_proxy, client) => {
    const t = await client.leaseTimeToLive({ ID: id, keys: true });
    assert.equal(t.grantedTTL, 3n);
    assert.deepEqual(t.keys.map(String).sort(), keys.map(String).sort());
    await waitFor('the keys to expire', async () => (await countUnder(client, 'f/handover/')) === 0, 15_000, 200);
  });
});

test('a real proxy process survives a lease ending while one member is down (and deletes the keys once the member is back)', BOUND, async () => {
  // The proxy as deployed: the CLI in its own process, where an unhandled promise rejection is fatal.
  const probe = await startTestProxy(set);
  const router = probe.handle.router;
  await probe.stop();
  const down = 0;
  const keys = keysOnEveryMember(router, 'f/process/', 2);
  const id = leaseIdWithHome(router, down, 53_000n, true);
  const port = await freePort();
  const root = resolve(import.meta.dirname, '../..');
  const args = ['--listen-addr', `127.0.0.1:${port}`, '--coordinator', set.coordinator.clientUrl, '--members', set.members.map((m) => m.clientUrl).join(','), '--metrics-port', '0', '--workers', '1'];
  const script = `import('./src/cli.ts').then((m) => m.main(process.argv.slice(1))).then((code) => process.exit(code))`;
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', script, '--', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const client = clientFor(`http://127.0.0.1:${port}`, 'proxy-process');
  try {
    await waitFor('the proxy process to serve', async () => (await client.range({ key: Buffer.from('f/process/') }), true), 20_000, 200);
    await client.leaseGrant({ ID: id, TTL: 2n });
    await putAll(client, keys, id);
    await set.members[down]!.stop();
    try {
      await sleep(5000); // the lease ends; the first deletion attempt on the stopped member fails (after --request-timeout)
      assert.equal(child.exitCode, null, `the proxy process exited (code ${child.exitCode}) while a member was down:\n${output.slice(-2000)}`);
    } finally {
      await set.members[down]!.restart();
    }
    await waitFor('no key of the lease to remain', async () => (await countUnder(client, 'f/process/')) === 0, 20_000, 200);
  } finally {
    client.close();
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
    await Promise.race([exited, sleep(5000)]);
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  }
});
