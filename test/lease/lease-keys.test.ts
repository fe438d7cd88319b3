// Keys attached to leases, across member clusters: attaching (Put with a
// lease, ignore_lease, detaching and moving), and what expiry, keep-alive and
// revoke do to them, as seen by reads and by watches. Where etcd's behaviour is
// the rule, the same scenario also runs on the oracle etcd.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import {
  KeepAliveStream,
  countUnder,
  keysOnEveryMember,
  leasesUnder,
  outcome,
  sleep,
  waitFor,
  WatchRecorder,
  type SeenEvent,
} from './lease-helpers.js';

const NOT_FOUND = { ok: false, code: 5, details: 'etcdserver: requested lease not found' };
/** Expiry of a 2 s lease: etcd revokes within 0.5 s of the deadline; allow generous slack on a loaded machine. */
const EXPIRY_WAIT_MS = 10_000;

/** Every test is bounded (node:test fails it after this long). */
const BOUND = { timeout: 40_000 };

let set: EtcdSet;
let proxy: TestProxy;
let p: EtcdClient;
let o: EtcdClient;
const opened: { close(): void }[] = [];

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'lease-keys' });
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

const v = (s: string) => Buffer.from(s);
const keysFor = (prefix: string, perMember = 2) => keysOnEveryMember(proxy.handle.router, prefix, perMember);
const membersOf = (keys: Buffer[]) => new Set(keys.map((k) => proxy.handle.router.memberOf(k)));

function watch(c: EtcdClient, prefix: string, startRevision = 0n): Promise<WatchRecorder> {
  const w = new WatchRecorder(c, { key: v(prefix), prefix: true, prevKv: true, startRevision });
  opened.push(w);
  return w.ready();
}

async function putAll(c: EtcdClient, keys: Buffer[], lease: bigint, value = 'v'): Promise<Map<string, bigint>> {
  const revs = new Map<string, bigint>();
  for (const k of keys) revs.set(k.toString(), (await c.put({ key: k, value: v(value), lease })).header!.revision);
  return revs;
}

/** Checks one watch history: strictly increasing revisions across responses, one revision per response. */
function assertOrdered(events: SeenEvent[], what: string): void {
  let last = 0n;
  let lastResponse = -1;
  for (const e of events) {
    if (e.response === lastResponse) {
      assert.equal(e.modRevision, last, `${what}: events of one response share a revision (${e.key})`);
    } else {
      assert.ok(e.modRevision > last, `${what}: revision ${e.modRevision} (${e.type} ${e.key}) after ${last} must increase`);
      last = e.modRevision;
      lastResponse = e.response;
    }
  }
}

