// Differential testing: the same KV operation is sent to a plain etcd (the
// "oracle") and to the proxy, one after the other, and the FULL responses are
// compared after mapping the proxy's revisions onto the oracle's.
//
// Revisions. The proxy's meta revisions and the oracle's revisions are different
// numbers, and the proxy may consume revisions etcd does not (concurrency
// bookkeeping, a writing transaction refused after taking its revision —
// documented caveats; a transaction whose taken branch only reads and a delete
// that finds nothing take none, as in etcd: test/kv/quiet-revisions.test.ts
// checks that exactly). A write spanning members (a cross-member transaction, a
// DeleteRange over several members, a lease's deletions) takes one revision, as
// in etcd (markPartial remains for a lease revoke deleting in chunks). Each time both sides answer, the
// pair (proxy header.revision, oracle header.revision) is recorded:
//   toOracle(p) = oracle revision of the latest pair with proxy revision <= p
//   toProxy(o)  = proxy revision first recorded with oracle revision o
// Tests speak in oracle revisions: revisions in requests (Range.revision,
// revision filters, MOD/CREATE compares, Compact) are translated with toProxy
// for the proxy; revisions in responses (headers, create/mod revisions) are
// translated with toOracle before comparing.
//
// Normalisation. A header becomes { revision } (cluster_id, member_id and
// raft_term differ by design; header presence is kept); create/mod revisions are
// mapped (0 stays 0); byte strings become printable text (large ones a digest);
// when a Range sorts by a target other than KEY, runs of equal sort values are
// compared as sets (etcd's sort is not stable). Errors compare by gRPC code and
// exact message.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { inspect, isDeepStrictEqual } from 'node:util';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import {
  type Compare,
  Compare_CompareResult,
  Compare_CompareTarget,
  CompactionRequest,
  type CompactionResponse,
  DeleteRangeRequest,
  type DeleteRangeResponse,
  type LeaseGrantResponse,
  type LeaseRevokeResponse,
  type DeepPartial,
  PutRequest,
  type PutResponse,
  RangeRequest,
  RangeRequest_SortOrder,
  RangeRequest_SortTarget,
  type RangeResponse,
  type RequestOp,
  TxnRequest,
  type TxnResponse,
} from '../../src/proto/gen/rpc.js';

// ---------------------------------------------------------------------------
// Byte and request helpers

export type Bytes = Buffer | string | readonly number[];

/** A key or value: strings are UTF-8, arrays are raw bytes. */
export function b(x: Bytes): Buffer {
  if (Buffer.isBuffer(x)) return x;
  if (typeof x === 'string') return Buffer.from(x);
  return Buffer.from(x as number[]);
}

/** etcd's "from key" / "whole keyspace" range end. */
export const FROM_KEY = Buffer.from([0]);
export const EMPTY = Buffer.alloc(0);

/** The range end of a prefix (etcd clientv3's GetPrefixRangeEnd). */
export function prefixEnd(prefix: Bytes): Buffer {
  const p = Buffer.from(b(prefix));
  for (let i = p.length - 1; i >= 0; i--) {
    if (p[i]! < 0xff) {
      const end = p.subarray(0, i + 1);
      end[i] = p[i]! + 1;
      return Buffer.from(end);
    }
  }
  return Buffer.from([0]);
}

export const Target = Compare_CompareTarget;
export type Target = Compare_CompareTarget;
export const Result = Compare_CompareResult;
export type Result = Compare_CompareResult;
export const SortOrder = RangeRequest_SortOrder;
export type SortOrder = RangeRequest_SortOrder;
export const SortTarget = RangeRequest_SortTarget;
export type SortTarget = RangeRequest_SortTarget;

type RangeOpts = Omit<DeepPartial<RangeRequest>, 'key'>;
type PutOpts = Omit<DeepPartial<PutRequest>, 'key' | 'value'>;
type DelOpts = Omit<DeepPartial<DeleteRangeRequest>, 'key'>;

