// The Range RPC over the meta cluster: resolve the snapshot, read every touched
// member at the member revision that holds it (in parallel), merge by key, and
// apply etcd's Range post-processing.

import type { KeyValue } from '../proto/gen/kv.js';
import type { RangeRequest, RangeResponse } from '../proto/gen/rpc.js';
import { Errors, isKind } from '../errors/etcd-error.js';
import { nextKey } from '../util/bytes.js';
import { asRange, op, txn } from '../proto/build.js';
import { decodeClockRecord } from '../store/clock-record.js';
import { InternalKey, toMemberRange } from '../store/keyspace.js';
import type { ClockSnapshot } from '../clock/clock.js';
import type { KvContext } from './context.js';
import { memberFetchLimit, shapeRange } from './range-shape.js';
import { resolveReadPoint, type ReadPoint } from './read-point.js';
import { toClientKv } from './translate.js';
import { readInsideBatch } from './batch-read.js';

export interface RangeResult {
  kvs: KeyValue[];
  more: boolean;
  count: number;
  header: number;
}

export async function range(ctx: KvContext, req: RangeRequest): Promise<RangeResult> {
  if (req.key.length === 0) throw Errors.emptyKey();
  const members = ctx.router.membersOf(req.key, req.rangeEnd);
  let snap: ClockSnapshot | undefined;
  if (members.length === 1 && req.revision <= 0n && !req.serializable && !writeInFlight(ctx, members[0]!)) {
    const fast = await rangeOneMemberNow(ctx, req, members[0]!);
    if (fast.result) return fast.result;
    snap = fast.snap;
  }
  const point = await resolveReadPoint(ctx, members, Number(req.revision), req.serializable, snap);
  return rangeAt(ctx, req, members, point);
}

/**
 * Whether a write of this proxy on `member` is still unanswered. The
 * one-round-trip read would then most likely find the member short of the clock
 * and read it again; the general path (clock, wait for the member's stream, one
 * member read) costs one member call instead of two.
 */
function writeInFlight(ctx: KvContext, member: number): boolean {
  return ctx.members.get(member).sequencer.busy;
}

/**
 * A linearizable read of one member in a single round trip: the clock and the
 * member (its data and its clock record) are read in parallel. If the member
 * has already resolved the last revision handed to it at the clock's revision C,
 * its data is exact at max(C, its own clock R): every write acknowledged before
 * the read is included (C covers it) and no write at or below that revision can
 * still land on it (per-member order). Otherwise (a write on it is still in
 * flight) the caller falls back to the general path, which waits for it from
 * the same clock reading.
 */
async function rangeOneMemberNow(ctx: KvContext, req: RangeRequest, member: number): Promise<{ result?: RangeResult; snap: ClockSnapshot }> {
  const { key, rangeEnd } = toMemberRange(req.key, req.rangeEnd);
  const limit = memberFetchLimit(req);
  const m = ctx.members.get(member);
  const [snap, got] = await Promise.all([
    ctx.clock.now(),
    rangeEnd.length === 0
      ? m.reads.read({ key, limit: BigInt(limit), countOnly: req.countOnly }, true)
      : m.client
          .txn(txn([], [op.range(InternalKey.clock, { serializable: true }), op.range(key, { rangeEnd, limit: BigInt(limit), countOnly: req.countOnly, serializable: true })]), {
            readOnly: true,
          })
          .then((resp) => ({ clock: asRange(resp.responses[0]), range: asRange(resp.responses[1]) })),
  ]);
  const clockKv = got.clock!.kvs[0];
  const memberClock = clockKv ? decodeClockRecord(clockKv.value).revision : -1;
  if (memberClock < snap.last[member]!) return { snap };
  return { result: assemble(req, [got.range], limit, Math.max(snap.revision, memberClock)), snap };
}

/** Serves `req` from an already resolved snapshot (also used inside read-only transactions). */
export async function rangeAt(ctx: KvContext, req: RangeRequest, members: number[], point: ReadPoint): Promise<RangeResult> {
  const { key, rangeEnd } = toMemberRange(req.key, req.rangeEnd);
  const limit = memberFetchLimit(req);
  const read = (m: number, r: Partial<RangeRequest> & { key: Buffer }) => readMemberAtPoint(ctx, m, point, r);
  if (limit === 0 || members.length === 1 || req.countOnly) {
    const parts = await Promise.all(members.map((m) => read(m, { key, rangeEnd, limit: BigInt(limit), countOnly: req.countOnly })));
    return assemble(req, parts, limit, point.header);
  }
  const first = await fetchFirst(members, key, rangeEnd, read, limit);
  return assemble(req, first.parts, limit, point.header, first.merged);
}

