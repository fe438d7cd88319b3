// The `etcd3` npm client (1.1.2) through the proxy: its Lease (grant,
// keep-alive, revoke, the 'lost' event), Lock and Election helpers. Every
// scenario runs against the oracle etcd too, so a failure through the proxy is
// the proxy's and not the script's. These helpers send single-key
// transactions only (compare and put on the same key), so no cross-member
// transaction caveat applies. (etcdctl's lock, Go's concurrency.Mutex, also reads
// the waiters over every member after its put: see test/e2e/etcdctl.test.ts.)

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Etcd3, EtcdLeaseInvalidError, EtcdLockFailedError } from 'etcd3';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { within } from '../harness/watch-checker.js';
import { countUnder, keysOnEveryMember, outcome, sleep, waitFor } from './lease-helpers.js';

/** Every test is bounded (node:test fails it after this long). */
const BOUND = { timeout: 30_000 };

let set: EtcdSet;
let proxy: TestProxy;
interface Side {
  name: string;
  url: string;
  etcd3: Etcd3;
  raw: EtcdClient;
}
let sides: Side[] = [];

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'lease-etcd3' });
  proxy = await startTestProxy(set);
  sides = [
    { name: 'etcd', url: set.oracle!.clientUrl },
    { name: 'proxy', url: proxy.url },
  ].map((s) => ({ ...s, etcd3: new Etcd3({ hosts: s.url, dialTimeout: 5000 }), raw: clientFor(s.url, s.name) }));
});
after(async () => {
  for (const s of sides) {
    s.etcd3.close();
    s.raw.close();
  }
  await proxy?.stop();
  await set?.stop();
});

/** Lock leases: short, so that nothing the etcd3 client leaves scheduled outlives the file by much (its default is 30 s). */
const LOCK_TTL = 5;

