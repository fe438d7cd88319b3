// The two races of the Go original, shown to be ruled out (docs/design.md,
// "Writes" and "Reads"; brief: "What the Go original left undone"):
//
// (a) two concurrent writes to one member committing in the opposite order of
//     their revisions (snapshot reads then inexact): many writers hammer the
//     keys of ONE member through two proxies; every acknowledged write is
//     replayed, in revision order, against a plain etcd (the oracle) with the
//     same compares; responses must agree, and a Range of the whole keyspace at
//     EVERY revision from the first write to the last must equal the oracle's
//     state after the same writes;
// (b) a read "now" naming a revision whose writes can still land later: a list
//     at R followed by a watch from R+1 must deliver exactly the writes after R;
// (c) a write acknowledged by one proxy is visible to the next linearizable
//     read through another;
// (d) the same reads while a member has sent a watch event for revision X but
//     not yet advanced its own revision to X (etcd does this for a moment on
//     every write; an interposer widens that moment to make it certain).
//
// Operation choices come from a seeded PRNG (RACE_SEED=<n> to repeat a run's
// choices; the interleaving itself is up to the machine). RACE_MS sets how long
// writers run in (a) and (b).

import assert from 'node:assert/strict';
import {
  Client,
  credentials,
  Server,
  ServerCredentials,
  status as GrpcStatus,
  type ClientDuplexStream,
  type MethodDefinition,
  type sendUnaryData,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { performance } from 'node:perf_hooks';
import { after, before, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { cmp, op } from '../../src/proto/build.js';
import { Event_EventType, type KeyValue } from '../../src/proto/gen/kv.js';
import {
  Compare_CompareResult,
  Compare_CompareTarget,
  type Compare,
  type DeleteRangeResponse,
  type PutResponse,
  type RangeResponse,
  type RequestOp,
  type ResponseOp,
  type TxnResponse,
  ClusterService,
  KVService,
  LeaseService,
  MaintenanceService,
  type RangeRequest,
  WatchRequest,
  type WatchResponse,
  WatchService,
} from '../../src/proto/gen/rpc.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';

const SEED = Number(process.env.RACE_SEED ?? Math.floor(Math.random() * 2 ** 31));
const RUN_MS = Number(process.env.RACE_MS ?? 3000);
const seedNote = `(RACE_SEED=${SEED})`;

let set: EtcdSet;
let proxyA: TestProxy;
let proxyB: TestProxy;
let a: EtcdClient;
let b: EtcdClient;
let oracle: EtcdClient;
const streams: ClientDuplexStream<WatchRequest, WatchResponse>[] = [];
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'race' });
  [proxyA, proxyB] = await Promise.all([startTestProxy(set), startTestProxy(set)]);
  a = clientFor(proxyA.url, 'proxy A', 20_000);
  b = clientFor(proxyB.url, 'proxy B', 20_000);
  oracle = clientFor(set.oracle!.clientUrl, 'oracle', 20_000);
});
after(async () => {
  for (const s of streams) s.cancel();
  for (const c of cleanups.reverse()) await c();
  a?.close();
  b?.close();
  oracle?.close();
  await Promise.all([proxyA?.stop(), proxyB?.stop()]);
  await set?.stop();
});

// ---------------------------------------------------------------------------
// Helpers

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const B = (s: string) => Buffer.from(s);
const ALL = B('\0'); // key "\0" .. range_end "\0": the whole keyspace
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Keys `${prefix}${i}` that the proxy routes to `member`. */
function keysOn(member: number, prefix: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (proxyA.handle.router.memberOf(B(`${prefix}${i}`)) === member) out.push(`${prefix}${i}`);
  return out;
}

