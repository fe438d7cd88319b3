// Issue 6 (6): a bounded, seeded fuzz test of the request handlers.
//
// Random but structurally plausible requests — Range, Put, DeleteRange, Txn
// (random compares, nested branches), Watch creates/cancels/progress, lease
// grants/revokes/TTLs — with random bytes for keys and values and random enum
// values, are sent one at a time to the proxy (a child process, so a crash is
// seen) and to a plain etcd (the oracle). Each must be answered with a status
// or a valid response within a bound; the proxy must answer as the oracle does
// (same code, same etcd message, same revision-independent content), cross-member
// transactions included (issue 15: they are atomic, as in etcd). The one caveat
// left: a writing transaction with a read between two of its writes, or with a
// put inside its own from-key delete, may be refused with InvalidArgument naming
// metaetcd; such a refusal (of a transaction that has that shape) is not sent to
// the oracle, and any other metaetcd refusal fails the run. Mutated raw bytes are sent to the proxy alone. At the
// end, the whole keyspace, the lease list and every key's watch history must be
// the same on both sides.
//
// FUZZ_SEED=<n> repeats a run; FUZZ_MS sets the budget (default 20 s). A
// failure prints the seed, the step, the request and the last steps before it.
//
// Not generated, because they are known differences reported elsewhere (see
// bad-input.test.ts): ranges at non-zero revisions inside a transaction, keys
// near 1 MiB, protobuf with wrong wire types, transactions nested over 48
// levels, watches from start revision -1, a plain Put with ignore_value on a
// missing key and an unknown lease, and sort targets that crash etcd 3.4 itself.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { Event_EventType, type Event } from '../../src/proto/gen/kv.js';
import {
  type Compare,
  type DeleteRangeRequest,
  type LeaseGrantRequest,
  LeaseTimeToLiveRequest,
  type PutRequest,
  RangeRequest,
  type RangeRequest_SortOrder,
  type RangeRequest_SortTarget,
  type RequestOp,
  type TxnRequest,
  type WatchCreateRequest,
  type WatchCreateRequest_FilterType,
} from '../../src/proto/gen/rpc.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { ALL, ChildProxy, codeOf, detailsOf, grpcFrame, KV, rawCall, sleep, Status, waitUntil } from '../harness/faults.js';
import { clientFor } from '../harness/proxy.js';
import { rng, WatchRecorder } from '../harness/watch-checker.js';
import { kvShape, rangeShape, txnShape } from './shapes.js';

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const BUDGET_MS = Number(process.env.FUZZ_MS ?? 20_000);
const CALL_BOUND_MS = 10_000;
/**
 * Whether some branch of `t` (nested transactions flattened) puts a key inside
 * the range of a from-key delete (range_end "\0") of the same branch: etcd accepts
 * it, metaetcd refuses it (a documented caveat).
 */
function putInsideFromKeyDelete(t: TxnRequest): boolean {
  const flat = (ops: RequestOp[]): RequestOp[] =>
    ops.flatMap((o) => (o.request?.$case === 'requestTxn' ? [...flat(o.request.value.success), ...flat(o.request.value.failure)] : [o]));
  const check = (ops: RequestOp[]) => {
    const all = flat(ops);
    const starts = all.flatMap((o) => (o.request?.$case === 'requestDeleteRange' && o.request.value.rangeEnd.length === 1 && o.request.value.rangeEnd[0] === 0 ? [o.request.value.key] : []));
    const puts = all.flatMap((o) => (o.request?.$case === 'requestPut' ? [o.request.value.key] : []));
    return puts.some((p) => starts.some((k) => Buffer.compare(Buffer.from(p), Buffer.from(k)) >= 0));
  };
  return check(t.success) || check(t.failure);
}

/** The refusal of every cross-member transaction before issue 15: it must never come back. */
const OLD_CROSS_MEMBER_REFUSAL = 'metaetcd: transaction writes keys held by different member clusters';

/**
 * Whether some branch of `t` (nested transactions flattened, both of their
 * branches) has a range read with a write before it and a write after it: the
 * only shape a cross-member transaction may still be refused for.
 */
