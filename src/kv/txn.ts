// Executing transactions (and, through them, Put and single-member deletes).
//
// Write path, for a transaction whose writes all go to member M:
//   1. In parallel: take a meta revision R for M from the clock, and read the
//      current state of the keys the transaction compares or puts.
//   2. Evaluate the client's compares locally (etcd semantics), choose the
//      branches, and build one member transaction:
//        if   clock(M) < R            -- per-member order: M's history stays
//                                        strictly increasing in meta revision
//        and  every key/range read is unchanged since it was read
//        then the chosen client ops (values enveloped with R), lease index
//             entries, and clock(M) := R
//        else re-read clock(M) and the state
//   3. On failure, retry with the refreshed state; take a new revision only if
//      M's clock already passed R.
//   Any revision taken and then not used is released (clock(M) := R if still
//   lower) so readers do not wait for it.
//
// Read-only transactions (no put or delete in any branch) are served from one
// snapshot like a Range and may span members. A writing transaction's reads of
// the current state that reach other members are served after the write lands
// at R, as snapshot reads at R (or R - 1 when no write came before them): exactly
// what etcd's atomic transaction reads, since no other write has R — provided no
// write follows them in the branch taken, which is refused before anything is sent.

import type { KeyValue } from '../proto/gen/kv.js';
import { asRange, asTxn, cmp, headerRevision, op, rangeRequest, txn } from '../proto/build.js';
import {
  type Compare,
  type DeleteRangeResponse,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type RequestOp,
  type ResponseHeader,
  type ResponseOp,
  type TxnRequest,
  type TxnResponse,
} from '../proto/gen/rpc.js';
import { Errors, fromUpstream, unavailable } from '../server/errors.js';
import { ClockKind, clockAtLeastValue, clockGuardValue, decodeClockRecord, encodeClockRecord } from '../store/clock-record.js';
import { encodeEnvelope } from '../store/envelope.js';
import { InternalKey, leaseIndexKey, toMemberKey, toMemberRange } from '../store/keyspace.js';
import type { Tick } from '../clock/clock.js';
import type { Slot } from '../clock/slot-group.js';
import type { KvContext } from './context.js';
import { memberFetchLimit, shapeRange } from './range-shape.js';
import { rangeAt } from './range.js';
import { resolveReadPoint, type ReadPoint } from './read-point.js';
import { compareToPath, type CompareLookup } from './txn-compare.js';
import { planTxn, rangeId, type ClientRange, type TxnPlan } from './txn-plan.js';
import { toClientKv } from './translate.js';

/** A transaction's outcome; `revision` is the meta revision for the response header. */
export interface TxnOutcome {
  revision: number;
  succeeded: boolean;
  responses: ResponseOp[];
}

const MAX_ATTEMPTS = 32;
/** Order losses after which a write asks the clock for a priority revision. */
const PRIORITY_AFTER_LOSSES = 3;

export async function executeTxn(ctx: KvContext, req: TxnRequest, onMember?: number): Promise<TxnOutcome> {
  const plan = planTxn(ctx.router, req, onMember);
  if (plan.writeMember === undefined) return executeReadOnly(ctx, req, plan);
  return executeWrite(ctx, req, plan, plan.writeMember);
}

// ---------------------------------------------------------------------------
// Read-only transactions

async function executeReadOnly(ctx: KvContext, req: TxnRequest, plan: TxnPlan): Promise<TxnOutcome> {
  const members = [...plan.readMembers].sort((a, b) => a - b);
  const point = await resolveReadPoint(ctx, members, 0, false);
  const compareState = new Map<string, KeyValue[]>();
  const ranges: ClientRange[] = [
    ...plan.stateKeys.map((key) => ({ key, rangeEnd: Buffer.alloc(0) })),
    ...plan.stateRanges,
  ];
  await Promise.all(
    ranges.map(async (r) => {
      const got = await rangeAt(ctx, fullRange(r), ctx.router.membersOf(r.key, r.rangeEnd), point);
      compareState.set(rangeId(r.key, r.rangeEnd), got.kvs);
    }),
  );
  const path = compareToPath(req, (c) => compareState.get(rangeId(c.key, c.rangeEnd)) ?? []);
  checkReadOnlyRanges(ctx, req, path);
  const cursor = { i: 0 };
  const responses = await readOnlyOps(ctx, req, path, cursor, point);
  return { revision: point.header, succeeded: path[0]!, responses };
}