async function pool<T>(items: T[], concurrency: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

interface Kv {
  key: string;
  value: string;
  create: bigint;
  mod: bigint;
  version: bigint;
  lease: bigint;
}

const kvOf = (kv: KeyValue): Kv => ({
  key: kv.key.toString(),
  value: kv.value.toString(),
  create: kv.createRevision,
  mod: kv.modRevision,
  version: kv.version,
  lease: kv.lease,
});

const show = (kvs: Kv[]) => kvs.map((k) => `${k.key}=${k.value} c${k.create} m${k.mod} v${k.version}`).join('; ');

/**
 * Operations of concurrent clients. Writes are put / delete / guarded txn on one
 * key; gets are linearizable single-key reads. start/end are performance.now()
 * before the call and after its response.
 */
interface Op {
  id: number;
  kind: 'put' | 'del' | 'txn' | 'get';
  via: 'A' | 'B';
  key: string;
  value: string;
  /** txn: the compare, failure branch: put key2 (value) or read key. */
  compare?: { target: 'mod' | 'version'; value: bigint };
  key2?: string;
  start: number;
  end: number;
  rev: bigint;
  resp?: PutResponse | DeleteRangeResponse | TxnResponse | RangeResponse;
  error?: string;
}

/**
 * An op that changed the store. As in etcd, a transaction whose branch taken only
 * reads and a delete that finds nothing take no revision: they answer with the
 * current one (which some write holds) and are checked as reads.
 */
const isWrite = (o: Op) => o.kind !== 'get' && mutations(o).length > 0;

/** The keys an acknowledged write changed, from its response. */
function mutations(o: Op): { key: string; type: 'put' | 'del'; value: string }[] {
  if (o.kind === 'put') return [{ key: o.key, type: 'put', value: o.value }];
  if (o.kind === 'del') return Number((o.resp as DeleteRangeResponse).deleted) > 0 ? [{ key: o.key, type: 'del', value: '' }] : [];
  if (o.kind === 'txn') {
    const t = o.resp as TxnResponse;
    if (t.succeeded) return [{ key: o.key, type: 'put', value: o.value }];
    return o.key2 ? [{ key: o.key2, type: 'put', value: o.value }] : [];
  }
  return [];
}

interface WriterOptions {
  keys: string[];
  /** key -> keys of the same member (for a txn's failure branch). */
  sameMember: (key: string) => string[];
  deadline: number;
  ops: Op[];
  nextId: { n: number };
}

/** One client loop of puts, deletes, guarded txns (MOD or VERSION compares) and gets. */
async function writer(w: number, via: 'A' | 'B', client: EtcdClient, o: WriterOptions): Promise<void> {
  const rnd = prng(SEED * 1000 + w);
  const known = new Map<string, { mod: bigint; version: bigint }>();
  let n = 0;
  while (performance.now() < o.deadline) {
    const key = o.keys[Math.floor(rnd() * o.keys.length)]!;
    const x = rnd();
    const value = `w${w}-${n++}`;
    const rec: Op = { id: o.nextId.n++, kind: 'get', via, key, value, start: performance.now(), end: 0, rev: 0n };
    try {
      if (x < 0.3) {
        rec.kind = 'put';
        const r = await client.put({ key: B(key), value: B(value), prevKv: true });
        rec.resp = r;
        known.set(key, { mod: r.header!.revision, version: (r.prevKv?.version ?? 0n) + 1n });
      } else if (x < 0.45) {
        rec.kind = 'del';
        rec.resp = await client.deleteRange({ key: B(key), prevKv: true });
        known.set(key, { mod: 0n, version: 0n });
      } else if (x < 0.85) {
        rec.kind = 'txn';
        const k = known.get(key) ?? { mod: 0n, version: 0n };
        rec.compare = rnd() < 0.75 ? { target: 'mod', value: k.mod } : { target: 'version', value: k.version };
        if (rnd() < 0.5) {
          const others = o.sameMember(key).filter((k2) => k2 !== key);
          rec.key2 = others[Math.floor(rnd() * others.length)]!;
        }
        const r = await client.txn(txnRequest(rec, rec.compare.value));
        rec.resp = r;
        if (r.succeeded) known.set(key, { mod: r.header!.revision, version: k.version + 1n });
        else if (!rec.key2) {
          const kv = rangeOf(r.responses[0]).kvs[0];
          known.set(key, kv ? { mod: kv.modRevision, version: kv.version } : { mod: 0n, version: 0n });
        }
      } else {
        const r = await client.range({ key: B(key) });
        rec.resp = r;
        const kv = r.kvs[0];
        known.set(key, kv ? { mod: kv.modRevision, version: kv.version } : { mod: 0n, version: 0n });
      }
      rec.end = performance.now();
      rec.rev = (rec.resp as { header?: { revision: bigint } }).header!.revision;
    } catch (err) {
      rec.end = performance.now();
      rec.error = String(err);
    }
    o.ops.push(rec);
  }
}

/** The txn of a recorded op, with the compare value given (the proxy's, or translated for the oracle). */
function txnRequest(rec: Op, compareValue: bigint) {
  const c: Compare =
    rec.compare!.target === 'mod'
      ? cmp.modEqual(B(rec.key), 0)
      : {
          key: B(rec.key),
          rangeEnd: Buffer.alloc(0),
          target: Compare_CompareTarget.VERSION,
          result: Compare_CompareResult.EQUAL,
          targetUnion: { $case: 'version', value: 0n },
        };
  c.targetUnion = rec.compare!.target === 'mod' ? { $case: 'modRevision', value: compareValue } : { $case: 'version', value: compareValue };
  const success: RequestOp[] = [op.put(B(rec.key), B(rec.value), { prevKv: true })];
  const failure: RequestOp[] = rec.key2 ? [op.put(B(rec.key2), B(rec.value), { prevKv: true })] : [op.range(B(rec.key))];
  return { compare: [c], success, failure };
}

function rangeOf(r: ResponseOp | undefined): RangeResponse {
  assert.equal(r?.response?.$case, 'responseRange');
  return (r!.response as { value: RangeResponse }).value;
}

/** No acknowledged errors; revisions of writes unique; real-time order respected by every revision. */
function checkOrder(ops: Op[]): void {
  const errors = ops.filter((o) => o.error);
  assert.equal(errors.length, 0, `${errors.length} requests failed, e.g. ${errors.slice(0, 3).map((o) => `${o.kind} ${o.key}: ${o.error}`).join(' | ')}`);
  const writes = ops.filter(isWrite);
  const seen = new Map<bigint, Op>();
  for (const w of writes) {
    const dup = seen.get(w.rev);
    assert.ok(!dup, `revision ${w.rev} acknowledged to two writes: ${dup?.kind} ${dup?.key} and ${w.kind} ${w.key}`);
    seen.set(w.rev, w);
  }
  // For every op: the highest revision of any op that had completed before it started.
  const byEnd = [...ops].sort((x, y) => x.end - y.end);
  const prefixMax: bigint[] = [];
  const prefixOp: Op[] = [];
  for (const [i, o] of byEnd.entries()) {
    const prev = i > 0 ? prefixMax[i - 1]! : -1n;
    prefixMax.push(o.rev > prev ? o.rev : prev);
    prefixOp.push(o.rev > prev ? o : prefixOp[i - 1]!);
  }
  for (const o of ops) {
    let lo = 0;
    let hi = byEnd.length; // first index with end >= o.start
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (byEnd[mid]!.end < o.start) lo = mid + 1;
      else hi = mid;
    }
    if (lo === 0) continue;
    const max = prefixMax[lo - 1]!;
    const by = prefixOp[lo - 1]!;
    if (isWrite(o)) {
      assert.ok(o.rev > max, `${o.kind} ${o.key} got revision ${o.rev}, not above ${max} already returned (${by.kind} ${by.key}) before it started`);
    } else {
      assert.ok(o.rev >= max, `linearizable get ${o.key} read at ${o.rev}, below ${max} already returned (${by.kind} ${by.key}) before it started`);
    }
  }
  // Per key, acknowledged mutations sorted by revision; the same key's revisions strictly increase in real time.
  const perKey = new Map<string, Op[]>();
  for (const w of writes) for (const m of mutations(w)) perKey.set(m.key, [...(perKey.get(m.key) ?? []), w]);
  for (const [key, list] of perKey) {
    const sorted = [...list].sort((x, y) => x.end - y.end);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i - 1]!.end < sorted[i]!.start) assert.ok(sorted[i]!.rev > sorted[i - 1]!.rev, `key ${key}: revisions out of real-time order`);
    }
  }
}