function readBetweenWrites(t: TxnRequest): boolean {
  const flat = (ops: RequestOp[]): string[] =>
    ops.flatMap((o) => {
      const r = o.request;
      if (r?.$case === 'requestRange') return ['R'];
      if (r?.$case === 'requestPut' || r?.$case === 'requestDeleteRange') return ['W'];
      if (r?.$case === 'requestTxn') return [...flat(r.value.success), ...flat(r.value.failure)];
      return [];
    });
  const between = (seq: string[]) => seq.some((x, i) => x === 'R' && seq.slice(0, i).includes('W') && seq.slice(i + 1).includes('W'));
  const nested = (ops: RequestOp[]): boolean => ops.some((o) => o.request?.$case === 'requestTxn' && readBetweenWrites(o.request.value));
  return between(flat(t.success)) || between(flat(t.failure)) || nested(t.success) || nested(t.failure);
}

let set: EtcdSet;
let C: ChildProxy;
let p: EtcdClient;
let o: EtcdClient;
const open: WatchRecorder[] = [];

before(async () => {
  console.log(`FUZZ_SEED=${SEED} FUZZ_MS=${BUDGET_MS}`);
  set = await startEtcdSet({ oracle: true, name: 'fuzz' });
  C = await ChildProxy.start(set);
  p = clientFor(C.url, 'proxy', CALL_BOUND_MS);
  o = clientFor(set.oracle!.clientUrl, 'oracle', CALL_BOUND_MS);
});

after(async () => {
  for (const w of open) w.close();
  p?.close();
  o?.close();
  await C?.stop();
  await set?.stop();
});

// ---------------------------------------------------------------------------
// Generators

type R = () => number;
const pick = <T>(r: R, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const ALPHABET = [0x00, 0x01, 0x2f, 0x61, 0x62, 0x63, 0x64, 0x6d, 0x7f, 0xfe, 0xff];
const LONG_LEASES = [1001n, 1002n, 1003n, 1004n];

/** While a transaction is generated, most of its keys come from a small set (so that it often touches a key twice; with random other keys it spans members too). */
let txnKeys: Buffer[] | undefined;

function genKey(r: R): Buffer {
  if (txnKeys && r() < 0.7) return pick(r, txnKeys);
  if (r() < 0.02) return Buffer.alloc(0);
  const n = 1 + Math.floor(r() * 4);
  return Buffer.from(Array.from({ length: n }, () => pick(r, ALPHABET)));
}

function prefixEnd(k: Buffer): Buffer {
  const b = Buffer.from(k);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const e = Buffer.from(b.subarray(0, i + 1));
      e[i] = b[i]! + 1;
      return e;
    }
  }
  return ALL;
}

function genRangeEnd(r: R, key: Buffer): Buffer {
  const x = r();
  if (x < 0.45) return Buffer.alloc(0);
  if (x < 0.55) return Buffer.from([0]);
  if (x < 0.75) return prefixEnd(key);
  if (x < 0.8) return Buffer.from(key);
  return genKey(r);
}

const usedValues: Buffer[] = [Buffer.from('v')];
function genValue(r: R): Buffer {
  const x = r();
  if (x < 0.3) return pick(r, usedValues);
  if (x < 0.31) return Buffer.alloc(100_000 + Math.floor(r() * 1000), Math.floor(r() * 256));
  const v = Buffer.from(Array.from({ length: Math.floor(r() * 12) }, () => Math.floor(r() * 256)));
  if (usedValues.length < 50) usedValues.push(v);
  return v;
}

function genRange(r: R, inTxn = false): RangeRequest {
  const key = genKey(r);
  return RangeRequest.fromPartial({
    key,
    rangeEnd: genRangeEnd(r, key),
    limit: BigInt(pick(r, [0, 0, 0, 1, 2, 3, -1])),
    // Revision numbers differ between the two sides: only "now", negatives (top level) and the future.
    revision: inTxn ? 0n : pick(r, [0n, 0n, 0n, 0n, -1n, 1n << 50n]),
    sortOrder: pick(r, [0, 0, 0, 1, 2, 5]) as RangeRequest_SortOrder,
    sortTarget: pick(r, [0, 0, 0, 1, 2, 3, 4]) as RangeRequest_SortTarget,
    serializable: !inTxn && r() < 0.1,
    keysOnly: r() < 0.1,
    countOnly: r() < 0.1,
    minModRevision: pick(r, [0n, 0n, 0n, 0n, -1n, 1n << 50n]),
    maxModRevision: pick(r, [0n, 0n, 0n, 0n, -1n, 1n << 50n]),
    minCreateRevision: pick(r, [0n, 0n, 0n, 0n, 1n << 50n]),
    maxCreateRevision: pick(r, [0n, 0n, 0n, 0n, 1n << 50n]),
  });
}

