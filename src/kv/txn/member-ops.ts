// The client's ops on the branch a write takes, as member ops for the write
// landing at meta revision R: keys and ranges in member form, put values
// enveloped with R, reads at a past meta revision pointed at the member revision
// of that snapshot. Pure: what comes from I/O (the state, the past snapshots) is
// passed in.

import { op, txn } from '../../proto/build.js';
import type { PutRequest, RangeRequest, RequestOp, TxnRequest } from '../../proto/gen/rpc.js';
import { Errors } from '../../errors/etcd-error.js';
import { encodeEnvelope } from '../../store/envelope.js';
import { InternalKey, toMemberKey, toMemberRange } from '../../store/keyspace.js';
import type { KeyMeta } from '../key-cache.js';
import { memberFetchLimit } from '../range-shape.js';
import { metaOf, toClientKv } from '../translate.js';
import type { TxnPlan } from '../txn-plan.js';
import { READ_AFTER, type PastRevisions } from './taken-ranges.js';
import { walkTaken, type LeafRequest, type TakenVisitor } from './walk.js';
import type { WriteState } from './write-state.js';

/** What a write's member transaction is built from. */
export interface WriteInput {
  req: TxnRequest;
  plan: TxnPlan;
  /** The branch taken (compareToPath over `state`). */
  path: boolean[];
  state: WriteState;
  past: PastRevisions;
}

/** A single key a write puts (with what its new metadata will be) or deletes. */
export interface WrittenKey {
  /** latin1(member key). */
  key: string;
  /** undefined: deleted. createRevision undefined: created by this write. */
  put?: {
    /** The reported version after the put. */
    version: bigint;
    /** The envelope's version base (kept from the key's current envelope). */
    versionBase: number;
    createRevision: number | undefined;
    lease: bigint;
  };
}

/** The client ops at the write's own revision, and what they do. */
export interface ClientOps {
  ops: RequestOp[];
  /** Leases the puts attach keys to (each must exist). */
  leases: Set<bigint>;
  written: WrittenKey[];
  /** Bytes of client keys and values put, which every slot repeats. */
  clientBytes: number;
}

/** The client ops for the write landing at `revision`, recording what they write (for its own revision). */
export function compileClientOps(input: WriteInput, revision: number): ClientOps {
  const out: ClientOps = { ops: [], leases: new Set(), written: [], clientBytes: 0 };
  out.ops = new OpsBuilder(input, revision, out).build();
  return out;
}

/** The same ops for the write landing at another slot's `revision`. */
export function clientOpsAt(input: WriteInput, revision: number): RequestOp[] {
  return new OpsBuilder(input, revision, undefined).build();
}

class OpsBuilder implements TakenVisitor {
  /** The ops of the transaction being built and of the nested ones entered. */
  private readonly levels: RequestOp[][] = [[]];
  /** A range served from other members was seen (see writing()). */
  private deferredSeen = false;

  constructor(
    private readonly input: WriteInput,
    private readonly R: number,
    private readonly record: ClientOps | undefined,
  ) {}

  build(): RequestOp[] {
    walkTaken(this.input.req, this.input.path, this);
    return this.levels[0]!;
  }

  op(r: LeafRequest): void {
    const out = this.levels[this.levels.length - 1]!;
    switch (r.$case) {
      case 'requestRange':
        out.push(this.range(r.value));
        break;
      case 'requestPut':
        this.writing();
        out.push(this.put(r.value));
        break;
      case 'requestDeleteRange': {
        this.writing();
        const mr = toMemberRange(r.value.key, r.value.rangeEnd);
        out.push(op.deleteRange(mr.key, mr.rangeEnd, r.value.prevKv));
        if (this.record && r.value.rangeEnd.length === 0) this.record.written.push({ key: mr.key.toString('latin1') });
        break;
      }
    }
  }

  enter(): void {
    this.levels.push([]);
  }

  leave(): void {
    const inner = this.levels.pop()!;
    this.levels[this.levels.length - 1]!.push(op.txn(txn([], inner)));
  }

  /**
   * A read of other members is served afterwards, as of the write's revision
   * (see readDeferred): what etcd would have read only when no write follows it.
   */
  private writing(): void {
    if (this.deferredSeen) throw Errors.crossMemberReadBeforeWrite();
  }

  private range(r: RangeRequest): RequestOp {
    if (r.revision > 0n && this.input.past.get(Number(r.revision)) === READ_AFTER) {
      // Read after the write, as a snapshot at its own revision (see translateResponses).
      return op.range(InternalKey.clock, { countOnly: true });
    }
    if (this.input.plan.deferredReads.has(r)) {
      // A stand-in whose header tells at which revision the deferred read is served (see translateResponses).
      this.deferredSeen = true;
      return op.range(InternalKey.clock, { countOnly: true });
    }
    const mr = toMemberRange(r.key, r.rangeEnd);
    const revision = r.revision > 0n ? BigInt(pastMemberRevision(this.input.past, Number(r.revision))) : 0n;
    return op.range(mr.key, { rangeEnd: mr.rangeEnd, revision, limit: BigInt(memberFetchLimit(r)), countOnly: r.countOnly });
  }

  private put(p: PutRequest): RequestOp {
    return compilePut(this.input.state, p, this.R, this.record);
  }
}

/** The member op of client put `p` landing at meta revision R, from the key's current state; recorded in `rec`. */
export function compilePut(state: WriteState, p: PutRequest, R: number, rec: ClientOps | undefined): RequestOp {
  const mkey = toMemberKey(p.key);
  const current = state.keys.get(mkey.toString('latin1'));
  if ((p.ignoreValue || p.ignoreLease) && !current) throw Errors.keyNotFound();
  const meta = current ? toClientKv(current) : undefined;
  const value = p.ignoreValue ? meta!.value : p.value;
  const lease = p.ignoreLease ? meta!.lease : p.lease;
  const createRevision = meta ? Number(meta.createRevision) : R;
  // A put keeps the key's base (a copy's version continues the source's); a create starts at 0.
  const versionBase = current ? metaOf(current).versionBase : 0;
  if (rec) {
    rec.clientBytes += mkey.length + value.length;
    if (lease !== 0n) rec.leases.add(lease);
    rec.written.push({
      key: mkey.toString('latin1'),
      put: { version: (meta?.version ?? 0n) + 1n, versionBase, createRevision: meta ? Number(meta.createRevision) : undefined, lease },
    });
  }
  return op.put(mkey, encodeEnvelope({ modRevision: R, createRevision, lease, versionBase, value }), { prevKv: p.prevKv });
}

/** The member revision of a past snapshot; checkTakenRanges has raised the errors of those taken. */
function pastMemberRevision(past: PastRevisions, revision: number): number {
  const resolved = past.get(revision);
  if (typeof resolved !== 'number') throw new Error(`no member revision resolved for meta revision ${revision}`);
  return resolved;
}

/** What the key cache learns of a written key once the write landed at meta revision R, member revision m. */
export function cachedMeta(w: WrittenKey, R: number, m: number): KeyMeta {
  if (!w.put) return { rev: m };
  const p = w.put;
  return { rev: m, present: { version: p.version, versionBase: p.versionBase, createRevision: p.createRevision ?? R, modRevision: R, lease: p.lease } };
}