/** Applies acknowledged mutations (sorted by revision) to an empty keyspace, as etcd would. */
class Model {
  private readonly muts: { rev: bigint; key: string; type: 'put' | 'del'; value: string }[];
  /** The kv each put mutation produced (key -> rev -> kv). */
  readonly after = new Map<bigint, Kv>();

  constructor(ops: Op[]) {
    this.muts = ops
      .filter(isWrite)
      .flatMap((o) => mutations(o).map((m) => ({ rev: o.rev, ...m })))
      .sort((x, y) => (x.rev < y.rev ? -1 : x.rev > y.rev ? 1 : 0));
    const s = new Map<string, Kv>();
    for (const m of this.muts) {
      if (m.type === 'del') {
        s.delete(m.key);
        continue;
      }
      const cur = s.get(m.key);
      const kv: Kv = { key: m.key, value: m.value, create: cur?.create ?? m.rev, mod: m.rev, version: (cur?.version ?? 0n) + 1n, lease: 0n };
      s.set(m.key, kv);
      this.after.set(m.rev, kv);
    }
  }

  /** Mutations with from < rev <= to, in order. */
  between(from: bigint, to: bigint) {
    return this.muts.filter((m) => m.rev > from && m.rev <= to);
  }

  stateAt(rev: bigint, prefix = ''): Kv[] {
    const s = new Map<string, Kv>();
    for (const m of this.muts) {
      if (m.rev > rev) break;
      if (!m.key.startsWith(prefix)) continue;
      if (m.type === 'del') s.delete(m.key);
      else s.set(m.key, this.after.get(m.rev)!);
    }
    return [...s.values()].sort((x, y) => Buffer.compare(B(x.key), B(y.key)));
  }
}

// ---------------------------------------------------------------------------
// (a) per-member order

