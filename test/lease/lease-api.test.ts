// Differential tests of every Lease RPC: the same calls go to the proxy and to
// a plain etcd 3.4 (the oracle); results, error codes and exact messages must
// match (server-chosen IDs and absolute revisions aside).
//
// etcd facts these rely on (probed on the oracle): the minimum TTL is 2 s with
// default flags (ceil(1.5 × election timeout)); TTLs below it, including 0 and
// negatives, are raised to it; 9e9 is the largest TTL; KeepAlive answers the
// granted TTL (not the remaining time) and TTL 0 for a lease that does not
// exist; TimeToLive answers the remaining time truncated to whole seconds, and
// TTL -1 for a lease that does not exist.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { KeepAliveStream, keysOnEveryMember, leaseIdWithHome, outcome, sleep, waitFor } from './lease-helpers.js';

const NOT_FOUND = { ok: false, code: 5, details: 'etcdserver: requested lease not found' };
const EXISTS = { ok: false, code: 9, details: 'etcdserver: lease already exists' };
const TOO_LARGE = { ok: false, code: 11, details: 'etcdserver: too large lease TTL' };

/** Every test is bounded (node:test fails it after this long). */
const BOUND = { timeout: 30_000 };

let set: EtcdSet;
let proxy: TestProxy;
let p: EtcdClient;
let o: EtcdClient;
const opened: { close(): void }[] = [];

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'lease-api' });
  proxy = await startTestProxy(set);
  p = clientFor(proxy.url, 'proxy');
  o = clientFor(set.oracle!.clientUrl, 'oracle');
});
after(async () => {
  for (const c of opened) c.close();
  p?.close();
  o?.close();
  await proxy?.stop();
  await set?.stop();
});

/** Runs `f` on both sides; returns [oracle, proxy]. */
function both<T>(f: (c: EtcdClient) => Promise<T>): Promise<[T, T]> {
  return Promise.all([f(o), f(p)]);
}

describe('Lease headers', () => {
  // Must run first: it needs a cluster nobody has written to yet.
  test('on a fresh cluster, every Lease reply carries the current revision, 1, as etcd (and as a Range reports)', BOUND, async () => {
    for (const c of [o, p]) {
      const range = await c.range({ key: Buffer.from('api/fresh') });
      const g = await c.leaseGrant({ TTL: 20n });
      const t = await c.leaseTimeToLive({ ID: g.ID });
      const l = await c.leaseLeases();
      const r = await c.leaseRevoke({ ID: g.ID });
      const revs = { range: range.header!.revision, grant: g.header!.revision, timeToLive: t.header!.revision, leases: l.header!.revision, revoke: r.header!.revision };
      assert.deepEqual(revs, { range: 1n, grant: 1n, timeToLive: 1n, leases: 1n, revoke: 1n }, `${c.name}: header revisions on a fresh cluster`);
    }
  });
});

