// Atomic cross-member transactions (issue 15): a transaction whose compares and
// writes reach keys of several member clusters is accepted, commits at one meta
// revision on every member or on none, and answers exactly as a plain etcd does.
//
// Differential (test/harness/differential.ts): every transaction is sent to a
// plain etcd (the oracle) and to proxy A over 3 members, and the full responses
// are compared after mapping revisions. After every write, the keyspace is also
// compared at EVERY proxy revision the write may have used (from the revision
// before it to its header revision): no intermediate state may be visible. A
// watch with prev_kv is open on both sides for each scenario; at the end its
// events are compared one by one and their grouping into responses too (a
// transaction's events arrive in one response at one revision).
//
// Then, without the oracle: a bank-transfer workload (8 accounts spread over the
// 3 members, 4 clients through 2 proxies doing read, compare-MOD, put-put
// transfers) checked at every revision (constant sum, the watch delivering each
// transfer's two puts together), and the `etcd3` npm client's STM (serializable,
// serializable snapshot and repeatable-read isolation) over accounts of several
// members, run concurrently, with the same invariant. The etcd3 scripts run on the
// oracle too, so a failure through the proxy is the proxy's, not the script's.
//
// XTXN_MS sets how long the bank workload runs (default 8000 ms); XTXN_SEED
// repeats its random choices.

import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { Etcd3, type Isolation } from 'etcd3';
import {
  b,
  cmp,
  Differential,
  FROM_KEY,
  ok,
  op,
  prefixEnd,
  Result,
  Target,
  txnReq,
  type Bytes,
} from '../harness/differential.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { describeResponse, eventDesc, identityRev, rng, watchItems, WatchRecorder } from '../harness/watch-checker.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { Event_EventType, type KeyValue } from '../../src/proto/gen/kv.js';
import type { RequestOp, TxnRequest, TxnResponse } from '../../src/proto/gen/rpc.js';

const SEED = Number(process.env.XTXN_SEED ?? Math.floor(Math.random() * 2 ** 31));
const BANK_MS = Number(process.env.XTXN_MS ?? 8000);
const BOUND = { timeout: 60_000 };

let set: EtcdSet;
let A: TestProxy;
let B: TestProxy;
let oracle: EtcdClient;
let a: EtcdClient;
let bc: EtcdClient;
let d: Differential;
const closers: (() => void)[] = [];

before(async () => {
  console.log(`XTXN_SEED=${SEED} XTXN_MS=${BANK_MS}`);
  set = await startEtcdSet({ oracle: true, name: 'xtxn' });
  [A, B] = await Promise.all([startTestProxy(set), startTestProxy(set)]);
  oracle = clientFor(set.oracle!.clientUrl, 'oracle');
  a = clientFor(A.url, 'proxy A');
  bc = clientFor(B.url, 'proxy B');
});
// Each test starts a fresh revision map and compares its own prefix only, so that one failing
// scenario (applied by the oracle, refused by the proxy) does not cascade into the next ones.
beforeEach(async () => {
  d = await Differential.create(oracle, a);
});
after(async () => {
  for (const c of closers) c();
  a?.close();
  bc?.close();
  oracle?.close();
  try {
    await Promise.all([A?.stop(), B?.stop()]);
  } finally {
    await set?.stop();
  }
});

const memberOf = (key: Bytes): number => A.handle.router.memberOf(b(key));

/** `n` keys `${base}${i}` held by member `m`. */
function keysOn(m: number, base: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (memberOf(`${base}${i}`) === m) out.push(`${base}${i}`);
  return out;
}

/** One key per member under `base`: [on member 0, on member 1, on member 2]. */
const onEach = (base: string): [string, string, string] => [keysOn(0, base, 1)[0]!, keysOn(1, base, 1)[0]!, keysOn(2, base, 1)[0]!];

const P = (prefix: Bytes) => ({ key: b(prefix), rangeEnd: prefixEnd(prefix) });

/**
 * The keyspace under `prefix` at every proxy revision from `from` to `to`
 * (inclusive) must be the oracle's at the revision it maps to: a write that
 * used several proxy revisions shows no intermediate state at any of them.
 */
async function everyRevision(prefix: string, from: bigint, to: bigint, label: string): Promise<void> {
  assert.ok(to - from <= 50n, `${label}: the write used ${to - from} proxy revisions`);
  for (let p = from; p <= to; p++) await d.range(P(prefix), { atProxyRevision: p, label: `${label}: ${prefix}* at proxy revision ${p}` });
}

/** A Txn compared with the oracle, then the state under `prefix` at every proxy revision it may have used. */
async function xtxn(prefix: string, req: TxnRequest, label: string): Promise<TxnResponse> {
  const before = d.revs.latest!.proxy;
  const r = ok(await d.txn(req, { label }), label);
  await everyRevision(prefix, before, d.revs.latest!.proxy, label);
  return r;
}

/** A DeleteRange compared with the oracle (and the whole keyspace after), then the state at every proxy revision it may have used. */
async function xdelete(prefix: string, req: Parameters<Differential['deleteRange']>[0], label: string): Promise<void> {
  const before = d.revs.latest!.proxy;
  ok(await d.deleteRange(req, { label }), label);
  await everyRevision(prefix, before, d.revs.latest!.proxy, label);
}

/** LeaseRevoke on both sides (the header pair recorded); the caller compares its prefix afterwards. */
function revoke(id: bigint) {
  return d.run(`LeaseRevoke(${id})`, { ID: id }, () => oracle.leaseRevoke({ ID: id }), () => a.leaseRevoke({ ID: id }));
}

/** A watch with prev_kv over a prefix, on the oracle and on proxy A, started now. */
class PairedWatch {
  readonly o: WatchRecorder;
  readonly p: WatchRecorder;
  constructor(readonly prefix: string) {
    this.o = new WatchRecorder(oracle, `oracle watch ${prefix}`);
    this.p = new WatchRecorder(a, `proxy watch ${prefix}`);
    closers.push(() => this.o.close(), () => this.p.close());
    for (const w of [this.o, this.p]) w.create({ ...P(prefix), prevKv: true, watchId: 1n });
  }

  async ready(): Promise<void> {
    await Promise.all([this.o.untilCreated(1n), this.p.untilCreated(1n)]);
  }

