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
// snapshot like a Range and may span members.

import type { KeyValue } from '../proto/gen/kv.js';
import { asRange, cmp, op, txn, headerRevision } from '../proto/build.js';
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
import { ClockKind, clockGuardValue, decodeClockRecord, encodeClockRecord } from '../store/clock-record.js';
import { encodeEnvelope } from '../store/envelope.js';
import { InternalKey, leaseIndexKey, toMemberKey, toMemberRange } from '../store/keyspace.js';
import type { Tick } from '../clock/clock.js';
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
  const cursor = { i: 0 };
  const responses = await readOnlyOps(ctx, req, path, cursor, point);
  return { revision: point.header, succeeded: path[0]!, responses };
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
  return {
    key: r.key,
    rangeEnd: r.rangeEnd,
    limit: 0n,
    revision: 0n,
    sortOrder: 0,
    sortTarget: 0,
    serializable: false,
    keysOnly: false,
    countOnly: false,
    minModRevision: 0n,
    maxModRevision: 0n,
    minCreateRevision: 0n,
    maxCreateRevision: 0n,
  };
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
  const takeTick = () =>
    ctx.clock.tick(member).then((t) => {
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
    tickP.then((t) => release(ctx, member, t), () => undefined);
    throw err;
  }

  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    let memberTxn: TxnRequest;
    let leases: Set<bigint>;
    let path: boolean[];
    try {
      path = compareToPath(req, lookupFrom(state));
      ({ txn: memberTxn, leases } = await buildMemberTxn(ctx, req, path, state, tick, plan, stateReads, pastRevisions));
    } catch (err) {
      release(ctx, member, tick);
      throw err;
    }
    let resp: TxnResponse;
    try {
      await seq.turn(tick.revision);
      const sent = client.txn(memberTxn);
      seq.sent(tick.revision);
      resp = await sent.finally(() => seq.finished());
    } catch (err) {
      release(ctx, member, tick);
      throw fromUpstream(err, `member ${member}`);
    }
    if (resp.succeeded) {
      ctx.metrics.writeAttempts.inc({ outcome: 'ok' });
      if (leases.size > 0) ctx.leases.attached(leases);
      const m = headerRevision(resp);
      const cursor = { i: 0 };
      const responses = translateOps(req, path, cursor, resp.responses, tick.revision, m);
      return { revision: tick.revision, succeeded: path[0]!, responses };
    }
    state = parseRefresh(resp, plan, stateReads);
    if (state.clock !== undefined && state.clock >= tick.revision) {
      ctx.metrics.writeAttempts.inc({ outcome: 'order' });
      tick = await takeTick();
    } else {
      ctx.metrics.writeAttempts.inc({ outcome: 'stale' });
    }
  }
  release(ctx, member, tick);
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
async function resolvePastRanges(ctx: KvContext, req: TxnRequest, member: number): Promise<Map<number, number>> {
  const revs = new Set<number>();
  const walk = (t: TxnRequest) => {
    for (const o of [...t.success, ...t.failure]) {
      if (o.request?.$case === 'requestRange' && o.request.value.revision > 0n) revs.add(Number(o.request.value.revision));
      if (o.request?.$case === 'requestTxn') walk(o.request.value);
    }
  };
  walk(req);
  const out = new Map<number, number>();
  for (const rev of revs) {
    const point = await resolveReadPoint(ctx, [member], rev, false);
    out.set(rev, point.memberRevisions.get(member)!);
  }
  return out;
}

