// Test harness for watches: a recorder of one raw Watch stream (our typed gRPC
// client), a proxy→oracle revision map for differential comparisons, a model of
// the keyspace history built from write responses, and a checker of watch
// streams against that model (ordered, complete, no duplicates, prev_kv right).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect as http2Connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { ClientDuplexStream, ServiceError } from '@grpc/grpc-js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { Event_EventType, type Event, type KeyValue } from '../../src/proto/gen/kv.js';
import {
  type DeepPartial,
  type DeleteRangeResponse,
  type PutResponse,
  type RequestOp,
  RequestOp as RequestOpMsg,
  type TxnResponse,
  WatchCreateRequest_FilterType as Filter,
  type WatchCreateRequest,
  WatchRequest,
  WatchResponse,
} from '../../src/proto/gen/rpc.js';
import type { Router } from '../../src/shard/layout.js';

export { Filter };
export const ALL_KEYS = Buffer.from([0]);

// ---------------------------------------------------------------------------
// Small helpers

export function b(s: string | Buffer): Buffer {
  return typeof s === 'string' ? Buffer.from(s) : s;
}

export function prefixEnd(prefix: Buffer | string): Buffer {
  const p = Buffer.from(b(prefix));
  for (let i = p.length - 1; i >= 0; i--) {
    if (p[i]! < 0xff) {
      const end = Buffer.from(p.subarray(0, i + 1));
      end[i] = p[i]! + 1;
      return end;
    }
  }
  return ALL_KEYS;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Rejects after `ms` with a message naming `what`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** `n` distinct keys `${prefix}${i}` that all live on one member (the member of the first candidate unless given). */
export function sameMemberKeys(router: Router, prefix: string, n: number, member?: number): Buffer[] {
  const out: Buffer[] = [];
  let want = member;
  for (let i = 0; out.length < n && i < 100_000; i++) {
    const k = Buffer.from(`${prefix}${i}`);
    const m = router.memberOf(k);
    want ??= m;
    if (m === want) out.push(k);
  }
  if (out.length < n) throw new Error(`could not find ${n} keys of one member under ${prefix}`);
  return out;
}

/** A small seeded PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------
// Recorder of one Watch stream

export class WatchRecorder {
  readonly responses: WatchResponse[] = [];
  /** Create requests sent, in order (their created responses come back in the same order). */
  readonly createRequests: DeepPartial<WatchCreateRequest>[] = [];
  readonly arrivals: number[] = [];
  error: ServiceError | undefined;
  ended = false;
  private readonly stream: ClientDuplexStream<WatchRequest, WatchResponse>;
  private readonly waiters = new Set<() => void>();

  constructor(
    client: EtcdClient,
    readonly label: string = client.name,
    opts: { read?: boolean } = {},
  ) {
    this.stream = client.watch();
    this.stream.on('error', (e: ServiceError) => {
      this.error = e;
      this.ended = true;
      this.wake();
    });
    this.stream.on('end', () => {
      this.ended = true;
      this.wake();
    });
    if (opts.read !== false) this.startReading();
  }

  /** Attaches the data listener (a recorder made with read:false does not read its stream until this). */
  startReading(): void {
    this.stream.on('data', (r: WatchResponse) => {
      this.responses.push(r);
      this.arrivals.push(Date.now());
      this.wake();
    });
  }

  create(req: DeepPartial<WatchCreateRequest>): void {
    this.createRequests.push(req);
    this.write(WatchRequest.fromPartial({ requestUnion: { $case: 'createRequest', value: req } }));
  }

  cancel(watchId: bigint): void {
    this.write(WatchRequest.fromPartial({ requestUnion: { $case: 'cancelRequest', value: { watchId } } }));
  }

  progress(): void {
    this.write(WatchRequest.fromPartial({ requestUnion: { $case: 'progressRequest', value: {} } }));
  }

  /** Sends any request as is (e.g. an empty WatchRequest). */
  send(req: DeepPartial<WatchRequest>): void {
    this.write(WatchRequest.fromPartial(req));
  }

  /** Ends the client's sending side (half-close); the stream stays open for responses. */
  halfClose(): void {
    this.stream.end();
  }

  /** Breaks the stream from the client side (like a client going away). */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.stream.cancel();
  }

  /** Responses for one watch id. */
  forId(id: bigint): WatchResponse[] {
    return this.responses.filter((r) => r.watchId === id);
  }

  events(id: bigint): Event[] {
    return this.forId(id).flatMap((r) => r.events);
  }

  createdFor(id: bigint): WatchResponse | undefined {
    return this.responses.find((r) => r.created && r.watchId === id);
  }

  /** Created responses in arrival order. */
  createdResponses(): WatchResponse[] {
    return this.responses.filter((r) => r.created);
  }

  /** Watches created on this stream and not canceled since (by the client or the server), with their requests. */
  liveWatches(): { id: bigint; req: DeepPartial<WatchCreateRequest> }[] {
    const created = this.createdResponses();
    const out: { id: bigint; req: DeepPartial<WatchCreateRequest> }[] = [];
    created.forEach((c, i) => {
      if (c.canceled) return;
      const at = this.responses.indexOf(c);
      if (this.responses.slice(at + 1).some((r) => r.watchId === c.watchId && r.canceled)) return;
      out.push({ id: c.watchId, req: this.createRequests[i]! });
    });
    return out;
  }

  /** Ids of live watches that must report a PUT of `key` at `revision`. */
  watchesCovering(key: Buffer, revision: bigint): bigint[] {
    return this.liveWatches()
      .filter(({ req }) => {
        const k = req.key && req.key.length > 0 ? Buffer.from(req.key) : ALL_KEYS;
        const end = req.rangeEnd ? Buffer.from(req.rangeEnd) : Buffer.alloc(0);
        const start = BigInt(req.startRevision ?? 0);
        return inRange(key, k, end) && !(req.filters ?? []).includes(Filter.NOPUT) && start <= revision;
      })
      .map((w) => w.id);
  }

  /** Waits (bounded) until `pred` holds; fails with a summary of what arrived. */
  async until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (pred()) return;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pred()) {
          done();
          resolve();
        } else if (this.ended && !pred()) {
          done();
          reject(new Error(`${this.label}: stream ended (${this.error?.code ?? ''} ${this.error?.details ?? ''}) while waiting for ${what}\n${this.summary()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${what}\n${this.summary()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  untilCreated(id: bigint, timeoutMs = 5000): Promise<void> {
    return this.until(() => this.createdFor(id) !== undefined, timeoutMs, `created response of watch ${id}`);
  }

  untilEvents(id: bigint, n: number, timeoutMs = 5000): Promise<void> {
    return this.until(() => this.events(id).length >= n, timeoutMs, `${n} events on watch ${id}`);
  }

  summary(max = 30): string {
    const lines = this.responses.slice(-max).map((r) => describeResponse(r));
    return `  last ${lines.length} of ${this.responses.length} responses:\n${lines.map((l) => `    ${l}`).join('\n')}`;
  }

  private write(req: WatchRequest): void {
    if (this.ended) throw new Error(`${this.label}: write on an ended watch stream`);
    this.stream.write(req);
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

export function describeResponse(r: WatchResponse): string {
  const flags = [r.created && 'created', r.canceled && 'canceled', r.fragment && 'fragment'].filter(Boolean).join(',');
  const evs = r.events.map((e) => `${e.type === Event_EventType.PUT ? 'PUT' : 'DEL'} ${printable(e.kv!.key)}@${e.kv!.modRevision}`);
  return `id=${r.watchId} hdr=${r.header?.revision ?? '-'} ${flags}${r.compactRevision ? ` compact=${r.compactRevision}` : ''}${r.cancelReason ? ` reason=${JSON.stringify(r.cancelReason)}` : ''} [${evs.join(' ')}]`;
}

function printable(k: Buffer): string {
  return /^[\x20-\x7e]*$/.test(k.toString('latin1')) ? k.toString('latin1') : `0x${k.toString('hex')}`;
}

// ---------------------------------------------------------------------------
// Revisions: proxy → oracle

export interface RevPair {
  /** Oracle revision. */
  o: bigint;
  /** Proxy revision. */
  p: bigint;
}

export class RevMap {
  private readonly pairs = new Map<bigint, bigint>();
  private sorted: [bigint, bigint][] = [];

  add(pair: RevPair): void {
    const known = this.pairs.get(pair.p);
    if (known !== undefined && known !== pair.o) throw new Error(`proxy revision ${pair.p} paired with oracle ${known} and ${pair.o}`);
    this.pairs.set(pair.p, pair.o);
    this.sorted = [...this.pairs.entries()].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  }

  /** The oracle revision of a proxy revision that was handed to a paired write (0 stays 0; unknown revisions are marked). */
  exact = (p: bigint): string => {
    if (p === 0n) return '0';
    const o = this.pairs.get(p);
    return o === undefined ? `proxy:${p}(unpaired)` : o.toString();
  };

  /** The oracle revision of the newest paired write at or below proxy revision `p`. */
  floor = (p: bigint): bigint => {
    let best = 0n;
    for (const [pp, o] of this.sorted) {
      if (pp <= p) best = o;
      else break;
    }
    return best;
  };
}

export const identityRev = (r: bigint): string => r.toString();

// ---------------------------------------------------------------------------
// Normalized views for comparing two streams

function valueDesc(v: Buffer): string {
  if (v.length <= 48 && /^[\x20-\x7e]*$/.test(v.toString('latin1'))) return JSON.stringify(v.toString('latin1'));
  return `<${v.length}B sha1:${createHash('sha1').update(v).digest('hex').slice(0, 12)}>`;
}

export function kvDesc(kv: KeyValue | undefined, rev: (r: bigint) => string): string {
  if (!kv) return '-';
  return `${printable(kv.key)}=${valueDesc(kv.value)} c=${rev(kv.createRevision)} m=${rev(kv.modRevision)} v=${kv.version} lease=${kv.lease === 0n ? 0 : 'set'}`;
}

export function eventDesc(e: Event, rev: (r: bigint) => string): string {
  return `${e.type === Event_EventType.PUT ? 'PUT' : e.type === Event_EventType.DELETE ? 'DELETE' : `type${e.type}`} ${kvDesc(e.kv, rev)} prev=${kvDesc(e.prevKv, rev)}`;
}

/**
 * One watch's responses as a list of comparable items: control responses
 * (created/canceled/progress with their fields) and individual events (the
 * grouping of events into responses is not compared here).
 */
export function watchItems(rec: WatchRecorder, id: bigint, rev: (r: bigint) => string, opts: { progress?: boolean } = {}): string[] {
  const out: string[] = [];
  for (const r of rec.forId(id)) {
    if (r.created) out.push(`created canceled=${r.canceled} reason=${JSON.stringify(r.cancelReason)} compact=${rev(r.compactRevision)} events=${r.events.length}`);
    else if (r.canceled || r.compactRevision !== 0n) out.push(`canceled=${r.canceled} compact=${rev(r.compactRevision)} reason=${JSON.stringify(r.cancelReason)}`);
    else if (r.events.length === 0) {
      if (opts.progress) out.push('progress');
    }
    for (const e of r.events) out.push(eventDesc(e, rev));
  }
  return out;
}

/** Per-stream header rules the Kubernetes contract relies on (§4.9): present, never decreasing, ≥ the events it carries. */
export function checkHeaders(rec: WatchRecorder): void {
  let last = 0n;
  rec.responses.forEach((r, i) => {
    // etcd's compaction cancel carries header revision 0 (docs/notes §2); clients do not read it.
    if (r.compactRevision !== 0n) return;
    assert.ok(r.header, `${rec.label}: response ${i} has no header: ${describeResponse(r)}`);
    const h = r.header.revision;
    assert.ok(h > 0n, `${rec.label}: response ${i} has header revision ${h}: ${describeResponse(r)}`);
    assert.ok(h >= last, `${rec.label}: header revision went down from ${last} to ${h} at response ${i}: ${describeResponse(r)}\n${rec.summary()}`);
    for (const e of r.events) {
      assert.ok(h >= e.kv!.modRevision, `${rec.label}: header ${h} below event revision ${e.kv!.modRevision}: ${describeResponse(r)}`);
    }
    last = h;
  });
}

// ---------------------------------------------------------------------------
// Model of the keyspace history, built from write responses

export interface Change {
  key: Buffer;
  type: 'put' | 'delete';
  value?: Buffer;
  lease?: bigint;
}

export interface ModelBatch {
  revision: number;
  events: Event[];
}

export interface WatchSpec {
  key: Buffer;
  rangeEnd: Buffer;
  startRevision: number;
  prevKv?: boolean;
  noPut?: boolean;
  noDelete?: boolean;
}

export function inRange(key: Buffer, start: Buffer, end: Buffer): boolean {
  if (end.length === 0) return key.equals(start);
  if (Buffer.compare(key, start) < 0) return false;
  if (end.length === 1 && end[0] === 0) return true;
  return Buffer.compare(key, end) < 0;
}

/**
 * The history of a keyspace as write responses reported it: revision → the
 * changes of that revision in operation order. Deletes are recorded only when
 * they deleted something. Two writes reporting the same revision is an error
 * (one revision, one transaction).
 */
export class ModelHistory {
  private readonly changes = new Map<number, { changes: Change[]; what: string }>();
  private built: { batches: ModelBatch[]; state: Map<string, KeyValue> } | undefined;

  /** Every revision a write was acknowledged with (including ones without changes). */
  readonly revisions = new Set<number>();

  record(revision: number, changes: Change[], what = ''): void {
    this.revisions.add(revision);
    if (changes.length === 0) return;
    const prev = this.changes.get(revision);
    if (prev) throw new Error(`two writes reported revision ${revision}: ${prev.what} and ${what}`);
    this.changes.set(revision, { changes, what });
    this.built = undefined;
  }

  recordPut(resp: PutResponse, key: Buffer, value: Buffer, what = `put ${key}`): void {
    this.record(Number(resp.header!.revision), [{ key, type: 'put', value }], what);
  }

  recordDelete(resp: DeleteRangeResponse, what = 'delete'): void {
    const changes: Change[] = resp.prevKvs.map((kv) => ({ key: kv.key, type: 'delete' }));
    if (resp.deleted !== BigInt(changes.length)) throw new Error(`recordDelete needs prev_kv=true (deleted=${resp.deleted}, prevKvs=${changes.length})`);
    this.record(Number(resp.header!.revision), changes, what);
  }

  /** A transaction of puts and single-key deletes (deletes with prev_kv=true) whose success branch ran. */
  recordTxn(resp: TxnResponse, ops: RequestOp[], what = 'txn'): void {
    if (!resp.succeeded) throw new Error('recordTxn: only successful transactions are modelled');
    const changes: Change[] = [];
    ops.forEach((op, i) => {
      const r = op.request;
      if (r?.$case === 'requestPut') changes.push({ key: r.value.key, type: 'put', value: r.value.value, lease: r.value.lease });
      else if (r?.$case === 'requestDeleteRange') {
        const dr = resp.responses[i]?.response;
        if (dr?.$case !== 'responseDeleteRange') throw new Error('txn response does not match its operations');
        for (const kv of dr.value.prevKvs) changes.push({ key: kv.key, type: 'delete' });
      }
    });
    this.record(Number(resp.header!.revision), changes, what);
  }

  get lastRevision(): number {
    let m = 0;
    for (const r of this.revisions) m = Math.max(m, r);
    return m;
  }

  private build(): { batches: ModelBatch[]; state: Map<string, KeyValue> } {
    if (this.built) return this.built;
    const state = new Map<string, KeyValue>();
    const batches: ModelBatch[] = [];
    for (const rev of [...this.changes.keys()].sort((x, y) => x - y)) {
      const R = BigInt(rev);
      const events: Event[] = [];
      for (const c of this.changes.get(rev)!.changes) {
        const id = c.key.toString('latin1');
        const prev = state.get(id);
        if (c.type === 'put') {
          const kv: KeyValue = {
            key: c.key,
            value: c.value ?? Buffer.alloc(0),
            createRevision: prev ? prev.createRevision : R,
            modRevision: R,
            version: prev ? prev.version + 1n : 1n,
            lease: c.lease ?? 0n,
          };
          state.set(id, kv);
          events.push({ type: Event_EventType.PUT, kv, prevKv: prev });
        } else {
          if (!prev) throw new Error(`model: revision ${rev} deletes ${c.key} which does not exist`);
          state.delete(id);
          const kv: KeyValue = { key: c.key, value: Buffer.alloc(0), createRevision: 0n, modRevision: R, version: 0n, lease: 0n };
          events.push({ type: Event_EventType.DELETE, kv, prevKv: prev });
        }
      }
      batches.push({ revision: rev, events });
    }
    this.built = { batches, state };
    return this.built;
  }

  /** The events a watch with `spec` must deliver, by revision. */
  expected(spec: WatchSpec): ModelBatch[] {
    const out: ModelBatch[] = [];
    for (const bt of this.build().batches) {
      if (bt.revision < spec.startRevision) continue;
      const events = bt.events
        .filter((e) => inRange(e.kv!.key, spec.key, spec.rangeEnd))
        .filter((e) => !(e.type === Event_EventType.PUT ? spec.noPut : spec.noDelete))
        .map((e) => (spec.prevKv ? e : { ...e, prevKv: undefined }));
      if (events.length > 0) out.push({ revision: bt.revision, events });
    }
    return out;
  }

  /** Live keys in a range after the last recorded revision, sorted by key. */
  state(key: Buffer, rangeEnd: Buffer): KeyValue[] {
    return [...this.build().state.values()].filter((kv) => inRange(kv.key, key, rangeEnd)).sort((x, y) => Buffer.compare(x.key, y.key));
  }
}

// ---------------------------------------------------------------------------
// Checking one watch's responses against the model

export interface CheckOptions {
  label: string;
  /** Require each revision's events in one response (true unless fragments are involved). */
  oneResponsePerRevision?: boolean;
  /** The watch has NOPUT/NODELETE filters (the stream then does not show every version of a key). */
  filtered?: boolean;
}

/**
 * Checks the responses that carried events for one watch (possibly collected
 * over several resumed streams, in order) against the model: strictly
 * increasing revisions, the events of a revision together, no duplicates,
 * prev_kv consistent with the previous event on the key, and exactly the
 * expected events.
 */
export function checkWatch(responses: WatchResponse[], expected: ModelBatch[], opts: CheckOptions): void {
  const label = opts.label;
  const withEvents = responses.filter((r) => r.events.length > 0);
  // Order and grouping.
  let lastRev = 0n;
  const seen = new Set<string>();
  const lastKv = new Map<string, KeyValue | null>();
  for (const r of withEvents) {
    const revs = new Set(r.events.map((e) => e.kv!.modRevision));
    if (opts.oneResponsePerRevision !== false) {
      assert.equal(revs.size, 1, `${label}: one response carries several revisions: ${describeResponse(r)}`);
    }
    for (const e of r.events) {
      const rev = e.kv!.modRevision;
      const id = `${rev}/${e.kv!.key.toString('latin1')}`;
      assert.ok(!seen.has(id), `${label}: duplicate event ${id}`);
      seen.add(id);
      assert.ok(rev >= lastRev, `${label}: revision ${rev} after ${lastRev}: ${describeResponse(r)}`);
      lastRev = rev;
      // prev_kv consistent with what this stream showed of the key before.
      const k = e.kv!.key.toString('latin1');
      if (!opts.filtered && lastKv.has(k) && e.prevKv !== undefined) {
        const before = lastKv.get(k);
        assert.ok(before !== null, `${label}: event ${id} has prev_kv but the stream last showed the key deleted`);
        assert.equal(kvDesc(e.prevKv, identityRev), kvDesc(before!, identityRev), `${label}: prev_kv of ${id} differs from the key's previous event`);
      }
      lastKv.set(k, e.type === Event_EventType.PUT ? e.kv! : null);
    }
  }
  // Revisions strictly increase from one response to the next (events of one revision together).
  for (let i = 1; i < withEvents.length; i++) {
    const prevLast = withEvents[i - 1]!.events.at(-1)!.kv!.modRevision;
    const first = withEvents[i]!.events[0]!.kv!.modRevision;
    const fragmentContinues = withEvents[i - 1]!.fragment;
    if (opts.oneResponsePerRevision !== false || !fragmentContinues) {
      assert.ok(first > prevLast, `${label}: response ${i} starts at revision ${first}, not after ${prevLast}: ${describeResponse(withEvents[i]!)}`);
    }
  }
  // Completeness: exactly the expected events.
  const got = withEvents.flatMap((r) => r.events.map((e) => eventDesc(e, identityRev)));
  const want = expected.flatMap((bt) => bt.events.map((e) => eventDesc(e, identityRev)));
  if (got.length !== want.length || got.some((g, i) => g !== want[i])) {
    const i = got.findIndex((g, j) => g !== want[j]);
    const at = i < 0 ? Math.min(got.length, want.length) : i;
    assert.fail(
      `${label}: ${got.length} events delivered, ${want.length} expected; first difference at #${at}:\n` +
        `  got:  ${got.slice(Math.max(0, at - 2), at + 3).join('\n        ')}\n` +
        `  want: ${want.slice(Math.max(0, at - 2), at + 3).join('\n        ')}`,
    );
  }
}