describe('attaching keys to a lease', () => {
  test('Put with a lease works on keys of every member and the lease reads back in kv.lease', BOUND, async () => {
    const keys = keysFor('att/put/');
    assert.equal(membersOf(keys).size, 3);
    const g = await p.leaseGrant({ TTL: 30n });
    await putAll(p, keys, g.ID);
    const got = await leasesUnder(p, 'att/put/');
    assert.deepEqual([...got.keys()].sort(), keys.map(String).sort());
    for (const [k, lease] of got) assert.equal(lease, g.ID, `lease of ${k}`);
    for (const k of keys) {
      const r = await p.range({ key: k });
      assert.equal(r.kvs[0]?.lease, g.ID, `single-key read of ${k}`);
    }
    await p.leaseRevoke({ ID: g.ID });
  });

  test('Put (and Txn put) with an unknown lease fails with NotFound "etcdserver: requested lease not found" on every member, writing nothing', BOUND, async () => {
    const keys = keysFor('att/unknown/', 1);
    for (const k of keys) {
      const [ro, rp] = await Promise.all([o, p].map((c) => outcome(c.put({ key: k, value: v('x'), lease: 987_654n }))));
      assert.deepEqual(ro, NOT_FOUND);
      assert.deepEqual(rp, ro, `proxy put of ${k} (member ${proxy.handle.router.memberOf(k)})`);
      const txn = { success: [{ request: { $case: 'requestPut' as const, value: { key: k, value: v('x'), lease: 987_654n } } }] };
      const [to, tp] = await Promise.all([o, p].map((c) => outcome(c.txnPartial(txn))));
      assert.deepEqual(to, NOT_FOUND);
      assert.deepEqual(tp, to, `proxy txn put of ${k}`);
    }
    assert.equal(await countUnder(p, 'att/unknown/'), 0);
    assert.equal(await countUnder(o, 'att/unknown/'), 0);
  });

  test('ignore_lease keeps the key’s lease (the key still expires with it); with a lease it fails "etcdserver: lease is provided"', BOUND, async () => {
    const keys = keysFor('att/ignore/', 1);
    const [go, gp] = await Promise.all([o.leaseGrant({ TTL: 2n }), p.leaseGrant({ TTL: 2n })]);
    await putAll(o, keys, go.ID);
    await putAll(p, keys, gp.ID);
    for (const k of keys) {
      await o.put({ key: k, value: v('new'), ignoreLease: true });
      await p.put({ key: k, value: v('new'), ignoreLease: true });
      const [ro, rp] = await Promise.all([o, p].map((c) => outcome(c.put({ key: k, value: v('x'), ignoreLease: true, lease: 5n }))));
      assert.deepEqual(ro, { ok: false, code: 3, details: 'etcdserver: lease is provided' });
      assert.deepEqual(rp, ro);
    }
    const got = await leasesUnder(p, 'att/ignore/');
    for (const k of keys) assert.equal(got.get(k.toString()), gp.ID, `lease of ${k} after an ignore_lease put`);
    const ttl = await p.leaseTimeToLive({ ID: gp.ID, keys: true });
    assert.deepEqual(ttl.keys.map(String).sort(), keys.map(String).sort());
    await waitFor('the keys to expire with the lease on both sides', async () => (await countUnder(p, 'att/ignore/')) === 0 && (await countUnder(o, 'att/ignore/')) === 0, EXPIRY_WAIT_MS);
  });

  test('expiry deletes only keys still attached: a key re-put without the lease, moved to another lease, or deleted and re-created survives', BOUND, async () => {
    const r = proxy.handle.router;
    const detached = keysOnEveryMember(r, 'att/only/detached/', 1);
    const moved = keysOnEveryMember(r, 'att/only/moved/', 1);
    const recreated = keysOnEveryMember(r, 'att/only/recreated/', 1);
    const kept = keysOnEveryMember(r, 'att/only/kept/', 1);
    const results = new Map<string, Map<string, bigint>>();
    for (const c of [o, p]) {
      const short = await c.leaseGrant({ TTL: 2n });
      const long = await c.leaseGrant({ TTL: 60n });
      await putAll(c, [...detached, ...moved, ...recreated, ...kept], short.ID);
      for (const k of detached) await c.put({ key: k, value: v('plain') });
      for (const k of moved) await c.put({ key: k, value: v('moved'), lease: long.ID });
      for (const k of recreated) {
        await c.deleteRange({ key: k });
        await c.put({ key: k, value: v('again') });
      }
      const t = await c.leaseTimeToLive({ ID: short.ID, keys: true });
      assert.deepEqual(t.keys.map(String).sort(), kept.map(String).sort(), `${c.name}: the short lease lists only the keys still attached`);
      const tl = await c.leaseTimeToLive({ ID: long.ID, keys: true });
      assert.deepEqual(tl.keys.map(String).sort(), moved.map(String).sort(), `${c.name}: the long lease lists the moved keys`);
      results.set(c.name, new Map([['long', long.ID]]));
    }
    await waitFor('the short leases to expire on both sides', async () => (await countUnder(o, 'att/only/kept/')) === 0 && (await countUnder(p, 'att/only/kept/')) === 0, EXPIRY_WAIT_MS);
    await sleep(600); // let any (wrong) deletions of other keys land
    for (const c of [o, p]) {
      const got = await leasesUnder(c, 'att/only/');
      const want = new Map<string, bigint>();
      for (const k of detached) want.set(k.toString(), 0n);
      for (const k of moved) want.set(k.toString(), results.get(c.name)!.get('long')!);
      for (const k of recreated) want.set(k.toString(), 0n);
      assert.deepEqual(got, want, `${c.name}: keys left after the expiry, with their leases`);
      await c.leaseRevoke({ ID: results.get(c.name)!.get('long')! });
      assert.equal(await countUnder(c, 'att/only/moved/'), 0, `${c.name}: revoking the new lease deletes the moved keys`);
    }
  });
});

