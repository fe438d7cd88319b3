// The member transaction of a write, and what its response says.
//
//   if   the member's clock has reached any priority revision this write must follow
//   and  every key/range read is unchanged since it was read
//   then if   clock < slot1  then ops@slot1, lease index entries, clock := slot1
//        elif clock < slot2  then ops@slot2, lease index entries, clock := slot2
//        ...
//        else read clock
//   else read clock and the state again
//
// A member accepts a write at R only while its clock is below R, so its history
// is strictly increasing in meta revision. Writes that got their revisions for
// this member in one coordinator round trip share those revisions as slots, so
// whichever reaches the member first takes the lowest: etcd applies concurrent
// requests in no particular order, and without slots every write overtaken by a
// later one would have to retry. Pure: no I/O.

import type { Tick } from '../../clock/clock.js';
import type { Slot } from '../../clock/slot-group.js';
import { asTxn, cmp, op, txn } from '../../proto/build.js';
import type { Compare, RequestOp, ResponseOp, TxnRequest, TxnResponse } from '../../proto/gen/rpc.js';
import { ClockKind, clockAtLeastValue, clockGuardValue, encodeClockRecord } from '../../store/clock-record.js';
import { InternalKey, leaseIndexKey, toMemberRange } from '../../store/keyspace.js';
import { rangeId, type TxnPlan } from '../txn-plan.js';
import { clientOpsAt, type ClientOps, type WriteInput } from './member-ops.js';
import { refreshedState, type WriteState } from './write-state.js';
import type { BatchPart } from '../../members/write-batcher.js';

/** Bytes of client data a write may repeat across its slots (each slot carries its own copy of the operations). */
export const MAX_SLOTTED_BYTES = 256 * 1024;

export interface MemberWrite {
  txn: TxnRequest;
  /** The slots (revisions) the write may land at, in the order they are tried. */
  slots: Slot[];
}

/**
 * Builds the member transaction for `input` holding `tick`: `own` are the
 * client ops at the tick's revision (compileClientOps), `reads` the state reads
 * a failed attempt repeats (stateOps).
 */
export function buildMemberTxn(input: WriteInput, own: ClientOps, tick: Tick, reads: RequestOp[]): MemberWrite {
  const leaseIndex = leaseIndexOps(own);
  const slots = slotsFor(tick, input.state.clock, own.clientBytes);
  let chain: RequestOp[] = [op.range(InternalKey.clock)];
  for (let j = slots.length - 1; j >= 0; j--) {
    const slot = slots[j]!;
    const ops = slot.revision === tick.revision ? own.ops : clientOpsAt(input, slot.revision);
    const record = encodeClockRecord({ revision: slot.revision, kind: ClockKind.Write, allocation: slot.allocation });
    chain = [op.txn(txn([cmp.valueLess(InternalKey.clock, clockGuardValue(slot.revision))], [...ops, ...leaseIndex, op.put(InternalKey.clock, record)], chain))];
  }
  return { txn: txn(stateGuards(input, tick), chain, [op.range(InternalKey.clock), ...reads]), slots };
}

/** The lease index entries of the keys a write puts with a lease. */
export function leaseIndexOps(own: ClientOps): RequestOp[] {
  const out: RequestOp[] = [];
  for (const w of own.written) {
    if (w.put && w.put.lease !== 0n) out.push(op.put(leaseIndexKey(w.put.lease, Buffer.from(w.key, 'latin1').subarray(1)), Buffer.alloc(0)));
  }
  return out;
}

/**
 * The write's part of a batch (members/write-batcher.ts), or undefined when it
 * must go alone: only puts on the branch taken (no delete, read or nested
 * transaction), no compared range, and no priority revision to follow.
 */
export function batchPartOf(input: WriteInput, own: ClientOps, tick: Tick, reads: RequestOp[]): BatchPart | undefined {
  if (tick.first > 0 || input.plan.stateRanges.length > 0 || own.ops.length === 0) return undefined;
  if (!own.ops.every((o) => o.request?.$case === 'requestPut')) return undefined;
  if (own.clientBytes > MAX_SLOTTED_BYTES) return undefined;
  const keys = [...input.state.keys.keys()];
  for (const w of own.written) keys.push(w.key);
  return {
    revision: tick.revision,
    allocation: tick.allocation,
    guards: stateGuards(input, tick),
    ops: [...own.ops, ...leaseIndexOps(own)],
    reads,
    keys,
    bytes: own.clientBytes + 64 * (own.ops.length + keys.length),
  };
}

/** The free slots of the tick's group (above the member's clock, when known), or just the tick's own. */
function slotsFor(tick: Tick, clock: number | undefined, clientBytes: number): Slot[] {
  const known = clock ?? -1;
  const shared = tick.group.slots.filter((s) => s.revision > known);
  return clientBytes * shared.length <= MAX_SLOTTED_BYTES && shared.length > 0 ? shared : [tick];
}

function stateGuards({ state, plan }: WriteInput, tick: Tick): Compare[] {
  const guards: Compare[] = [];
  // Allocated after a priority write on this member: do not overtake it.
  if (tick.first > 0) guards.push(cmp.valueGreater(InternalKey.clock, clockAtLeastValue(tick.first)));
  for (const [k, kv] of state.keys) guards.push(cmp.modEqual(Buffer.from(k, 'latin1'), kv ? Number(kv.modRevision) : 0));
  for (const r of plan.stateRanges) {
    const mr = toMemberRange(r.key, r.rangeEnd);
    guards.push(cmp.modLess(mr.key, mr.rangeEnd, state.memberRevision + 1));
    for (const kv of state.ranges.get(rangeId(r.key, r.rangeEnd)) ?? []) guards.push(cmp.modEqual(kv.key, Number(kv.modRevision)));
  }
  return guards;
}

/** What one attempt's member response says. */
export type AttemptOutcome =
  /** Applied at `slot`; `responses` answer the client ops there. */
  | { kind: 'landed'; slot: Slot; responses: ResponseOp[] }
  /** A key changed since it was read: retry with the fresh state, in the same slots if any is free. */
  | { kind: 'stale'; state: WriteState }
  /** The member's clock passed every slot of the group (a later write landed first). */
  | { kind: 'order-lost'; state: WriteState }
  /** A priority write on the member, which this one must follow, has not landed yet. */
  | { kind: 'priority-wait'; state: WriteState }
  /** The state held, but later writes that reached the member first took every slot tried. */
  | { kind: 'all-slots-taken' };

export function attemptOutcome(resp: TxnResponse, write: MemberWrite, tick: Tick, plan: TxnPlan, reads: RequestOp[]): AttemptOutcome {
  if (!resp.succeeded) {
    const state = refreshedState(resp, plan, reads);
    if (state.clock !== undefined && state.clock >= tick.group.top.revision) return { kind: 'order-lost', state };
    if (tick.first > 0 && state.clock !== undefined && state.clock < tick.first) return { kind: 'priority-wait', state };
    return { kind: 'stale', state };
  }
  let level = resp.responses[0];
  for (const slot of write.slots) {
    const t = asTxn(level);
    if (t.succeeded) return { kind: 'landed', slot, responses: t.responses };
    level = t.responses[0];
  }
  return { kind: 'all-slots-taken' };
}