  /**
   * Waits until the proxy delivered as many events as the oracle, then compares
   * them (revisions mapped), their grouping into responses, and that every
   * response carries events of one revision only.
   */
  async compare(label: string): Promise<void> {
    // The oracle's watch is complete once it shows the oracle's latest revision (or nothing after it).
    await this.o.until(() => this.o.events(1n).length > 0, 5000, `${label}: oracle events`);
    await new Promise((r) => setTimeout(r, 200));
    const n = this.o.events(1n).length;
    await this.p.until(() => this.p.events(1n).length >= n, 10_000, `${label}: ${n} events through the proxy`);
    const mapped = (r: bigint): string => (r === 0n ? '0' : String(d.revs.writeAt(r) ?? `proxy:${r}(no write answered with it)`));
    const want = watchItems(this.o, 1n, identityRev);
    const got = watchItems(this.p, 1n, mapped);
    const dump = `\nproxy:\n${this.p.summary()}\noracle:\n${this.o.summary()}`;
    this.o.close();
    this.p.close();
    // First the content of each response whatever the order of its events, then the grouping, then the order.
    const perResponse = (w: WatchRecorder, rev: (r: bigint) => string) =>
      w.forId(1n).map((r) => r.events.map((e) => eventDesc(e, rev)).sort());
    assert.deepEqual(perResponse(this.p, mapped), perResponse(this.o, identityRev), `${label}: the events of each watch response (in any order), proxy (left) vs etcd (right)${dump}`);
    for (const r of this.p.forId(1n)) {
      const revs = new Set(r.events.map((e) => e.kv!.modRevision));
      assert.ok(revs.size <= 1, `${label}: one watch response carries events of several revisions: ${describeResponse(r)}`);
    }
    assert.deepEqual(got, want, `${label}: the events of one revision in operation order (as etcd), proxy (left) vs etcd (right)${dump}`);
  }
}

