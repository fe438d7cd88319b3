// Read-only transactions (no put or delete in any branch): served from one
// snapshot like a Range, and free to span members. The compares are evaluated
// against the snapshot's state, then the ranges of the branch taken are read at
// it (or at their own revision). Writing transactions whose branch taken writes
// nothing at that snapshot are served the same way, so they take no revision.

import type { KeyValue } from '../../proto/gen/kv.js';
import { rangeRequest } from '../../proto/build.js';
import type { DeleteRangeRequest, RangeRequest, ResponseOp, TxnRequest } from '../../proto/gen/rpc.js';
import { EMPTY } from '../../util/bytes.js';
import type { KvContext } from '../context.js';
import { rangeAt } from '../range.js';
import { resolveReadPoint, type ReadPoint } from '../read-point.js';
import { compareToPath } from '../txn-compare.js';
import { rangeId, type ClientRange, type TxnPlan } from '../txn-plan.js';
import type { TxnOutcome } from './outcome.js';
import { innerHeader } from './responses.js';
import { checkTakenRanges, type PastRevisions } from './taken-ranges.js';
import { walkTaken, type LeafRequest, type TakenVisitor } from './walk.js';

const NO_PAST: PastRevisions = new Map();

export async function executeReadOnly(ctx: KvContext, req: TxnRequest, plan: TxnPlan): Promise<TxnOutcome> {
  // No branch writes, so the snapshot never finds a write on the branch taken.
  return (await executeAtSnapshot(ctx, req, plan))!;
}

/**
 * A writing transaction whose branch taken writes nothing at the current
 * snapshot (its compares pick a branch of reads, and deletes that find
 * nothing): served from that snapshot as a read-only transaction, so that, as
 * in etcd, it leaves the revision where it is. Undefined when at the snapshot
 * the branch taken puts, or deletes something: the write path serves it then.
 */
export async function executeIfNothingWritten(ctx: KvContext, req: TxnRequest, plan: TxnPlan): Promise<TxnOutcome | undefined> {
  return executeAtSnapshot(ctx, req, plan);
}

async function executeAtSnapshot(ctx: KvContext, req: TxnRequest, plan: TxnPlan): Promise<TxnOutcome | undefined> {
  const deleteMembers = plan.writeMember === undefined ? (plan.crossMembers ?? []) : [plan.writeMember];
  const members = [...new Set([...plan.readMembers, ...deleteMembers])].sort((a, b) => a - b);
  const point = await resolveReadPoint(ctx, members, 0, false);
  const compareState = new Map<string, KeyValue[]>();
  const readState = (r: ClientRange) =>
    rangeAt(ctx, rangeRequest(r.key, { rangeEnd: r.rangeEnd }), ctx.router.membersOf(r.key, r.rangeEnd), point).then((got) => {
      compareState.set(rangeId(r.key, r.rangeEnd), got.kvs);
    });
  await Promise.all([...plan.stateKeys.map((key) => ({ key, rangeEnd: EMPTY })), ...plan.stateRanges].map(readState));
  const path = compareToPath(req, (c) => compareState.get(rangeId(c.key, c.rangeEnd)) ?? []);
  const taken = new ReadOnlyResponses();
  walkTaken(req, path, taken);
  if (taken.writes) return undefined;
  // Deletes on the branch taken write nothing only if they find nothing at the snapshot.
  const finds = async (d: DeleteRangeRequest): Promise<boolean> => {
    const compared = d.rangeEnd.length === 0 ? compareState.get(rangeId(d.key, EMPTY)) : undefined;
    if (compared) return compared.length > 0;
    // Deletes are on the write member only (for a spanning delete's part, the range is read there alone).
    const got = await rangeAt(ctx, rangeRequest(d.key, { rangeEnd: d.rangeEnd, countOnly: true }), deleteMembers, point);
    return got.count > 0;
  };
  if ((await Promise.all(taken.deletes.map((d) => finds(d.request)))).some(Boolean)) return undefined;
  // Future revisions are found when their snapshot is resolved below.
  checkTakenRanges(req, path, ctx.compaction.revision, NO_PAST);
  for (const d of taken.deletes) d.into.response = { $case: 'responseDeleteRange', value: { header: innerHeader(point.header), deleted: 0n, prevKvs: [] } };
  // One range at a time, in op order.
  for (const read of taken.reads) {
    const r = read.request;
    const members = ctx.router.membersOf(r.key, r.rangeEnd);
    const at: ReadPoint = r.revision > 0n ? await resolveReadPoint(ctx, members, Number(r.revision), false) : point;
    const got = await rangeAt(ctx, r, members, at);
    read.into.response = {
      $case: 'responseRange',
      value: { header: innerHeader(point.header), kvs: got.kvs, more: got.more, count: BigInt(got.count) },
    };
  }
  return { revision: point.header, succeeded: path[0]!, responses: taken.out };
}

/** The responses of the branch taken, with the range responses left to fill in. */
class ReadOnlyResponses implements TakenVisitor {
  readonly out: ResponseOp[] = [];
  readonly reads: { request: RangeRequest; into: ResponseOp }[] = [];
  /** Deletes on the branch taken (they write nothing when they find nothing). */
  readonly deletes: { request: DeleteRangeRequest; into: ResponseOp }[] = [];
  /** Whether the branch taken surely writes: a put. */
  writes = false;
  private readonly levels: ResponseOp[][] = [this.out];

  op(r: LeafRequest): void {
    const into: ResponseOp = { response: undefined };
    this.levels[this.levels.length - 1]!.push(into);
    if (r.$case === 'requestRange') this.reads.push({ request: r.value, into });
    else if (r.$case === 'requestDeleteRange') this.deletes.push({ request: r.value, into });
    else this.writes = true;
  }

  enter(_nested: unknown, succeeded: boolean): void {
    const responses: ResponseOp[] = [];
    this.levels[this.levels.length - 1]!.push({ response: { $case: 'responseTxn', value: { header: innerHeader(0), succeeded, responses } } });
    this.levels.push(responses);
  }

  leave(): void {
    this.levels.pop();
  }
}