/** Builders of transaction operations. */
export const op = {
  range(key: Bytes, opts: RangeOpts = {}): RequestOp {
    return { request: { $case: 'requestRange', value: RangeRequest.fromPartial({ ...opts, key: b(key) }) } };
  },
  put(key: Bytes, value: Bytes, opts: PutOpts = {}): RequestOp {
    return { request: { $case: 'requestPut', value: PutRequest.fromPartial({ ...opts, key: b(key), value: b(value) }) } };
  },
  del(key: Bytes, opts: DelOpts = {}): RequestOp {
    return { request: { $case: 'requestDeleteRange', value: DeleteRangeRequest.fromPartial({ ...opts, key: b(key) }) } };
  },
  txn(compare: Compare[], success: RequestOp[], failure: RequestOp[] = []): RequestOp {
    return { request: { $case: 'requestTxn', value: { compare, success, failure } } };
  },
  /** An operation with no request set (etcd refuses it). */
  empty(): RequestOp {
    return { request: undefined };
  },
};

export type CompareValue = bigint | number | Bytes;

/** A compare; the value's kind follows the target (MOD/CREATE values are oracle revisions). */
export function cmp(key: Bytes, target: Compare_CompareTarget, result: Compare_CompareResult, value: CompareValue, rangeEnd: Bytes = EMPTY): Compare {
  const big = () => BigInt(value as bigint | number);
  let targetUnion: Compare['targetUnion'];
  switch (target) {
    case Target.VERSION:
      targetUnion = { $case: 'version', value: big() };
      break;
    case Target.CREATE:
      targetUnion = { $case: 'createRevision', value: big() };
      break;
    case Target.MOD:
      targetUnion = { $case: 'modRevision', value: big() };
      break;
    case Target.VALUE:
      targetUnion = { $case: 'value', value: b(value as Bytes) };
      break;
    case Target.LEASE:
      targetUnion = { $case: 'lease', value: big() };
      break;
    default:
      throw new Error(`unknown compare target ${target}`);
  }
  return { key: b(key), rangeEnd: b(rangeEnd), target, result, targetUnion };
}

export function txnReq(compare: Compare[], success: RequestOp[], failure: RequestOp[] = []): TxnRequest {
  return { compare, success, failure };
}

// ---------------------------------------------------------------------------
// Outcomes

export type Outcome<T> = { ok: true; value: T } | { ok: false; code: number; message: string };

async function attempt<T>(fn: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    const e = err as { code?: unknown; details?: unknown; message?: unknown };
    if (typeof e.code === 'number' && typeof e.details === 'string') return { ok: false, code: e.code, message: e.details };
    throw err;
  }
}

/** The value of a successful outcome (fails the test otherwise). */
export function ok<T>(o: Outcome<T>, what = 'operation'): T {
  if (!o.ok) assert.fail(`${what} failed: code ${o.code} ${JSON.stringify(o.message)}`);
  return o.value;
}

/** Asserts that the (already compared) outcome is the given error. */
export function expectError(o: Outcome<unknown>, code: number, message: string, what = 'operation'): void {
  if (o.ok) assert.fail(`${what}: expected error ${code} ${JSON.stringify(message)}, got success ${show(o.value)}`);
  assert.deepEqual({ code: o.code, message: o.message }, { code, message }, `${what}: wrong error`);
}

// ---------------------------------------------------------------------------
// The revision map

interface Pair {
  proxy: bigint;
  oracle: bigint;
  what: string;
}

export class RevisionMap {
  private readonly pairs: Pair[] = [];

  /** Records that the proxy answered `proxy` where the oracle answered `oracle`. */
  record(proxy: bigint, oracle: bigint, what: string): void {
    const last = this.pairs.at(-1);
    if (last) {
      if (proxy < last.proxy || oracle < last.oracle) {
        assert.fail(
          `${what}: header revisions went backwards: proxy ${last.proxy} -> ${proxy}, oracle ${last.oracle} -> ${oracle} (previous: ${last.what})`,
        );
      }
      if (oracle > last.oracle && proxy === last.proxy) {
        assert.fail(`${what}: the oracle moved to a new revision (${last.oracle} -> ${oracle}) but the proxy stayed at ${proxy} (previous: ${last.what})`);
      }
      if (oracle === last.oracle && proxy === last.proxy) return;
    }
    this.pairs.push({ proxy, oracle, what });
  }

  get latest(): { proxy: bigint; oracle: bigint } | undefined {
    return this.pairs.at(-1);
  }

  private readonly partial: { after: bigint; before: bigint }[] = [];

  /**
   * Marks the proxy revisions strictly between `after` and `before` as the
   * intermediate states of a lease revoke deleting keys of several members (the
   * proxy may delete them one member at a time):
   * part of the keys are deleted there, a state the oracle never had.
   */
  markPartial(after: bigint, before: bigint): void {
    if (before - after > 1n) this.partial.push({ after, before });
  }