describe('LeaseGrant', () => {
  test('ID 0: the server picks a positive, fresh ID and returns the granted TTL', BOUND, async () => {
    for (const c of [o, p]) {
      const a = await c.leaseGrant({ TTL: 30n });
      const b = await c.leaseGrant({ TTL: 30n });
      assert.ok(a.ID > 0n && b.ID > 0n, `${c.name}: IDs ${a.ID} ${b.ID} should be positive`);
      assert.notEqual(a.ID, b.ID);
      assert.equal(a.TTL, 30n);
      assert.equal(a.error, '');
      assert.ok(a.header && a.header.clusterId !== 0n && a.header.memberId !== 0n, `${c.name}: the reply carries a full header`);
      await c.leaseRevoke({ ID: a.ID });
      await c.leaseRevoke({ ID: b.ID });
    }
  });

  test("TTL below etcd's minimum (−5, 0, 1, 2) is raised to 2 s; 3 and 9e9 are kept; grantedTTL agrees", BOUND, async () => {
    for (const ttl of [-5n, 0n, 1n, 2n, 3n, 9_000_000_000n]) {
      const [go, gp] = await both((c) => c.leaseGrant({ TTL: ttl }));
      assert.equal(gp.TTL, go.TTL, `TTL ${ttl}: proxy granted ${gp.TTL}, etcd ${go.TTL}`);
      assert.equal(go.TTL, ttl < 2n ? 2n : ttl, `etcd's own rounding of ${ttl}`);
      const [to, tp] = await Promise.all([o.leaseTimeToLive({ ID: go.ID }), p.leaseTimeToLive({ ID: gp.ID })]);
      assert.equal(tp.grantedTTL, to.grantedTTL, `grantedTTL for requested ${ttl}`);
      await Promise.all([o.leaseRevoke({ ID: go.ID }), p.leaseRevoke({ ID: gp.ID })]);
    }
  });

  test('TTL above 9e9 fails with OutOfRange "etcdserver: too large lease TTL"', BOUND, async () => {
    const [ro, rp] = await both((c) => outcome(c.leaseGrant({ TTL: 9_000_000_001n })));
    assert.deepEqual(ro, TOO_LARGE);
    assert.deepEqual(rp, ro);
  });

  test('a client-chosen ID (small, above 2^53, negative) is used as given', BOUND, async () => {
    for (const id of [1001n, 9_007_199_254_740_993n, -7n]) {
      const [go, gp] = await both((c) => c.leaseGrant({ ID: id, TTL: 20n }));
      assert.equal(go.ID, id);
      assert.equal(gp.ID, id, `proxy granted ${gp.ID} for requested ${id}`);
      assert.equal(gp.TTL, go.TTL);
      const [to, tp] = await both((c) => c.leaseTimeToLive({ ID: id }));
      assert.equal(tp.ID, to.ID);
      assert.equal(tp.grantedTTL, 20n);
      await both((c) => c.leaseRevoke({ ID: id }));
    }
  });

  test('a duplicate client-chosen ID fails with FailedPrecondition "etcdserver: lease already exists"', BOUND, async () => {
    await both((c) => c.leaseGrant({ ID: 1002n, TTL: 20n }));
    const [ro, rp] = await both((c) => outcome(c.leaseGrant({ ID: 1002n, TTL: 30n })));
    assert.deepEqual(ro, EXISTS);
    assert.deepEqual(rp, ro);
    // The first grant is untouched.
    const [to, tp] = await both((c) => c.leaseTimeToLive({ ID: 1002n }));
    assert.equal(to.grantedTTL, 20n);
    assert.equal(tp.grantedTTL, 20n);
    await both((c) => c.leaseRevoke({ ID: 1002n }));
  });

  test('a grant creates no revision, nor does revoking a lease without keys', BOUND, async () => {
    for (const c of [o, p]) {
      const put = await c.put({ key: Buffer.from('api/rev'), value: Buffer.from('x') });
      const rev = put.header!.revision;
      const g = await c.leaseGrant({ TTL: 20n });
      assert.equal(g.header!.revision, rev, `${c.name}: grant header`);
      const r = await c.leaseRevoke({ ID: g.ID });
      assert.equal(r.header!.revision, rev, `${c.name}: revoke header`);
      const get = await c.range({ key: Buffer.from('api/rev') });
      assert.equal(get.header!.revision, rev, `${c.name}: no revision was consumed`);
    }
  });
});

