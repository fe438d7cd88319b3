// Differential helpers for the Kubernetes contract suite: the same kube-style
// operation is run against the oracle etcd and then against the proxy (one after
// the other, so both see the same history), the proxy's revisions are mapped onto
// the oracle's from paired write responses, and every field kube-apiserver reads
// is compared.
//
// Revision mapping (RevMap from the watch harness): each Txn that wrote on both
// sides pairs (proxy txn header, oracle txn header). A kv's create/mod revision
// must map exactly (it names a write); a header revision maps to the newest pair at
// or below it (the proxy may use revisions etcd does not: a Txn whose taken branch
// only reads still takes one — a documented caveat; kube never compares those).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { status as Status, type ClientDuplexStream } from '@grpc/grpc-js';
import { Event_EventType, type Event, type KeyValue } from '../../src/proto/gen/kv.js';
import { WatchRequest, type DeepPartial, type WatchCreateRequest, type WatchResponse } from '../../src/proto/gen/rpc.js';
import { COMPACT_REV_KEY, KubeConnection, KubeError, isServiceError, type TraceEntry } from './storage-client.js';

export type Side = 'oracle' | 'proxy';

export type Outcome<T> = { ok: true; value: T } | { ok: false; kind: string; code?: number; details?: string; continueToken?: string };

export async function outcome<T>(fn: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    if (e instanceof KubeError) {
      return { ok: false, kind: e.kind, ...(e.rpc ? { code: e.rpc.code, details: e.rpc.details } : {}), ...(e.continueToken ? { continueToken: e.continueToken } : {}) };
    }
    if (isServiceError(e)) return { ok: false, kind: 'rpc', code: e.code, details: e.details };
    throw e;
  }
}

export function statusName(code: number | undefined): string {
  return code === undefined ? '-' : (Status[code] ?? String(code));
}

// ---------------------------------------------------------------------------
// Revisions: proxy → oracle

export class RevMap {
  private readonly pairs = new Map<bigint, bigint>();
  private sorted: [bigint, bigint][] = [];

  add(pair: { o: bigint; p: bigint }): void {
    const known = this.pairs.get(pair.p);
    if (known !== undefined) {
      if (known !== pair.o) throw new Error(`proxy revision ${pair.p} paired with oracle ${known} and ${pair.o}`);
      return;
    }
    this.pairs.set(pair.p, pair.o);
    this.sorted = [...this.pairs.entries()].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    for (let i = 1; i < this.sorted.length; i++) {
      if (this.sorted[i]![1] < this.sorted[i - 1]![1]) throw new Error(`revision pairs out of order: proxy ${this.sorted[i - 1]![0]}→${this.sorted[i - 1]![1]}, ${this.sorted[i]![0]}→${this.sorted[i]![1]}`);
    }
  }

  /** The oracle revision paired with proxy revision `p` (a write's revision); 0 stays 0. */
  exact = (p: bigint): string => {
    if (p === 0n) return '0';
    const o = this.pairs.get(p);
    return o === undefined ? `proxy:${p}(unpaired)` : o.toString();
  };

  /** The oracle revision of the newest pair at or below `p`. */
  floor = (p: bigint): bigint => {
    let lo = 0;
    let hi = this.sorted.length - 1;
    let best = 0n;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const [pp, o] = this.sorted[mid]!;
      if (pp <= p) {
        best = o;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return best;
  };

  /** The proxy revision paired with oracle revision `o`, if any. */
  toProxy(o: bigint): bigint | undefined {
    for (const [p, oo] of this.sorted) if (oo === o) return p;
    return undefined;
  }
}

// ---------------------------------------------------------------------------
// Normalisation

function valueDesc(key: string, v: Buffer, rev: RevMap | undefined): string {
  // compact_rev_key holds a decimal revision: compare it mapped.
  if (key === COMPACT_REV_KEY && /^\d+$/.test(v.toString('latin1'))) {
    const n = BigInt(v.toString('latin1'));
    return `rev:${rev && n !== 0n ? rev.floor(n) : n}`;
  }
  if (v.length <= 40 && /^[\x20-\x7e]*$/.test(v.toString('latin1'))) return JSON.stringify(v.toString('latin1'));
  return `<${v.length}B ${createHash('sha1').update(v).digest('hex').slice(0, 12)}>`;
}

/**
 * A message with revisions mapped: on the proxy side (rev given) header
 * revisions floor-map and create/mod revisions exact-map; lease ids become
 * "set"/0; cluster/member ids and raft terms are dropped.
 */
export function norm(x: unknown, rev?: RevMap, ctxKey = ''): unknown {
  if (x === undefined || x === null) return x;
  if (Buffer.isBuffer(x)) return x.toString('latin1');
  if (typeof x === 'bigint') return x.toString();
  if (Array.isArray(x)) return x.map((e) => norm(e, rev, ctxKey));
  if (typeof x !== 'object') return x;
  const o = x as Record<string, unknown>;
  if ('createRevision' in o && 'modRevision' in o && 'key' in o && 'value' in o) return kvNorm(o as unknown as KeyValue, rev);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (k === 'clusterId' || k === 'memberId' || k === 'raftTerm') continue;
    if (k === 'header') {
      const h = v as { revision: bigint } | undefined;
      out.header = h === undefined ? 'nil' : { revision: (rev ? rev.floor(h.revision) : h.revision).toString() };
      continue;
    }
    if (k === 'lease' || k === 'ID') {
      out[k] = (v as bigint) === 0n ? '0' : 'set';
      continue;
    }
    if (k === 'compactRevision') {
      out[k] = rev && (v as bigint) !== 0n ? rev.floor(v as bigint).toString() : String(v);
      continue;
    }
    out[k] = norm(v, rev, ctxKey);
  }
  return out;
}