// ---------------------------------------------------------------------------
describe('differential: cross-member transactions answer as etcd, atomically', () => {
  test('(a) a compare on a key of member X guards puts on keys of members Y and Z: both branches, every combination of members', BOUND, async () => {
    const pfx = 'xa/';
    const [k0, k1, k2] = onEach(pfx);
    const w = new PairedWatch(pfx);
    await w.ready();
    for (const k of [k0, k1, k2]) await d.put({ key: b(k), value: b('1') });
    const keys = [k0, k1, k2];
    for (let x = 0; x < 3; x++) {
      for (const k of keys) await d.put({ key: b(k), value: b('1') });
      const [y, z] = keys.filter((_, i) => i !== x) as [string, string];
      const cx = keys[x]!;
      const branches = (tag: string): [RequestOp[], RequestOp[]] => [
        [op.put(y, `${tag}-then-y`, { prevKv: true }), op.put(z, `${tag}-then-z`)],
        [op.put(y, `${tag}-else-y`), op.put(z, `${tag}-else-z`, { prevKv: true })],
      ];
      const [then1, else1] = branches(`x${x}a`);
      const t1 = await xtxn(pfx, txnReq([cmp(cx, Target.VALUE, Result.EQUAL, '1')], then1, else1), `compare on member ${x} true: puts on the two others`);
      assert.equal(t1.succeeded, true);
      const [then2, else2] = branches(`x${x}b`);
      const t2 = await xtxn(pfx, txnReq([cmp(cx, Target.VALUE, Result.EQUAL, 'nope')], then2, else2), `compare on member ${x} false: the else branch's puts on the two others`);
      assert.equal(t2.succeeded, false);
    }
    // Compares on two members (MOD as read, VERSION), writes on the third and on a compared one.
    const kvs = ok(await d.range(P(pfx))).kvs;
    const mod = (k: string) => kvs.find((kv) => kv.key.toString() === k)!.modRevision;
    await xtxn(pfx, txnReq([cmp(k0, Target.MOD, Result.EQUAL, mod(k0)), cmp(k1, Target.VERSION, Result.GREATER, 1)], [op.put(k2, 'm'), op.put(k0, 'm', { prevKv: true })], [op.range(k0)]), 'MOD and VERSION compares on two members, puts on a compared one and the third');
    await xtxn(pfx, txnReq([cmp(k0, Target.MOD, Result.EQUAL, mod(k0))], [op.put(k1, 'stale')], [op.range(k0), op.range(k1)]), 'a stale MOD compare: the else branch only reads');
    // The create pattern over several members: every key absent, else read them.
    const [n0, n1, n2] = onEach(`${pfx}new/`);
    const create = txnReq(
      [cmp(n0, Target.CREATE, Result.EQUAL, 0), cmp(n1, Target.CREATE, Result.EQUAL, 0), cmp(n2, Target.MOD, Result.EQUAL, 0)],
      [op.put(n0, 'c0'), op.put(n1, 'c1'), op.put(n2, 'c2')],
      [op.range(n0), op.range(n1), op.range(n2)],
    );
    assert.equal((await xtxn(pfx, create, 'create three keys of three members if all absent')).succeeded, true);
    assert.equal((await xtxn(pfx, create, 'the same create again: all present, reads only')).succeeded, false);
    // Reads before every write and after every write of the branch taken are served as etcd serves them.
    await xtxn(
      pfx,
      txnReq([cmp(k2, Target.VALUE, Result.EQUAL, 'm')], [op.range(k0), op.range(k1), op.put(k1, 'r1'), op.put(k2, 'r2'), op.range(pfx, { rangeEnd: prefixEnd(pfx) }), op.range(k1, { countOnly: true })], []),
      'reads of other members before all writes and after all writes',
    );
    await xtxn(pfx, txnReq([], [op.range(pfx, { rangeEnd: prefixEnd(pfx), keysOnly: true }), op.put(k0, 'z0'), op.put(k1, 'z1'), op.put(k2, 'z2')]), 'a read over every member, then puts on every member');
    await w.compare('(a)');
  });

  test('(b) puts and single-key deletes on several members, with prev_kv', BOUND, async () => {
    const pfx = 'xb/';
    const [k0, k1, k2] = onEach(pfx);
    const [j0, j1, j2] = onEach(`${pfx}j/`);
    const w = new PairedWatch(pfx);
    await w.ready();
    for (const [k, v] of [[k0, 'a'], [k1, 'b'], [k2, 'c'], [j0, 'd']] as const) await d.put({ key: b(k), value: b(v) });
    await xtxn(pfx, txnReq([], [op.put(k0, 'a2', { prevKv: true }), op.del(k1, { prevKv: true }), op.put(j2, 'new', { prevKv: true })]), 'put (prev_kv), delete (prev_kv), create, on three members');
    await xtxn(pfx, txnReq([], [op.del(k1, { prevKv: true }), op.del(j1, { prevKv: true }), op.put(k2, 'c2')]), 'deletes of missing keys and a put on another member');
    await xtxn(pfx, txnReq([cmp(k1, Target.VERSION, Result.EQUAL, 0)], [op.del(k0, { prevKv: true }), op.del(k2, { prevKv: true }), op.del(j0)], []), 'only deletes, on three members, guarded by a compare on a deleted key');
    await xtxn(pfx, txnReq([], [op.put(k0, 'x', { prevKv: true }), op.put(k1, 'y', { prevKv: true }), op.put(k2, 'z', { prevKv: true }), op.del(j2, { prevKv: true }), op.range(pfx, { rangeEnd: prefixEnd(pfx) })]), 'recreate on every member, delete, then read it all');
    await xtxn(pfx, txnReq([], [op.put(k0, '', { ignoreValue: true, prevKv: true }), op.put(k1, 'y2', { prevKv: true })]), 'ignore_value on one member, a put on another');
    await w.compare('(b)');
  });

  test('(c) nested transactions whose operations span members', BOUND, async () => {
    const pfx = 'xc/';
    const [k0, k1, k2] = onEach(pfx);
    const [j0, j1, j2] = onEach(`${pfx}j/`);
    const w = new PairedWatch(pfx);
    await w.ready();
    for (const k of [k0, k1, k2]) await d.put({ key: b(k), value: b('0') });
    const nested = (tag: string) =>
      txnReq(
        [cmp(k0, Target.VALUE, Result.EQUAL, '0')],
        [
          op.put(j0, `${tag}-then`),
          op.txn([cmp(k1, Target.VERSION, Result.EQUAL, 1)], [op.put(k2, `${tag}-inner-then`, { prevKv: true }), op.del(k1, { prevKv: true })], [op.put(j1, `${tag}-inner-else`)]),
          op.range(pfx, { rangeEnd: prefixEnd(pfx) }),
        ],
        [op.txn([], [op.put(j2, `${tag}-else-nested`), op.txn([cmp(k2, Target.MOD, Result.GREATER, 0)], [op.put(j1, `${tag}-deep`)], [])]), op.put(j0, `${tag}-else`)],
      );
    assert.equal((await xtxn(pfx, nested('t1'), 'outer then: a put on member 0, a nested txn writing members 1 and 2')).succeeded, true);
    assert.equal((await xtxn(pfx, nested('t2'), 'outer then again: the nested compare now fails, its else writes member 1')).succeeded, true);
    await d.put({ key: b(k0), value: b('changed') });
    assert.equal((await xtxn(pfx, nested('t3'), 'outer else: doubly nested writes on members 1 and 2, then member 0')).succeeded, false);
    await xtxn(pfx, txnReq([], [op.txn([], [op.txn([], [op.put(k0, 'deep0')]), op.put(k1, 'mid1')]), op.txn([], [op.put(k2, 'side2')])]), 'three levels, one member per level');
    await w.compare('(c)');
  });

  test('(d) a put with a lease in a transaction whose compare is on another member (etcd3 "attaches leases through transactions")', BOUND, async () => {
    const pfx = 'xd/';
    const [k0, k1, k2] = onEach(pfx);
    const w = new PairedWatch(pfx);
    await w.ready();
    const id = 0x7a11n;
    ok(await d.leaseGrant(id, 600));
    await d.put({ key: b(k0), value: b('guard') });
    await xtxn(pfx, txnReq([cmp(k0, Target.VALUE, Result.EQUAL, 'guard')], [op.put(k1, 'leased', { lease: id }), op.put(k2, 'leased', { lease: id, prevKv: true })], []), 'compare on member 0, leased puts on members 1 and 2');
    await xtxn(pfx, txnReq([cmp(k1, Target.LEASE, Result.EQUAL, id), cmp(k2, Target.LEASE, Result.EQUAL, id)], [op.put(k0, 'joined', { lease: id }), op.put(k1, 'kept', { ignoreLease: true, prevKv: true })], []), 'LEASE compares on two members, a leased put and an ignore_lease put');
    await xtxn(pfx, txnReq([cmp(k0, Target.LEASE, Result.EQUAL, 0)], [], [op.put(k2, 'unleased'), op.range(pfx, { rangeEnd: prefixEnd(pfx) })]), 'else branch: a put dropping the lease, then a read of every member');
    // TimeToLive lists the keys attached through transactions, on every member.
    const ttl = await a.leaseTimeToLive({ ID: id, keys: true });
    const ottl = await oracle.leaseTimeToLive({ ID: id, keys: true });
    assert.deepEqual(ttl.keys.map(String).sort(), ottl.keys.map(String).sort(), 'TimeToLive keys, proxy (left) vs etcd (right)');
    // An unknown lease in a cross-member transaction: refused as etcd refuses it, nothing applied.
    const refused = await d.txn(txnReq([cmp(k0, Target.VERSION, Result.GREATER, 0)], [op.put(k1, 'x'), op.put(k2, 'x', { lease: 0x7ead })]), { label: 'an unknown lease on one member' });
    assert.equal(refused.ok, false);
    await d.range(P(pfx), { label: 'nothing of the refused transaction applied' });
    await w.compare('(d)');
    // Clean up with a revoke (its revisions are checked by the lease test below, not here).
    await revoke(id);
    await d.range(P(pfx), { label: 'after the revoke' });
  });

  test('(e) a range delete spanning members inside a transaction (prev_kv), and a plain DeleteRange spanning members: one revision, one watch response', BOUND, async () => {
    const pfx = 'xe/';
    const keys = Array.from({ length: 12 }, (_, i) => `${pfx}${String(i).padStart(2, '0')}`);
    assert.equal(new Set(keys.map(memberOf)).size, 3, 'keys spread over the 3 members');
    const w = new PairedWatch(pfx);
    await w.ready();
    for (const k of keys) await d.put({ key: b(k), value: b(`v-${k}`) });
    await xtxn(pfx, txnReq([cmp(keys[0]!, Target.VALUE, Result.EQUAL, `v-${keys[0]}`)], [op.del(`${pfx}02`, { rangeEnd: b(`${pfx}07`), prevKv: true }), op.put(`${pfx}zz`, 'after')], [op.range(pfx, { rangeEnd: prefixEnd(pfx) })]), 'delete [02, 07) with prev_kv and a put, in a txn');
    await xtxn(pfx, txnReq([], [op.del(`${pfx}02`, { rangeEnd: b(`${pfx}07`), prevKv: true })]), 'the same range again: nothing to delete');
    await xtxn(pfx, txnReq([], [op.put(`${pfx}03`, 'back'), op.txn([], [op.del(`${pfx}08`, { rangeEnd: b(`${pfx}11`) })])]), 'a put and a nested range delete on other members');
    // Plain DeleteRange over every member: one revision (etcd), no partial state at any proxy revision.
    await xdelete(pfx, { key: b(`${pfx}00`), rangeEnd: b(`${pfx}zz`), prevKv: true }, 'plain DeleteRange over every member with prev_kv');
    for (const k of keys.slice(0, 6)) await d.put({ key: b(k), value: b('again') });
    await xdelete(pfx, { ...P(pfx) }, 'plain prefix DeleteRange over every member');
    await w.compare('(e)');
    // A from-key delete inside a transaction, compared on the whole keyspace (only this prefix remains after xe/).
    for (const k of keys.slice(0, 4)) await d.put({ key: b(`xz/${k}`), value: b('z') });
    const before = d.revs.latest!.proxy;
    ok(await d.txn(txnReq([], [op.del('xz/', { rangeEnd: FROM_KEY, prevKv: true })]), { label: 'from-key delete in a txn' }));
    await everyRevision('xz/', before, d.revs.latest!.proxy, 'from-key delete in a txn');
  });

  test('(g) a from-key delete and a put of a key inside its range, in one branch: etcd accepts it (its duplicate check ignores from-key ranges); the proxy serves it as etcd or refuses it (documented caveat) with nothing applied; found by the fuzzer, FUZZ_SEED=478539095 and 1951883392', BOUND, async () => {
    // Keys at the end of the keyspace: a from-key delete here reaches no other test's keys. Each case
    // starts from the same state on both sides (wiped directly, a fresh revision map), so that one
    // failing case does not hide the others; the failures are reported together at the end.
    const pfx = 'zz/';
    const [k0, k1, k2] = onEach(pfx);
    const lease = 0x2a9n;
    ok(await d.leaseGrant(lease, 600));
    /** [label, request, whether the put lies inside the transaction's own from-key delete (the caveat)] */
    const cases: [string, TxnRequest, boolean][] = [
      ['else branch: from-key delete, then a put inside its range on another member', txnReq([cmp(k0, Target.VALUE, Result.EQUAL, 'nope')], [op.put(k0, 'never')], [op.del(k1, { rangeEnd: FROM_KEY }), op.put(k2, 'after the delete', { prevKv: true })]), true],
      ['then branch: from-key delete over every key, then a put inside it', txnReq([], [op.del(pfx, { rangeEnd: FROM_KEY, prevKv: true }), op.put(k0, 'again')]), true],
      ['a leased put, then a from-key delete from that key', txnReq([], [op.put(k1, 'leased', { lease }), op.del(k1, { rangeEnd: FROM_KEY })]), true],
      ['a put, then a from-key delete from that key (prev_kv)', txnReq([], [op.put(k2, 'plain'), op.del(k2, { rangeEnd: FROM_KEY, prevKv: true })]), true],
      ['a put, then a from-key delete from a key before it', txnReq([], [op.put(k2, 'plain'), op.del(pfx, { rangeEnd: FROM_KEY })]), true],
      // Not the caveat: a from-key delete alone, and with a put outside its range.
      ['a from-key delete alone', txnReq([], [op.del(pfx, { rangeEnd: FROM_KEY, prevKv: true })]), false],
      ['a from-key delete, then a put before its range', txnReq([], [op.del(pfx, { rangeEnd: FROM_KEY }), op.put('zy/outside', 'x')]), false],
      ['a bounded range delete over every member, then a put before it', txnReq([], [op.del(pfx, { rangeEnd: prefixEnd(pfx) }), op.put('zy/outside2', 'x')]), false],
      ['the put of the else branch inside the from-key delete of the then branch (branch not taken)', txnReq([cmp(k0, Target.VALUE, Result.EQUAL, 'nope')], [op.del(pfx, { rangeEnd: FROM_KEY })], [op.put(k1, 'else'), op.put('zy/outside3', 'x')]), false],
    ];
    const failures: string[] = [];
    const refusedAsCaveat: string[] = [];
    for (const [label, req, caveat] of cases) {
      await oracle.deleteRange({ key: b(pfx), rangeEnd: FROM_KEY });
      await a.deleteRange({ key: b(pfx), rangeEnd: FROM_KEY });
      d = await Differential.create(oracle, a);
      for (const k of [k0, k1]) await d.put({ key: b(k), value: b('v') });
      try {
        const before = d.revs.latest!.proxy;
        let refusal: string | undefined;
        const out = await d.txnOrRefusedSpanning(req, label, { onRefusal: (m) => (refusal = m), keyspaceAfterRefusal: false });
        await everyRevision(pfx, before, d.revs.latest!.proxy, label);
        await d.range({ key: b(pfx), rangeEnd: FROM_KEY }, { label: `${label}: everything from zz/` });
        if (out === 'refused') {
          if (caveat) refusedAsCaveat.push(label);
          else failures.push(`${label}: refused: ${refusal}`);
        } else ok(out, label);
      } catch (err) {
        failures.push(`${label}: ${String((err as Error).message).split('\n').filter((l) => /proxy: |message/.test(l)).slice(0, 1).join(' ') || String((err as Error).message).slice(0, 300)}`);
      }
    }
    console.log(`(g): refused as the from-key caveat: ${refusedAsCaveat.length ? refusedAsCaveat.join('; ') : 'none'}`);
    assert.deepEqual(failures, [], 'cases the proxy answers differently from etcd (other than the documented refusal)');
  });

  test('(h) a cross-member transaction whose taken branch only deletes missing keys (found by the random differential, METAETCD_SEED=1126605330 and 919204096)', BOUND, async () => {
    const pfx = 'xh/';
    const [k0, k1, k2] = onEach(pfx);
    const [j0, j1, j2] = onEach(`${pfx}j/`);
    const mod = ok(await d.put({ key: b(k0), value: b('v') })).header!.revision;
    await d.put({ key: b(k1), value: b('v') });
    const then = [op.del(k0, { prevKv: true }), op.del(k2), op.txn([cmp(k1, Target.LEASE, Result.NOT_EQUAL, 0)], [op.del(j2), op.del(k1, { prevKv: true })], [op.del(j0)])];
    // MOD == its revision holds; CREATE < 0 never does: the else branch is taken.
    const never = [cmp(k0, Target.MOD, Result.EQUAL, mod), cmp(k1, Target.CREATE, Result.LESS, 0)];
    const cases: [string, TxnRequest][] = [
      ['else branch: a delete of a missing key on member 1', txnReq(never, then, [op.del(j1)])],
      ['else branch: a delete of a missing key on member 0', txnReq(never, then, [op.del(j0)])],
      ['else branch: a delete of a missing key on member 2', txnReq(never, then, [op.del(j2)])],
      ['no compare: deletes of missing keys on every member', txnReq([], [op.del(j0), op.del(j1, { prevKv: true }), op.del(j2)])],
      ['no compare: deletes of missing keys on two members', txnReq([], [op.del(j0), op.del(j1)])],
      ['compare on member 2, a delete of a missing key on member 0', txnReq([cmp(k2, Target.VERSION, Result.EQUAL, 0)], [op.del(j0)], [op.put(k2, 'never')])],
      ['compare on member 2, deletes of missing keys on every member', txnReq([cmp(k2, Target.VERSION, Result.EQUAL, 0)], [op.del(j0), op.del(j1, { prevKv: true }), op.del(j2)], [op.put(k2, 'never')])],
      ['deletes of missing keys and a read', txnReq([], [op.del(j0), op.del(j1), op.range(k0)])],
    ];
    const failures: string[] = [];
    for (const [label, req] of cases) {
      try {
        await xtxn(pfx, req, label);
      } catch (err) {
        failures.push(`${label}: ${String((err as Error).message).split('\n').filter((l) => /proxy: |message/.test(l)).slice(0, 1).join(' ') || String((err as Error).message).slice(0, 300)}`);
        d = await Differential.create(oracle, a); // nothing was applied by either side: the states still agree
      }
    }
    assert.deepEqual(failures, [], 'cases the proxy answers differently from etcd');
  });

  test('(j) overlapping deletes across members: a key an earlier delete of the branch removed is not deleted (or counted) again (found by the fuzzer, FUZZ_SEED=476476580)', BOUND, async () => {
    const pfx = 'xj/';
    const [k0, k1, k2] = onEach(pfx);
    for (const k of [k0, k1, k2]) await d.put({ key: b(k), value: b('v') });
    await xtxn(pfx, txnReq([], [op.del(pfx, { rangeEnd: prefixEnd(pfx) }), op.del(k1, { prevKv: true }), op.del(k2)]), 'a range delete over every member, then single-key deletes inside it');
    for (const k of [k0, k1, k2]) await d.put({ key: b(k), value: b('w') });
    await xtxn(pfx, txnReq([], [op.del(k0, { prevKv: true }), op.del(pfx, { rangeEnd: prefixEnd(pfx), prevKv: true })]), 'a single-key delete, then a range delete over it and the other members');
  });

  test('(i) the remaining caveat: a read between two writes of a cross-member transaction, over a range both write, is served as etcd serves it or refused with InvalidArgument naming metaetcd, nothing applied', BOUND, async () => {
    const pfx = 'xi/';
    const [k0, k1, k2] = onEach(pfx);
    for (const k of [k0, k1, k2]) await d.put({ key: b(k), value: b('v') });
    const before = d.revs.latest!.proxy;
    const messages: string[] = [];
    const out = await d.txnOrRefusedSpanning(
      txnReq([], [op.put(k0, 'w1'), op.range(pfx, { rangeEnd: prefixEnd(pfx) }), op.put(k1, 'w2')]),
      'put, read over both written keys, put',
      { onRefusal: (m) => messages.push(m), keyspaceAfterRefusal: false },
    );
    await everyRevision(pfx, before, d.revs.latest!.proxy, 'after the read between writes');
    if (out === 'refused') assert.match(messages[0]!, /^metaetcd: /);
    else ok(out);
  });

  test('a failed cross-member transaction of either kind leaves no trace: etcd\'s errors, nothing applied, no revision visible', BOUND, async () => {
    const pfx = 'xf/';
    const [k0, k1, k2] = onEach(pfx);
    await d.put({ key: b(k0), value: b('v') });
    const before = d.revs.latest!.proxy;
    await d.txn(txnReq([], [op.put(k1, 'x'), op.put(k2, '', { ignoreValue: true })]), { label: 'ignore_value on a missing key of another member' });
    await d.txn(txnReq([], [op.put(k1, 'x'), op.put(k0, 'y'), op.put(k1, 'z')]), { label: 'duplicate key across members' });
    await d.txn(txnReq([], [op.del(pfx, { rangeEnd: prefixEnd(pfx) }), op.put(k2, 'inside')]), { label: 'a put inside a range delete of the same txn' });
    await everyRevision(pfx, before, d.revs.latest!.proxy, 'after the refusals');
  });

});