function genLease(r: R): bigint {
  const x = r();
  return x < 0.7 ? 0n : x < 0.95 ? pick(r, LONG_LEASES) : 999n;
}

function genPut(r: R, inTxn = false): PutRequest {
  const put: PutRequest = {
    key: genKey(r),
    value: r() < 0.05 ? Buffer.alloc(0) : genValue(r),
    lease: genLease(r),
    prevKv: r() < 0.5,
    ignoreValue: r() < 0.05,
    ignoreLease: r() < 0.05,
  };
  // Known difference (bad-input.test.ts): a plain Put checks its lease before ignore_value's key.
  if (!inTxn && (put.ignoreValue || put.ignoreLease)) put.lease = 0n;
  return put;
}

function genDelete(r: R): DeleteRangeRequest {
  const key = genKey(r);
  return { key, rangeEnd: genRangeEnd(r, key), prevKv: r() < 0.5 };
}

function genCompare(r: R): Compare {
  const key = genKey(r);
  const target = pick(r, [0, 0, 1, 2, 3, 3, 4, 7]); // VERSION, CREATE, MOD, VALUE, LEASE, unknown
  const result = pick(r, [0, 0, 1, 2, 3, 6]); // EQUAL, GREATER, LESS, NOT_EQUAL, unknown
  const rangeEnd = r() < 0.75 ? Buffer.alloc(0) : genRangeEnd(r, key);
  let targetUnion: Compare['targetUnion'];
  switch (target) {
    case 0:
      targetUnion = { $case: 'version', value: BigInt(pick(r, [0, 1, 2, 3])) };
      break;
    case 1:
      targetUnion = { $case: 'createRevision', value: pick(r, [0n, 1n << 50n]) };
      break;
    case 2:
      targetUnion = { $case: 'modRevision', value: pick(r, [0n, 1n << 50n]) };
      break;
    case 3:
      targetUnion = { $case: 'value', value: genValue(r) };
      break;
    case 4:
      targetUnion = { $case: 'lease', value: genLease(r) };
      break;
    default:
      targetUnion = undefined;
  }
  return { key, rangeEnd, target, result, targetUnion };
}

function genOp(r: R, depth: number): RequestOp {
  const x = r();
  if (x < 0.3) return { request: { $case: 'requestRange', value: genRange(r, true) } };
  if (x < 0.65) return { request: { $case: 'requestPut', value: genPut(r, true) } };
  if (x < 0.85 || depth >= 2) return { request: { $case: 'requestDeleteRange', value: genDelete(r) } };
  return { request: { $case: 'requestTxn', value: genTxn(r, depth + 1) } };
}

function genTxn(r: R, depth = 0): TxnRequest {
  const n = (max: number) => Math.floor(r() * (max + 1));
  const outer = txnKeys === undefined;
  if (outer) {
    txnKeys = undefined;
    txnKeys = [genKey(r), genKey(r)].filter((k) => k.length > 0);
    if (txnKeys.length === 0) txnKeys = undefined;
  }
  try {
    return {
      compare: Array.from({ length: n(3) }, () => genCompare(r)),
      success: Array.from({ length: n(3) }, () => genOp(r, depth)),
      failure: Array.from({ length: n(2) }, () => genOp(r, depth)),
    };
  } finally {
    if (outer) txnKeys = undefined;
  }
}

function genWatch(r: R): WatchCreateRequest {
  const key = genKey(r);
  return {
    key,
    rangeEnd: genRangeEnd(r, key),
    startRevision: pick(r, [0n, 0n, 0n, -2n, -7n, 1n << 40n]),
    progressNotify: r() < 0.2,
    filters: r() < 0.2 ? [pick(r, [0, 1, 5]) as WatchCreateRequest_FilterType] : [],
    prevKv: r() < 0.5,
    watchId: pick(r, [0n, 0n, 0n, 7n, -3n]),
    fragment: r() < 0.2,
  };
}

// ---------------------------------------------------------------------------
// Running one request on both sides

type Outcome = { ok: true; shape: unknown; header?: bigint } | { ok: false; code: number | undefined; message: string };

interface Step {
  n: number;
  kind: string;
  req: unknown;
}

const json = (v: unknown) =>
  JSON.stringify(v, (_, x) => {
    if (typeof x === 'bigint') return `${x}n`;
    if (x && typeof x === 'object' && x.type === 'Buffer' && Array.isArray(x.data)) return `hex:${Buffer.from(x.data).toString('hex').slice(0, 80)}`;
    return x;
  });