  /** The spanning-delete interval holding proxy revision p, if any. */
  partialAt(p: bigint): { after: bigint; before: bigint } | undefined {
    return this.partial.find((i) => p > i.after && p < i.before);
  }

  /** Every recorded pair, oldest first: at proxy revision `proxy` the proxy's state is the oracle's at `oracle`. */
  get all(): readonly { proxy: bigint; oracle: bigint }[] {
    return this.pairs;
  }

  /** The oracle revision of the latest pair with proxy revision <= p; undefined when p precedes every pair. */
  toOracle(p: bigint): bigint | undefined {
    let lo = 0;
    let hi = this.pairs.length; // first index with proxy > p
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.pairs[mid]!.proxy <= p) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? undefined : this.pairs[lo - 1]!.oracle;
  }

  /**
   * The oracle revision of a write the proxy answered with revision p: p must be
   * a recorded pair's proxy revision, the first with its oracle revision (a write
   * always moves the oracle to a new revision). Undefined otherwise.
   */
  writeAt(p: bigint): bigint | undefined {
    let lo = 0;
    let hi = this.pairs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.pairs[mid]!.proxy < p) lo = mid + 1;
      else hi = mid;
    }
    const pair = this.pairs[lo];
    if (!pair || pair.proxy !== p) return undefined;
    if (lo > 0 && this.pairs[lo - 1]!.oracle === pair.oracle) return undefined;
    return pair.oracle;
  }

  /**
   * The proxy revision first recorded with oracle revision o. Revisions above the
   * latest pair (future revisions) keep their distance to it; 0 and negative
   * values are passed through.
   */
  toProxy(o: bigint): bigint {
    if (o <= 0n) return o;
    const last = this.pairs.at(-1);
    if (!last) throw new Error('RevisionMap.toProxy: nothing recorded yet');
    if (o > last.oracle) return last.proxy + (o - last.oracle);
    let lo = 0;
    let hi = this.pairs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.pairs[mid]!.oracle < o) lo = mid + 1;
      else hi = mid;
    }
    const pair = this.pairs[lo];
    if (!pair || pair.oracle !== o) {
      // The oracle revision was never observed (before the first pair, or skipped): a test bug.
      throw new Error(`RevisionMap.toProxy: oracle revision ${o} was never recorded (first recorded: ${this.pairs[0]!.oracle})`);
    }
    return pair.proxy;
  }
}

// ---------------------------------------------------------------------------
// Normalisation

/** Printable, exact form of a byte string (a digest for large ones). */
export function showBytes(buf: Uint8Array): string {
  const bytes = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (bytes.length > 256) return `<${bytes.length} bytes sha256:${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}>`;
  if (bytes.every((c) => c >= 0x20 && c < 0x7f)) return JSON.stringify(bytes.toString('latin1'));
  return `0x${bytes.toString('hex')}`;
}

const INSPECT = { depth: Infinity, breakLength: 140, maxArrayLength: 300 } as const;

/** Keeps failure messages readable: long dumps are cut (the assertion's diff shows the difference). */
function clip(s: string, max = 6000): string {
  return s.length <= max ? s : `${s.slice(0, max)}\n... (${s.length - max} more characters; see the diff below)`;
}

/** A printable form of a message (bytes as text/hex). */
export function show(x: unknown): string {
  return inspect(normalise(x, (r) => r), INSPECT);
}

type MapRev = (r: bigint) => bigint | string;

const REVISION_FIELDS = new Set(['createRevision', 'modRevision']);

/**
 * A deep copy with headers reduced to { revision }, revisions mapped and bytes
 * printable. Header revisions go through `mapRev`; create/mod revisions of
 * key-values through `mapKvRev` (default: `mapRev`).
 */
export function normalise(x: unknown, mapRev: MapRev, mapKvRev: MapRev = mapRev): unknown {
  if (x instanceof Uint8Array) return showBytes(x);
  if (Array.isArray(x)) return x.map((v) => normalise(v, mapRev, mapKvRev));
  if (x === null || typeof x !== 'object') return x;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(x)) {
    if (k === 'header') {
      const h = v as { revision: bigint } | undefined;
      out[k] = h === undefined ? undefined : { revision: h.revision === 0n ? 0n : mapRev(h.revision) };
    } else if (REVISION_FIELDS.has(k) && typeof v === 'bigint') {
      out[k] = v === 0n ? 0n : mapKvRev(v);
    } else {
      out[k] = normalise(v, mapRev, mapKvRev);
    }
  }
  return out;
}