test('(a) writes hammering one member: every revision reads exactly the oracle state after the same writes', async () => {
  const keys = keysOn(0, 'a/k', 20);
  const ops: Op[] = [];
  const nextId = { n: 0 };
  // A full-history watch through B, from before the first write.
  const r0 = (await a.range({ key: ALL, rangeEnd: ALL, countOnly: true })).header!.revision;
  const history = openWatch(b, 'a/', r0 + 1n);
  const deadline = performance.now() + RUN_MS;
  const opts: WriterOptions = { keys, sameMember: () => keys, deadline, ops, nextId };
  await Promise.all(Array.from({ length: 16 }, (_, w) => (w % 2 === 0 ? writer(w, 'A', a, opts) : writer(w, 'B', b, opts))));
  checkOrder(ops);
  const writes = ops.filter(isWrite).sort((x, y) => (x.rev < y.rev ? -1 : 1));
  assert.ok(writes.length > 100, `only ${writes.length} writes in ${RUN_MS} ms`);
  const successes = ops.filter((w) => w.kind === 'txn' && !w.error && (w.resp as TxnResponse).succeeded).length;
  const failures = ops.filter((w) => w.kind === 'txn' && !w.error && !(w.resp as TxnResponse).succeeded).length;
  assert.ok(successes > 10 && failures > 10, `guarded txns: ${successes} succeeded, ${failures} failed`);
  // The race was provoked: member writes that arrived after a later revision had landed (and retried).
  let outOfOrder = 0;
  for (const p of [proxyA, proxyB]) {
    for (const v of (await p.metrics.writeAttempts.get()).values) if (v.labels.outcome === 'order') outOfOrder += v.value;
  }
  assert.ok(outOfOrder > 0, 'no member write ever lost the per-member order guard: the race was not provoked');
  // Ready writes shared member transactions (members/write-batcher.ts): reads below then land inside batches.
  let batched = 0;
  for (const p of [proxyA, proxyB]) {
    const values = (await p.metrics.writeBatchSize.get()).values;
    const count = values.find((v) => v.metricName === 'metaetcd_member_write_batch_size_count')?.value ?? 0;
    const alone = values.find((v) => v.metricName === 'metaetcd_member_write_batch_size_bucket' && v.labels.le === 1)?.value ?? 0;
    batched += count - alone;
  }
  assert.ok(batched > 0, 'no member transaction carried more than one client write: no batch was formed');

  // Replay against the oracle in revision order; P -> O maps proxy to oracle revisions of mutations.
  const p2o = new Map<bigint, bigint>();
  const o2p = new Map<bigint, bigint>();
  const base = (await oracle.range({ key: ALL, rangeEnd: ALL, countOnly: true })).header!.revision;
  let lastO = base;
  const toProxy = (kv: KeyValue | undefined): Kv | undefined =>
    kv && { ...kvOf(kv), create: o2p.get(kv.createRevision) ?? -kv.createRevision, mod: o2p.get(kv.modRevision) ?? -kv.modRevision };
  const mine = (kv: KeyValue | undefined): Kv | undefined => kv && kvOf(kv);
  const translate = (p: bigint): bigint => (p === 0n ? 0n : (p2o.get(p) ?? 1n << 60n)); // never-a-mod revision matches nothing
  for (const w of writes) {
    const what = `${w.kind} ${w.key} at proxy revision ${w.rev} ${seedNote}`;
    let oRev: bigint;
    if (w.kind === 'put') {
      const r = await oracle.put({ key: B(w.key), value: B(w.value), prevKv: true });
      assert.deepEqual(mine((w.resp as PutResponse).prevKv), toProxy(r.prevKv), `prev_kv of ${what}`);
      oRev = r.header!.revision;
    } else if (w.kind === 'del') {
      const r = await oracle.deleteRange({ key: B(w.key), prevKv: true });
      const p = w.resp as DeleteRangeResponse;
      assert.equal(p.deleted, r.deleted, `deleted of ${what}`);
      assert.deepEqual(p.prevKvs.map(mine), r.prevKvs.map(toProxy), `prev_kvs of ${what}`);
      oRev = r.header!.revision;
    } else {
      const r = await oracle.txn(txnRequest(w, w.compare!.target === 'mod' ? translate(w.compare!.value) : w.compare!.value));
      const p = w.resp as TxnResponse;
      assert.equal(p.succeeded, r.succeeded, `compare outcome of ${what} (${w.compare!.target} == ${w.compare!.value})`);
      assert.equal(p.responses.length, r.responses.length);
      for (const [i, pr] of p.responses.entries()) {
        const or = r.responses[i]!;
        assert.equal(pr.response?.$case, or.response?.$case, what);
        if (pr.response?.$case === 'responsePut') {
          assert.deepEqual(mine(pr.response.value.prevKv), toProxy((or.response!.value as PutResponse).prevKv), `prev_kv in ${what}`);
        } else if (pr.response?.$case === 'responseRange') {
          assert.deepEqual(pr.response.value.kvs.map(mine), (or.response!.value as RangeResponse).kvs.map(toProxy), `range in ${what}`);
        }
      }
      oRev = r.header!.revision;
    }
    if (oRev > lastO) {
      p2o.set(w.rev, oRev);
      o2p.set(oRev, w.rev);
      lastO = oRev;
    }
    assert.equal(oRev > lastO || p2o.has(w.rev), mutations(w).length > 0, `mutation or not: ${what}`);
  }

  // Every revision from the first write to the last: Range of the whole keyspace through the
  // proxies equals the oracle at the revision of the last write at or below it.
  const pRevs = [...p2o.keys()]; // ascending
  const first = writes[0]!.rev;
  const last = writes[writes.length - 1]!.rev;
  const oracleAt = new Map<bigint, Promise<Kv[]>>();
  const expectedAt = (r: bigint): Promise<Kv[]> => {
    let lo = 0;
    let hi = pRevs.length; // count of pRevs <= r
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (pRevs[mid]! <= r) lo = mid + 1;
      else hi = mid;
    }
    const o = lo === 0 ? base : p2o.get(pRevs[lo - 1]!)!;
    let p = oracleAt.get(o);
    if (!p) {
      p = oracle.range({ key: ALL, rangeEnd: ALL, revision: o }).then((res) => res.kvs.map((kv) => toProxy(kv)!));
      oracleAt.set(o, p);
    }
    return p;
  };
  const revisions: bigint[] = [];
  for (let r = first > 1n ? first - 1n : 1n; r <= last; r++) revisions.push(r); // (revision 0 would mean "now")
  const mismatches: string[] = [];
  await pool(revisions, 8, async (r, i) => {
    const client = i % 2 === 0 ? a : b;
    const got = await client.range({ key: ALL, rangeEnd: ALL, revision: r });
    const exp = await expectedAt(r);
    const kvs = got.kvs.map((kv) => kvOf(kv));
    if (JSON.stringify(kvs, bigintJson) !== JSON.stringify(exp, bigintJson) || got.count !== BigInt(exp.length)) {
      mismatches.push(`at ${r} via ${i % 2 === 0 ? 'A' : 'B'}:\n  proxy:  ${show(kvs)}\n  oracle: ${show(exp)}`);
    }
    // The first keys only (a member read with a limit) and the count alone.
    const firstFew = await client.range({ key: ALL, rangeEnd: ALL, revision: r, limit: 3n });
    const few = firstFew.kvs.map((kv) => kvOf(kv));
    if (JSON.stringify(few, bigintJson) !== JSON.stringify(exp.slice(0, 3), bigintJson) || firstFew.count !== BigInt(exp.length) || firstFew.more !== exp.length > 3) {
      mismatches.push(`limit 3 at ${r}:\n  proxy:  ${show(few)} count ${firstFew.count} more ${firstFew.more}\n  oracle: ${show(exp.slice(0, 3))} count ${exp.length}`);
    }
    const counted = await client.range({ key: ALL, rangeEnd: ALL, revision: r, countOnly: true });
    if (counted.count !== BigInt(exp.length)) mismatches.push(`count at ${r}: proxy ${counted.count}, oracle ${exp.length}`);
  });
  assert.equal(mismatches.length, 0, `${mismatches.length} of ${revisions.length} revisions differ ${seedNote}; first: ${mismatches.slice(0, 3).join('\n')}`);

  // The watch delivered every change once, in revision order, with the right kvs.
  const model = new Model(ops);
  assert.deepEqual(model.stateAt(last), await expectedAt(last), 'the model of acknowledged writes agrees with the oracle');
  // Wait for the last change (the last write op may have changed nothing: a failed txn or a delete of a missing key).
  const lastChange = model.between(r0, last).at(-1)?.rev ?? r0;
  await waitUntil(`the history watch to reach ${lastChange}`, () => history.events.some((e) => e.rev >= lastChange) || !!history.error || !!history.canceled, 15_000);
  assert.equal(history.error ?? history.canceled, undefined);
  const expEvents = model.between(r0, last).map((m) => `${m.rev}:${m.type}:${m.key}`);
  const gotEvents = history.events.map((e) => `${e.rev}:${e.type}:${e.kv.key}`);
  assert.deepEqual(gotEvents, expEvents, `history watch ${seedNote}`);
  for (const e of history.events) if (e.type === 'put') assert.deepEqual(e.kv, model.after.get(e.rev), `event kv at ${e.rev}`);
  history.stream.cancel();

  // Concurrent linearizable gets returned exactly the state at their header revision.
  for (const g of ops.filter((o) => o.kind === 'get')) {
    const exp = (await expectedAt(g.rev)).filter((kv) => kv.key === g.key);
    assert.deepEqual((g.resp as RangeResponse).kvs.map(mine), exp, `get ${g.key} at ${g.rev} ${seedNote}`);
  }
});