// ---------------------------------------------------------------------------
// Lease deletions across members at one revision. Issue 15 (2) — MAY BE SKIPPED:
// the implementer may not make a lease's revoke/expiry atomic across members;
// set XTXN_SKIP_LEASE_ATOMIC=1 to skip this block if so.
describe('lease revoke and expiry deleting keys on several members: one revision, as etcd (issue 15 part 2; skip with XTXN_SKIP_LEASE_ATOMIC=1)', { skip: process.env.XTXN_SKIP_LEASE_ATOMIC === '1' }, () => {
  const cases = [
    { how: 'revoke', perMember: 3, id: 0x1e1n },
    { how: 'expiry', perMember: 3, id: 0x1e2n },
    // 240 keys: more than one member transaction's worth (100) in all, but not on any one member.
    { how: 'revoke', perMember: 80, id: 0x1e3n },
  ] as const;
  for (const { how, perMember, id } of cases) {
    test(`${how}: every key of the lease (${perMember} per member) is deleted at one revision, delivered in one watch response with prev_kv`, BOUND, async () => {
      const pfx = `xl-${how}-${perMember}/`;
      const keys = [0, 1, 2].flatMap((m) => keysOn(m, pfx, perMember)).sort();
      const w = new PairedWatch(pfx);
      await w.ready();
      ok(await d.leaseGrant(id, how === 'revoke' ? 600 : 2));
      for (const k of keys) await d.put({ key: b(k), value: b('leased'), lease: id });
      let revokeHeader: bigint | undefined;
      if (how === 'revoke') {
        const before = d.revs.latest!.proxy;
        revokeHeader = ok(await revoke(id)).header!.revision;
        await everyRevision(pfx, before, d.revs.latest!.proxy, 'after the revoke');
      }
      await Promise.all([w.o.untilEvents(1n, 2 * keys.length, 10_000), w.p.untilEvents(1n, 2 * keys.length, 10_000)]);
      const deletes = (rec: WatchRecorder) => rec.forId(1n).filter((r) => r.events.some((e) => e.type === Event_EventType.DELETE));
      const pDel = deletes(w.p)[0]!.events[0]!.kv!.modRevision;
      const oDel = deletes(w.o)[0]!.events[0]!.kv!.modRevision;
      // etcd's LeaseRevoke response names the revision of its deletes; an expiry's revision was answered by no call: pair it by hand.
      // (revokeHeader is the oracle's: the harness returns the oracle's outcome; the pair recorded maps the proxy's header.)
      if (revokeHeader !== undefined) {
        assert.equal(revokeHeader, oDel, 'etcd: the revoke header names the revision of the deletes');
        assert.equal(d.revs.writeAt(pDel), oDel, "the proxy's revoke header names the revision of its deletes");
      }
      else d.revs.record(pDel, oDel, `${how} deletes`);
      assert.deepEqual(
        deletes(w.p).map((r) => r.events.map((e) => `${e.kv!.key}@${e.kv!.modRevision} prev lease ${e.prevKv?.lease}`)),
        [keys.map((k) => `${k}@${pDel} prev lease ${id}`)],
        `the ${how}'s deletes: one response, one revision, in key order, with prev_kv (as etcd)`,
      );
      await d.sync();
      await d.range(P(pfx), { label: `after the ${how}` });
      for (let p = pDel - 1n; p <= pDel; p++) {
        const r = await a.range({ ...P(pfx), revision: p });
        assert.ok(r.kvs.length === 0 || r.kvs.length === keys.length, `at proxy revision ${p}: ${r.kvs.length} of the ${keys.length} leased keys (a partial state)`);
      }
      await w.compare(`lease ${how}`);
    });
  }
});