interface NormKv {
  key: string;
  value: string;
  version: bigint;
  createRevision: bigint | string;
  modRevision: bigint | string;
}

function sortValue(kv: NormKv, target: RangeRequest_SortTarget): unknown {
  switch (target) {
    case SortTarget.VERSION:
      return kv.version;
    case SortTarget.CREATE:
      return kv.createRevision;
    case SortTarget.MOD:
      return kv.modRevision;
    case SortTarget.VALUE:
      return kv.value;
    default:
      return kv.key;
  }
}

/**
 * Makes a normalised Range response independent of the order of ties when it is
 * sorted by a target other than KEY: every run of equal sort values is sorted by
 * key; when the result was truncated (`more`), the last run is replaced by its
 * sort value and size (which tied keys survive the limit is arbitrary in etcd)
 * and its kvs are returned for a separate check.
 */
function canonicaliseRange(req: RangeRequest, resp: Record<string, unknown>): NormKv[] {
  if (req.sortTarget === SortTarget.KEY) return [];
  const kvs = resp.kvs as NormKv[] | undefined;
  if (!kvs || kvs.length === 0) return [];
  const runs: NormKv[][] = [];
  for (const kv of kvs) {
    const run = runs.at(-1);
    if (run && isDeepStrictEqual(sortValue(run[0]!, req.sortTarget), sortValue(kv, req.sortTarget))) run.push(kv);
    else runs.push([kv]);
  }
  const byKey = (a: NormKv, z: NormKv) => (a.key < z.key ? -1 : a.key > z.key ? 1 : 0);
  let cut: NormKv[] = [];
  const out: unknown[] = [];
  runs.forEach((run, i) => {
    if (resp.more === true && i === runs.length - 1) {
      cut = run;
      out.push({ tiedRunCutByLimit: sortValue(run[0]!, req.sortTarget), size: run.length });
    } else {
      out.push(...[...run].sort(byKey));
    }
  });
  resp.kvs = out;
  return cut;
}

function canonicaliseTxn(req: TxnRequest, resp: Record<string, unknown>): void {
  const ops = resp.succeeded ? req.success : req.failure;
  const responses = resp.responses as { response?: { $case: string; value: Record<string, unknown> } }[] | undefined;
  if (!responses) return;
  responses.forEach((r, i) => {
    const o = ops[i]?.request;
    if (!o || !r.response) return;
    if (o.$case === 'requestRange' && r.response.$case === 'responseRange') canonicaliseRange(o.value, r.response.value);
    if (o.$case === 'requestTxn' && r.response.$case === 'responseTxn') canonicaliseTxn(o.value, r.response.value);
  });
}

// ---------------------------------------------------------------------------
// Request translation (oracle revisions -> proxy revisions)

function rangeToProxy(r: RangeRequest, m: RevisionMap): RangeRequest {
  return {
    ...r,
    revision: m.toProxy(r.revision),
    minModRevision: m.toProxy(r.minModRevision),
    maxModRevision: m.toProxy(r.maxModRevision),
    minCreateRevision: m.toProxy(r.minCreateRevision),
    maxCreateRevision: m.toProxy(r.maxCreateRevision),
  };
}

function compareToProxy(c: Compare, m: RevisionMap): Compare {
  const u = c.targetUnion;
  if (u?.$case === 'modRevision' || u?.$case === 'createRevision') return { ...c, targetUnion: { $case: u.$case, value: m.toProxy(u.value) } };
  return c;
}

function opToProxy(o: RequestOp, m: RevisionMap): RequestOp {
  const r = o.request;
  if (r?.$case === 'requestRange') return { request: { $case: 'requestRange', value: rangeToProxy(r.value, m) } };
  if (r?.$case === 'requestTxn') return { request: { $case: 'requestTxn', value: txnToProxy(r.value, m) } };
  return o;
}

/** Revisions of the Range operations of a transaction (nested ones included). */
function txnRangeRevisions(t: TxnRequest): bigint[] {
  return [...t.success, ...t.failure].flatMap((o) => {
    const r = o.request;
    if (r?.$case === 'requestRange') return [r.value.revision];
    if (r?.$case === 'requestTxn') return txnRangeRevisions(r.value);
    return [];
  });
}