/** etcd's checkRange for the taken path of a read-only transaction (future revisions are found when resolved). */
function checkReadOnlyRanges(ctx: KvContext, req: TxnRequest, path: boolean[]): void {
  const cursor = { i: 0 };
  const walk = (t: TxnRequest) => {
    for (const o of path[cursor.i++]! ? t.success : t.failure) {
      const r = o.request;
      if (r?.$case === 'requestTxn') walk(r.value);
      else if (r?.$case === 'requestRange' && r.value.revision !== 0n && Number(r.value.revision) < ctx.compaction.revision) throw Errors.compacted();
    }
  };
  walk(req);
}

async function readOnlyOps(
  ctx: KvContext,
  t: TxnRequest,
  path: boolean[],
  cursor: { i: number },
  point: ReadPoint,
): Promise<ResponseOp[]> {
  const ok = path[cursor.i++]!;
  const out: ResponseOp[] = [];
  for (const o of ok ? t.success : t.failure) {
    const r = o.request!;
    if (r.$case === 'requestRange') {
      const members = ctx.router.membersOf(r.value.key, r.value.rangeEnd);
      const at = r.value.revision > 0n ? await resolveReadPoint(ctx, members, Number(r.value.revision), false) : point;
      const got = await rangeAt(ctx, r.value, members, at);
      out.push({
        response: {
          $case: 'responseRange',
          value: { header: innerHeader(point.header), kvs: got.kvs, more: got.more, count: BigInt(got.count) },
        },
      });
    } else if (r.$case === 'requestTxn') {
      const nestedOk = path[cursor.i]!;
      const responses = await readOnlyOps(ctx, r.value, path, cursor, point);
      out.push({ response: { $case: 'responseTxn', value: { header: innerHeader(0), succeeded: nestedOk, responses } } });
    }
  }
  return out;
}

function fullRange(r: ClientRange): RangeRequest {
  return rangeRequest(r.key, { rangeEnd: r.rangeEnd });
}

// ---------------------------------------------------------------------------
// Writing transactions

/** The state of the keys a write depends on, as read from its member. */
interface WriteState {
  /** Member revision the state was read at. */
  memberRevision: number;
  /** The member's clock when known (after a failed attempt). */
  clock: number | undefined;
  /** latin1(member key) → member key-value (undefined: absent). */
  keys: Map<string, KeyValue | undefined>;
  /** rangeId(client range) → member key-values in it. */
  ranges: Map<string, KeyValue[]>;
}