/** Resolves when `emitter` emits `event` (bounded). */
function once<T>(emitter: { once(event: string, fn: (v: T) => void): unknown }, event: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' within ${timeoutMs} ms`)), timeoutMs);
    emitter.once(event, (v: T) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

describe('etcd3 Lease', () => {
  test('grant, put on every member through the lease, keep-alive past the TTL, revoke deletes the keys', BOUND, async () => {
    const keys = keysOnEveryMember(proxy.handle.router, 'c/lease/', 2).map(String);
    await Promise.all(
      sides.map(async (s) => {
        const lease = s.etcd3.lease(2);
        const lost: unknown[] = [];
        lease.on('lost', (e) => lost.push(e));
        let keepalives = 0;
        lease.on('keepaliveSucceeded', () => keepalives++);
        const id = await lease.grant();
        for (const k of keys) await lease.put(k).value('v');
        const ttl = await s.raw.leaseTimeToLive({ ID: BigInt(id), keys: true });
        assert.deepEqual(ttl.keys.map(String).sort(), [...keys].sort(), `${s.name}: TimeToLive lists the keys`);
        await sleep(3500);
        assert.ok(keepalives >= 3, `${s.name}: ${keepalives} keep-alives succeeded`);
        assert.equal(await countUnder(s.raw, 'c/lease/'), keys.length, `${s.name}: keys alive past the 2 s TTL`);
        assert.deepEqual(lost, [], `${s.name}: no 'lost'`);
        await lease.revoke();
        assert.equal(await countUnder(s.raw, 'c/lease/'), 0, `${s.name}: revoke deleted the keys`);
        assert.equal((await s.raw.leaseTimeToLive({ ID: BigInt(id) })).TTL, -1n);
      }),
    );
  });

  test("emits 'lost' (EtcdLeaseInvalidError) when the lease is revoked behind its back, and its keys are gone", BOUND, async () => {
    await Promise.all(
      sides.map(async (s) => {
        const lease = s.etcd3.lease(3);
        const id = await lease.grant();
        await lease.put('c/lost/a').value('v');
        await lease.put('c/lost/b').value('v');
        const lost = once<Error>(lease, 'lost', 8000);
        await s.raw.leaseRevoke({ ID: BigInt(id) });
        const err = await lost;
        assert.ok(err instanceof EtcdLeaseInvalidError, `${s.name}: 'lost' with ${err?.constructor?.name}: ${err?.message}`);
        assert.ok(lease.revoked());
        assert.equal(await countUnder(s.raw, 'c/lost/'), 0);
      }),
    );
  });

  test("keepaliveOnce answers the granted TTL; on an expired lease it rejects with EtcdLeaseInvalidError and emits 'lost'", BOUND, async () => {
    await Promise.all(
      sides.map(async (s) => {
        const lease = s.etcd3.lease(2, { autoKeepAlive: false });
        await lease.grant();
        const r = await lease.keepaliveOnce();
        assert.equal(String(r.TTL), '2', `${s.name}: keepaliveOnce TTL`);
        const lost = once<Error>(lease, 'lost', 10_000);
        await sleep(3000);
        const again = await outcome(lease.keepaliveOnce());
        assert.equal(again.ok, false, `${s.name}: keepaliveOnce of an expired lease fails`);
        assert.ok((await lost) instanceof EtcdLeaseInvalidError);
      }),
    );
  });
});

describe('etcd3 Lock', () => {
  test('a held lock makes a second acquire fail with EtcdLockFailedError until it is released', BOUND, async () => {
    await Promise.all(
      sides.map(async (s) => {
        const a = s.etcd3.lock('c/lock/one').ttl(LOCK_TTL);
        await a.acquire();
        const b = s.etcd3.lock('c/lock/one').ttl(LOCK_TTL);
        await assert.rejects(b.acquire(), EtcdLockFailedError, `${s.name}: second acquire fails`);
        const held = await s.raw.range({ key: Buffer.from('c/lock/one') });
        assert.equal(held.kvs.length, 1);
        assert.equal(String(held.kvs[0]!.lease), String(await a.leaseId()), `${s.name}: the lock key lives on the holder's lease`);
        await a.release();
        assert.equal((await s.raw.range({ key: Buffer.from('c/lock/one') })).kvs.length, 0, `${s.name}: release deleted the lock key`);
        const c = s.etcd3.lock('c/lock/one').ttl(LOCK_TTL);
        await c.acquire();
        await c.release();
      }),
    );
  });

  test('locks on keys of different members are independent; do() runs the body under the lock and releases it', BOUND, async () => {
    const keys = keysOnEveryMember(proxy.handle.router, 'c/lock/many/', 1).map(String);
    await Promise.all(
      sides.map(async (s) => {
        const held = await Promise.all(keys.map((k) => s.etcd3.lock(k).ttl(LOCK_TTL).acquire()));
        for (const k of keys) await assert.rejects(s.etcd3.lock(k).ttl(LOCK_TTL).acquire(), EtcdLockFailedError, `${s.name}: ${k} is held`);
        await Promise.all(held.map((l) => l.release()));
        const seen = await s.etcd3.lock(keys[0]!).ttl(LOCK_TTL).do(async () => (await s.raw.range({ key: Buffer.from(keys[0]!) })).kvs.length);
        assert.equal(seen, 1, `${s.name}: the lock key exists inside do()`);
        assert.equal(await countUnder(s.raw, 'c/lock/many/'), 0, `${s.name}: everything released`);
      }),
    );
  });

  test('a lock whose lease expires (holder gone) can be taken by another client', BOUND, async () => {
    await Promise.all(
      sides.map(async (s) => {
        const a = s.etcd3.lock('c/lock/expire').ttl(2);
        await a.acquire();
        // The holder disappears without releasing: stop its keep-alives.
        const id = BigInt((await a.leaseId())!);
        (a as unknown as { lease: { release(): void } }).lease.release();
        await waitFor(`${s.name}: the lock's lease to expire`, async () => (await s.raw.leaseTimeToLive({ ID: id })).TTL === -1n, 10_000);
        const b = s.etcd3.lock('c/lock/expire').ttl(LOCK_TTL);
        await b.acquire();
        await b.release();
      }),
    );
  });
});

describe('etcd3 Election', () => {
  test('campaign elects the first candidate; observe() reports the leader and the change when it resigns', BOUND, async () => {
    await Promise.all(
      sides.map(async (s) => {
        const election = s.etcd3.election(`c-election-${s.name}`, 5);
        const first = election.campaign('alpha');
        await within(10_000, `${s.name}: first candidate elected`, first.wait());
        const observer = await within(10_000, `${s.name}: observe()`, election.observe());
        try {
          assert.equal(observer.leader(), 'alpha', `${s.name}: observed leader`);
          assert.equal(await election.leader(), 'alpha');
          const second = election.campaign('beta');
          let secondElected = false;
          second.on('elected', () => (secondElected = true));
          await within(10_000, `${s.name}: beta waiting`, once(second, '_isWaiting', 10_000));
          await sleep(500);
          assert.equal(secondElected, false, `${s.name}: beta waits while alpha leads`);
          const changed = once<string | undefined>(observer, 'change', 10_000);
          await within(10_000, `${s.name}: first resigns`, first.resign());
          await within(10_000, `${s.name}: second candidate elected`, second.wait());
          assert.equal(await changed, 'beta', `${s.name}: observer saw the new leader`);
          assert.equal(await election.leader(), 'beta');
          await within(10_000, `${s.name}: proclaim`, second.proclaim('beta-2'));
          await waitFor(`${s.name}: the proclaimed value`, async () => observer.leader() === 'beta-2', 5000);
          await within(10_000, `${s.name}: second resigns`, second.resign());
          await waitFor(`${s.name}: no leader after both resign`, async () => (await election.leader()) === undefined, 5000);
        } finally {
          await within(10_000, `${s.name}: observer.cancel()`, observer.cancel());
        }
      }),
    );
  });

  test("a leader whose lease is revoked behind its back is replaced: its campaign errors and the next candidate is elected", BOUND, async () => {
    await Promise.all(
      sides.map(async (s) => {
        const election = s.etcd3.election(`c-election-revoke-${s.name}`, 5);
        const first = election.campaign('one');
        const errors: Error[] = [];
        first.on('error', (e) => errors.push(e));
        await within(10_000, `${s.name}: first candidate elected`, first.wait());
        const second = election.campaign('two');
        second.on('error', () => undefined);
        // Revoke only once the second candidate watches the leader's key: etcd3 1.1.2 attaches its
        // 'delete' listener after the watch is created, so a delete replayed right at creation is
        // lost by the client itself (seen against plain etcd too).
        await within(10_000, `${s.name}: second candidate waiting`, once(second, '_isWaiting', 10_000));
        await sleep(500);
        const key = await first.getCampaignKey();
        const kv = await s.raw.range({ key: Buffer.from(key) });
        assert.equal(kv.kvs.length, 1, `${s.name}: the campaign key exists`);
        await s.raw.leaseRevoke({ ID: kv.kvs[0]!.lease });
        await within(10_000, `${s.name}: second candidate elected`, second.wait());
        assert.equal(await election.leader(), 'two', `${s.name}: the next candidate leads`);
        await waitFor(`${s.name}: the first campaign to report an error`, () => errors.length > 0, 8000);
        await within(10_000, `${s.name}: second resigns`, second.resign());
      }),
    );
  });
});