function bigintJson(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

// ---------------------------------------------------------------------------
// (b) list at R, then watch from R+1

interface Watch {
  events: { rev: bigint; type: 'put' | 'del'; kv: Kv }[];
  canceled?: string;
  error?: string;
  created: boolean;
  stream: ClientDuplexStream<WatchRequest, WatchResponse>;
}

function openWatch(client: EtcdClient, prefix: string, startRevision: bigint): Watch {
  const stream = client.watch();
  streams.push(stream);
  const w: Watch = { events: [], created: false, stream };
  stream.on('data', (resp: WatchResponse) => {
    if (resp.created) w.created = true;
    if (resp.canceled) w.canceled = resp.cancelReason || `canceled (compact ${resp.compactRevision})`;
    for (const ev of resp.events) {
      w.events.push({ rev: ev.kv!.modRevision, type: ev.type === Event_EventType.DELETE ? 'del' : 'put', kv: kvOf(ev.kv!) });
    }
  });
  stream.on('error', (err: Error) => {
    if (!/Cancelled/i.test(String(err))) w.error = String(err);
  });
  stream.write(
    WatchRequest.fromPartial({
      requestUnion: { $case: 'createRequest', value: { key: B(prefix), rangeEnd: prefixEnd(prefix), startRevision } },
    }),
  );
  return w;
}

function prefixEnd(prefix: string): Buffer {
  const e = Buffer.from(prefix);
  e[e.length - 1]!++;
  return e;
}

async function waitUntil(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} ${seedNote}`);
    await sleep(20);
  }
}

test('(b) a list at R then a watch from R+1 misses nothing, with writers on every member through two proxies', async () => {
  const prefix = 'b/';
  const keys = Array.from({ length: 45 }, (_, i) => `${prefix}k${i}`);
  const groups = new Map<number, string[]>();
  for (const k of keys) {
    const m = proxyA.handle.router.memberOf(B(k));
    groups.set(m, [...(groups.get(m) ?? []), k]);
  }
  assert.equal(groups.size, 3, 'keys on every member');
  const ops: Op[] = [];
  const deadline = performance.now() + RUN_MS;
  const opts: WriterOptions = { keys, sameMember: (k) => groups.get(proxyA.handle.router.memberOf(B(k)))!, deadline, ops, nextId: { n: 0 } };
  const writers = Promise.all(Array.from({ length: 12 }, (_, w) => writer(100 + w, w % 2 ? 'B' : 'A', w % 2 ? b : a, opts)));

  const lists: { via: string; rev: bigint; kvs: Kv[]; watch: Watch }[] = [];
  const rnd = prng(SEED + 7);
  while (performance.now() < deadline - 100 && lists.length < 40) {
    const i = lists.length;
    const [lister, watcher] = [i % 2 ? b : a, (i >> 1) % 2 ? b : a];
    const res = await lister.range({ key: B(prefix), rangeEnd: prefixEnd(prefix) });
    const rev = res.header!.revision;
    lists.push({ via: `list ${i % 2 ? 'B' : 'A'} watch ${(i >> 1) % 2 ? 'B' : 'A'}`, rev, kvs: res.kvs.map(kvOf), watch: openWatch(watcher, prefix, rev + 1n) });
    await sleep(20 + Math.floor(rnd() * 60));
  }
  await writers;
  checkOrder(ops);
  assert.ok(lists.length >= 5, `only ${lists.length} lists`);

  // A sentinel write after all others; every watch must get there.
  const end = await a.put({ key: B(`${prefix}~end`), value: B('end') });
  const S = end.header!.revision;
  for (const l of lists) {
    await waitUntil(`watch from ${l.rev + 1n} (${l.via}) to reach ${S}`, () => l.watch.events.some((e) => e.rev >= S) || !!l.watch.error || !!l.watch.canceled, 15_000);
  }
  const model = new Model([...ops, { id: -1, kind: 'put', via: 'A', key: `${prefix}~end`, value: 'end', start: 0, end: 0, rev: S, resp: end }]);
  const finalA = (await a.range({ key: B(prefix), rangeEnd: prefixEnd(prefix), revision: S })).kvs.map(kvOf);
  const finalB = (await b.range({ key: B(prefix), rangeEnd: prefixEnd(prefix), revision: S })).kvs.map(kvOf);
  assert.deepEqual(finalA, model.stateAt(S, prefix), 'final state through A equals the acknowledged writes');
  assert.deepEqual(finalB, finalA, 'final state through B');

  for (const [i, l] of lists.entries()) {
    const what = `list #${i} (${l.via}) at ${l.rev} ${seedNote}`;
    assert.equal(l.watch.error, undefined, what);
    assert.equal(l.watch.canceled, undefined, what);
    // The list is exactly the state after every acknowledged write at or below its revision.
    assert.deepEqual(l.kvs, model.stateAt(l.rev, prefix), `${what}: list differs from the acknowledged writes <= ${l.rev}`);
    // The watch delivers exactly the writes after it, in order, once each.
    const got = l.watch.events.filter((e) => e.rev <= S);
    const exp = model.between(l.rev, S);
    const sig = (e: { rev: bigint; type: string; key: string }) => `${e.rev}:${e.type}:${e.key}`;
    const gotSigs = got.map((e) => sig({ ...e, key: e.kv.key }));
    const expSigs = exp.map(sig);
    const missing = expSigs.filter((s) => !gotSigs.includes(s));
    const extra = gotSigs.filter((s) => !expSigs.includes(s));
    assert.deepEqual(gotSigs, expSigs, `${what}: events differ; missing ${missing.slice(0, 5).join(', ')}; unexpected ${extra.slice(0, 5).join(', ')}`);
    for (const e of got) if (e.type === 'put') assert.deepEqual(e.kv, model.after.get(e.rev), `${what}: event kv at ${e.rev}`);
    // List + events reproduce the final state.
    const state = new Map(l.kvs.map((kv) => [kv.key, kv]));
    for (const e of got) {
      if (e.type === 'del') state.delete(e.kv.key);
      else state.set(e.kv.key, e.kv);
    }
    assert.deepEqual([...state.values()].sort((x, y) => Buffer.compare(B(x.key), B(y.key))), finalA, `${what}: list + watch != final state`);
    l.watch.stream.cancel();
  }
});

