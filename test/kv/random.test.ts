// Randomised differential runs: seeded sequences of puts, deletes, transactions,
// ranges (current and past revisions, limits, sorts, filters) and compactions,
// each sent to a plain etcd (the oracle) and to the proxy over 3 members and
// compared in full (see test/harness/differential.ts); the whole keyspace is
// compared at the end of every run.
//
// The seed is printed at the start of each run. METAETCD_SEED=<n> replays one
// run; METAETCD_OPS=<n> changes the number of operations per run (default 400);
// METAETCD_RANDOM_BUDGET_MS bounds the total time (default 60 s). Each run starts
// by deleting every key and picks past revisions relative to its own start, so a
// seed replays the same operations whether it runs first or third.
//
//   METAETCD_SEED=1234 node scripts/run-tests.mjs kv/random

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  b,
  cmp,
  Differential,
  EMPTY,
  expectError,
  FROM_KEY,
  op,
  type Outcome,
  prefixEnd,
  Result,
  SortOrder,
  SortTarget,
  Target,
  txnReq,
} from '../harness/differential.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { Compare, DeepPartial, RangeRequest, RequestOp } from '../../src/proto/gen/rpc.js';

const OPS = Number(process.env.METAETCD_OPS ?? 400);
const BUDGET_MS = Number(process.env.METAETCD_RANDOM_BUDGET_MS ?? 60_000);
const FIXED_SEED = process.env.METAETCD_SEED;
const BASE_SEED = FIXED_SEED !== undefined ? Number(FIXED_SEED) : Math.floor(Math.random() * 2 ** 31);
const SEEDS = FIXED_SEED !== undefined ? [BASE_SEED] : [BASE_SEED, BASE_SEED + 1, BASE_SEED + 2];
const COMPACTED = 'etcdserver: mvcc: required revision has been compacted';

let set: EtcdSet;
let proxy: TestProxy;
let oracle: EtcdClient;
let client: EtcdClient;
let d: Differential;
const started = Date.now();

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'random' });
  proxy = await startTestProxy(set);
  oracle = clientFor(set.oracle!.clientUrl, 'oracle');
  client = clientFor(proxy.url, 'proxy');
  d = await Differential.create(oracle, client);
  // A fresh proxy reports revision 0 until its first write (a bug covered by test/kv/differential.test.ts):
  // write once so that runs explore everything else.
  await d.put({ key: b('random/warm-up'), value: b('1') });
  await d.deleteRange({ key: b('random/warm-up') });
});
after(async () => {
  client?.close();
  oracle?.close();
  try {
    await proxy?.stop();
  } finally {
    await set?.stop();
  }
});

// ---------------------------------------------------------------------------
// PRNG (sfc32 seeded through splitmix32): small, fast, reproducible.

class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) >>> 0;
    return t >>> 0;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 2 ** 32) * n);
  }

  /** Integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }

  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('pick from an empty list');
    return xs[this.int(xs.length)]!;
  }

  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }

  /** Picks by weight: [[weight, value], ...]. */
  weighted<T>(table: readonly (readonly [number, T])[]): T {
    const total = table.reduce((s, [w]) => s + w, 0);
    let x = this.u32() / 2 ** 32 * total;
    for (const [w, v] of table) {
      if (x < w) return v;
      x -= w;
    }
    return table.at(-1)![1];
  }
}

// ---------------------------------------------------------------------------
// Keys and values

interface Pools {
  /** Keys of each member. */
  byMember: Buffer[][];
  all: Buffer[];
}

/** A small deterministic pool of keys (text and binary, incl. 0x00 and 0xff bytes), by member. */
function keyPools(): Pools {
  const candidates: Buffer[] = [];
  for (let i = 0; i < 14; i++) candidates.push(b(`k/${i}`));
  for (let i = 0; i < 4; i++) candidates.push(b(`k/${i}/x`));
  for (let i = 0; i < 6; i++) candidates.push(b([0x00, i]), b([0xff, i, 0xff]), b([0x6b, 0x00, i]));
  candidates.push(b([0]), b([0xff]), b([0xff, 0xff]), b('k'), b('m/clock'), b('d'));
  const byMember: Buffer[][] = [[], [], []];
  for (const k of candidates) byMember[proxy.handle.router.memberOf(k)]!.push(k);
  for (const [m, keys] of byMember.entries()) assert.ok(keys.length >= 4, `member ${m} has only ${keys.length} pool keys`);
  return { byMember, all: [...candidates].sort(Buffer.compare) };
}