// ---------------------------------------------------------------------------
// A writer that records everything it does in a model

export class ModelWriter {
  private seq = 0;
  /** Revisions of this writer's acknowledged writes, in order. */
  readonly revisions: number[] = [];

  constructor(
    readonly client: EtcdClient,
    readonly model: ModelHistory,
    readonly router: Router,
    readonly random: () => number,
    readonly name = 'w',
  ) {}

  private value(): Buffer {
    return Buffer.from(`${this.name}:${++this.seq}`);
  }

  private done(rev: bigint | undefined): number {
    const r = Number(rev);
    this.revisions.push(r);
    return r;
  }

  async put(key: Buffer, value = this.value()): Promise<number> {
    const resp = await this.client.put({ key, value });
    this.model.recordPut(resp, key, value, `${this.name} put ${key}`);
    return this.done(resp.header!.revision);
  }

  async del(key: Buffer): Promise<number> {
    const resp = await this.client.deleteRange({ key, prevKv: true });
    this.model.recordDelete(resp, `${this.name} delete ${key}`);
    return this.done(resp.header!.revision);
  }

  /** A transaction over `key` and up to two more keys of `keys` on the same member: puts, and sometimes a delete. */
  async txn(key: Buffer, keys: Buffer[]): Promise<number> {
    const member = this.router.memberOf(key);
    const others = keys.filter((k) => !k.equals(key) && this.router.memberOf(k) === member);
    const chosen = [key];
    while (chosen.length < 3 && others.length > 0) chosen.push(others.splice(Math.floor(this.random() * others.length), 1)[0]!);
    const ops: RequestOp[] = chosen.map((k, i) =>
      i === chosen.length - 1 && chosen.length > 1 && this.random() < 0.4
        ? RequestOpMsg.fromPartial({ request: { $case: 'requestDeleteRange', value: { key: k, prevKv: true } } })
        : RequestOpMsg.fromPartial({ request: { $case: 'requestPut', value: { key: k, value: this.value() } } }),
    );
    const resp = await this.client.txnPartial({ success: ops });
    this.model.recordTxn(resp, ops, `${this.name} txn ${chosen.join(',')}`);
    return this.done(resp.header!.revision);
  }