// ---------------------------------------------------------------------------
// (c) read-your-writes across proxies

test('(c) a write acknowledged by one proxy is visible to the next linearizable read through the other', async () => {
  const keys = Array.from({ length: 30 }, (_, i) => `c/k${i}`);
  const bgKeys = Array.from({ length: 30 }, (_, i) => `cbg/k${i}`);
  let stop = false;
  const bgErrors: string[] = [];
  const background = Array.from({ length: 2 }, async (_, w) => {
    const client = w % 2 ? b : a;
    for (let n = 0; !stop; n++) {
      try {
        await client.put({ key: B(bgKeys[(w * 7 + n) % bgKeys.length]!), value: B(`bg${w}-${n}`) });
      } catch (err) {
        bgErrors.push(String(err));
      }
    }
  });
  try {
    let highest = 0n;
    for (let i = 0; i < 250; i++) {
      const [writerC, readerC, wName, rName] = i % 2 ? [b, a, 'B', 'A'] : [a, b, 'A', 'B'];
      const key = keys[i % keys.length]!;
      const value = `v${i}`;
      const put = await writerC.put({ key: B(key), value: B(value) });
      const rev = put.header!.revision;
      const what = `iteration ${i}: put ${key} via ${wName} at ${rev}, read via ${rName}`;
      assert.ok(rev > highest, `${what}: revision not above ${highest} already observed`);
      const got = await readerC.range({ key: B(key) });
      assert.ok(got.header!.revision >= rev, `${what}: read header ${got.header!.revision} < ${rev}`);
      assert.equal(got.kvs.length, 1, `${what}: key missing`);
      assert.equal(got.kvs[0]!.value.toString(), value, `${what}: stale value`);
      assert.equal(got.kvs[0]!.modRevision, rev, `${what}: mod_revision`);
      highest = got.header!.revision;
      // A prefix read (several members) through the reader sees it too.
      if (i % 10 === 0) {
        const list = await readerC.range({ key: B('c/'), rangeEnd: B('c0') });
        assert.ok(list.header!.revision >= rev, what);
        const kv = list.kvs.find((k) => k.key.toString() === key);
        assert.equal(kv?.value.toString(), value, `${what}: prefix read`);
        highest = list.header!.revision > highest ? list.header!.revision : highest;
      }
    }
  } finally {
    stop = true;
    await Promise.all(background);
  }
  assert.deepEqual(bgErrors, []);
});

