// The kube-apiserver-like KV mix (shared contract §2), run by C concurrent
// clients against one target:
//   create    Txn{MOD(key)==0 → Put} else nothing (§2.5), on event-like keys;
//             a few aim at an existing key, so the compare fails (409 AlreadyExists)
//   update    Txn{MOD(key)==rev → Put} else Range(key) (§2.6), on pod-like keys;
//             ~10% carry a stale rev, so the else branch runs
//   get       Range{key, limit 1} (§2.1, ≥1.32 shape)
//   list      paged Range over one namespace's prefix, limit 500 (§2.2)
//   list-all  the same over the whole resource prefix (~5000 keys → ~10 pages);
//             every page after the first starts at lastKey+"\x00" and is pinned
//             to the first page's header revision
// Clients share what they learn of mod revisions, as the watch cache does for
// the apiserver. Every list is checked to return exactly the pods that exist.

import type { TxnResponse } from '../src/proto/gen/rpc.js';
import { Compare_CompareResult, Compare_CompareTarget } from '../src/proto/gen/rpc.js';
import { grpcCode, prefixEnd, type BenchConnection, type ConnectionPool } from './client.js';
import { nowMs, Samples } from './stats.js';

export const OP_TYPES = ['create', 'update', 'get', 'list', 'list-all'] as const;
export type OpType = (typeof OP_TYPES)[number];
export type Weights = Record<OpType, number>;

/** The mix: ~98% single-key work, 2% paged lists. */
export const DEFAULT_WEIGHTS: Weights = { create: 10, update: 40, get: 48, list: 1.5, 'list-all': 0.5 };

export interface KeyspaceShape {
  namespaces: number;
  podsPerNamespace: number;
  valueBytes: number;
  pageLimit: number;
}

export const DEFAULT_SHAPE: KeyspaceShape = { namespaces: 20, podsPerNamespace: 250, valueBytes: 1024, pageLimit: 500 };

const STALE_UPDATE_FRACTION = 0.1;
const EXISTING_CREATE_FRACTION = 0.05;

/** What the clients know of the data: pod keys with their latest mod revision, and created event keys. */
export class Keyspace {
  readonly pods: Buffer[] = [];
  readonly podRevs: number[] = [];
  readonly events: Buffer[] = [];
  readonly nsPrefixes: Buffer[] = [];
  readonly podsPrefix = Buffer.from('/registry/pods/');
  readonly #values: Buffer[];
  #seq = 0;

  constructor(readonly shape: KeyspaceShape) {
    for (let ns = 0; ns < shape.namespaces; ns++) {
      const prefix = `/registry/pods/ns-${String(ns).padStart(3, '0')}/`;
      this.nsPrefixes.push(Buffer.from(prefix));
      for (let p = 0; p < shape.podsPerNamespace; p++) {
        this.pods.push(Buffer.from(`${prefix}pod-${String(p).padStart(5, '0')}`));
        this.podRevs.push(0);
      }
    }
    // A few pseudo-random bodies; each value also gets a unique stamp.
    let x = 0x9e3779b9;
    this.#values = Array.from({ length: 16 }, () => {
      const b = Buffer.allocUnsafe(shape.valueBytes);
      for (let i = 0; i < b.length; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        b[i] = 0x20 + ((x >>> 0) % 95);
      }
      return b;
    });
  }

  value(): Buffer {
    const seq = this.#seq++;
    const v = Buffer.from(this.#values[seq % this.#values.length]!);
    v.write(`{"seq":${seq},`, 0, 'latin1');
    return v;
  }

  podsIn(prefix: Buffer): number {
    return prefix.equals(this.podsPrefix) ? this.pods.length : this.shape.podsPerNamespace;
  }
}

// ---------------------------------------------------------------------------
// Single operations

const NONE = Buffer.alloc(0);

function modEqual(key: Buffer, rev: number) {
  return {
    key,
    rangeEnd: NONE,
    target: Compare_CompareTarget.MOD,
    result: Compare_CompareResult.EQUAL,
    targetUnion: { $case: 'modRevision' as const, value: BigInt(rev) },
  };
}