// ---------------------------------------------------------------------------
// Bank transfers through two proxies, checked at every revision

const ACCOUNTS = 8;
const INITIAL = 100;

interface Transfer {
  client: string;
  from: string;
  to: string;
  values: [string, string];
  rev: bigint;
}

/** The 8 account keys, spread over the 3 members (3, 3, 2). */
function accounts(pfx: string): string[] {
  const keys = [...keysOn(0, pfx, 3), ...keysOn(1, pfx, 3), ...keysOn(2, pfx, 2)].sort();
  assert.equal(keys.length, ACCOUNTS);
  return keys;
}

const num = (kv: KeyValue | undefined): number => (kv ? Number(kv.value.toString()) : NaN);

/**
 * The state under `pfx` at every proxy revision from `from` to `to`, through
 * `client`: ACCOUNTS accounts summing to ACCOUNTS * INITIAL at each, and each
 * change from one revision to the next exactly the events the watch delivered
 * at that revision. Returns the number of revisions at which something changed.
 */
async function checkEveryRevision(client: EtcdClient, pfx: string, from: bigint, to: bigint, watch: WatchRecorder, label: string): Promise<number> {
  const byRev = new Map<bigint, { key: string; value: string; type: number }[]>();
  for (const r of watch.forId(0n)) {
    for (const e of r.events) {
      const rev = e.kv!.modRevision;
      byRev.set(rev, [...(byRev.get(rev) ?? []), { key: e.kv!.key.toString(), value: e.kv!.value.toString(), type: e.type }]);
    }
  }
  const states = new Map<bigint, Map<string, string>>();
  const revs: bigint[] = [];
  for (let r = from; r <= to; r++) revs.push(r);
  const problems: string[] = [];
  for (let i = 0; i < revs.length; i += 16) {
    await Promise.all(
      revs.slice(i, i + 16).map(async (rev) => {
        const res = await client.range({ ...P(pfx), revision: rev });
        const m = new Map(res.kvs.map((kv) => [kv.key.toString(), kv.value.toString()]));
        states.set(rev, m);
        const sum = res.kvs.reduce((s, kv) => s + num(kv), 0);
        if (res.kvs.length !== ACCOUNTS || sum !== ACCOUNTS * INITIAL) {
          problems.push(`at revision ${rev}: ${res.kvs.length} accounts summing to ${sum}: ${res.kvs.map((kv) => `${kv.key}=${kv.value}@${kv.modRevision}`).join(' ')}`);
        }
      }),
    );
  }
  let changes = 0;
  for (let rev = from + 1n; rev <= to; rev++) {
    const prev = states.get(rev - 1n)!;
    const cur = states.get(rev)!;
    const diff = [...cur].filter(([k, v]) => prev.get(k) !== v).map(([k, v]) => `${k}=${v}`).sort();
    const evs = (byRev.get(rev) ?? []).map((e) => `${e.key}=${e.value}`).sort();
    if (diff.length > 0) changes++;
    if (diff.join(' ') !== evs.join(' ')) problems.push(`revision ${rev}: the state changed by [${diff.join(' ')}] but the watch delivered [${evs.join(' ')}]`);
  }
  assert.deepEqual(problems.slice(0, 10), [], `${label}: ${problems.length} problems over revisions ${from}..${to}`);
  return changes;
}