describe('LeaseRevoke', () => {
  test('an unknown, zero or already revoked ID fails with NotFound "etcdserver: requested lease not found"', BOUND, async () => {
    const [go, gp] = await both((c) => c.leaseGrant({ TTL: 20n }));
    await Promise.all([o.leaseRevoke({ ID: go.ID }), p.leaseRevoke({ ID: gp.ID })]);
    for (const [io, ip] of [
      [4242n, 4242n],
      [0n, 0n],
      [-4242n, -4242n],
      [go.ID, gp.ID],
    ] as const) {
      const [ro, rp] = await Promise.all([outcome(o.leaseRevoke({ ID: io })), outcome(p.leaseRevoke({ ID: ip }))]);
      assert.deepEqual(ro, NOT_FOUND, `etcd revoking ${io}`);
      assert.deepEqual(rp, ro, `proxy revoking ${ip}`);
    }
  });

  test("revoking a lease with keys on every member answers the revision of the keys' deletion", BOUND, async () => {
    const router = proxy.handle.router;
    const keys = keysOnEveryMember(router, 'api/revoke/', 2);
    for (const c of [o, p]) {
      const g = await c.leaseGrant({ TTL: 30n });
      let last = 0n;
      for (const k of keys) last = (await c.put({ key: k, value: Buffer.from('v'), lease: g.ID })).header!.revision;
      const r = await c.leaseRevoke({ ID: g.ID });
      assert.ok(r.header!.revision > last, `${c.name}: revoke header ${r.header!.revision} should be above the puts (${last})`);
      const get = await c.range({ key: Buffer.from('api/revoke/'), rangeEnd: Buffer.from('api/revoke0') });
      assert.equal(get.kvs.length, 0, `${c.name}: keys gone when the revoke returns`);
      assert.equal(get.header!.revision, r.header!.revision, `${c.name}: revoke header is the revision the deletion produced`);
    }
  });
});

describe('LeaseTimeToLive', () => {
  test('TTL is the remaining time (within etcd’s 1 s truncation), grantedTTL the granted TTL', BOUND, async () => {
    const [go, gp] = await both((c) => c.leaseGrant({ TTL: 10n }));
    await sleep(1200);
    const [to, tp] = await Promise.all([o.leaseTimeToLive({ ID: go.ID }), p.leaseTimeToLive({ ID: gp.ID })]);
    assert.equal(to.grantedTTL, 10n);
    assert.equal(tp.grantedTTL, 10n);
    assert.equal(tp.ID, gp.ID);
    assert.ok(to.TTL >= 7n && to.TTL <= 8n, `etcd TTL ${to.TTL}`);
    assert.ok(tp.TTL >= to.TTL - 1n && tp.TTL <= to.TTL + 1n, `proxy TTL ${tp.TTL} vs etcd ${to.TTL}`);
    await Promise.all([o.leaseRevoke({ ID: go.ID }), p.leaseRevoke({ ID: gp.ID })]);
  });

  test('keys:true lists the attached keys from every member; keys:false lists none', BOUND, async () => {
    const keys = keysOnEveryMember(proxy.handle.router, 'api/ttl-keys/', 3);
    assert.equal(new Set(keys.map((k) => proxy.handle.router.memberOf(k))).size, 3, 'keys span all 3 members');
    const [go, gp] = await both((c) => c.leaseGrant({ TTL: 30n }));
    for (const k of keys) {
      await o.put({ key: k, value: Buffer.from('v'), lease: go.ID });
      await p.put({ key: k, value: Buffer.from('v'), lease: gp.ID });
    }
    const [to, tp] = await Promise.all([o.leaseTimeToLive({ ID: go.ID, keys: true }), p.leaseTimeToLive({ ID: gp.ID, keys: true })]);
    const sorted = (ks: Buffer[]) => ks.map((k) => k.toString()).sort();
    assert.deepEqual(sorted(to.keys), sorted(keys));
    assert.deepEqual(sorted(tp.keys), sorted(to.keys));
    const [no, np] = await Promise.all([o.leaseTimeToLive({ ID: go.ID, keys: false }), p.leaseTimeToLive({ ID: gp.ID })]);
    assert.equal(no.keys.length, 0);
    assert.equal(np.keys.length, 0);
    await Promise.all([o.leaseRevoke({ ID: go.ID }), p.leaseRevoke({ ID: gp.ID })]);
  });

  test('an unknown, zero or revoked lease answers TTL -1, grantedTTL 0 and no keys, without an error', BOUND, async () => {
    const [go, gp] = await both((c) => c.leaseGrant({ TTL: 20n }));
    await Promise.all([o.leaseRevoke({ ID: go.ID }), p.leaseRevoke({ ID: gp.ID })]);
    for (const [io, ip] of [
      [4242n, 4242n],
      [0n, 0n],
      [go.ID, gp.ID],
    ] as const) {
      const [to, tp] = await Promise.all([o.leaseTimeToLive({ ID: io, keys: true }), p.leaseTimeToLive({ ID: ip, keys: true })]);
      assert.deepEqual({ ID: to.ID, TTL: to.TTL, grantedTTL: to.grantedTTL, keys: to.keys.length }, { ID: io, TTL: -1n, grantedTTL: 0n, keys: 0 });
      assert.deepEqual({ ID: tp.ID, TTL: tp.TTL, grantedTTL: tp.grantedTTL, keys: tp.keys.length }, { ID: ip, TTL: -1n, grantedTTL: 0n, keys: 0 });
    }
  });
});