async function call(kind: string, req: any, c: EtcdClient): Promise<Outcome> {
  try {
    switch (kind) {
      case 'range': {
        const res = await c.range(req);
        return { ok: true, shape: rangeShape(res, req), header: req.serializable ? undefined : res.header!.revision };
      }
      case 'put': {
        const res = await c.put(req);
        return { ok: true, shape: { prev: kvShape(res.prevKv) }, header: res.header!.revision };
      }
      case 'delete': {
        const res = await c.deleteRange(req);
        return { ok: true, shape: { deleted: String(res.deleted), prev: res.prevKvs.map(kvShape) }, header: res.header!.revision };
      }
      case 'txn': {
        const res = await c.txn(req);
        return { ok: true, shape: txnShape(res, req), header: res.header!.revision };
      }
      case 'grant': {
        const res = await c.leaseGrant(req);
        return { ok: true, shape: { id: String(res.ID), ttl: String(res.TTL), error: res.error } };
      }
      case 'revoke':
        await c.leaseRevoke(req);
        return { ok: true, shape: null };
      case 'ttl': {
        const res = await c.leaseTimeToLive(req);
        return { ok: true, shape: { granted: String(res.grantedTTL), alive: res.TTL > 0n, keys: res.keys.map((k) => k.toString('hex')).sort() } };
      }
      default:
        throw new Error(`unknown kind ${kind}`);
    }
  } catch (err) {
    return { ok: false, code: codeOf(err), message: detailsOf(err) };
  }
}

/** Requests whose answers may legitimately differ in shape: sorted by a target other than the key and cut by a limit (ties at the cut). */
function looseRange(req: RangeRequest): boolean {
  const sortedByOther = req.sortTarget !== 0 && (req.sortOrder === 1 || req.sortOrder === 2 || req.sortOrder === 0);
  return sortedByOther && req.limit > 0n;
}

function sameOutcome(kind: string, req: any, e: Outcome, px: Outcome): string | undefined {
  if (e.ok !== px.ok) return 'one side failed';
  if (!e.ok && !px.ok) {
    if (e.code !== px.code) return 'different status codes';
    if (/^(etcdserver|mvcc):/.test(e.message) && e.message !== px.message) return 'different etcd messages';
    return undefined;
  }
  if (e.ok && px.ok) {
    if (kind === 'range' && req.serializable) return undefined; // the proxy may serve a slightly older snapshot
    if (kind === 'range' && looseRange(req)) {
      const a = e.shape as { count: string; kvs: unknown[]; more: boolean };
      const b = px.shape as { count: string; kvs: unknown[]; more: boolean };
      return a.count === b.count && a.more === b.more && a.kvs.flat().length === b.kvs.flat().length ? undefined : 'different responses';
    }
    return json(e.shape) === json(px.shape) ? undefined : 'different responses';
  }
  return undefined;
}

// ---------------------------------------------------------------------------