async function executeWrite(ctx: KvContext, req: TxnRequest, plan: TxnPlan, member: number): Promise<TxnOutcome> {
  const client = ctx.members[member]!;
  // A revision taken for a member that cannot be reached could not be resolved either,
  // and would hold back every watcher until --watch-timeout: fail fast instead.
  if (!ctx.timelines[member]!.connected) throw unavailable(`member ${member} is unavailable (its watch stream is down)`);
  const stateReads = stateOps(plan);
  const pastRevisions = await resolvePastRanges(ctx, req, member);

  const seq = ctx.sequencers[member]!;
  // After losing the race to the member a few times, ask for a revision nothing allocated later may overtake.
  let orderLosses = 0;
  const takeTick = () =>
    ctx.clock.tick(member, orderLosses >= PRIORITY_AFTER_LOSSES).then((t) => {
      seq.register(t.revision);
      return t;
    });
  const tickP = takeTick();
  const stateP = readState(ctx, member, plan, stateReads);
  let tick: Tick;
  let state: WriteState;
  try {
    [tick, state] = await Promise.all([tickP, stateP]);
  } catch (err) {
    tickP.then((t) => finishSlot(ctx, member, t, undefined), () => undefined);
    throw err;
  }

  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    let built: BuiltWrite;
    let path: boolean[];
    try {
      path = compareToPath(req, lookupFrom(state));
      checkTakenRanges(ctx, req, path, pastRevisions);
      built = await buildMemberTxn(ctx, req, path, state, tick, plan, stateReads, pastRevisions);
    } catch (err) {
      finishSlot(ctx, member, tick, undefined);
      throw err;
    }
    let resp: TxnResponse;
    try {
      await seq.turn(tick.revision);
      const sent = client.txn(built.txn);
      seq.sent(tick.revision);
      resp = await sent.finally(() => seq.finished());
    } catch (err) {
      finishSlot(ctx, member, tick, undefined);
      throw fromUpstream(err, `member ${member}`);
    }
    if (!resp.succeeded) {
      // A key changed since it was read (retry with the fresh state, in the same slots if any
      // is still free), or a priority write on the member has not landed yet (wait for it).
      state = parseRefresh(resp, plan, stateReads);
      if (state.clock !== undefined && state.clock >= tick.group.top.revision) {
        ctx.metrics.writeAttempts.inc({ outcome: 'order' });
        orderLosses++;
        finishSlot(ctx, member, tick, undefined);
        tick = await takeTick();
      } else if (tick.first > 0 && state.clock !== undefined && state.clock < tick.first) {
        ctx.metrics.writeAttempts.inc({ outcome: 'priority' });
        try {
          await ctx.timelines[member]!.waitFor(tick.first, Date.now() + ctx.limits.requestTimeoutMs);
        } catch (err) {
          finishSlot(ctx, member, tick, undefined);
          throw err;
        }
      } else {
        ctx.metrics.writeAttempts.inc({ outcome: 'stale' });
      }
      continue;
    }
    const landed = landedSlot(resp, built.slots.length);
    if (landed === undefined) {
      // Every slot was taken by a later write that reached the member first.
      ctx.metrics.writeAttempts.inc({ outcome: 'order' });
      orderLosses++;
      finishSlot(ctx, member, tick, undefined);
      tick = await takeTick();
      continue;
    }
    ctx.metrics.writeAttempts.inc({ outcome: 'ok' });
    const slot = built.slots[landed.index]!;
    finishSlot(ctx, member, tick, slot.revision);
    if (built.leases.size > 0) ctx.leases.attached(built.leases);
    const m = headerRevision(resp);
    for (const w of built.written(slot.revision)) ctx.keyCache.set(w.key, { rev: m, ...(w.present ? { present: w.present } : {}) });
    const cursor = { i: 0 };
    const deferred: DeferredRead[] = [];
    const responses = translateOps(req, path, cursor, landed.responses, slot.revision, m, plan.deferredReads, deferred);
    if (deferred.length > 0) await readDeferred(ctx, deferred, slot.revision);
    return { revision: slot.revision, succeeded: path[0]!, responses };
  }
  finishSlot(ctx, member, tick, undefined);
  throw unavailable(`member ${member}: too many conflicting concurrent writes, gave up after ${MAX_ATTEMPTS} attempts`);
}

/** Member read ops for the state of a write: single keys first, then compare ranges. */
function stateOps(plan: TxnPlan): RequestOp[] {
  return [
    ...plan.stateKeys.map((k) => op.range(toMemberKey(k))),
    ...plan.stateRanges.map((r) => {
      const mr = toMemberRange(r.key, r.rangeEnd);
      return op.range(mr.key, { rangeEnd: mr.rangeEnd });
    }),
  ];
}

async function readState(ctx: KvContext, member: number, plan: TxnPlan, reads: RequestOp[]): Promise<WriteState> {
  const known = fromCache(ctx, plan);
  if (known) return known;
  const client = ctx.members[member]!;
  try {
    if (reads.length === 1 && plan.stateKeys.length === 1) {
      const key = toMemberKey(plan.stateKeys[0]!);
      // A possibly stale (serializable) read is fine: the write's guards check it.
      const resp = await client.range({ key, serializable: true });
      return {
        memberRevision: headerRevision(resp),
        clock: undefined,
        keys: new Map([[key.toString('latin1'), resp.kvs[0]]]),
        ranges: new Map(),
      };
    }
    const resp = await client.txn(txn([], reads), { readOnly: true });
    return stateFrom(headerRevision(resp), undefined, plan, resp.responses);
  } catch (err) {
    throw fromUpstream(err, `member ${member}`);
  }
}