describe('LeaseLeases', () => {
  test('lists every live lease (leases of every home member) and no revoked one', BOUND, async () => {
    const router = proxy.handle.router;
    // Client-chosen IDs so both sides list the same IDs, with a lease homed on each member.
    const ids = [0, 1, 2, 0, 1, 2].map((m, i) => leaseIdWithHome(router, m, 77_000n + BigInt(i) * 1000n));
    const [bo, bp] = await both((c) => c.leaseLeases());
    for (const id of ids) await both((c) => c.leaseGrant({ ID: id, TTL: 30n }));
    const revoked = ids.slice(3);
    for (const id of revoked) await both((c) => c.leaseRevoke({ ID: id }));
    const [lo, lp] = await both((c) => c.leaseLeases());
    const listed = (r: typeof lo) => new Set(r.leases.map((l) => l.ID));
    for (const [name, l] of [
      ['etcd', listed(lo)],
      ['proxy', listed(lp)],
    ] as const) {
      for (const id of ids.slice(0, 3)) assert.ok(l.has(id), `${name} lists live lease ${id}`);
      for (const id of revoked) assert.ok(!l.has(id), `${name} does not list revoked lease ${id}`);
    }
    assert.equal(lo.leases.length - bo.leases.length, 3, 'etcd lists 3 more leases than before');
    assert.equal(lp.leases.length - bp.leases.length, 3, 'proxy lists 3 more leases than before');
    for (const id of ids.slice(0, 3)) await both((c) => c.leaseRevoke({ ID: id }));
  });
});