/** Every watch response carrying account events: exactly one transfer (two PUTs, one revision); revisions strictly increasing. */
function checkWatchGrouping(watch: WatchRecorder, transfers: Transfer[], label: string): void {
  const problems: string[] = [];
  let last = 0n;
  const seen = new Map<bigint, string>();
  for (const r of watch.forId(0n)) {
    if (r.events.length === 0) continue;
    const revs = new Set(r.events.map((e) => e.kv!.modRevision));
    const rev = r.events[0]!.kv!.modRevision;
    if (r.events.length !== 2 || revs.size !== 1 || !r.events.every((e) => e.type === Event_EventType.PUT)) problems.push(`not one transfer: ${describeResponse(r)}`);
    if (rev <= last) problems.push(`revision ${rev} after ${last}: ${describeResponse(r)}`);
    last = rev;
    seen.set(rev, r.events.map((e) => `${e.kv!.key}=${e.kv!.value}`).sort().join(' '));
  }
  for (const t of transfers) {
    const want = [`${t.from}=${t.values[0]}`, `${t.to}=${t.values[1]}`].sort().join(' ');
    if (seen.get(t.rev) !== want) problems.push(`acknowledged transfer ${t.client} ${t.from}->${t.to} at ${t.rev}: the watch delivered ${seen.get(t.rev) ?? 'nothing'} there, expected ${want}`);
  }
  assert.deepEqual(problems.slice(0, 10), [], `${label}: ${problems.length} problems`);
}