/** Reads `member` exactly at the read point's meta revision (correcting a batch it falls inside). */
export function readMemberAtPoint(ctx: KvContext, member: number, point: ReadPoint, req: Partial<RangeRequest> & { key: Buffer }): Promise<RangeResponse> {
  const batch = point.batches.get(member);
  if (batch) return readInsideBatch(ctx, member, req, point.revision, batch, (r) => readMemberAt(ctx, member, r));
  return readMemberAt(ctx, member, { ...req, revision: BigInt(point.memberRevisions.get(member)!) });
}

/**
 * The first `want` keys (in key order) of a range spread over several members,
 * without asking every member for `want` keys: keys hash evenly, so each member
 * is first asked for a little more than its share, and only a member whose last
 * key returned still falls before the cut-off is asked for more (from where it
 * stopped, at the same revision). The returned parts carry each member's total
 * `count` from its first answer; `merged` is their keys in key order.
 */
async function fetchFirst(
  members: number[],
  key: Buffer,
  rangeEnd: Buffer,
  read: (m: number, r: Partial<RangeRequest> & { key: Buffer }) => Promise<RangeResponse>,
  want: number,
): Promise<{ parts: RangeResponse[]; merged: KeyValue[] }> {
  const share = Math.min(want, Math.ceil((want / members.length) * 1.25) + 8);
  const parts = await Promise.all(members.map((m) => read(m, { key, rangeEnd, limit: BigInt(share) })));
  const kvs = parts.map((p) => [...p.kvs]);
  const more = parts.map((p) => p.more);
  let merged: KeyValue[] | undefined;
  for (;;) {
    const total = kvs.reduce((n, l) => n + l.length, 0);
    merged = total >= want ? mergeByKey(kvs) : undefined;
    const cutoff = merged?.[want - 1]!.key;
    const short = members.flatMap((m, i) => {
      const last = kvs[i]![kvs[i]!.length - 1];
      return more[i] && last && (cutoff === undefined || Buffer.compare(last.key, cutoff) < 0) ? [i] : [];
    });
    if (short.length === 0) break;
    await Promise.all(
      short.map(async (i) => {
        const last = kvs[i]![kvs[i]!.length - 1]!;
        const next = await read(members[i]!, {
          key: nextKey(last.key),
          rangeEnd,
          limit: BigInt(Math.max(share, want - total)),
        });
        kvs[i]!.push(...next.kvs);
        more[i] = next.more;
      }),
    );
  }
  return { parts: parts.map((p, i) => ({ ...p, kvs: kvs[i]! })), merged: merged ?? mergeByKey(kvs) };
}

/**
 * Reads a member at a member revision its stream has shown. etcd tells watchers
 * about a revision a moment before its readers can see it, so a local
 * (serializable) read can briefly answer "future revision"; a linearizable read
 * waits for the apply to finish and cannot.
 */
export async function readMemberAt(ctx: KvContext, member: number, req: Partial<RangeRequest>): Promise<RangeResponse> {
  const m = ctx.members.get(member);
  const client = m.client;
  try {
    if (req.key && (req.rangeEnd === undefined || req.rangeEnd.length === 0)) return (await m.reads.read({ ...req, key: req.key }, false)).range;
    return await client.range({ ...req, serializable: true });
  } catch (err) {
    if (!isKind(err, 'future-revision')) throw err;
  }
  return client.range({ ...req, serializable: false });
}

/** Merges member responses (each in key order) into the client's response. */
function assemble(req: RangeRequest, parts: RangeResponse[], limit: number, header: number, alreadyMerged?: KeyValue[]): RangeResult {
  let count = 0;
  for (const p of parts) count += Number(p.count);
  if (req.countOnly) return { kvs: [], more: false, count, header };
  let merged = alreadyMerged ?? mergeByKey(parts.map((p) => p.kvs));
  if (limit > 0 && merged.length > limit) merged = merged.slice(0, limit);
  const shaped = shapeRange(req, merged.map(toClientKv));
  return { kvs: shaped.kvs, more: shaped.more, count, header };
}

export function toRangeResponse(r: RangeResult, header: RangeResponse['header']): RangeResponse {
  return { header, kvs: r.kvs, more: r.more, count: BigInt(r.count) };
}

/** K-way merge of key-sorted lists (members hold disjoint keys). */
function mergeByKey(lists: KeyValue[][]): KeyValue[] {
  const nonEmpty = lists.filter((l) => l.length > 0);
  if (nonEmpty.length === 0) return [];
  if (nonEmpty.length === 1) return nonEmpty[0]!;
  const out: KeyValue[] = [];
  const pos = nonEmpty.map(() => 0);
  for (;;) {
    let best = -1;
    for (let i = 0; i < nonEmpty.length; i++) {
      const kv = nonEmpty[i]![pos[i]!];
      if (kv && (best < 0 || Buffer.compare(kv.key, nonEmpty[best]![pos[best]!]!.key) < 0)) best = i;
    }
    if (best < 0) return out;
    out.push(nonEmpty[best]![pos[best]!]!);
    pos[best]!++;
  }
}