async function buildMemberTxn(
  ctx: KvContext,
  req: TxnRequest,
  path: boolean[],
  state: WriteState,
  tick: Tick,
  plan: TxnPlan,
  reads: RequestOp[],
  pastRevisions: Map<number, number>,
): Promise<{ txn: TxnRequest; leases: Set<bigint> }> {
  const R = tick.revision;
  const leaseIndex: RequestOp[] = [];
  const leases = new Set<bigint>();
  const cursor = { i: 0 };

  const build = (t: TxnRequest): RequestOp[] => {
    const ok = path[cursor.i++]!;
    const out: RequestOp[] = [];
    for (const o of ok ? t.success : t.failure) {
      const r = o.request!;
      switch (r.$case) {
        case 'requestRange': {
          const mr = toMemberRange(r.value.key, r.value.rangeEnd);
          const revision = r.value.revision > 0n ? BigInt(pastRevisions.get(Number(r.value.revision))!) : 0n;
          out.push(op.range(mr.key, { rangeEnd: mr.rangeEnd, revision, limit: BigInt(memberFetchLimit(r.value)), countOnly: r.value.countOnly }));
          break;
        }
        case 'requestPut': {
          const p = r.value;
          const mkey = toMemberKey(p.key);
          const current = state.keys.get(mkey.toString('latin1'));
          if ((p.ignoreValue || p.ignoreLease) && !current) throw Errors.keyNotFound();
          const meta = current ? toClientKv(current) : undefined;
          const value = p.ignoreValue ? meta!.value : p.value;
          const lease = p.ignoreLease ? meta!.lease : p.lease;
          if (lease !== 0n) {
            leases.add(lease);
            leaseIndex.push(op.put(leaseIndexKey(lease, p.key), Buffer.alloc(0)));
          }
          const envelope = encodeEnvelope({ modRevision: R, createRevision: meta ? Number(meta.createRevision) : R, lease, value });
          out.push(op.put(mkey, envelope, { prevKv: p.prevKv }));
          break;
        }
        case 'requestDeleteRange': {
          const mr = toMemberRange(r.value.key, r.value.rangeEnd);
          out.push(op.deleteRange(mr.key, mr.rangeEnd, r.value.prevKv));
          break;
        }
        case 'requestTxn':
          out.push(op.txn(txn([], build(r.value))));
          break;
      }
    }
    return out;
  };
  const clientOps = build(req);
  for (const lease of leases) {
    if (!(await ctx.leases.exists(lease))) throw Errors.leaseNotFound();
  }

  const guards: Compare[] = [cmp.valueLess(InternalKey.clock, clockGuardValue(R))];
  for (const [k, kv] of state.keys) guards.push(cmp.modEqual(Buffer.from(k, 'latin1'), kv ? Number(kv.modRevision) : 0));
  for (const r of plan.stateRanges) {
    const mr = toMemberRange(r.key, r.rangeEnd);
    guards.push(cmp.modLess(mr.key, mr.rangeEnd, state.memberRevision + 1));
    for (const kv of state.ranges.get(rangeId(r.key, r.rangeEnd)) ?? []) guards.push(cmp.modEqual(kv.key, Number(kv.modRevision)));
  }
  const record = encodeClockRecord({ revision: R, kind: ClockKind.Write, allocation: tick.allocation });
  return {
    txn: txn(guards, [...clientOps, ...leaseIndex, op.put(InternalKey.clock, record)], [op.range(InternalKey.clock), ...reads]),
    leases,
  };
}

/** Maps a member revision seen inside our member transaction at revision m to meta terms. */
function metaRevision(h: number, R: number, m: number): number {
  if (h === 0) return 0;
  return h >= m ? R : R - 1;
}

function innerHeader(revision: number): ResponseHeader {
  return { clusterId: 0n, memberId: 0n, revision: BigInt(revision), raftTerm: 0n };
}

function translateOps(t: TxnRequest, path: boolean[], cursor: { i: number }, responses: ResponseOp[], R: number, m: number): ResponseOp[] {
  const ok = path[cursor.i++]!;
  const ops = ok ? t.success : t.failure;
  return ops.map((o, idx): ResponseOp => {
    const r = o.request!;
    const resp = responses[idx]!.response!;
    switch (r.$case) {
      case 'requestRange': {
        const got = resp.value as RangeResponse;
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
        const nested = translateOps(r.value, path, cursor, got.responses, R, m);
        return { response: { $case: 'responseTxn', value: { header: innerHeader(0), succeeded: nestedOk, responses: nested } } };
      }
    }
  });
}

/** Gives back a revision that was taken but not used, so readers do not wait for it (best effort). */
function release(ctx: KvContext, member: number, tick: Tick): void {
  ctx.sequencers[member]!.sent(tick.revision);
  const record = encodeClockRecord({ revision: tick.revision, kind: ClockKind.Fence, allocation: [] });
  ctx.members[member]!
    .txn(txn([cmp.valueLess(InternalKey.clock, clockGuardValue(tick.revision))], [op.put(InternalKey.clock, record)]))
    .catch((err: unknown) => ctx.log.debug({ member, revision: tick.revision, err: String(err) }, 'could not release an unused revision; readers will fence it'));
}