describe('bank transfers across members', () => {
  test(`(f) 4 clients through 2 proxies transfer between 8 accounts on 3 members (read, compare MOD, put both): the sum is constant at every revision, each transfer's puts arrive in one watch response`, { timeout: BANK_MS + 120_000 }, async () => {
    const pfx = 'bank/';
    const keys = accounts(pfx);
    // The accounts are opened by one cross-member transaction.
    const open = await a.txnPartial({ success: keys.map((k) => ({ request: { $case: 'requestPut' as const, value: { key: b(k), value: b(String(INITIAL)) } } })) });
    const r0 = open.header!.revision;
    const got = await a.range(P(pfx));
    assert.deepEqual(got.kvs.map((kv) => [kv.key.toString(), kv.modRevision]), keys.map((k) => [k, r0]), 'every account created at the revision of the opening transaction');
    const watches = [new WatchRecorder(a, 'watch via A'), new WatchRecorder(bc, 'watch via B')];
    for (const w of watches) {
      closers.push(() => w.close());
      w.create({ ...P(pfx), startRevision: r0 + 1n, prevKv: true });
    }
    await Promise.all(watches.map((w) => w.untilCreated(0n)));

    const clients = [0, 1, 2, 3].map((i) => clientFor(i % 2 === 0 ? A.url : B.url, `bank client ${i} via ${i % 2 === 0 ? 'A' : 'B'}`, 20_000));
    for (const c of clients) closers.push(() => c.close());
    const transfers: Transfer[] = [];
    const errors: string[] = [];
    let conflicts = 0;
    const deadline = performance.now() + BANK_MS;
    // Readers while the transfers run: the whole prefix, linearizable through A, serializable through B,
    // and a read-only transaction over the accounts through A: never part of a transfer.
    const torn: string[] = [];
    /** Serializable reads may see one member's part before another's: a documented caveat (docs/notes/cross-member-transactions.md), reported, not asserted. */
    const tornSerializable: string[] = [];
    let reads = 0;
    const readers = [
      { name: 'linearizable range via A', read: async () => (await a.range(P(pfx))).kvs },
      { name: 'serializable range via B', serializable: true, read: async () => (await bc.range({ ...P(pfx), serializable: true })).kvs },
      {
        name: 'read-only txn over every account via A',
        read: async () =>
          (await a.txnPartial({ success: keys.map((k) => ({ request: { $case: 'requestRange' as const, value: { key: b(k) } } })) })).responses.flatMap(
            (r) => (r.response as { value: { kvs: KeyValue[] } }).value.kvs,
          ),
      },
    ].map(async (r) => {
      while (performance.now() < deadline) {
        try {
          const kvs = await r.read();
          reads++;
          const sum = kvs.reduce((t, kv) => t + num(kv), 0);
          if (kvs.length !== ACCOUNTS || sum !== ACCOUNTS * INITIAL) ('serializable' in r ? tornSerializable : torn).push(`${r.name}: ${kvs.length} accounts summing to ${sum}: ${kvs.map((kv) => `${kv.key}=${kv.value}@${kv.modRevision}`).join(' ')}`);
        } catch (err) {
          errors.push(`${r.name}: ${(err as { details?: string }).details ?? String(err)}`);
          await new Promise((res) => setTimeout(res, 50));
        }
      }
    });
    await Promise.all(
      clients.map(async (c, i) => {
        const random = rng(SEED * 10 + i);
        while (performance.now() < deadline) {
          const x = Math.floor(random() * ACCOUNTS);
          const y = (x + 1 + Math.floor(random() * (ACCOUNTS - 1))) % ACCOUNTS;
          const [from, to] = [keys[x]!, keys[y]!];
          try {
            // Read both balances: a read-only transaction over two members, or two gets.
            let kvFrom: KeyValue | undefined;
            let kvTo: KeyValue | undefined;
            if (i < 2) {
              const r = await c.txnPartial({ success: [from, to].map((k) => ({ request: { $case: 'requestRange' as const, value: { key: b(k) } } })) });
              const kv = (j: number) => (r.responses[j]!.response as { value: { kvs: KeyValue[] } }).value.kvs[0];
              [kvFrom, kvTo] = [kv(0), kv(1)];
            } else {
              [kvFrom, kvTo] = await Promise.all([from, to].map(async (k) => (await c.range({ key: b(k) })).kvs[0]));
            }
            assert.ok(kvFrom && kvTo, `${from} and ${to} exist`);
            const amount = Math.min(num(kvFrom), 1 + Math.floor(random() * 20));
            if (amount === 0) continue; // an empty account: nothing to move (a put of the same value would change nothing)
            const values: [string, string] = [String(num(kvFrom) - amount), String(num(kvTo) + amount)];
            const r = await c.txnPartial({
              compare: [
                { key: b(from), target: Target.MOD, result: Result.EQUAL, targetUnion: { $case: 'modRevision', value: kvFrom.modRevision } },
                { key: b(to), target: Target.MOD, result: Result.EQUAL, targetUnion: { $case: 'modRevision', value: kvTo.modRevision } },
              ],
              success: [
                { request: { $case: 'requestPut', value: { key: b(from), value: b(values[0]) } } },
                { request: { $case: 'requestPut', value: { key: b(to), value: b(values[1]) } } },
              ],
              failure: [{ request: { $case: 'requestRange', value: { key: b(from) } } }],
            });
            if (r.succeeded) transfers.push({ client: c.name, from, to, values, rev: r.header!.revision });
            else conflicts++;
          } catch (err) {
            errors.push(`${c.name} ${from}->${to}: ${(err as { details?: string }).details ?? String(err)}`);
            await new Promise((res) => setTimeout(res, 50));
          }
        }
      }),
    );
    await Promise.all(readers);
    console.log(
      `bank: ${transfers.length} transfers, ${conflicts} compare failures (conflicts), ${reads} concurrent reads, ${errors.length} errors${errors.length ? `: ${errors.slice(0, 5).join('; ')}` : ''}; ` +
        `${tornSerializable.length} serializable reads saw part of a transfer (documented caveat)${tornSerializable.length ? `, e.g. ${tornSerializable[0]}` : ''}`,
    );
    assert.deepEqual(torn.slice(0, 10), [], `${torn.length} concurrent reads saw part of a transfer`);
    assert.ok(transfers.length >= 20, `only ${transfers.length} transfers succeeded in ${BANK_MS} ms`);
    assert.deepEqual(errors.slice(0, 10), [], `${errors.length} transfers failed with an error (etcd never fails them)`);
    const revs = transfers.map((t) => t.rev);
    assert.equal(new Set(revs).size, revs.length, 'no two transfers share a revision');

    const end = (await a.range(P(pfx))).header!.revision;
    await Promise.all(watches.map((w) => w.until(() => w.events(0n).length >= 2 * transfers.length, 20_000, 'every transfer delivered')));
    // Both proxies' watches deliver the same responses, each one transfer.
    const items = (w: WatchRecorder) => w.forId(0n).filter((r) => r.events.length > 0).map((r) => r.events.map((e) => `${e.kv!.key}=${e.kv!.value}@${e.kv!.modRevision} prev=${e.prevKv?.value}`).join(' '));
    assert.deepEqual(items(watches[1]!), items(watches[0]!), 'the watches of both proxies deliver the same responses');
    for (const w of watches) checkWatchGrouping(w, transfers, w.label);
    const changes = await checkEveryRevision(a, pfx, r0, end, watches[0]!, 'bank via A');
    assert.equal(changes, transfers.length, 'the state changed at the revision of each transfer, and only there');
    // Spot-check the same history through B.
    await checkEveryRevision(bc, pfx, r0, r0 + (end - r0) / 4n, watches[1]!, 'bank via B (first quarter)');
  });
});