/**
 * The write's state from what this proxy has seen of its keys, when that is
 * enough: no compare ranges, no values needed, and every key either known or
 * compared as absent (a create). The write's guards check it at the member.
 */
function fromCache(ctx: KvContext, plan: TxnPlan): WriteState | undefined {
  if (plan.stateRanges.length > 0 || plan.needsValues) return undefined;
  const keys = new Map<string, KeyValue | undefined>();
  for (const k of plan.stateKeys) {
    const mkey = toMemberKey(k);
    const meta = ctx.keyCache.get(mkey.toString('latin1'));
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
            version: p.version,
            value: encodeEnvelope({ modRevision: p.modRevision, createRevision: p.createRevision, lease: p.lease, value: Buffer.alloc(0) }),
            lease: 0n,
          }
        : undefined,
    );
  }
  return { memberRevision: 0, clock: undefined, keys, ranges: new Map() };
}

function stateFrom(memberRevision: number, clock: number | undefined, plan: TxnPlan, responses: ResponseOp[]): WriteState {
  const keys = new Map<string, KeyValue | undefined>();
  plan.stateKeys.forEach((k, i) => keys.set(toMemberKey(k).toString('latin1'), asRange(responses[i]).kvs[0]));
  const ranges = new Map<string, KeyValue[]>();
  plan.stateRanges.forEach((r, i) => ranges.set(rangeId(r.key, r.rangeEnd), asRange(responses[plan.stateKeys.length + i]).kvs));
  return { memberRevision, clock, keys, ranges };
}

function parseRefresh(resp: TxnResponse, plan: TxnPlan, reads: RequestOp[]): WriteState {
  const clockKv = asRange(resp.responses[0]).kvs[0];
  const clock = clockKv ? decodeClockRecord(clockKv.value).revision : 0;
  return stateFrom(headerRevision(resp), clock, plan, resp.responses.slice(1, 1 + reads.length));
}

function lookupFrom(state: WriteState): CompareLookup {
  return (c: Compare) => {
    if (c.rangeEnd.length === 0) {
      const kv = state.keys.get(toMemberKey(c.key).toString('latin1'));
      return kv ? [toClientKv(kv)] : [];
    }
    return (state.ranges.get(rangeId(c.key, c.rangeEnd)) ?? []).map(toClientKv);
  };
}

/** Member revisions for range ops that read at a past meta revision (their own snapshots). */
/**
 * Member revisions for range ops that read at a past meta revision, resolved
 * before the write takes its own revision (so that waiting for completeness never
 * waits on it). A revision that cannot be read (future, compacted) is kept as its
 * error: etcd checks only the ranges on the taken path, so the error is raised
 * only if that range is taken (see checkTakenRanges).
 */
async function resolvePastRanges(ctx: KvContext, req: TxnRequest, member: number): Promise<Map<number, number | Error>> {
  const revs = new Set<number>();
  const walk = (t: TxnRequest) => {
    for (const o of [...t.success, ...t.failure]) {
      if (o.request?.$case === 'requestRange' && o.request.value.revision > 0n) revs.add(Number(o.request.value.revision));
      if (o.request?.$case === 'requestTxn') walk(o.request.value);
    }
  };
  walk(req);
  const out = new Map<number, number | Error>();
  for (const rev of revs) {
    try {
      const point = await resolveReadPoint(ctx, [member], rev, false);
      out.set(rev, point.memberRevisions.get(member)!);
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      out.set(rev, err);
    }
  }
  return out;
}

/**
 * etcd's checkRange over the taken path: a range at a revision above the current
 * one is a future revision, below the compacted one (-1 when never compacted) is
 * compacted; other negative revisions read the current state.
 */
function checkTakenRanges(ctx: KvContext, req: TxnRequest, path: boolean[], past: Map<number, number | Error>): void {
  const cursor = { i: 0 };
  const walk = (t: TxnRequest) => {
    const ok = path[cursor.i++]!;
    for (const o of ok ? t.success : t.failure) {
      const r = o.request;
      if (r?.$case === 'requestTxn') walk(r.value);
      if (r?.$case !== 'requestRange' || r.value.revision === 0n) continue;
      const rev = Number(r.value.revision);
      if (rev < ctx.compaction.revision) throw Errors.compacted();
      const resolved = past.get(rev);
      if (resolved instanceof Error) throw resolved;
    }
  };
  walk(req);
}