function randomValue(rng: Rng): Buffer {
  return rng.weighted<() => Buffer>([
    [3, () => EMPTY],
    [6, () => b(rng.pick(['a', 'b', 'c', 'v1', 'v2', 'zz']))],
    [3, () => rng.bytes(rng.between(1, 16))],
    [1, () => rng.bytes(rng.between(500, 3000))],
  ])();
}

// ---------------------------------------------------------------------------
// One run

interface RunState {
  rng: Rng;
  pools: Pools;
  /** Oracle revisions seen in this run, oldest first. */
  history: bigint[];
  /** Oracle revision of the last compaction (0: none in this run). */
  compacted: bigint;
  counts: Map<string, number>;
  errors: number;
  /** The run's live lease (same explicit ID on both sides), and the next ID to grant. */
  lease: bigint;
  nextLease: bigint;
  /** Transactions etcd serves that the proxy refused with a metaetcd caveat (not sent to the oracle); fail the run at its end. */
  refusals: string[];
}

function note(st: RunState, kind: string): void {
  st.counts.set(kind, (st.counts.get(kind) ?? 0) + 1);
}

function remember(st: RunState, o: Outcome<{ header?: { revision: bigint } | undefined }>): void {
  if (!o.ok) {
    st.errors++;
    return;
  }
  const r = o.value.header?.revision;
  if (r !== undefined && r !== st.history.at(-1)) st.history.push(r);
}

/** A revision for a read: current (0), past (at or after the compaction, sometimes below), or future. */
function readRevision(st: RunState): bigint {
  const { rng, history, compacted } = st;
  const current = history.at(-1)!;
  return rng.weighted<() => bigint>([
    [10, () => 0n],
    [6, () => rng.pick(history.filter((r) => r >= compacted))],
    [1, () => current + BigInt(rng.between(1, 3))],
    [compacted > history[0]! ? 1 : 0, () => rng.pick(history.filter((r) => r < compacted))],
  ])();
}

/**
 * A revision for a Range filter: a recorded one, or (outside transactions) one in the future.
 * Inside a transaction that writes, the next revision is the transaction's own, and the
 * harness cannot tell which proxy revision that will be (the proxy's revisions need not be
 * contiguous: README, "Empty revisions"), so a filter naming it would mean different things
 * on the two sides. (A compare is evaluated before the transaction writes: a future revision there
 * means the same on both.)
 */
function filterRevision(st: RunState, inTxn: boolean): bigint {
  const { rng, history } = st;
  return inTxn || rng.chance(0.8) ? rng.pick(history) : history.at(-1)! + 1n;
}

/** A random key range: single key, [a, b), prefix, from-key or the whole keyspace. */
function randomRange(st: RunState, keys: Buffer[] = st.pools.all): { key: Buffer; rangeEnd: Buffer } {
  const { rng } = st;
  return rng.weighted<() => { key: Buffer; rangeEnd: Buffer }>([
    [4, () => ({ key: rng.pick(keys), rangeEnd: EMPTY })],
    [
      4,
      () => {
        const x = rng.pick(keys);
        const y = rng.pick(keys);
        return Buffer.compare(x, y) <= 0 || rng.chance(0.1) ? { key: x, rangeEnd: y } : { key: y, rangeEnd: x };
      },
    ],
    [3, () => {
      const p = rng.pick([b('k/'), b('k/1'), b([0]), b([0xff]), b('k'), b('m/')]);
      return { key: p, rangeEnd: prefixEnd(p) };
    }],
    [2, () => ({ key: rng.pick(keys), rangeEnd: FROM_KEY })],
    [1, () => ({ key: FROM_KEY, rangeEnd: FROM_KEY })],
  ])();
}