describe('LeaseKeepAlive', () => {
  test('each reply carries the lease ID and its granted TTL, and renews the lease', BOUND, async () => {
    const [go, gp] = await both((c) => c.leaseGrant({ TTL: 3n }));
    const [ko, kp] = [new KeepAliveStream(o), new KeepAliveStream(p)];
    opened.push(ko, kp);
    // Keep both alive for 4.5 s (past the TTL), one keep-alive a second.
    for (let i = 0; i < 5; i++) {
      const [ro, rp] = await Promise.all([ko.ask(go.ID), kp.ask(gp.ID)]);
      assert.deepEqual({ ID: ro.ID, TTL: ro.TTL }, { ID: go.ID, TTL: 3n });
      assert.deepEqual({ ID: rp.ID, TTL: rp.TTL }, { ID: gp.ID, TTL: 3n }, `proxy keep-alive #${i}`);
      assert.ok(rp.header && rp.header.revision > 0n, 'the reply carries a header');
      await sleep(900);
    }
    const [to, tp] = await Promise.all([o.leaseTimeToLive({ ID: go.ID }), p.leaseTimeToLive({ ID: gp.ID })]);
    assert.ok(to.TTL >= 1n, `etcd: still alive after keep-alives (TTL ${to.TTL})`);
    assert.ok(tp.TTL >= 1n, `proxy: still alive after keep-alives (TTL ${tp.TTL})`);
    ko.close();
    kp.close();
    await Promise.all([o.leaseRevoke({ ID: go.ID }), p.leaseRevoke({ ID: gp.ID })]);
  });

  test('an unknown, zero, revoked or expired lease replies TTL 0 (no error) and the stream goes on', BOUND, async () => {
    const [ro1, rp1] = await both((c) => c.leaseGrant({ TTL: 20n }));
    const [eo, ep] = await both((c) => c.leaseGrant({ TTL: 2n })); // left to expire
    await Promise.all([o.leaseRevoke({ ID: ro1.ID }), p.leaseRevoke({ ID: rp1.ID })]);
    const [ko, kp] = [new KeepAliveStream(o), new KeepAliveStream(p)];
    opened.push(ko, kp);
    for (const [io, ip] of [
      [4242n, 4242n],
      [0n, 0n],
      [ro1.ID, rp1.ID],
    ] as const) {
      const [ro, rp] = await Promise.all([ko.ask(io), kp.ask(ip)]);
      assert.deepEqual({ ID: ro.ID, TTL: ro.TTL }, { ID: io, TTL: 0n });
      assert.deepEqual({ ID: rp.ID, TTL: rp.TTL }, { ID: ip, TTL: 0n }, `proxy keep-alive of ${ip}`);
    }
    // Wait until both sides have revoked the 2 s lease.
    await waitFor('the 2 s leases to expire', async () => (await o.leaseTimeToLive({ ID: eo.ID })).TTL === -1n && (await p.leaseTimeToLive({ ID: ep.ID })).TTL === -1n, 8000);
    const [ro, rp] = await Promise.all([ko.ask(eo.ID), kp.ask(ep.ID)]);
    assert.equal(ro.TTL, 0n);
    assert.equal(rp.TTL, 0n, 'proxy keep-alive of an expired lease');
    // The stream is still usable.
    const [lo, lp] = await both((c) => c.leaseGrant({ TTL: 5n }));
    const [ao, ap] = await Promise.all([ko.ask(lo.ID), kp.ask(lp.ID)]);
    assert.equal(ao.TTL, 5n);
    assert.equal(ap.TTL, 5n);
    assert.equal(ko.error, undefined);
    assert.equal(kp.error, undefined, `proxy stream error: ${kp.error?.message}`);
    ko.close();
    kp.close();
    await Promise.all([o.leaseRevoke({ ID: lo.ID }), p.leaseRevoke({ ID: lp.ID })]);
  });

  test('one reply per request, in request order, for leases of different home members on one stream', BOUND, async () => {
    const router = proxy.handle.router;
    const ids = [0, 1, 2].map((m) => leaseIdWithHome(router, m, 88_000n + BigInt(m) * 1000n));
    for (const id of ids) await both((c) => c.leaseGrant({ ID: id, TTL: 30n }));
    const [ko, kp] = [new KeepAliveStream(o), new KeepAliveStream(p)];
    opened.push(ko, kp);
    const sent: bigint[] = [];
    for (let i = 0; i < 30; i++) sent.push(ids[i % 3]!);
    for (const id of sent) {
      ko.send(id);
      kp.send(id);
    }
    await waitFor('30 keep-alive replies on both sides', () => ko.replies.length >= 30 && kp.replies.length >= 30, 10_000, 20);
    assert.deepEqual(
      ko.replies.map((r) => r.ID),
      sent,
      'etcd answers in request order',
    );
    assert.deepEqual(
      kp.replies.map((r) => r.ID),
      sent,
      'proxy answers in request order',
    );
    ko.close();
    kp.close();
    for (const id of ids) await both((c) => c.leaseRevoke({ ID: id }));
  });
});