test('fuzz: random requests get the same answers from the proxy and a plain etcd; the proxy never crashes or hangs', { timeout: BUDGET_MS + 120_000 }, async () => {
  const r = rng(SEED);
  const history: Step[] = [];
  const counts = new Map<string, number>();
  let caveat = 0;
  const caveatMessages = new Set<string>();
  /** metaetcd refusals of requests etcd serves, other than the remaining caveat's. */
  const wrongRefusals: string[] = [];
  let raw = 0;
  let lastHeader = 0n;

  // Whole-keyspace watches from the start, one on each side, for the final comparison.
  const we = new WatchRecorder(o, 'oracle watch');
  const wp = new WatchRecorder(p, 'proxy watch');
  open.push(we, wp);
  for (const w of [we, wp]) w.create({ key: ALL, rangeEnd: ALL, prevKv: true });
  await waitUntil('whole-keyspace watches created', () => we.createdResponses().length === 1 && wp.createdResponses().length === 1, 10_000);

  const fail = (step: Step, why: string, e: Outcome, px: Outcome): never => {
    const recent = history.slice(-8).map((s) => `  #${s.n} ${s.kind} ${json(s.req)}`);
    assert.fail(
      `FUZZ_SEED=${SEED}: step #${step.n} ${step.kind}: ${why}\n  request: ${json(step.req)}\n  etcd:  ${json(e)}\n  proxy: ${json(px)}\n` +
        `previous steps:\n${recent.join('\n')}`,
    );
  };

  const deadline = performance.now() + BUDGET_MS;
  let n = 0;
  while (performance.now() < deadline) {
    n++;
    const x = r();
    let kind: string;
    let req: unknown;
    if (x < 0.22) [kind, req] = ['range', genRange(r)];
    else if (x < 0.47) [kind, req] = ['put', genPut(r)];
    else if (x < 0.57) [kind, req] = ['delete', genDelete(r)];
    else if (x < 0.83) [kind, req] = ['txn', genTxn(r)];
    else if (x < 0.86) [kind, req] = ['grant', { ID: pick(r, LONG_LEASES), TTL: pick(r, [3600n, 7200n, 1n << 40n]) } satisfies Partial<LeaseGrantRequest>];
    else if (x < 0.875) [kind, req] = ['revoke', { ID: pick(r, [...LONG_LEASES, 999n]) }];
    else if (x < 0.9) [kind, req] = ['ttl', { ID: pick(r, [...LONG_LEASES, 999n]), keys: r() < 0.5 }];
    else if (x < 0.925) [kind, req] = ['watch', { create: genWatch(r), then: pick(r, ['none', 'cancel', 'progress', 'create']), cancelId: pick(r, [0n, 7n, -3n, 99n]) }];
    else [kind, req] = ['raw', { path: pick(r, [KV.range, KV.range, '/etcdserverpb.Lease/LeaseTimeToLive']), mutation: Math.floor(r() * 1e9) }];
    const step: Step = { n, kind, req };
    counts.set(kind, (counts.get(kind) ?? 0) + 1);

    if (kind === 'watch') {
      await watchStep(step);
    } else if (kind === 'raw') {
      raw++;
      await rawStep(step);
    } else {
      const px = await call(kind, req, p);
      if (!px.ok && px.code === Status.DEADLINE_EXCEEDED) fail(step, `the proxy did not answer within ${CALL_BOUND_MS} ms`, { ok: true, shape: null }, px);
      if (!px.ok && px.code === Status.INVALID_ARGUMENT && px.message.startsWith('metaetcd:')) {
        // A metaetcd refusal: only the remaining caveat's, of a transaction of that shape (nothing applied; not
        // sent to the oracle). Any other is collected (the run goes on) and fails the test at the end.
        const shaped = kind === 'txn' && (readBetweenWrites(req as TxnRequest) || putInsideFromKeyDelete(req as TxnRequest));
        if (px.message.startsWith(OLD_CROSS_MEMBER_REFUSAL) || !shaped) {
          wrongRefusals.push(`#${step.n} ${kind}: ${px.message}\n    request: ${json(req)}`);
        } else {
          caveat++;
          caveatMessages.add(px.message);
        }
      } else {
        const e = await call(kind, req, o);
        const why = sameOutcome(kind, req, e, px);
        if (why) fail(step, why, e, px);
        if (px.ok && px.header !== undefined) {
          if (px.header < lastHeader) fail(step, `response header ${px.header} below ${lastHeader}, returned earlier`, e, px);
          lastHeader = px.header;
        }
      }
    }
    if (!C.running) assert.fail(`FUZZ_SEED=${SEED}: the proxy died at step #${n} ${kind} ${json(req)}\n${C.describe()}`);
    history.push(step);
  }

  // Final consistency: the whole keyspace, the leases, and each key's watch history.
  const [ke, kp] = await Promise.all([o.range({ key: ALL, rangeEnd: ALL }), p.range({ key: ALL, rangeEnd: ALL })]);
  assert.deepEqual(kp.kvs.map(kvShape), ke.kvs.map(kvShape), `FUZZ_SEED=${SEED}: final keyspace differs`);
  const [le, lp] = await Promise.all([o.leaseLeases(), p.leaseLeases()]);
  const ids = (l: { leases: { ID: bigint }[] }) => l.leases.map((x) => String(x.ID)).sort();
  assert.deepEqual(ids(lp), ids(le), `FUZZ_SEED=${SEED}: lease lists differ`);
  await waitUntil('watches caught up', () => wp.events(0n).length >= we.events(0n).length, 15_000).catch(() => undefined);
  assert.equal(wp.error, undefined, `proxy watch failed: ${wp.error?.details}`);
  assert.ok(!wp.responses.some((x) => x.canceled), 'the proxy canceled the whole-keyspace watch');
  const perKey = (evs: Event[]) => {
    const m = new Map<string, string[]>();
    for (const ev of evs) {
      const k = ev.kv!.key.toString('hex');
      m.set(k, [...(m.get(k) ?? []), `${Event_EventType[ev.type]} ${ev.type === Event_EventType.PUT ? kvShape(ev.kv) : ''} prev ${kvShape(ev.prevKv)}`]);
    }
    return Object.fromEntries([...m].sort());
  };
  assert.deepEqual(perKey(wp.events(0n)), perKey(we.events(0n)), `FUZZ_SEED=${SEED}: per-key watch histories differ`);
  console.log(
    `fuzz: ${n} steps in ${BUDGET_MS} ms (${json(Object.fromEntries(counts))}); ${caveat} transactions refused as a documented caveat (a read between writes, a put inside its own from-key delete)${caveat ? ` (${json([...caveatMessages])})` : ''}; ${raw} mutated raw requests; ` +
      `${kp.kvs.length} keys at the end, ${wp.events(0n).length} watch events; proxy RSS ${(C.rssBytes() / 2 ** 20).toFixed(0)} MiB`,
  );
  assert.deepEqual(wrongRefusals.slice(0, 10), [], `FUZZ_SEED=${SEED}: ${wrongRefusals.length} requests refused by the proxy with a metaetcd caveat though etcd serves them and they have neither documented caveat shape (a read between two writes, a put inside their own from-key delete)`);
});