interface BuiltWrite {
  txn: TxnRequest;
  /** The slots (revisions) the write may land at, in the order they are tried. */
  slots: Slot[];
  leases: Set<bigint>;
  /** The single keys it puts or deletes, with their metadata once it landed at `revision`. */
  written: (revision: number) => Written[];
}

/** Bytes of client data a write may repeat across its slots (each slot carries its own copy of the operations). */
const MAX_SLOTTED_BYTES = 256 * 1024;

/**
 * Builds the member transaction of a write:
 *
 *   if   every key/range read is unchanged since it was read
 *   then if   clock < slot1  then ops@slot1, clock := slot1
 *        elif clock < slot2  then ops@slot2, clock := slot2
 *        ...
 *        else read clock
 *   else read clock and the state again
 *
 * Writes that got their revisions for this member in one coordinator round
 * trip share those revisions as slots, so whichever reaches the member first
 * takes the lowest: etcd applies concurrent requests in no particular order, and
 * without slots every write overtaken by a later one would have to retry.
 */
async function buildMemberTxn(
  ctx: KvContext,
  req: TxnRequest,
  path: boolean[],
  state: WriteState,
  tick: Tick,
  plan: TxnPlan,
  reads: RequestOp[],
  pastRevisions: Map<number, number | Error>,
): Promise<BuiltWrite> {
  const leases = new Set<bigint>();
  const writtenKeys: { key: string; put?: { version: bigint; createRevision: number | undefined; lease: bigint } }[] = [];
  let clientBytes = 0;

  /** The client's ops on the taken path, for a write landing at revision R. */
  const opsAt = (R: number, record: boolean): RequestOp[] => {
    const cursor = { i: 0 };
    // A read of other members is served as of the write's revision: exact only when no write follows it.
    let deferredSeen = false;
    const writing = () => {
      if (deferredSeen) throw Errors.crossMemberReadBeforeWrite();
    };
    const build = (t: TxnRequest): RequestOp[] => {
      const ok = path[cursor.i++]!;
      const out: RequestOp[] = [];
      for (const o of ok ? t.success : t.failure) {
        const r = o.request!;
        switch (r.$case) {
          case 'requestRange': {
            if (plan.deferredReads.has(r.value)) {
              // Read after the write (see readDeferred); this stand-in's header tells at which revision.
              out.push(op.range(InternalKey.clock, { countOnly: true }));
              deferredSeen = true;
              break;
            }
            const mr = toMemberRange(r.value.key, r.value.rangeEnd);
            const revision = r.value.revision > 0n ? BigInt(pastRevisions.get(Number(r.value.revision)) as number) : 0n;
            out.push(op.range(mr.key, { rangeEnd: mr.rangeEnd, revision, limit: BigInt(memberFetchLimit(r.value)), countOnly: r.value.countOnly }));
            break;
          }
          case 'requestPut': {
            writing();
            const p = r.value;
            const mkey = toMemberKey(p.key);
            const current = state.keys.get(mkey.toString('latin1'));
            if ((p.ignoreValue || p.ignoreLease) && !current) throw Errors.keyNotFound();
            const meta = current ? toClientKv(current) : undefined;
            const value = p.ignoreValue ? meta!.value : p.value;
            const lease = p.ignoreLease ? meta!.lease : p.lease;
            const createRevision = meta ? Number(meta.createRevision) : R;
            out.push(op.put(mkey, encodeEnvelope({ modRevision: R, createRevision, lease, value }), { prevKv: p.prevKv }));
            if (record) {
              clientBytes += mkey.length + value.length;
              if (lease !== 0n) leases.add(lease);
              writtenKeys.push({
                key: mkey.toString('latin1'),
                put: { version: (current?.version ?? 0n) + 1n, createRevision: meta ? Number(meta.createRevision) : undefined, lease },
              });
            }
            break;
          }
          case 'requestDeleteRange': {
            writing();
            const mr = toMemberRange(r.value.key, r.value.rangeEnd);
            out.push(op.deleteRange(mr.key, mr.rangeEnd, r.value.prevKv));
            if (record && r.value.rangeEnd.length === 0) writtenKeys.push({ key: mr.key.toString('latin1') });
            break;
          }
          case 'requestTxn':
            out.push(op.txn(txn([], build(r.value))));
            break;
        }
      }
      return out;
    };
    return build(req);
  };

  const first = opsAt(tick.revision, true);
  for (const lease of leases) {
    if (!(await ctx.leases.exists(lease))) throw Errors.leaseNotFound();
  }
  const leaseIndex: RequestOp[] = [];
  for (const w of writtenKeys) {
    if (w.put && w.put.lease !== 0n) leaseIndex.push(op.put(leaseIndexKey(w.put.lease, Buffer.from(w.key, 'latin1').subarray(1)), Buffer.alloc(0)));
  }

  // Free slots of the group (those above the member's known clock), or just this write's own.
  const known = state.clock ?? -1;
  const shared = tick.group.slots.filter((s) => s.revision > known);
  const slots = clientBytes * shared.length <= MAX_SLOTTED_BYTES && shared.length > 0 ? shared : [tick];

  let chain: RequestOp[] = [op.range(InternalKey.clock)];
  for (let j = slots.length - 1; j >= 0; j--) {
    const slot = slots[j]!;
    const ops = slot.revision === tick.revision ? first : opsAt(slot.revision, false);
    const record = encodeClockRecord({ revision: slot.revision, kind: ClockKind.Write, allocation: slot.allocation });
    chain = [op.txn(txn([cmp.valueLess(InternalKey.clock, clockGuardValue(slot.revision))], [...ops, ...leaseIndex, op.put(InternalKey.clock, record)], chain))];
  }

  const guards: Compare[] = [];
  // Allocated after a priority write on this member: do not overtake it.
  if (tick.first > 0) guards.push(cmp.valueGreater(InternalKey.clock, clockAtLeastValue(tick.first)));
  for (const [k, kv] of state.keys) guards.push(cmp.modEqual(Buffer.from(k, 'latin1'), kv ? Number(kv.modRevision) : 0));
  for (const r of plan.stateRanges) {
    const mr = toMemberRange(r.key, r.rangeEnd);
    guards.push(cmp.modLess(mr.key, mr.rangeEnd, state.memberRevision + 1));
    for (const kv of state.ranges.get(rangeId(r.key, r.rangeEnd)) ?? []) guards.push(cmp.modEqual(kv.key, Number(kv.modRevision)));
  }
  return {
    txn: txn(guards, chain, [op.range(InternalKey.clock), ...reads]),
    slots,
    leases,
    written: (revision) =>
      writtenKeys.map((w) =>
        w.put
          ? { key: w.key, present: { version: w.put.version, createRevision: w.put.createRevision ?? revision, modRevision: revision, lease: w.put.lease } }
          : { key: w.key },
      ),
  };
}