function randomRangeRequest(st: RunState, inTxn: boolean, keys?: Buffer[]): DeepPartial<RangeRequest> {
  const { rng } = st;
  const req: DeepPartial<RangeRequest> = { ...(keys ? { key: rng.pick(keys) } : randomRange(st)) };
  if (rng.chance(0.4)) req.limit = rng.weighted([[6, rng.between(1, 5)], [1, -1], [1, 100]] as const);
  if (rng.chance(0.35)) {
    req.sortOrder = rng.pick([SortOrder.NONE, SortOrder.ASCEND, SortOrder.DESCEND]);
    req.sortTarget = rng.pick([SortTarget.KEY, SortTarget.VERSION, SortTarget.CREATE, SortTarget.MOD, SortTarget.VALUE]);
  }
  if (rng.chance(0.1)) req.countOnly = true;
  if (rng.chance(0.1)) req.keysOnly = true;
  if (rng.chance(0.15)) {
    if (rng.chance(0.5)) req.minModRevision = filterRevision(st, inTxn);
    if (rng.chance(0.5)) req.maxModRevision = filterRevision(st, inTxn);
    if (rng.chance(0.4)) req.minCreateRevision = filterRevision(st, inTxn);
    if (rng.chance(0.4)) req.maxCreateRevision = filterRevision(st, inTxn);
  }
  if (!inTxn) req.revision = readRevision(st);
  else if (rng.chance(0.1)) req.revision = rng.pick(st.history.filter((r) => r >= st.compacted));
  return req;
}

async function randomCompare(st: RunState, keys: Buffer[], allowRange: boolean): Promise<Compare> {
  const { rng } = st;
  const key = rng.pick(keys);
  const target = rng.pick([Target.VALUE, Target.VERSION, Target.CREATE, Target.MOD, Target.LEASE]);
  const result = rng.pick([Result.EQUAL, Result.NOT_EQUAL, Result.LESS, Result.GREATER]);
  let rangeEnd: Buffer = EMPTY;
  let rangeKey = key;
  if (allowRange && rng.chance(0.25)) ({ key: rangeKey, rangeEnd } = randomRange(st, keys));
  // The key's current state makes EQUAL compares likely to hold sometimes (kube's MOD == rev).
  const now = (await oracle.range({ key })).kvs[0];
  let value: bigint | Buffer;
  switch (target) {
    case Target.VALUE:
      value = now && rng.chance(0.5) ? now.value : randomValue(rng);
      break;
    case Target.VERSION:
      value = now && rng.chance(0.5) ? now.version : BigInt(rng.between(0, 4));
      break;
    case Target.CREATE:
      value = now && rng.chance(0.5) ? now.createRevision : rng.chance(0.2) ? 0n : filterRevision(st, false);
      break;
    case Target.MOD:
      value = now && rng.chance(0.5) ? now.modRevision : rng.chance(0.3) ? 0n : filterRevision(st, false);
      break;
    default:
      value = now && rng.chance(0.5) ? now.lease : rng.pick([0n, st.lease, st.lease + 1n, 1n]);
  }
  return cmp(rangeKey, target, result, value, rangeEnd);
}

/** Up to `max` compares (often one). */
async function randomCompares(st: RunState, keys: Buffer[], allowRange: boolean, max: number): Promise<Compare[]> {
  const out: Compare[] = [];
  for (let i = st.rng.weighted([[2, 0], [6, 1], [3, 2], [1, 3]] as const); i > 0 && out.length < max; i--) out.push(await randomCompare(st, keys, allowRange));
  return out;
}

/** Operations of a writing transaction on one member's keys (nested txns up to `depth`). */
async function writeOps(st: RunState, keys: Buffer[], depth: number): Promise<RequestOp[]> {
  const { rng } = st;
  const n = rng.weighted([[1, 0], [4, 1], [4, 2], [2, 3], [1, 4]] as const);
  const used = new Set<string>();
  const fresh = () => {
    // Mostly distinct keys; sometimes a duplicate (etcd's duplicate-key error is compared too).
    const free = keys.filter((k) => !used.has(k.toString('hex')));
    const k = free.length > 0 && rng.chance(0.95) ? rng.pick(free) : rng.pick(keys);
    used.add(k.toString('hex'));
    return k;
  };
  const out: RequestOp[] = [];
  for (let i = 0; i < n; i++) {
    const kind = rng.weighted([[5, 'put'], [2, 'del'], [3, 'range'], [depth > 0 ? 1 : 0, 'txn']] as const);
    if (kind === 'put') {
      const extra = rng.weighted<() => object>([
        [16, () => ({})],
        [3, () => ({ lease: st.lease })],
        [1, () => ({ ignoreValue: true })],
        [1, () => ({ ignoreLease: true })],
      ])();
      const k = fresh();
      const v = 'ignoreValue' in extra ? EMPTY : randomValue(rng);
      out.push(op.put(k, v, { prevKv: rng.chance(0.4), ...extra }));
    }
    else if (kind === 'del') out.push(op.del(fresh(), { prevKv: rng.chance(0.5) }));
    else if (kind === 'range') out.push({ request: { $case: 'requestRange', value: rangeReq(randomRangeRequest(st, true, keys)) } });
    else out.push(op.txn(await randomCompares(st, keys, false, 2), await writeOps(st, keys, depth - 1), await writeOps(st, keys, depth - 1)));
  }
  return out;
}