  /** One random operation on `keys`: 60% put, 20% delete, 20% single-member transaction. */
  async randomOp(keys: Buffer[]): Promise<number> {
    const key = keys[Math.floor(this.random() * keys.length)]!;
    const x = this.random();
    if (x < 0.6) return this.put(key);
    if (x < 0.8) return this.del(key);
    return this.txn(key, keys);
  }
}

// ---------------------------------------------------------------------------
// A raw HTTP/2 gRPC Watch stream that can really stop reading
//
// grpc-js clients keep pulling messages off the connection into memory even
// when the application does not read, so a "slow consumer" made with them is
// never slow on the wire. This one is: until startReading(), nothing is read
// from the HTTP/2 stream, so flow control pushes back on the server.

export class RawWatchStream {
  readonly responses: WatchResponse[] = [];
  /** grpc-status / grpc-message from the trailers (or a headers-only response), when the stream ended with them. */
  status: { code: number; message: string } | undefined;
  closed = false;
  rstCode: number | undefined;
  private readonly session: ClientHttp2Session;
  private readonly stream: ClientHttp2Stream;
  private pending = Buffer.alloc(0);

  constructor(url: string) {
    this.session = http2Connect(url);
    this.session.on('error', () => undefined);
    this.stream = this.session.request({
      ':method': 'POST',
      ':path': '/etcdserverpb.Watch/Watch',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    this.stream.on('error', () => undefined);
    const onStatus = (h: Record<string, unknown>) => {
      if (h['grpc-status'] !== undefined) this.status = { code: Number(h['grpc-status']), message: decodeURIComponent(String(h['grpc-message'] ?? '')) };
    };
    this.stream.on('response', onStatus);
    this.stream.on('trailers', onStatus);
    this.stream.on('close', () => {
      this.closed = true;
      this.rstCode = this.stream.rstCode;
    });
    this.stream.pause();
  }

  create(req: DeepPartial<WatchCreateRequest>): void {
    const msg = Buffer.from(WatchRequest.encode(WatchRequest.fromPartial({ requestUnion: { $case: 'createRequest', value: req } })).finish());
    const head = Buffer.alloc(5);
    head.writeUInt32BE(msg.length, 1);
    this.stream.write(Buffer.concat([head, msg]));
  }

  startReading(): void {
    this.stream.on('data', (chunk: Buffer) => {
      this.pending = Buffer.concat([this.pending, chunk]);
      while (this.pending.length >= 5) {
        const len = this.pending.readUInt32BE(1);
        if (this.pending.length < 5 + len) break;
        this.responses.push(WatchResponse.decode(this.pending.subarray(5, 5 + len)));
        this.pending = this.pending.subarray(5 + len);
      }
    });
    this.stream.resume();
  }

  close(): void {
    this.stream.close();
    this.session.close();
    this.session.destroy();
  }
}