function putOp(key: Buffer, value: Buffer) {
  return { request: { $case: 'requestPut' as const, value: { key, value, lease: 0n } } };
}

function rangeOp(key: Buffer) {
  return { request: { $case: 'requestRange' as const, value: { key } } };
}

function revisionOf(r: { header?: { revision: bigint } | undefined }): number {
  return Number(r.header?.revision ?? 0n);
}

/** Guarded create; returns the new key's revision, or 0 when it already existed. */
async function guardedCreate(conn: BenchConnection, key: Buffer, value: Buffer, timeoutMs: number): Promise<number> {
  const res = await conn.txn({ compare: [modEqual(key, 0)], success: [putOp(key, value)], failure: [] }, timeoutMs);
  return res.succeeded ? revisionOf(res) : 0;
}

/** The mod revision the else branch of a guarded update read (0 = key absent). */
function failedUpdateRev(res: TxnResponse): number {
  const r = res.responses[0]?.response;
  if (r?.$case !== 'responseRange') throw new Error('update: the else branch returned no range response');
  return Number(r.value.kvs[0]?.modRevision ?? 0n);
}

// ---------------------------------------------------------------------------
// Preload

/** Creates every pod (values of `valueBytes`) with `clients` concurrent creates. */
export async function preload(pool: ConnectionPool, ks: Keyspace, clients: number, timeoutMs: number): Promise<void> {
  let next = 0;
  const worker = async (w: number) => {
    const conn = pool.get(w);
    for (let i = next++; i < ks.pods.length; i = next++) {
      const rev = await guardedCreate(conn, ks.pods[i]!, ks.value(), timeoutMs);
      if (rev === 0) throw new Error(`preload: ${ks.pods[i]!.toString()} already exists`);
      ks.podRevs[i] = rev;
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, w) => worker(w)));
}

// ---------------------------------------------------------------------------
// The mix

export interface OpStats {
  samples: Samples;
  errors: number;
}

export interface MixResult {
  elapsedS: number;
  ops: Map<OpType, OpStats>;
  /** Outcome counters: update-stale (intended), update-conflict (raced another client), create-exists, list pages/keys. */
  notes: Map<string, number>;
  /** First few distinct error messages. */
  errorMessages: string[];
}

export interface MixOptions {
  clients: number;
  seconds: number;
  weights: Weights;
  timeoutMs: number;
}

export function totalOps(r: MixResult): number {
  let n = 0;
  for (const s of r.ops.values()) n += s.samples.count;
  return n;
}

export function totalErrors(r: MixResult): number {
  let n = 0;
  for (const s of r.ops.values()) n += s.errors;
  return n;
}

function picker(weights: Weights): () => OpType {
  const entries = OP_TYPES.filter((t) => weights[t] > 0).map((t) => [t, weights[t]] as const);
  const sum = entries.reduce((a, [, w]) => a + w, 0);
  if (sum <= 0) throw new Error('the mix has no operation with a positive weight');
  return () => {
    let r = Math.random() * sum;
    for (const [t, w] of entries) {
      r -= w;
      if (r < 0) return t;
    }
    return entries[entries.length - 1]![0];
  };
}

/** Runs the mix for `seconds` with `clients` concurrent clients; every operation started in the window is counted. */
export async function runMix(pool: ConnectionPool, ks: Keyspace, o: MixOptions): Promise<MixResult> {
  const ops = new Map<OpType, OpStats>(OP_TYPES.map((t) => [t, { samples: new Samples(), errors: 0 }]));
  const notes = new Map<string, number>();
  const note = (k: string, n = 1) => notes.set(k, (notes.get(k) ?? 0) + n);
  const errorMessages: string[] = [];
  const pick = picker(o.weights);
  const start = nowMs();
  const deadline = start + o.seconds * 1000;

  const run = async (w: number) => {
    const conn = pool.get(w);
    let seq = 0;
    while (nowMs() < deadline) {
      const type = pick();
      const t0 = nowMs();
      try {
        await OPS[type]({ conn, ks, o, note, worker: w, seq: seq++ });
        ops.get(type)!.samples.add(nowMs() - t0);
      } catch (err) {
        ops.get(type)!.errors++;
        const msg = `${type}: ${grpcCode(err)}`;
        if (errorMessages.length < 5 && !errorMessages.includes(msg)) errorMessages.push(msg);
      }
    }
  };
  await Promise.all(Array.from({ length: o.clients }, (_, w) => run(w)));
  return { elapsedS: (nowMs() - start) / 1000, ops, notes, errorMessages };
}