/**
 * A refusal by the proxy of a transaction etcd serves: recorded (it fails the run at its end), unless it is
 * the documented caveat of a put inside the transaction's own from-key delete (counted).
 */
function refused(st: RunState, message: string): void {
  if (message.startsWith('metaetcd: transaction puts a key inside the range of its own from-key delete')) note(st, 'refused: put inside its own from-key delete (caveat)');
  else st.refusals.push(`${d.context}: ${message}`);
}

/** `ops` without range reads, nested transactions included. */
function writesOnly(ops: RequestOp[]): RequestOp[] {
  return ops
    .filter((o) => o.request?.$case !== 'requestRange')
    .map((o) => (o.request?.$case === 'requestTxn' ? op.txn(o.request.value.compare, writesOnly(o.request.value.success), writesOnly(o.request.value.failure)) : o));
}

/**
 * A branch of a cross-member transaction: reads of the current state (any keys)
 * before all of its writes and after all of them, writes (nested ones included)
 * on `keys` of several members in between. (A read between two writes whose
 * range both write may be refused: a documented caveat, not generated.)
 */
async function crossBranch(st: RunState, keys: Buffer[], depth: number): Promise<RequestOp[]> {
  const { rng } = st;
  const reads = (): RequestOp[] =>
    Array.from({ length: rng.weighted([[3, 0], [2, 1], [1, 2]] as const) }, () => ({ request: { $case: 'requestRange' as const, value: rangeReq({ ...randomRangeRequest(st, true), revision: 0 }) } }));
  return [...reads(), ...writesOnly(await writeOps(st, keys, depth)), ...reads()];
}

async function readOps(st: RunState, depth: number): Promise<RequestOp[]> {
  const { rng } = st;
  const n = rng.between(0, 3);
  const out: RequestOp[] = [];
  for (let i = 0; i < n; i++) {
    if (depth > 0 && rng.chance(0.15)) out.push(op.txn(await randomCompares(st, st.pools.all, true, 2), await readOps(st, depth - 1), await readOps(st, depth - 1)));
    else out.push({ request: { $case: 'requestRange', value: rangeReq(randomRangeRequest(st, true)) } });
  }
  return out;
}

function rangeReq(p: DeepPartial<RangeRequest>): RangeRequest {
  return {
    key: p.key as Buffer,
    rangeEnd: (p.rangeEnd as Buffer | undefined) ?? EMPTY,
    limit: BigInt(p.limit ?? 0),
    revision: BigInt(p.revision ?? 0),
    sortOrder: p.sortOrder ?? 0,
    sortTarget: p.sortTarget ?? 0,
    serializable: false,
    keysOnly: p.keysOnly ?? false,
    countOnly: p.countOnly ?? false,
    minModRevision: BigInt(p.minModRevision ?? 0),
    maxModRevision: BigInt(p.maxModRevision ?? 0),
    minCreateRevision: BigInt(p.minCreateRevision ?? 0),
    maxCreateRevision: BigInt(p.maxCreateRevision ?? 0),
  };
}

type Step = (st: RunState) => Promise<void>;