describe('expiry', () => {
  test('expiry deletes every attached key on every member; a prev_kv watch sees exactly one DELETE per key, with prev_kv, above the puts; reads agree', BOUND, async () => {
    const keys = keysFor('exp/all/', 3);
    const names = keys.map(String);
    const seen = new Map<string, SeenEvent[]>();
    for (const c of [o, p]) {
      const w = await watch(c, 'exp/all/');
      const g = await c.leaseGrant({ TTL: 2n });
      const putRevs = await putAll(c, keys, g.ID);
      await w.waitForEvents(`${c.name}: one DELETE per key`, (evs) => evs.filter((e) => e.type === 'DELETE').length >= keys.length, EXPIRY_WAIT_MS);
      await sleep(300); // duplicates would show up now
      const deletes = w.deletesOf(names);
      assert.equal(deletes.length, keys.length, `${c.name}: exactly one DELETE per key`);
      assert.deepEqual(deletes.map((e) => e.key).sort(), [...names].sort());
      for (const d of deletes) {
        assert.ok(d.modRevision > putRevs.get(d.key)!, `${c.name}: DELETE ${d.key} at ${d.modRevision} above its put at ${putRevs.get(d.key)}`);
        assert.ok(d.prevKv, `${c.name}: DELETE ${d.key} carries prev_kv`);
        assert.deepEqual(d.prevKv, { value: 'v', lease: g.ID, modRevision: putRevs.get(d.key)! }, `${c.name}: prev_kv of ${d.key}`);
        // Reads agree with the watch: present just before the delete, absent at it.
        const before = await c.range({ key: v(d.key), revision: d.modRevision - 1n });
        const at = await c.range({ key: v(d.key), revision: d.modRevision });
        assert.equal(before.kvs.length, 1, `${c.name}: ${d.key} present at ${d.modRevision - 1n}`);
        assert.equal(before.kvs[0]!.lease, g.ID);
        assert.equal(at.kvs.length, 0, `${c.name}: ${d.key} absent at ${d.modRevision}`);
      }
      assertOrdered(w.events, c.name);
      assert.equal(await countUnder(c, 'exp/all/'), 0, `${c.name}: no key left`);
      assert.equal((await c.leaseTimeToLive({ ID: g.ID })).TTL, -1n, `${c.name}: the lease is gone`);
      seen.set(c.name, deletes);
      w.close();
    }
  });

  test('a member deletes all the keys of one lease it holds at one revision, in one watch response, in key order', BOUND, async () => {
    // etcd deletes all keys of a lease at one revision. The proxy deletes per member (see the
    // lease manager); within one member the deletion is still one revision.
    const keys = keysFor('exp/one-rev/', 4);
    const w = await watch(p, 'exp/one-rev/');
    const g = await p.leaseGrant({ TTL: 2n });
    await putAll(p, keys, g.ID);
    await w.waitForEvents('all deletes', (evs) => evs.filter((e) => e.type === 'DELETE').length >= keys.length, EXPIRY_WAIT_MS);
    const byMember = new Map<number, SeenEvent[]>();
    for (const d of w.deletesOf(keys.map(String))) {
      const m = proxy.handle.router.memberOf(v(d.key));
      byMember.set(m, [...(byMember.get(m) ?? []), d]);
    }
    assert.equal(byMember.size, 3);
    for (const [m, ds] of byMember) {
      assert.equal(new Set(ds.map((d) => d.modRevision)).size, 1, `member ${m}: one revision for its ${ds.length} keys`);
      assert.equal(new Set(ds.map((d) => d.response)).size, 1, `member ${m}: one watch response`);
      assert.deepEqual(
        ds.map((d) => d.key),
        ds.map((d) => d.key).sort(),
        `member ${m}: deletes in key order`,
      );
    }
    w.close();
  });

  test('expiry deletes are strictly ordered with concurrent writes on every member, and a replay of the watch matches the final read', BOUND, async () => {
    const leased = keysFor('exp/ord/l/', 3);
    const base = (await p.put({ key: v('exp/ord/base'), value: v('b') })).header!.revision;
    const w = await watch(p, 'exp/ord/', base + 1n);
    const g = await p.leaseGrant({ TTL: 2n });
    const leasedRevs = await putAll(p, leased, g.ID);
    const writes: { key: string; rev: bigint }[] = [];
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        const key = `exp/ord/w/${i % 30}`;
        const r = await p.put({ key: v(key), value: v(String(i)) });
        writes.push({ key, rev: r.header!.revision });
        await sleep(15);
      }
    })();
    try {
      await waitFor('every leased key to be deleted', async () => (await countUnder(p, 'exp/ord/l/')) === 0, EXPIRY_WAIT_MS);
      await sleep(300);
    } finally {
      stop = true;
      await writer;
    }
    const last = writes.at(-1)!.rev;
    await w.waitForEvents('the last write', (evs) => evs.some((e) => e.modRevision >= last), 10_000);
    assertOrdered(w.events, 'watch');
    // Every write and every deletion exactly once.
    for (const { key, rev } of writes) {
      assert.equal(w.events.filter((e) => e.modRevision === rev).length, 1, `write ${key}@${rev} seen once`);
    }
    for (const k of leased) {
      const ds = w.deletesOf([k.toString()]);
      assert.equal(ds.length, 1, `one DELETE for ${k}`);
      assert.ok(ds[0]!.modRevision > leasedRevs.get(k.toString())!);
    }
    const putRevs = new Set([...writes.map((x) => x.rev), ...leasedRevs.values()]);
    const deleteRevs = new Set(w.events.filter((e) => e.type === 'DELETE').map((e) => e.modRevision));
    for (const r of deleteRevs) assert.ok(!putRevs.has(r), `deletion revision ${r} is not shared with a put`);
    assert.equal(w.events.length, writes.length + leased.length * 2, 'no other events');
    // Replaying the watch from the base gives the state a read returns at the last revision.
    const state = new Map<string, string>([['exp/ord/base', 'b']]);
    const values = new Map(writes.map((x, i) => [x.rev, String(i)]));
    for (const e of w.events) {
      if (e.type === 'DELETE') state.delete(e.key);
      else state.set(e.key, values.get(e.modRevision) ?? 'v');
    }
    const read = await p.range({ key: v('exp/ord/'), rangeEnd: v('exp/ord0'), revision: last });
    assert.deepEqual(new Map(read.kvs.map((kv) => [kv.key.toString(), kv.value.toString()])), state);
    w.close();
  });

  test('a put racing with the expiry: every key the proxy accepted with the lease is deleted by it', BOUND, async () => {
    const g = await p.leaseGrant({ TTL: 2n });
    const accepted: string[] = [];
    const deadline = Date.now() + EXPIRY_WAIT_MS;
    for (let i = 0; Date.now() < deadline; i++) {
      const key = `exp/race/${i}`;
      const r = await outcome(p.put({ key: v(key), value: v('v'), lease: g.ID }));
      if (!r.ok) {
        assert.deepEqual(r, NOT_FOUND, 'a put after the lease ended fails with NotFound');
        break;
      }
      accepted.push(key);
      await sleep(10);
    }
    assert.ok(accepted.length > 0);
    await waitFor('every accepted key to be deleted', async () => (await countUnder(p, 'exp/race/')) === 0, EXPIRY_WAIT_MS);
  });
});