// ---------------------------------------------------------------------------
// The etcd3 npm client: STM and lease through transactions

describe('etcd3 client over several members', () => {
  let e3: { name: string; client: Etcd3; raw: EtcdClient }[] = [];
  before(() => {
    e3 = [
      { name: 'etcd', client: new Etcd3({ hosts: set.oracle!.clientUrl, dialTimeout: 5000 }), raw: oracle },
      { name: 'proxy A', client: new Etcd3({ hosts: A.url, dialTimeout: 5000 }), raw: a },
      { name: 'proxy B', client: new Etcd3({ hosts: B.url, dialTimeout: 5000 }), raw: bc },
    ];
  });
  after(() => {
    for (const s of e3) s.client.close();
  });

  // Isolation is a const enum of etcd3's typings (not exported at run time): its values.
  const ISOLATIONS: [string, Isolation][] = [
    ['SerializableSnapshot', 0 as Isolation],
    ['Serializable', 1 as Isolation],
    ['RepeatableReads', 2 as Isolation],
  ];
  for (const [name, isolation] of ISOLATIONS) {
    test(`STM with ${name} isolation: concurrent transfers between accounts on 3 members keep the sum, on etcd and through two proxies`, { timeout: 90_000 }, async () => {
      const pfx = `stm-${name}/`;
      const keys = [0, 1, 2].flatMap((m) => keysOn(m, pfx, 2)).sort();
      const TRANSFERS = 12;
      const WORKERS = 3;
      await Promise.all(
        [e3[0]!, e3[1]!].map(async (side, sideIndex) => {
          // The oracle runs alone; the proxies' workers share the accounts (A and B both serve them).
          const runners = sideIndex === 0 ? [e3[0]!] : [e3[1]!, e3[2]!];
          await side.client.stm({ retries: 5, isolation }).transact(async (tx) => {
            await Promise.all(keys.map((k) => tx.put(k).value(String(INITIAL))));
          });
          const r0 = (await side.raw.range(P(pfx))).header!.revision;
          const watch = new WatchRecorder(side.raw, `${side.name} watch ${pfx}`);
          closers.push(() => watch.close());
          watch.create({ ...P(pfx), startRevision: r0 + 1n });
          let committed = 0;
          let gaveUp = 0;
          await Promise.all(
            Array.from({ length: WORKERS * runners.length }, async (_, w) => {
              const runner = runners[w % runners.length]!;
              const random = rng(SEED + w + 1000 * sideIndex);
              for (let i = 0; i < TRANSFERS; i++) {
                const x = Math.floor(random() * keys.length);
                const y = (x + 1 + Math.floor(random() * (keys.length - 1))) % keys.length;
                try {
                  await runner.client.stm({ retries: isolation === (0 as Isolation) ? 15 : 50, isolation }).transact(async (tx) => {
                    const [bx, by] = await Promise.all([tx.get(keys[x]!).number(), tx.get(keys[y]!).number()]);
                    const amount = Math.min(bx!, 1 + Math.floor(random() * 10));
                    await Promise.all([tx.put(keys[x]!).value(String(bx! - amount)), tx.put(keys[y]!).value(String(by! + amount))]);
                  });
                  committed++;
                } catch (err) {
                  if ((err as Error).constructor?.name === 'STMConflictError') gaveUp++;
                  else throw new Error(`${side.name}: STM transfer failed: ${(err as Error).message}`);
                }
              }
            }),
          );
          const final = await side.raw.range(P(pfx));
          const sum = final.kvs.reduce((s, kv) => s + num(kv), 0);
          console.log(`${side.name} STM ${name}: ${committed} committed, ${gaveUp} gave up after the retries`);
          assert.equal(sum, keys.length * INITIAL, `${side.name}: the sum of the accounts after ${committed} STM transfers`);
          assert.ok(committed > 0, `${side.name}: some transfer committed`);
          // At every revision since: the sum held; every revision's events arrived in one response.
          const end = final.header!.revision;
          if (sideIndex === 1) {
            await watch.until(() => watch.events(0n).some((e) => e.kv!.modRevision === final.kvs.reduce((m, kv) => (kv.modRevision > m ? kv.modRevision : m), 0n)), 10_000, 'the last transfer');
            for (const r of watch.forId(0n)) {
              if (r.events.length > 0) assert.equal(new Set(r.events.map((e) => e.kv!.modRevision)).size, 1, `one revision per watch response: ${describeResponse(r)}`);
            }
            for (let rev = r0; rev <= end; rev++) {
              const at = await side.raw.range({ ...P(pfx), revision: rev });
              const s = at.kvs.reduce((t, kv) => t + num(kv), 0);
              assert.equal(s, keys.length * INITIAL, `${side.name}: the sum at revision ${rev}: ${at.kvs.map((kv) => `${kv.key}=${kv.value}`).join(' ')}`);
            }
          }
          watch.close();
        }),
      );
    });
  }

  test('lease attaches leases through transactions: if(key on member X).then(lease.put on members Y and Z), on etcd and through the proxy', BOUND, async () => {
    const pfx = 'e3lease/';
    const [k0, k1, k2] = onEach(pfx);
    for (const side of [e3[0]!, e3[1]!]) {
      const lease = side.client.lease(60, { autoKeepAlive: false });
      const id = await lease.grant();
      await side.client.put(k0).value('guard');
      const r = await side.client.if(k0, 'Value', '==', 'guard').then(lease.put(k1).value('a'), lease.put(k2).value('b')).commit();
      assert.equal(r.succeeded, true, `${side.name}: the transaction succeeded`);
      const ttl = await side.raw.leaseTimeToLive({ ID: BigInt(id), keys: true });
      assert.deepEqual(ttl.keys.map(String).sort(), [k1, k2].sort(), `${side.name}: TimeToLive lists the keys put through the transaction`);
      const got = await side.raw.range(P(pfx));
      assert.deepEqual(
        got.kvs.map((kv) => [kv.key.toString(), kv.value.toString(), kv.lease === BigInt(id), String(kv.modRevision) === String(r.header.revision) || kv.key.toString() === k0]),
        [[k0, 'guard', false, true], [k1, 'a', true, true], [k2, 'b', true, true]].sort((x, y) => (String(x[0]) < String(y[0]) ? -1 : 1)),
        `${side.name}: the keys, their values, their lease, written at the transaction's revision`,
      );
      await lease.revoke();
      assert.equal((await side.raw.range({ ...P(pfx), countOnly: true })).count, 1n, `${side.name}: the revoke deleted the leased keys`);
      await side.client.delete().key(k0);
    }
  });
});