/** A watch stream on each side with the same create (and maybe a cancel, progress or second create): same answers. */
async function watchStep(step: Step): Promise<void> {
  const { create, then, cancelId } = step.req as { create: WatchCreateRequest; then: string; cancelId: bigint };
  const shapes: unknown[] = [];
  const recs = [new WatchRecorder(o, 'etcd'), new WatchRecorder(p, 'proxy')];
  for (const w of recs) w.create(create);
  // etcd cancels a watch from a compacted (negative) start in its background sync loop (every 100 ms),
  // so a request sent right after the create would race with that cancel on etcd's side only.
  await sleep(150);
  for (const w of recs) {
    if (then === 'cancel') w.cancel(cancelId);
    else if (then === 'progress') w.progress();
    else if (then === 'create') w.create({ ...create, watchId: cancelId });
  }
  await sleep(100);
  // Either side may answer late (etcd's sync loop cancels a compacted start up to 100 ms after the request): wait until both answered as often.
  await waitUntil('etcd and the proxy answered as many times', () => recs[1]!.responses.length === recs[0]!.responses.length, CALL_BOUND_MS).catch(() => undefined);
  for (const w of recs) {
    shapes.push({
      responses: w.responses.map((x) => ({ id: String(x.watchId), created: x.created, canceled: x.canceled, reason: x.cancelReason, compact: x.compactRevision > 0n, events: x.events.length })),
      error: w.error?.code,
    });
    w.close();
  }
  if (json(shapes[0]) !== json(shapes[1])) {
    assert.fail(
      `FUZZ_SEED=${SEED}: step #${step.n} watch: different answers\n  request: ${json(step.req)}\n  etcd:  ${json(shapes[0])}\n  proxy: ${json(shapes[1])}\n` +
        `proxy log tail:\n${C.output.slice(-3000)}`,
    );
  }
}

/** Mutated bytes of a valid request, to the proxy alone: it must answer with a status (or a valid response) in time. */
async function rawStep(step: Step): Promise<void> {
  const { path, mutation } = step.req as { path: string; mutation: number };
  const m = rng(mutation);
  // Only read-only methods get mutated bytes, so they can never change what the final check compares.
  const base =
    path === KV.range
      ? Buffer.from(RangeRequest.encode(genRange(m)).finish())
      : Buffer.from(LeaseTimeToLiveRequest.encode({ ID: pick(m, [...LONG_LEASES, 999n]), keys: m() < 0.5 }).finish());
  const bytes = Buffer.from(base);
  const flips = 1 + Math.floor(m() * 4);
  for (let i = 0; i < flips && bytes.length > 0; i++) bytes[Math.floor(m() * bytes.length)] = Math.floor(m() * 256);
  let body = m() < 0.3 ? bytes.subarray(0, Math.floor(m() * bytes.length)) : bytes;
  if (m() < 0.2) body = Buffer.concat([body, Buffer.from(Array.from({ length: 1 + Math.floor(m() * 8) }, () => Math.floor(m() * 256)))]);
  const res = await rawCall(C.url, path, grpcFrame(body), { timeoutMs: CALL_BOUND_MS });
  if (res.timedOut || res.code === undefined) {
    assert.fail(`FUZZ_SEED=${SEED}: step #${step.n}: no status for mutated bytes to ${path} (${body.toString('hex')}): ${json(res)}`);
  }
}