export function kvNorm(kv: KeyValue | undefined, rev?: RevMap): unknown {
  if (!kv) return undefined;
  const key = kv.key.toString('latin1');
  const exact = (r: bigint) => (rev ? rev.exact(r) : r.toString());
  return {
    key,
    value: valueDesc(key, kv.value, rev),
    create: exact(kv.createRevision),
    mod: exact(kv.modRevision),
    version: kv.version.toString(),
    lease: kv.lease === 0n ? '0' : 'set',
  };
}

/** A trace entry as compared: the RPC, and its normalised response or error (requests are ours, built the same way for both sides). */
export function traceNorm(t: TraceEntry, rev?: RevMap): unknown {
  return { rpc: t.rpc, ...(t.err ? { err: { code: statusName(t.err.code), details: t.err.details } } : { resp: norm(t.resp, rev) }) };
}

// ---------------------------------------------------------------------------
// The pair of targets

export class Pair {
  readonly rev = new RevMap();
  private oMark = 0;
  private pMark = 0;

  constructor(
    readonly oracle: KubeConnection,
    readonly proxy: KubeConnection,
  ) {}

  /** Pairs the current revisions of both sides (e.g. at the start, before any write). */
  async pairNow(): Promise<void> {
    const o = await this.oracle.range({ key: Buffer.from('/registry/health') });
    const p = await this.proxy.range({ key: Buffer.from('/registry/health') });
    this.rev.add({ o: o.header!.revision, p: p.header!.revision });
    this.oMark = this.oracle.trace.length;
    this.pMark = this.proxy.trace.length;
  }

  /**
   * Runs `fn` on the oracle, then on the proxy; pairs the revisions of the write
   * Txns both sent (in order); returns both outcomes and the new trace entries.
   */
  async run<T>(fn: (c: KubeConnection, side: Side) => Promise<T>): Promise<{ o: Outcome<T>; p: Outcome<T>; ot: TraceEntry[]; pt: TraceEntry[] }> {
    const o = await outcome(() => fn(this.oracle, 'oracle'));
    const p = await outcome(() => fn(this.proxy, 'proxy'));
    const ot = this.oracle.trace.slice(this.oMark);
    const pt = this.proxy.trace.slice(this.pMark);
    this.oMark = this.oracle.trace.length;
    this.pMark = this.proxy.trace.length;
    const ow = ot.filter(isWrite);
    const pw = pt.filter(isWrite);
    assert.equal(pw.length, ow.length, `writes: the proxy side committed ${pw.length} write txns, the oracle ${ow.length}\n${describeTrace(ot, pt)}`);
    ow.forEach((t, i) => this.rev.add({ o: hdr(t), p: hdr(pw[i]!) }));
    return { o, p, ot, pt };
  }

  /** Asserts the traces are equal after mapping (same RPCs, same responses or errors). */
  assertTraces(ot: TraceEntry[], pt: TraceEntry[], what: string): void {
    const on = ot.map((t) => traceNorm(t));
    const pn = pt.map((t) => traceNorm(t, this.rev));
    assert.deepEqual(pn, on, `${what}: the proxy's responses differ from etcd's (proxy = actual, etcd = expected)`);
  }

  /** Runs, compares traces, and returns both outcomes. */
  async same<T>(what: string, fn: (c: KubeConnection, side: Side) => Promise<T>): Promise<{ o: Outcome<T>; p: Outcome<T> }> {
    const r = await this.run(fn);
    this.assertTraces(r.ot, r.pt, what);
    return { o: r.o, p: r.p };
  }
}

function isWrite(t: TraceEntry): boolean {
  if (t.rpc !== 'Txn' || !t.resp) return false;
  const r = t.resp as { succeeded: boolean; responses: { response?: { $case: string } }[] };
  return r.responses.some((x) => x.response?.$case === 'responsePut' || x.response?.$case === 'responseDeleteRange');
}

function hdr(t: TraceEntry): bigint {
  return (t.resp as { header?: { revision: bigint } }).header!.revision;
}

export function describeTrace(ot: TraceEntry[], pt: TraceEntry[]): string {
  const d = (t: TraceEntry) => `${t.rpc} ${t.err ? `ERR ${statusName(t.err.code)} ${t.err.details}` : 'ok'}`;
  return `  oracle: ${ot.map(d).join(' | ')}\n  proxy:  ${pt.map(d).join(' | ')}`;
}

// ---------------------------------------------------------------------------
// A raw watch stream (clientv3-like metadata), recording responses