interface OpContext {
  conn: BenchConnection;
  ks: Keyspace;
  o: MixOptions;
  note: (k: string, n?: number) => void;
  worker: number;
  seq: number;
}

const OPS: Record<OpType, (c: OpContext) => Promise<void>> = {
  async create({ conn, ks, o, note, worker, seq }) {
    const existing = ks.events.length > 0 && Math.random() < EXISTING_CREATE_FRACTION;
    const ns = Math.floor(Math.random() * ks.shape.namespaces);
    const key = existing
      ? ks.events[Math.floor(Math.random() * ks.events.length)]!
      : Buffer.from(`/registry/events/ns-${String(ns).padStart(3, '0')}/ev-${worker}-${seq}-${Math.random().toString(36).slice(2, 8)}`);
    const rev = await guardedCreate(conn, key, ks.value(), o.timeoutMs);
    if (rev === 0) {
      if (!existing) throw new Error(`create of a new key ${key.toString()} failed its compare`);
      note('create-exists');
    } else {
      if (existing) throw new Error(`create of existing key ${key.toString()} succeeded`);
      ks.events.push(key);
    }
  },

  async update({ conn, ks, o, note }) {
    const i = Math.floor(Math.random() * ks.pods.length);
    const key = ks.pods[i]!;
    const known = ks.podRevs[i]!;
    const stale = Math.random() < STALE_UPDATE_FRACTION;
    const res = await conn.txn({ compare: [modEqual(key, stale ? known - 1 : known)], success: [putOp(key, ks.value())], failure: [rangeOp(key)] }, o.timeoutMs);
    if (res.succeeded) {
      if (stale) throw new Error(`update of ${key.toString()} with a stale revision succeeded`);
      ks.podRevs[i] = Math.max(ks.podRevs[i]!, revisionOf(res));
      return;
    }
    const current = failedUpdateRev(res);
    if (current === 0) throw new Error(`update: pod ${key.toString()} is missing`);
    ks.podRevs[i] = Math.max(ks.podRevs[i]!, current);
    note(stale ? 'update-stale' : 'update-conflict');
  },

  async get({ conn, ks, o }) {
    const key = ks.pods[Math.floor(Math.random() * ks.pods.length)]!;
    const res = await conn.range({ key, limit: 1n }, o.timeoutMs);
    if (res.kvs.length !== 1) throw new Error(`get ${key.toString()}: ${res.kvs.length} kvs`);
  },

  async list(c) {
    const prefix = c.ks.nsPrefixes[Math.floor(Math.random() * c.ks.nsPrefixes.length)]!;
    await pagedList(c, 'list', prefix);
  },

  async 'list-all'(c) {
    await pagedList(c, 'list-all', c.ks.podsPrefix);
  },
};

/** A paged list as the apiserver sends it; fails unless it returns exactly the pods under `prefix`. */
async function pagedList({ conn, ks, o, note }: OpContext, type: OpType, prefix: Buffer): Promise<void> {
  const end = prefixEnd(prefix);
  let key = prefix;
  let revision = 0n;
  let keys = 0;
  let pages = 0;
  for (;;) {
    const res = await conn.range({ key, rangeEnd: end, limit: BigInt(ks.shape.pageLimit), revision }, o.timeoutMs);
    pages++;
    if (revision === 0n) revision = res.header?.revision ?? 0n;
    keys += res.kvs.length;
    const last = res.kvs[res.kvs.length - 1];
    if (!res.more) break;
    if (!last) throw new Error(`list ${prefix.toString()}: an empty page claims more results`);
    key = Buffer.concat([last.key, Buffer.from([0])]);
  }
  const expected = ks.podsIn(prefix);
  if (keys !== expected) throw new Error(`list ${prefix.toString()}: ${keys} keys, expected ${expected}`);
  note(`${type} pages`, pages);
  note(`${type} keys`, keys);
}