describe('Put with a lease (differential)', () => {
  test('Put with an unknown lease fails with NotFound "etcdserver: requested lease not found"', BOUND, async () => {
    const [ro, rp] = await both((c) => outcome(c.put({ key: Buffer.from('api/unknown-lease'), value: Buffer.from('v'), lease: 4243n })));
    assert.deepEqual(ro, NOT_FOUND);
    assert.deepEqual(rp, ro);
    const [go, gp] = await both((c) => c.range({ key: Buffer.from('api/unknown-lease') }));
    assert.equal(go.kvs.length, 0);
    assert.equal(gp.kvs.length, 0, 'nothing was written');
  });

  test('a lease revoked through another proxy can no longer be used through this one: Put fails with NotFound', BOUND, async () => {
    const other = await startTestProxy(set);
    const q = clientFor(other.url, 'proxy-2');
    try {
      const g = await p.leaseGrant({ TTL: 30n });
      await p.put({ key: Buffer.from('api/revoked-elsewhere/1'), value: Buffer.from('v'), lease: g.ID });
      await q.leaseRevoke({ ID: g.ID });
      const r = await outcome(p.put({ key: Buffer.from('api/revoked-elsewhere/2'), value: Buffer.from('v'), lease: g.ID }));
      assert.deepEqual(r, NOT_FOUND);
      const left = await p.range({ key: Buffer.from('api/revoked-elsewhere/'), rangeEnd: Buffer.from('api/revoked-elsewhere0') });
      assert.equal(left.kvs.length, 0);
    } finally {
      q.close();
      await other.stop();
    }
  });

  /**
   * Grants a 3 s lease through `grantVia`, waits until `putVia` reports it in its last
   * second (TimeToLive 0: less than a second left, as etcd rounds down) and puts a key with
   * it at once. Returns the put's outcome; a put that arrived after the lease ended (a slow
   * moment on a loaded machine: TimeToLive then says -1) is tried again with a new lease,
   * so only a refusal of a lease that still exists fails the test.
   */
  async function putInLastSecond(grantVia: EtcdClient, putVia: EtcdClient, key: string): Promise<{ ok: boolean }> {
    for (let attempt = 1; ; attempt++) {
      const g = await grantVia.leaseGrant({ TTL: 3n });
      await waitFor('the lease to be in its last second', async () => (await putVia.leaseTimeToLive({ ID: g.ID })).TTL <= 0n, 10_000, 20);
      const r = await outcome(putVia.put({ key: Buffer.from(key), value: Buffer.from('v'), lease: g.ID }));
      if (r.ok) return r;
      const ttl = (await putVia.leaseTimeToLive({ ID: g.ID })).TTL;
      if (ttl !== -1n || attempt === 3) assert.fail(`attempt ${attempt}: the put was refused (${JSON.stringify(r)}) while TimeToLive says ${ttl}`);
    }
  }

  test('Put with a lease that is alive but in its last second succeeds, as in etcd (same proxy)', BOUND, async () => {
    assert.deepEqual(await putInLastSecond(o, o, 'api/last-second'), { ok: true }, 'etcd accepts the put');
    assert.deepEqual(await putInLastSecond(p, p, 'api/last-second'), { ok: true }, 'proxy must accept a put with a lease that still exists');
  });

  test('Put with a lease that is alive but in its last second succeeds, as in etcd (lease granted through another proxy)', BOUND, async () => {
    const other = await startTestProxy(set);
    const q = clientFor(other.url, 'proxy-2');
    try {
      assert.deepEqual(await putInLastSecond(o, o, 'api/last-second-2'), { ok: true }, 'etcd accepts the put');
      // Granted through p, used through q: q knows the lease only by asking its home member.
      assert.deepEqual(await putInLastSecond(p, q, 'api/last-second-2'), { ok: true }, 'proxy must accept a put with a lease that still exists');
    } finally {
      q.close();
      await other.stop();
    }
  });
});