// ---------------------------------------------------------------------------
// (d) the member's own window between a watch event and its revision

/**
 * A gRPC pass-through in front of one member etcd, modelling an etcd that is
 * descheduled for `pauseMs` at one precise point of every write: etcd 3.4
 * notifies watchers of revision X before it advances its current revision to X
 * (mvcc/watchable_store_txn.go, End(): notify, then TxnWrite.End()). During that
 * window a serializable Range at revision X answers "required revision is a
 * future revision", and no response showing revision X has left etcd yet.
 * The model: after it forwards a watch event of member revision X, for pauseMs
 * the interposer (1) answers a serializable Range at a revision >= X with that
 * error and (2) holds back every response whose header shows a revision >= X.
 * (With plain etcd this window is microseconds wide: reading at a revision right
 * after its watch event fails that way about once in 10^4 tries on a loaded
 * 2-core machine; widening it makes the outcome certain.) Every request of the
 * scenario must pass through interposers for the model to hold.
 */
async function startInterposer(target: string, pauseMs: number): Promise<{ url: string; injected: () => number; stop: () => Promise<void> }> {
  const upstream = new Client(target, credentials.createInsecure());
  const server = new Server();
  /** Open windows: member revision -> when it closes (performance.now()). */
  const open = new Map<bigint, number>();
  let injected = 0;
  const prune = () => {
    const t = performance.now();
    for (const [x, until] of open) if (until <= t) open.delete(x);
  };
  /** How long a response showing `rev` must still be held. */
  const holdFor = (rev: bigint): number => {
    prune();
    let until = 0;
    for (const [x, u] of open) if (x <= rev && u > until) until = u;
    return Math.max(0, until - performance.now());
  };
  for (const svc of [KVService, WatchService, LeaseService, MaintenanceService, ClusterService] as unknown as Record<string, MethodDefinition<unknown, unknown>>[]) {
    const impl: UntypedServiceImplementation = {};
    for (const [name, d] of Object.entries(svc)) {
      if (!d.requestStream && !d.responseStream) {
        impl[name] = (call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) => {
          if (d.path === KVService.range.path) {
            const req = call.request as RangeRequest;
            prune();
            if (req.serializable && req.revision > 0n && [...open.keys()].some((x) => x <= req.revision)) {
              injected++;
              cb({ code: GrpcStatus.OUT_OF_RANGE, details: 'etcdserver: mvcc: required revision is a future revision' });
              return;
            }
          }
          upstream.makeUnaryRequest(d.path, d.requestSerialize, d.responseDeserialize, call.request, call.metadata, {}, (err, res) => {
            if (err) return cb(err);
            const rev = (res as { header?: { revision: bigint } }).header?.revision ?? 0n;
            const wait = holdFor(rev);
            if (wait > 0) setTimeout(() => cb(null, res), wait);
            else cb(null, res);
          });
        };
      } else if (d.requestStream && d.responseStream) {
        impl[name] = (call: ServerDuplexStream<unknown, unknown>) => {
          const up = upstream.makeBidiStreamRequest(d.path, d.requestSerialize, d.responseDeserialize, call.metadata);
          call.on('data', (m: unknown) => up.write(m));
          call.on('end', () => up.end());
          call.on('error', () => up.cancel());
          call.on('cancelled', () => up.cancel());
          up.on('data', (m: unknown) => {
            if (d.path === WatchService.watch.path) {
              for (const ev of (m as WatchResponse).events) {
                if (!open.has(ev.kv!.modRevision)) open.set(ev.kv!.modRevision, performance.now() + pauseMs);
              }
            }
            call.write(m);
          });
          up.on('end', () => call.end());
          up.on('error', (err: Error) => call.emit('error', err));
        };
      } else if (d.responseStream) {
        impl[name] = (call: ServerWritableStream<unknown, unknown>) => {
          const up = upstream.makeServerStreamRequest(d.path, d.requestSerialize, d.responseDeserialize, call.request, call.metadata);
          up.on('data', (m: unknown) => call.write(m));
          up.on('end', () => call.end());
          up.on('error', (err: Error) => call.emit('error', err));
          call.on('cancelled', () => up.cancel());
        };
      }
    }
    server.addService(svc as ServiceDefinition, impl);
  }
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? rej(err) : res(p))),
  );
  return {
    url: `http://127.0.0.1:${port}`,
    injected: () => injected,
    stop: async () => {
      await new Promise<void>((res) => server.tryShutdown(() => res()));
      server.forceShutdown();
      upstream.close();
    },
  };
}