describe('keep-alive and revoke', () => {
  test('KeepAlive keeps keys on every member alive past the TTL; once it stops they expire', BOUND, async () => {
    const keys = keysFor('ka/', 2);
    const g = await p.leaseGrant({ TTL: 2n });
    await putAll(p, keys, g.ID);
    const ka = new KeepAliveStream(p);
    opened.push(ka);
    const until = Date.now() + 3500;
    while (Date.now() < until) {
      assert.equal((await ka.ask(g.ID)).TTL, 2n);
      await sleep(500);
    }
    assert.equal(await countUnder(p, 'ka/'), keys.length, 'all keys alive 3.5 s into a 2 s lease');
    ka.close();
    await waitFor('the keys to expire after the keep-alives stop', async () => (await countUnder(p, 'ka/')) === 0, EXPIRY_WAIT_MS);
  });

  test('Revoke deletes the keys on every member before it returns; watchers see each DELETE once, at or below the revoke’s revision', BOUND, async () => {
    const keys = keysFor('rv/', 3);
    for (const c of [o, p]) {
      const w = await watch(c, 'rv/');
      const g = await c.leaseGrant({ TTL: 60n });
      const putRevs = await putAll(c, keys, g.ID);
      const r = await c.leaseRevoke({ ID: g.ID });
      const rev = r.header!.revision;
      // Immediately after the call returns, on every member:
      for (const k of keys) assert.equal((await c.range({ key: k })).kvs.length, 0, `${c.name}: ${k} gone`);
      assert.equal(await countUnder(c, 'rv/'), 0, `${c.name}: no key left`);
      await w.waitForEvents(`${c.name}: deletes`, (evs) => evs.filter((e) => e.type === 'DELETE').length >= keys.length, 10_000);
      await sleep(300);
      const ds = w.deletesOf(keys.map(String));
      assert.equal(ds.length, keys.length, `${c.name}: one DELETE per key`);
      for (const d of ds) {
        assert.ok(d.modRevision <= rev, `${c.name}: DELETE ${d.key}@${d.modRevision} at or below the revoke header ${rev}`);
        assert.ok(d.modRevision > putRevs.get(d.key)!);
        assert.equal(d.prevKv?.lease, g.ID);
      }
      assertOrdered(w.events, c.name);
      w.close();
    }
  });

  test('a lease with more keys than one index page (5000 per member read) on one member: TimeToLive lists them all, Revoke deletes them all (as etcd)', { timeout: 120_000 }, async () => {
    const n = 5200;
    // Keys of member 0 only, so that one member's index holds more than a page.
    const keys: Buffer[] = [];
    for (let i = 0; keys.length < n; i++) {
      const k = v(`many/${String(i).padStart(6, '0')}`);
      if (proxy.handle.router.memberOf(k) === 0) keys.push(k);
    }
    for (const c of [o, p]) {
      const g = await c.leaseGrant({ TTL: 120n });
      for (let i = 0; i < n; i += 64) {
        await Promise.all(keys.slice(i, i + 64).map((k) => c.put({ key: k, value: v('x'), lease: g.ID })));
      }
      const ttl = await c.leaseTimeToLive({ ID: g.ID, keys: true });
      assert.equal(ttl.keys.length, n, `${c.name}: TimeToLive lists every key`);
      assert.deepEqual(ttl.keys.map(String).sort(), keys.map(String), `${c.name}: the keys listed are the lease's`);
      await c.leaseRevoke({ ID: g.ID });
      assert.equal(await countUnder(c, 'many/'), 0, `${c.name}: Revoke left no key`);
    }
  });
});