/** Which slot of the chain the write landed at, and the responses of its operations there. */
function landedSlot(resp: TxnResponse, slots: number): { index: number; responses: ResponseOp[] } | undefined {
  let level = resp.responses[0];
  for (let j = 0; j < slots; j++) {
    const t = asTxn(level);
    if (t.succeeded) return { index: j, responses: t.responses };
    level = t.responses[0];
  }
  return undefined;
}

/** A single key this write puts (with its new metadata) or deletes, for the key cache. */
interface Written {
  key: string;
  present?: { version: bigint; createRevision: number; modRevision: number; lease: bigint };
}

/** Maps a member revision seen inside our member transaction at revision m to meta terms. */
function metaRevision(h: number, R: number, m: number): number {
  if (h === 0) return 0;
  return h >= m ? R : R - 1;
}

function innerHeader(revision: number): ResponseHeader {
  return { clusterId: 0n, memberId: 0n, revision: BigInt(revision), raftTerm: 0n };
}

/** A range of a writing transaction to be read after the write, at `revision`, into `response`. */
interface DeferredRead {
  request: RangeRequest;
  revision: number;
  response: RangeResponse;
}

function translateOps(
  t: TxnRequest,
  path: boolean[],
  cursor: { i: number },
  responses: ResponseOp[],
  R: number,
  m: number,
  deferredReads: Set<RangeRequest>,
  deferred: DeferredRead[],
): ResponseOp[] {
  const ok = path[cursor.i++]!;
  const ops = ok ? t.success : t.failure;
  return ops.map((o, idx): ResponseOp => {
    const r = o.request!;
    const resp = responses[idx]!.response!;
    switch (r.$case) {
      case 'requestRange': {
        const got = resp.value as RangeResponse;
        if (deferredReads.has(r.value)) {
          // etcd's range sees the writes before it in the transaction: at R after one, at R - 1 before any.
          const revision = metaRevision(headerRevision(got), R, m);
          const response: RangeResponse = { header: innerHeader(revision), kvs: [], more: false, count: 0n };
          deferred.push({ request: r.value, revision, response });
          return { response: { $case: 'responseRange', value: response } };
        }
        const shaped = r.value.countOnly ? { kvs: [], more: false } : shapeRange(r.value, got.kvs.map(toClientKv));
        return {
          response: {
            $case: 'responseRange',
            value: { header: innerHeader(metaRevision(headerRevision(got), R, m)), kvs: shaped.kvs, more: shaped.more, count: got.count },
          },
        };
      }
      case 'requestPut': {
        const got = resp.value as PutResponse;
        return {
          response: {
            $case: 'responsePut',
            value: { header: innerHeader(metaRevision(headerRevision(got), R, m)), prevKv: got.prevKv ? toClientKv(got.prevKv) : undefined },
          },
        };
      }
      case 'requestDeleteRange': {
        const got = resp.value as DeleteRangeResponse;
        return {
          response: {
            $case: 'responseDeleteRange',
            value: {
              header: innerHeader(metaRevision(headerRevision(got), R, m)),
              deleted: got.deleted,
              prevKvs: got.prevKvs.map(toClientKv),
            },
          },
        };
      }
      case 'requestTxn': {
        const got = resp.value as TxnResponse;
        const nestedOk = path[cursor.i]!;
        const nested = translateOps(r.value, path, cursor, got.responses, R, m, deferredReads, deferred);
        return { response: { $case: 'responseTxn', value: { header: innerHeader(0), succeeded: nestedOk, responses: nested } } };
      }
    }
  });
}