const steps: readonly (readonly [number, string, Step])[] = [
  [
    22,
    'put',
    async (st) => {
      const { rng } = st;
      const key = rng.pick(st.pools.all);
      const opts = rng.weighted<() => object>([
        [10, () => ({})],
        [3, () => ({ lease: st.lease })],
        [1, () => ({ ignoreValue: true, value: EMPTY })],
        [1, () => ({ ignoreLease: true })],
        [1, () => ({ ignoreValue: true, ignoreLease: true, value: EMPTY })],
      ])();
      remember(st, await d.put({ key, value: randomValue(rng), prevKv: rng.chance(0.3), ...opts }, { label: 'Put' }));
    },
  ],
  [
    7,
    'delete',
    async (st) => {
      remember(st, await d.deleteRange({ key: st.rng.pick(st.pools.all), prevKv: st.rng.chance(0.5) }, { label: 'DeleteRange (one key)' }));
    },
  ],
  [
    4,
    'delete range',
    async (st) => {
      const r = randomRange(st);
      remember(st, await d.deleteRange({ ...r, prevKv: st.rng.chance(0.5) }, { label: 'DeleteRange (range)', spanning: r.rangeEnd.length > 0 }));
    },
  ],
  [
    22,
    'writing txn',
    async (st) => {
      const { rng } = st;
      const keys = rng.pick(st.pools.byMember);
      const compares = await randomCompares(st, keys, false, 3);
      // Branches may end with ranges of the current state over any keys (usually several members), read as of the write.
      const branch = async () => {
        const ops = await writeOps(st, keys, 2);
        while (rng.chance(0.2)) ops.push({ request: { $case: 'requestRange', value: rangeReq({ ...randomRangeRequest(st, true), revision: 0 }) } });
        return ops;
      };
      remember(st, await d.txn(txnReq(compares, await branch(), await branch()), { label: 'Txn (writes one member)' }));
    },
  ],
  [
    8,
    'read-only txn',
    async (st) => {
      const compares = await randomCompares(st, st.pools.all, true, 3);
      remember(st, await d.txn(txnReq(compares, await readOps(st, 2), await readOps(st, 2)), { label: 'Txn (read-only, any member)' }));
    },
  ],
  [
    6,
    'cross-member txn',
    async (st) => {
      const { rng } = st;
      const members = rng.weighted([[2, [0, 1, 2]], [1, [0, 1]], [1, [0, 2]], [1, [1, 2]]] as const);
      const keys = members.flatMap((m) => st.pools.byMember[m]!);
      const compares = await randomCompares(st, rng.chance(0.5) ? st.pools.all : keys, rng.chance(0.3), 3);
      // (Its writes may all land on one member by chance: then it is a one-member write reading other members.)
      const out = await d.txnOrRefusedSpanning(txnReq(compares, await crossBranch(st, keys, 2), await crossBranch(st, keys, 2)), 'Txn (writes several members)', {
        onRefusal: (m) => refused(st, m),
        keyspaceAfterRefusal: false,
      });
      if (out !== 'refused') remember(st, out);
    },
  ],
  [
    2,
    'one-member write, read of another member',
    async (st) => {
      const { rng } = st;
      const [m1, m2] = rng.chance(0.5) ? [0, 1 + rng.int(2)] : [1, 2];
      const k1 = rng.pick(st.pools.byMember[m1]!);
      const k2 = rng.pick(st.pools.byMember[m2]!);
      // A read of another member's key after the write, or before it: served as etcd serves it.
      const compare = await randomCompare(st, [k1], false);
      const req = rng.chance(0.6)
        ? txnReq([compare], [op.put(k1, randomValue(rng)), op.range(k2)], [op.range(k2)])
        : txnReq([], [op.range(k2), op.put(k1, randomValue(rng))], []);
      const out = await d.txnOrRefusedSpanning(req, 'Txn (writes one member, reads another)', {
        onRefusal: (m) => refused(st, m),
        keyspaceAfterRefusal: false,
      });
      if (out !== 'refused') remember(st, out);
    },
  ],
  [
    26,
    'range',
    async (st) => {
      remember(st, await d.range(randomRangeRequest(st, false), { label: 'Range' }));
    },
  ],
  [
    2,
    'serializable range',
    async (st) => {
      await d.range({ ...randomRange(st), serializable: true, limit: st.rng.chance(0.3) ? 2 : 0 }, { label: 'Range (serializable)' });
    },
  ],
  [
    3,
    'range at a recorded proxy revision',
    async (st) => {
      // Any recorded pair is a snapshot both sides agree on (incl. the proxy's empty revisions).
      const first = st.history[0]!;
      const pairs = d.revs.all.filter((p) => p.oracle >= first && p.oracle >= st.compacted);
      const pair = st.rng.pick(pairs);
      remember(st, await d.range({ ...randomRange(st), limit: st.rng.chance(0.3) ? 3 : 0 }, { label: `Range at proxy revision ${pair.proxy}`, atProxyRevision: pair.proxy }));
    },
  ],
  [
    1,
    'lease revoke',
    async (st) => {
      // Deletes every key attached to the lease (on the proxy: member by member), then a new lease.
      remember(st, await d.leaseRevoke(st.lease, { label: `LeaseRevoke(${st.lease})` }));
      st.lease = st.nextLease++;
      remember(st, await d.leaseGrant(st.lease, 3600, { label: `LeaseGrant(${st.lease})` }));
    },
  ],
  [
    1.5,
    'compact',
    async (st) => {
      const { rng, history } = st;
      const older = history.slice(0, -5).filter((r) => r > st.compacted);
      if (older.length === 0 || rng.chance(0.15)) {
        // At or below the last compaction (compacted error), or in the future.
        const r = st.compacted > 0n && rng.chance(0.6) ? st.compacted - BigInt(rng.int(2)) : history.at(-1)! + 5n;
        remember(st, await d.compact(r, rng.chance(0.5), { label: `Compact(${r}) (expected to fail)` }));
        return;
      }
      const rev = rng.pick(older);
      const out = await d.compact(rev, rng.chance(0.5), { label: `Compact(${rev})` });
      remember(st, out);
      if (out.ok) {
        st.compacted = rev;
        const below = history.filter((r) => r < rev);
        if (below.length > 0) {
          const r = rng.pick(below);
          const o = await d.range({ ...randomRange(st), revision: r }, { label: `Range at ${r} below the compaction at ${rev}` });
          expectError(o, 11, COMPACTED, `read at ${r} after Compact(${rev})`);
        }
      }
    },
  ],
];

