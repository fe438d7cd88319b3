// The state a write depends on — the current member key-values of the keys it
// compares or puts, and of the ranges it compares — and where it comes from: a
// read before the first attempt, the proxy's key cache, or the refresh a failed
// attempt returns. All pure: the reads themselves are in write-io.ts.

import type { KeyValue } from '../../proto/gen/kv.js';
import { asRange, headerRevision, op } from '../../proto/build.js';
import type { Compare, PutRequest, RequestOp, ResponseOp, TxnRequest, TxnResponse } from '../../proto/gen/rpc.js';
import { Errors } from '../../errors/etcd-error.js';
import { walkTaken } from './walk.js';
import { decodeClockRecord } from '../../store/clock-record.js';
import { encodeEnvelope } from '../../store/envelope.js';
import { toMemberKey, toMemberRange } from '../../store/keyspace.js';
import type { KeyCache } from '../key-cache.js';
import { toClientKv } from '../translate.js';
import type { CompareLookup } from '../txn-compare.js';
import { rangeId, type TxnPlan } from '../txn-plan.js';

/** The state of the keys a write depends on, as read from its member. */
export interface WriteState {
  /** Member revision the state was read at. */
  memberRevision: number;
  /** The member's clock when known (after a failed attempt). */
  clock: number | undefined;
  /** latin1(member key) → member key-value (undefined: absent). */
  keys: Map<string, KeyValue | undefined>;
  /** rangeId(client range) → member key-values in it. */
  ranges: Map<string, KeyValue[]>;
}

/** Member read ops for the state of a write: single keys first, then compare ranges. */
export function stateOps(plan: TxnPlan): RequestOp[] {
  return [
    ...plan.stateKeys.map((k) => op.range(toMemberKey(k))),
    ...plan.stateRanges.map((r) => {
      const mr = toMemberRange(r.key, r.rangeEnd);
      return op.range(mr.key, { rangeEnd: mr.rangeEnd });
    }),
  ];
}

/** The state from the responses to stateOps(plan). */
export function stateFrom(memberRevision: number, clock: number | undefined, plan: TxnPlan, responses: ResponseOp[]): WriteState {
  const keys = new Map<string, KeyValue | undefined>();
  plan.stateKeys.forEach((k, i) => keys.set(toMemberKey(k).toString('latin1'), asRange(responses[i]).kvs[0]));
  const ranges = new Map<string, KeyValue[]>();
  plan.stateRanges.forEach((r, i) => ranges.set(rangeId(r.key, r.rangeEnd), asRange(responses[plan.stateKeys.length + i]).kvs));
  return { memberRevision, clock, keys, ranges };
}

/** The state a failed attempt read back: the member's clock, then the responses to `reads` (see buildMemberTxn). */
export function refreshedState(resp: TxnResponse, plan: TxnPlan, reads: RequestOp[]): WriteState {
  const clockKv = asRange(resp.responses[0]).kvs[0];
  const clock = clockKv ? decodeClockRecord(clockKv.value).revision : 0;
  return stateFrom(headerRevision(resp), clock, plan, resp.responses.slice(1, 1 + reads.length));
}

/** The client-form key-values a compare sees in `state`. */
export function compareLookup(state: WriteState): CompareLookup {
  return (c: Compare) => {
    if (c.rangeEnd.length === 0) {
      const kv = state.keys.get(toMemberKey(c.key).toString('latin1'));
      return kv ? [toClientKv(kv)] : [];
    }
    return (state.ranges.get(rangeId(c.key, c.rangeEnd)) ?? []).map(toClientKv);
  };
}

/**
 * The write's state from what this proxy has seen of its keys, when that is
 * enough: no compare ranges, no values needed, and every key either known or
 * compared as absent (a create). The write's guards check it at the member.
 */
export function stateFromCache(cache: KeyCache, plan: TxnPlan): WriteState | undefined {
  if (plan.stateRanges.length > 0 || plan.needsValues) return undefined;
  const keys = new Map<string, KeyValue | undefined>();
  for (const k of plan.stateKeys) {
    const mkey = toMemberKey(k);
    const meta = cache.get(mkey.toString('latin1'));
    if (!meta) {
      if (!plan.comparedAbsent.has(k.toString('latin1'))) return undefined;
      keys.set(mkey.toString('latin1'), undefined);
      continue;
    }
    const p = meta.present;
    keys.set(
      mkey.toString('latin1'),
      p
        ? {
            key: mkey,
            createRevision: 0n,
            modRevision: BigInt(meta.rev),
            // Member form: the member's version and the base in the envelope, as a read would return them.
            version: p.version - BigInt(p.versionBase),
            value: encodeEnvelope({
              modRevision: p.modRevision,
              createRevision: p.createRevision,
              lease: p.lease,
              versionBase: p.versionBase,
              value: Buffer.alloc(0),
            }),
            lease: 0n,
          }
        : undefined,
    );
  }
  return { memberRevision: 0, clock: undefined, keys, ranges: new Map() };
}

/**
 * etcd's checks of the puts on the branch taken, in op order, before anything is
 * applied: ignore_value / ignore_lease need the key to exist ("key not found"),
 * a lease must exist ("requested lease not found"); the first failing put's error wins.
 */
export async function checkTakenPuts(req: TxnRequest, path: boolean[], state: WriteState, leaseExists: (id: bigint) => Promise<boolean>): Promise<void> {
  const puts: PutRequest[] = [];
  walkTaken(req, path, {
    op(r) {
      if (r.$case === 'requestPut') puts.push(r.value);
    },
  });
  for (const p of puts) {
    if ((p.ignoreValue || p.ignoreLease) && !state.keys.get(toMemberKey(p.key).toString('latin1'))) throw Errors.keyNotFound();
    const lease = p.ignoreLease ? undefined : p.lease;
    if (lease !== undefined && lease !== 0n && !(await leaseExists(lease))) throw Errors.leaseNotFound();
  }
}
