// A cross-member transaction's branch taken, split by member, with the client's
// responses built from the state it was evaluated on. Pure: no I/O.
//
// The state is exact: while the transaction commits nothing else can land on its
// members (kv/txn/cross-member.ts), so every put's prev_kv and every delete's
// count and prev_kvs are known before anything is applied. Range reads of the
// branch are served afterwards, as snapshots: at R − 1 when no write of the
// transaction before them touches their range, at R when none after them does.
// A read with writes into its range both before and after it is refused
// (metaetcd's caveat), before anything is applied.

import { op } from '../../proto/build.js';
import type { RangeRequest, RangeResponse, ResponseOp, TxnRequest } from '../../proto/gen/rpc.js';
import type { KeyValue } from '../../proto/gen/kv.js';
import { Errors } from '../../errors/etcd-error.js';
import { toMemberKey, toMemberRange } from '../../store/keyspace.js';
import type { Router } from '../../shard/layout.js';
import { compareBytes, isFromKey } from '../../util/bytes.js';
import { toClientKv } from '../translate.js';
import { rangeId } from '../txn-plan.js';
import { compilePut, type ClientOps } from './member-ops.js';
import { innerHeader, type DeferredRead } from './responses.js';
import { walkTaken, type LeafRequest } from './walk.js';
import type { WriteState } from './write-state.js';

/** What one member applies of the transaction. */
export interface MemberPart {
  member: number;
  /** The client ops for this member, in order (puts enveloped at R, deletes in member form). */
  ops: ClientOps;
  /** For each client-key event the part will make, in order, the index of its op in the transaction. */
  ranks: number[];
}

export interface CrossOps {
  /** One part per member of the transaction (ops may be empty: a member only compared). */
  parts: Map<number, MemberPart>;
  /** The client's responses; the ranges in `reads` are filled after the commit. */
  responses: ResponseOp[];
  reads: DeferredRead[];
}

/** A client range as a half-open interval; `end` undefined: to the end of the keyspace. */
interface Span {
  key: Buffer;
  end: Buffer | undefined;
}

function spanOf(key: Buffer, rangeEnd: Buffer): Span {
  if (rangeEnd.length === 0) return { key, end: Buffer.concat([key, Buffer.from([0])]) };
  return { key, end: isFromKey(rangeEnd) ? undefined : rangeEnd };
}

function overlaps(a: Span, b: Span): boolean {
  const aBeforeB = a.end !== undefined && compareBytes(a.end, b.key) <= 0;
  const bBeforeA = b.end !== undefined && compareBytes(b.end, a.key) <= 0;
  return !aBeforeB && !bBeforeA;
}

/**
 * Splits the branch `path` of `req` by member, at meta revision R, over `state`
 * (keys and ranges read on every member of the transaction, merged).
 */