let seedsRun = 0;

async function runSeed(seed: number, deadline: number, log: (s: string) => void): Promise<void> {
  const rng = new Rng(seed);
  const pools = keyPools();
  d.context = `seed=${seed} (replay: METAETCD_SEED=${seed} node scripts/run-tests.mjs kv/random) setup`;
  // Start from an empty keyspace so that a seed replays alike whenever it runs (and a failed run before
  // this one, which may have left the two sides different, does not fail this one): wipe both, new revision map.
  if (seedsRun++ === 0) {
    await d.deleteRange({ key: FROM_KEY, rangeEnd: FROM_KEY }, { label: 'wipe', spanning: true });
    await d.sync();
  } else {
    await oracle.deleteRange({ key: FROM_KEY, rangeEnd: FROM_KEY });
    await client.deleteRange({ key: FROM_KEY, rangeEnd: FROM_KEY });
    d = await Differential.create(oracle, client);
    await d.keyspace('wiped');
  }
  // Lease IDs are explicit (the same on both sides) and distinct for every seed.
  const firstLease = 0x52000000n + BigInt(seed % 0x100000) * 0x100n;
  const st: RunState = { rng, pools, history: [d.revision], compacted: 0n, counts: new Map(), errors: 0, lease: firstLease, nextLease: firstLease + 1n, refusals: [] };
  assert.ok((await d.leaseGrant(st.lease, 3600, { label: `LeaseGrant(${st.lease})` })).ok, 'lease grant');
  let i = 0;
  for (; i < OPS && Date.now() < deadline; i++) {
    const [, kind, step] = rng.weighted(steps.map((s) => [s[0], s] as const));
    d.context = `seed=${seed} (replay: METAETCD_SEED=${seed} node scripts/run-tests.mjs kv/random) step ${i} [${kind}]`;
    note(st, kind);
    await step(st);
    if (i % 50 === 49) await d.keyspace('whole keyspace (periodic)');
  }
  d.context = `seed=${seed} (replay: METAETCD_SEED=${seed} node scripts/run-tests.mjs kv/random) end`;
  await d.keyspace('whole keyspace (end of run)');
  const kinds = [...st.counts].map(([k, n]) => `${k} ${n}`).join(', ');
  log(`seed ${seed}: ${i} ops (${kinds}); ${st.errors} compared errors; ${st.history.length} revisions; compacted at ${st.compacted}`);
  assert.deepEqual(st.refusals.slice(0, 5), [], `seed ${seed}: ${st.refusals.length} transactions etcd serves were refused by the proxy with a metaetcd caveat`);
}

for (const [n, seed] of SEEDS.entries()) {
  test(`random differential run ${n + 1}/${SEEDS.length} (seed ${seed}): proxy and etcd agree on every response and on the final keyspace`, async (t) => {
    const remaining = started + BUDGET_MS - Date.now();
    if (remaining <= 0) {
      t.skip('time budget spent');
      return;
    }
    console.log(`random differential: seed ${seed} (replay with METAETCD_SEED=${seed})`);
    const slice = FIXED_SEED !== undefined ? remaining : remaining / (SEEDS.length - n);
    await runSeed(seed, Date.now() + slice, (s) => t.diagnostic(s));
  });
}