/**
 * Fills the range responses of a landed write that read other members: each is a
 * snapshot read at the revision etcd's atomic transaction would have read at (R,
 * or R - 1 when no write came before it), which every proxy serves exactly. The
 * write has been applied by now, so a failure says so.
 */
async function readDeferred(ctx: KvContext, reads: DeferredRead[], R: number): Promise<void> {
  try {
    await Promise.all(
      reads.map(async (d) => {
        const members = ctx.router.membersOf(d.request.key, d.request.rangeEnd);
        const got = await rangeAt(ctx, d.request, members, await resolveReadPoint(ctx, members, d.revision, false));
        Object.assign(d.response, { kvs: got.kvs, more: got.more, count: BigInt(got.count) });
      }),
    );
  } catch (err) {
    throw unavailable(`the transaction was applied at revision ${R}, but reading its ranges over other members failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * A write is done with its tick (it landed at `landed`, or it gave up or moved
 * to a new tick): the sequencer no longer waits for it, and its slot group
 * may say the group's unused revisions are to be released.
 */
function finishSlot(ctx: KvContext, member: number, tick: Tick, landed: number | undefined): void {
  ctx.sequencers[member]!.sent(tick.revision);
  if (!tick.group.finish(landed)) return;
  const top = tick.group.top.revision;
  const record = encodeClockRecord({ revision: top, kind: ClockKind.Fence, allocation: [] });
  ctx.members[member]!
    .txn(txn([cmp.valueLess(InternalKey.clock, clockGuardValue(top))], [op.put(InternalKey.clock, record)]))
    .catch((err: unknown) => ctx.log.debug({ member, revision: top, err: String(err) }, 'could not release unused revisions; readers will fence them'));
}