export function splitCross(router: Router, req: TxnRequest, path: boolean[], state: WriteState, members: number[], R: number): CrossOps {
  const parts = new Map<number, MemberPart>(members.map((m) => [m, { member: m, ops: { ops: [], leases: new Set(), written: [], clientBytes: 0 }, ranks: [] }]));
  const part = (m: number): MemberPart => {
    const p = parts.get(m);
    if (!p) throw new Error(`cross-member transaction: member ${m} is not one of its members ${members.join(',')}`);
    return p;
  };

  // First pass: the writes in walk order, to place each read before or after them.
  const writes: Span[] = [];
  walkTaken(req, path, {
    op(r) {
      if (r.$case === 'requestPut') writes.push(spanOf(r.value.key, Buffer.alloc(0)));
      if (r.$case === 'requestDeleteRange') writes.push(spanOf(r.value.key, r.value.rangeEnd));
    },
  });

  const levels: ResponseOp[][] = [[]];
  const reads: DeferredRead[] = [];
  /** latin1(member key) of every key an earlier delete of the branch removed. */
  const removed = new Set<string>();
  let writesSeen = 0;
  let changed = false;
  const header = () => innerHeader(changed ? R : R - 1);
  walkTaken(req, path, {
    op(r: LeafRequest) {
      const out = levels[levels.length - 1]!;
      switch (r.$case) {
        case 'requestPut': {
          const m = router.memberOf(r.value.key);
          part(m).ranks.push(writesSeen);
          writesSeen++;
          part(m).ops.ops.push(compilePut(state, { ...r.value, prevKv: false }, R, part(m).ops));
          changed = true;
          const prev = state.keys.get(toMemberKey(r.value.key).toString('latin1'));
          out.push({ response: { $case: 'responsePut', value: { header: header(), prevKv: r.value.prevKv && prev ? toClientKv(prev) : undefined } } });
          break;
        }
        case 'requestDeleteRange': {
          // Deletes may overlap (etcd allows it; puts may not overlap them): a key goes once.
          const gone = deletedBy(state, r.value.key, r.value.rangeEnd).filter((kv) => !removed.has(kv.key.toString('latin1')));
          for (const kv of gone) removed.add(kv.key.toString('latin1'));
          for (const kv of gone) part(router.memberOf(kv.key.subarray(1))).ranks.push(writesSeen);
          writesSeen++;
          const mr = toMemberRange(r.value.key, r.value.rangeEnd);
          for (const m of router.membersOf(r.value.key, r.value.rangeEnd)) {
            if (!parts.has(m)) continue; // it holds no key of the range (the plan left it out only then)
            part(m).ops.ops.push(op.deleteRange(mr.key, mr.rangeEnd));
            if (r.value.rangeEnd.length === 0) part(m).ops.written.push({ key: mr.key.toString('latin1') });
          }
          for (const kv of gone) {
            if (r.value.rangeEnd.length > 0) part(router.memberOf(kv.key.subarray(1))).ops.written.push({ key: kv.key.toString('latin1') });
          }
          if (gone.length > 0) changed = true;
          out.push({
            response: {
              $case: 'responseDeleteRange',
              value: { header: header(), deleted: BigInt(gone.length), prevKvs: r.value.prevKv ? gone.map(toClientKv) : [] },
            },
          });
          break;
        }
        case 'requestRange': {
          const revision = readRevision(r.value, writes, writesSeen, R);
          const response: RangeResponse = { header: header(), kvs: [], more: false, count: 0n };
          reads.push({ request: r.value, revision, response });
          out.push({ response: { $case: 'responseRange', value: response } });
          break;
        }
      }
    },
    enter() {
      levels.push([]);
    },
    leave(_nested, succeeded) {
      const inner = levels.pop()!;
      levels[levels.length - 1]!.push({ response: { $case: 'responseTxn', value: { header: innerHeader(0), succeeded, responses: inner } } });
    },
  });
  return { parts, responses: levels[0]!, reads };
}

/** The revision a range of the branch is served at (see the header). */
function readRevision(r: RangeRequest, writes: Span[], writesBefore: number, R: number): number {
  if (r.revision > 0n) return Number(r.revision);
  const span = spanOf(r.key, r.rangeEnd);
  const touchedBefore = writes.slice(0, writesBefore).some((w) => overlaps(w, span));
  if (!touchedBefore) return R - 1;
  const touchedAfter = writes.slice(writesBefore).some((w) => overlaps(w, span));
  if (!touchedAfter) return R;
  throw Errors.crossMemberReadBetweenWrites();
}

/** The member key-values a delete of [key, rangeEnd) removes, in key order, from the exact state. */
function deletedBy(state: WriteState, key: Buffer, rangeEnd: Buffer): KeyValue[] {
  if (rangeEnd.length === 0) {
    const kv = state.keys.get(toMemberKey(key).toString('latin1'));
    return kv ? [kv] : [];
  }
  return state.ranges.get(rangeId(key, rangeEnd)) ?? [];
}

/** The keys and ranges whose state a cross-member transaction reads (besides the plan's): every delete's, in either branch. */
export function deleteTargets(req: TxnRequest): { keys: Buffer[]; ranges: { key: Buffer; rangeEnd: Buffer }[] } {
  const keys: Buffer[] = [];
  const ranges: { key: Buffer; rangeEnd: Buffer }[] = [];
  const visit = (t: TxnRequest) => {
    for (const o of [...t.success, ...t.failure]) {
      const r = o.request;
      if (r?.$case === 'requestDeleteRange') {
        if (r.value.rangeEnd.length === 0) keys.push(r.value.key);
        else ranges.push({ key: r.value.key, rangeEnd: r.value.rangeEnd });
      }
      if (r?.$case === 'requestTxn') visit(r.value);
    }
  };
  visit(req);
  return { keys, ranges };
}