export class KubeWatch {
  readonly responses: WatchResponse[] = [];
  status: { code: number; details: string } | undefined;
  private readonly stream: ClientDuplexStream<WatchRequest, WatchResponse>;
  private readonly waiters = new Set<() => void>();

  constructor(conn: KubeConnection, opts: { hasLeader?: boolean } = {}) {
    this.stream = conn.watchStream({ hasLeader: opts.hasLeader ?? true }).stream;
    this.stream.on('data', (r: WatchResponse) => {
      this.responses.push(r);
      this.wake();
    });
    this.stream.on('error', () => undefined);
    this.stream.on('status', (s: { code: number; details: string }) => {
      this.status = { code: s.code, details: s.details };
      this.wake();
    });
  }

  create(req: DeepPartial<WatchCreateRequest>): void {
    this.stream.write(WatchRequest.fromPartial({ requestUnion: { $case: 'createRequest', value: req } }));
  }

  progress(): void {
    this.stream.write(WatchRequest.fromPartial({ requestUnion: { $case: 'progressRequest', value: {} } }));
  }

  cancel(watchId: bigint): void {
    this.stream.write(WatchRequest.fromPartial({ requestUnion: { $case: 'cancelRequest', value: { watchId } } }));
  }

  close(): void {
    this.stream.cancel();
  }

  events(id?: bigint): Event[] {
    return this.responses.filter((r) => id === undefined || r.watchId === id).flatMap((r) => r.events);
  }

  async until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (this.status) throw new Error(`watch ended (${statusName(this.status.code)} ${this.status.details}) while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.responses.length} responses`);
      await new Promise<void>((resolve) => {
        const w = (): void => {
          clearTimeout(t);
          this.waiters.delete(w);
          resolve();
        };
        const t = setTimeout(w, Math.min(left, 100));
        this.waiters.add(w);
      });
    }
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** An event as the apiserver reads it (§4.4), revisions mapped. */
export function eventNorm(e: Event, rev?: RevMap): unknown {
  const kv = e.kv!;
  const isCreate = e.type === Event_EventType.PUT && kv.createRevision === kv.modRevision;
  return {
    type: e.type === Event_EventType.PUT ? (isCreate ? 'ADDED' : 'MODIFIED') : 'DELETED',
    key: kv.key.toString('latin1'),
    value: valueDesc(kv.key.toString('latin1'), kv.value, rev),
    mod: rev ? rev.exact(kv.modRevision) : kv.modRevision.toString(),
    create: rev ? rev.exact(kv.createRevision) : kv.createRevision.toString(),
    prev: e.prevKv ? { value: valueDesc(kv.key.toString('latin1'), e.prevKv.value, rev), mod: rev ? rev.exact(e.prevKv.modRevision) : e.prevKv.modRevision.toString() } : 'nil',
  };
}

/**
 * The event rules kube-apiserver depends on (§4.4, §5): created ≡ create_revision ==
 * mod_revision exactly on the first PUT after the key did not exist; prev_kv on
 * every MODIFIED and DELETED; revisions strictly increasing; the header at least
 * the events' revision. Returns the violations.
 */
export function eventRuleViolations(responses: WatchResponse[], label: string, initiallyPresent: Set<string> = new Set()): string[] {
  const out: string[] = [];
  const present = new Set(initiallyPresent);
  let last = 0n;
  for (const r of responses) {
    const before = last;
    for (const e of r.events) {
      const kv = e.kv!;
      const key = kv.key.toString('latin1');
      const rev = kv.modRevision;
      // Several events may share a revision only within one response (one etcd transaction, e.g. a lease revoke).
      if (rev <= before || rev < last) out.push(`${label}: ${key}@${rev} after revision ${last}`);
      last = rev > last ? rev : last;
      if ((r.header?.revision ?? 0n) < rev) out.push(`${label}: header ${r.header?.revision} below event ${key}@${rev}`);
      if (e.type === Event_EventType.PUT) {
        const isCreate = kv.createRevision === kv.modRevision;
        const existed = present.has(key);
        if (!existed && !isCreate) out.push(`${label}: first PUT of ${key}@${rev} has create_revision ${kv.createRevision} ≠ mod_revision (not seen as ADDED)`);
        if (existed && isCreate) out.push(`${label}: update of ${key}@${rev} has create_revision == mod_revision (reported as ADDED)`);
        if (existed && !e.prevKv) out.push(`${label}: MODIFIED ${key}@${rev} without prev_kv ("etcd event received with PrevKv=nil")`);
        if (existed && e.prevKv && !(e.prevKv.createRevision < rev && kv.createRevision === e.prevKv.createRevision)) {
          out.push(`${label}: MODIFIED ${key}@${rev}: create_revision ${kv.createRevision} is not the constant ${e.prevKv.createRevision} below mod_revision`);
        }
        present.add(key);
      } else if (e.type === Event_EventType.DELETE) {
        if (!e.prevKv) out.push(`${label}: DELETED ${key}@${rev} without prev_kv ("etcd event received with PrevKv=nil")`);
        present.delete(key);
      }
    }
  }
  return out;
}