function txnToProxy(t: TxnRequest, m: RevisionMap): TxnRequest {
  return {
    compare: t.compare.map((c) => compareToProxy(c, m)),
    success: t.success.map((o) => opToProxy(o, m)),
    failure: t.failure.map((o) => opToProxy(o, m)),
  };
}

// ---------------------------------------------------------------------------
// The differential runner

/** METAETCD_TRACE=1 prints every compared operation (to replay a failing seed step by step). */
const TRACE = Boolean(process.env.METAETCD_TRACE);

function trace(where: string, request: unknown, o: Outcome<{ header?: { revision: bigint } | undefined }>, p: Outcome<{ header?: { revision: bigint } | undefined }>): void {
  if (!TRACE) return;
  const rev = (x: typeof o) => (x.ok ? `rev ${x.value.header?.revision}` : `error ${x.code} ${x.message}`);
  console.error(`[trace] ${where}: oracle ${rev(o)}, proxy ${rev(p)}\n  ${inspect(normalise(request, (r) => r), { depth: Infinity, breakLength: Infinity })}`);
}

export interface DiffOptions {
  /** Name of the operation in failure messages. */
  label?: string;
}

export interface RangeDiffOptions extends DiffOptions {
  /**
   * Read the proxy at this proxy revision (a recorded pair's, e.g. an empty
   * revision) and the oracle at the oracle revision it maps to; the request's
   * own revision is ignored.
   */
  atProxyRevision?: bigint;
}

export class Differential {
  readonly revs = new RevisionMap();
  /** Prefix of every failure message (e.g. the seed and op index of a random run). */
  context = '';
  /** Number of operations compared so far. */
  ops = 0;

  private constructor(
    readonly oracle: EtcdClient,
    readonly proxy: EtcdClient,
  ) {}

  /** A runner whose revision map starts with both sides' current revision. */
  static async create(oracle: EtcdClient, proxy: EtcdClient): Promise<Differential> {
    const d = new Differential(oracle, proxy);
    await d.sync();
    return d;
  }

  /** Records the current revisions of both sides (linearizable reads of a key nobody uses). */
  async sync(): Promise<void> {
    const req = { key: Buffer.from([0]), countOnly: true };
    const o = await this.oracle.range(req);
    const p = await this.proxy.range(req);
    this.revs.record(p.header!.revision, o.header!.revision, 'sync');
  }

  /**
   * A future revision is sent to the proxy as its current revision plus the same
   * distance. The proxy may have consumed revisions nobody recorded (a revision
   * released after a refused write), so its current revision is read first.
   */
  private async syncIfFuture(revisions: bigint[]): Promise<void> {
    const latest = this.revs.latest!.oracle;
    if (revisions.some((r) => r > latest)) await this.sync();
  }

  /** The oracle's current revision (as last observed). */
  get revision(): bigint {
    return this.revs.latest!.oracle;
  }

  private where(label: string): string {
    return `${this.context ? `${this.context} ` : ''}op #${this.ops} ${label}`;
  }

  private mapProxyRev = (r: bigint): bigint | string => this.revs.toOracle(r) ?? `unmapped proxy revision ${r}`;

  /** A key's create/mod revision must be the revision of a recorded write. */
  private mapProxyKvRev = (r: bigint): bigint | string => this.revs.writeAt(r) ?? `proxy revision ${r} (no write answered with it)`;