test('(d) reads neither fail nor go wrong while a member has sent a watch event but not yet advanced its revision', async () => {
  const interposers = await Promise.all(set.members.map((m) => startInterposer(m.clientUrl.replace(/^http:\/\//, ''), Number(process.env.RACE_PAUSE_MS ?? 25))));
  for (const i of interposers) cleanups.push(i.stop);
  const proxyC = await startTestProxy(set, { members: interposers.map((i) => i.url).join(',') });
  cleanups.push(() => proxyC.stop());
  const c = clientFor(proxyC.url, 'proxy C', 20_000);
  cleanups.push(async () => c.close());

  // Only proxy C is used here, so every member request and response passes an interposer.
  const key = keysOn(0, 'd/k', 1)[0]!;
  let value = 'none';
  let rev = 0n;
  const failures: string[] = [];
  for (let i = 0; i < 30; i++) {
    // A write in flight on the member while C reads the key and a prefix over every member "now".
    const next = `v${i}`;
    const [w, one, all] = await Promise.allSettled([
      c.put({ key: B(key), value: B(next) }),
      c.range({ key: B(key) }),
      c.range({ key: B('d/'), rangeEnd: B('d0') }),
    ]);
    if (w.status === 'rejected') {
      failures.push(`iteration ${i}: put: ${String(w.reason)}`);
      continue;
    }
    const wrev = w.value.header!.revision;
    for (const [what, r] of [['the key', one], ['the prefix', all]] as const) {
      if (r.status === 'rejected') {
        failures.push(`iteration ${i}: read of ${what} with a write in flight: ${String(r.reason)}`);
        continue;
      }
      // Either snapshot is fine; it must be the one its header names.
      const h = r.value.header!.revision;
      const kv = r.value.kvs.find((k) => k.key.toString() === key);
      const exp = h >= wrev ? { v: next, m: wrev } : { v: value, m: rev };
      assert.equal(kv?.value.toString() ?? 'none', exp.v, `iteration ${i}: read of ${what} at header ${h} (write at ${wrev})`);
      if (kv) assert.equal(kv.modRevision, exp.m);
    }
    value = next;
    rev = wrev;
  }
  const injected = interposers.reduce((n, i) => n + i.injected(), 0);
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} requests failed (members answered "future revision" ${injected} times)`);
});