  /**
   * Runs one operation on both sides (oracle first), records the header pair,
   * normalises and compares; returns the oracle's outcome.
   */
  async run<T extends { header?: { revision: bigint } | undefined }>(
    label: string,
    request: unknown,
    onOracle: () => Promise<T>,
    onProxy: () => Promise<T>,
    opts: {
      /** Record the header pair (default true). */
      record?: boolean;
      /** Makes a normalised response independent of what may legitimately vary (tie order). */
      canonicalise?: (norm: Record<string, unknown>, side: 'oracle' | 'proxy') => void;
    } = {},
  ): Promise<Outcome<T>> {
    this.ops++;
    const where = this.where(label);
    const o = await attempt(onOracle);
    const p = await attempt(onProxy);
    trace(where, request, o, p);
    let on: unknown = o.ok ? undefined : o;
    let pn: unknown = p.ok ? undefined : p;
    const describe = () =>
      `${where}: the proxy differs from the oracle (proxy revisions shown mapped to the oracle's)\n` +
      `request: ${clip(show(request))}\noracle: ${clip(inspect(on, INSPECT))}\nproxy:  ${clip(inspect(pn, INSPECT))}` +
      (p.ok && p.value.header ? `\n(proxy header revision ${p.value.header.revision})` : '');
    if (!o.ok || !p.ok) {
      on = o.ok ? normalise(o.value, (r) => r) : o;
      pn = p.ok ? normalise(p.value, this.mapProxyRev, this.mapProxyKvRev) : p;
      if (!isDeepStrictEqual(pn, on)) assert.deepStrictEqual(pn, on, describe());
      return o;
    }
    const ov = o.value;
    const pv = p.value;
    if (opts.record !== false && ov.header && pv.header) {
      try {
        this.revs.record(pv.header.revision, ov.header.revision, where);
      } catch (err) {
        if (err instanceof assert.AssertionError) {
          on = normalise(ov, (r) => r);
          pn = normalise(pv, (r) => r);
          assert.fail(`${err.message}\nrequest: ${clip(show(request))}\noracle: ${clip(inspect(on, INSPECT))}\nproxy (its own revisions): ${clip(inspect(pn, INSPECT))}`);
        }
        throw err;
      }
    }
    on = normalise(ov, (r) => r);
    pn = normalise(pv, this.mapProxyRev, this.mapProxyKvRev);
    opts.canonicalise?.(on as Record<string, unknown>, 'oracle');
    opts.canonicalise?.(pn as Record<string, unknown>, 'proxy');
    if (!isDeepStrictEqual(pn, on)) assert.deepStrictEqual(pn, on, describe());
    return o;
  }

  /** Range on both sides. Revisions in the request are oracle revisions. */
  async range(req: DeepPartial<RangeRequest>, opts: RangeDiffOptions = {}): Promise<Outcome<RangeResponse>> {
    let r = RangeRequest.fromPartial(req);
    const label = opts.label ?? 'Range';
    await this.syncIfFuture([r.revision]);
    if (r.serializable) return this.serializableRange(r, label);
    let proxyReq = rangeToProxy(r, this.revs);
    if (opts.atProxyRevision !== undefined) {
      const at = this.revs.toOracle(opts.atProxyRevision);
      if (at === undefined) throw new Error(`range: proxy revision ${opts.atProxyRevision} precedes every recorded pair`);
      r = { ...r, revision: at };
      proxyReq = { ...proxyReq, revision: opts.atProxyRevision };
    }
    const cut: { oracle: NormKv[]; proxy: NormKv[] } = { oracle: [], proxy: [] };
    const out = await this.run(
      label,
      opts.atProxyRevision === undefined ? r : { ...r, proxyRevision: opts.atProxyRevision },
      () => this.oracle.range(r),
      () => this.proxy.range(proxyReq),
      { canonicalise: (n, side) => (cut[side] = canonicaliseRange(r, n)) },
    );
    if (out.ok && cut.proxy.length > 0) {
      // Which tied keys survive the limit is arbitrary: each must exist, as returned, in the full result.
      const full = await this.oracle.range({
        ...r,
        limit: 0n,
        sortOrder: SortOrder.NONE,
        sortTarget: SortTarget.KEY,
        revision: r.revision === 0n ? out.value.header!.revision : r.revision,
      });
      const all = (normalise(full, (x) => x) as { kvs: NormKv[] }).kvs;
      for (const kv of cut.proxy) {
        if (!all.some((x) => isDeepStrictEqual(x, kv))) {
          assert.fail(`${this.where(label)}: the proxy returned ${show(kv)} among tied keys at the limit, which the oracle does not hold\nrequest: ${show(r)}`);
        }
      }
    }
    return out;
  }

  /**
   * A serializable read may lag on the proxy (it answers from what it has seen):
   * its result must be the oracle's state at the revision its header names. When
   * that revision is one of the intermediate states of a lease revoke spanning
   * members (a caveat), the result must lie between the states before and after
   * that delete: every returned kv as it was before, every kv left after it present.
   */
  private async serializableRange(r: RangeRequest, label: string): Promise<Outcome<RangeResponse>> {
    this.ops++;
    const where = this.where(label);
    const p = await attempt(() => this.proxy.range(rangeToProxy(r, this.revs)));
    let oracleReq = r;
    const partial = p.ok && r.revision === 0n ? this.revs.partialAt(p.value.header!.revision) : undefined;
    if (p.ok && r.revision === 0n) {
      const at = this.revs.toOracle(p.value.header!.revision);
      if (at === undefined) assert.fail(`${where}: serializable read at unknown proxy revision ${p.value.header!.revision}`);
      oracleReq = { ...r, revision: at, serializable: false };
    }
    const o = await attempt(() => this.oracle.range(oracleReq));
    trace(where, r, o, p);
    let on: unknown = o.ok ? normalise(o.value, (x) => x) : o;
    let pn: unknown = p.ok ? normalise(p.value, this.mapProxyRev, this.mapProxyKvRev) : p;
    const describe = () =>
      `${where}: serializable read differs (proxy revisions shown mapped to the oracle's)\nrequest: ${clip(show(r))}\n` +
      `oracle: ${clip(inspect(on, INSPECT))}\nproxy:  ${clip(inspect(pn, INSPECT))}` +
      (p.ok ? `\n(proxy header revision ${p.value.header?.revision}${partial ? `, inside the spanning lease revoke ${partial.after}..${partial.before}` : ''})` : '');
    if (o.ok !== p.ok) assert.fail(describe());
    if (!o.ok || !p.ok) {
      if (!isDeepStrictEqual(o, p)) assert.fail(describe());
      return o;
    }
    on = normalise({ ...o.value, header: undefined }, (x) => x);
    pn = normalise({ ...p.value, header: undefined }, this.mapProxyRev, this.mapProxyKvRev);
    if (partial) {
      if (r.limit > 0n || r.countOnly) return o; // no exact expectation for a partial state under a limit
      const afterDelete = this.revs.toOracle(partial.before)!;
      const o2 = normalise(await this.oracle.range({ ...r, revision: afterDelete, serializable: false }), (x) => x) as { kvs: NormKv[] };
      const beforeKvs = (on as { kvs: NormKv[] }).kvs;
      const got = (pn as { kvs: NormKv[] }).kvs;
      for (const kv of got) if (!beforeKvs.some((x) => isDeepStrictEqual(x, kv))) assert.fail(`${describe()}\nunexpected kv ${inspect(kv)}`);
      for (const kv of o2.kvs) if (!got.some((x) => isDeepStrictEqual(x, kv))) assert.fail(`${describe()}\nmissing kv ${inspect(kv)}`);
      return o;
    }
    canonicaliseRange(r, on as Record<string, unknown>);
    canonicaliseRange(r, pn as Record<string, unknown>);
    if (!isDeepStrictEqual(pn, on)) assert.deepStrictEqual(pn, on, describe());
    return o;
  }

  async put(req: DeepPartial<PutRequest>, opts: DiffOptions = {}): Promise<Outcome<PutResponse>> {
    const r = PutRequest.fromPartial(req);
    return this.run(opts.label ?? 'Put', r, () => this.oracle.put(r), () => this.proxy.put(r));
  }

  /**
   * DeleteRange on both sides. A delete spanning members is one atomic write at
   * one revision on the proxy too (issue 15), so no intermediate state is
   * tolerated: serializable reads at any proxy revision are compared exactly.
   * Deleted and prev_kvs are compared in full, and `spanning` also compares the
   * whole keyspace afterwards.
   */
  async deleteRange(req: DeepPartial<DeleteRangeRequest>, opts: DiffOptions & { spanning?: boolean } = {}): Promise<Outcome<DeleteRangeResponse>> {
    const r = DeleteRangeRequest.fromPartial(req);
    const label = opts.label ?? 'DeleteRange';
    const out = await this.run(label, r, () => this.oracle.deleteRange(r), () => this.proxy.deleteRange(r));
    if (opts.spanning) await this.keyspace(`${label} (state after)`);
    return out;
  }

  /** Txn on both sides; MOD/CREATE compare values and range revisions are oracle revisions. */
  async txn(req: DeepPartial<TxnRequest> | TxnRequest, opts: DiffOptions = {}): Promise<Outcome<TxnResponse>> {
    const r = TxnRequest.fromPartial(req as DeepPartial<TxnRequest>);
    await this.syncIfFuture(txnRangeRevisions(r));
    return this.run(
      opts.label ?? 'Txn',
      r,
      () => this.oracle.txn(r),
      () => this.proxy.txn(txnToProxy(r, this.revs)),
      { canonicalise: (n) => canonicaliseTxn(r, n) },
    );
  }

  /**
   * A transaction the proxy may refuse (a remaining caveat: a read between two
   * writes of a cross-member transaction whose range both write): sent to the proxy first; if
   * refused with InvalidArgument naming metaetcd, nothing may have changed (the
   * oracle is not sent it); otherwise the oracle runs it and both are compared.
   */
  async txnOrRefusedSpanning(
    req: DeepPartial<TxnRequest> | TxnRequest,
    label = 'Txn (may be refused as spanning)',
    opts: { onRefusal?: (message: string) => void; keyspaceAfterRefusal?: boolean } = {},
  ): Promise<'refused' | Outcome<TxnResponse>> {
    const r = TxnRequest.fromPartial(req as DeepPartial<TxnRequest>);
    const first = await attempt(() => this.proxy.txn(txnToProxy(r, this.revs)));
    if (!first.ok && first.code === 3 && /metaetcd/.test(first.message)) {
      this.ops++;
      opts.onRefusal?.(first.message);
      if (opts.keyspaceAfterRefusal !== false) await this.keyspace(`${label} (state after refusal)`);
      return 'refused';
    }
    let used = false;
    return this.run(
      label,
      r,
      () => this.oracle.txn(r),
      async () => {
        if (used) throw new Error('proxy side called twice');
        used = true;
        if (!first.ok) throw Object.assign(new Error(first.message), { code: first.code, details: first.message });
        return first.value;
      },
      { canonicalise: (n) => canonicaliseTxn(r, n) },
    );
  }

  /** Grants a lease with the same explicit ID on both sides (IDs chosen by etcd would differ). */
  async leaseGrant(id: bigint, ttl: number, opts: DiffOptions = {}): Promise<Outcome<LeaseGrantResponse>> {
    return this.run(
      opts.label ?? `LeaseGrant(${id})`,
      { ID: id, TTL: ttl },
      () => this.oracle.leaseGrant({ ID: id, TTL: ttl }),
      () => this.proxy.leaseGrant({ ID: id, TTL: ttl }),
    );
  }

  /**
   * Revokes a lease on both sides: its keys are deleted. The proxy deletes them
   * possibly member by member (one revision each, if lease deletes are not yet atomic); the keyspace is
   * compared afterwards.
   */
  async leaseRevoke(id: bigint, opts: DiffOptions = {}): Promise<Outcome<LeaseRevokeResponse>> {
    const label = opts.label ?? `LeaseRevoke(${id})`;
    const before = this.revs.latest!.proxy;
    const out = await this.run(label, { ID: id }, () => this.oracle.leaseRevoke({ ID: id }), () => this.proxy.leaseRevoke({ ID: id }));
    this.revs.markPartial(before, this.revs.latest!.proxy);
    await this.keyspace(`${label} (state after)`);
    return out;
  }

  /** Compact both sides at an oracle revision. */
  async compact(revision: bigint, physical = false, opts: DiffOptions = {}): Promise<Outcome<CompactionResponse>> {
    const r = CompactionRequest.fromPartial({ revision, physical });
    await this.syncIfFuture([revision]);
    return this.run(
      opts.label ?? `Compact(${revision})`,
      r,
      () => this.oracle.compact(r),
      () => this.proxy.compact({ revision: this.revs.toProxy(revision), physical }),
    );
  }

  /** Compares the whole keyspace (key "\0", range_end "\0"), at `revision` (oracle) when given. */
  async keyspace(label = 'whole keyspace', revision = 0n): Promise<RangeResponse> {
    return ok(await this.range({ key: FROM_KEY, rangeEnd: FROM_KEY, revision }, { label }), label);
  }

  /**
   * A transaction the proxy must refuse with InvalidArgument naming metaetcd (a
   * remaining caveat), changing nothing (the oracle is not sent the transaction;
   * the whole keyspace must still match).
   */
  async expectRefusedSpanning(req: DeepPartial<TxnRequest> | TxnRequest, label = 'spanning Txn'): Promise<void> {
    this.ops++;
    const where = this.where(label);
    const r = TxnRequest.fromPartial(req as DeepPartial<TxnRequest>);
    const p = await attempt(() => this.proxy.txn(txnToProxy(r, this.revs)));
    if (p.ok) assert.fail(`${where}: the proxy applied a transaction spanning members: ${show(p.value)}\nrequest: ${show(r)}`);
    assert.equal(p.code, 3 /* INVALID_ARGUMENT */, `${where}: wrong code for a spanning transaction: ${p.code} ${p.message}`);
    assert.match(p.message, /metaetcd/, `${where}: the refusal should name metaetcd's caveat: ${p.message}`);
    await this.keyspace(`${label} (state after refusal)`);
  }
}
