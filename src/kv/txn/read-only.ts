// Read-only transactions (no put or delete in any branch): served from one
// snapshot like a Range, and free to span members. The compares are evaluated
// against the snapshot's state, then the ranges of the branch taken are read at
// it (or at their own revision).

import type { KeyValue } from '../../proto/gen/kv.js';
import { rangeRequest } from '../../proto/build.js';
import type { RangeRequest, ResponseOp, TxnRequest } from '../../proto/gen/rpc.js';
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
  const members = [...plan.readMembers].sort((a, b) => a - b);
  const point = await resolveReadPoint(ctx, members, 0, false);
  const compareState = new Map<string, KeyValue[]>();
  const ranges: ClientRange[] = [
    ...plan.stateKeys.map((key) => ({ key, rangeEnd: Buffer.alloc(0) })),
    ...plan.stateRanges,
  ];
  await Promise.all(
    ranges.map(async (r) => {
      const got = await rangeAt(ctx, rangeRequest(r.key, { rangeEnd: r.rangeEnd }), ctx.router.membersOf(r.key, r.rangeEnd), point);
      compareState.set(rangeId(r.key, r.rangeEnd), got.kvs);
    }),
  );
  const path = compareToPath(req, (c) => compareState.get(rangeId(c.key, c.rangeEnd)) ?? []);
  // Future revisions are found when their snapshot is resolved below.
  checkTakenRanges(req, path, ctx.compaction.revision, NO_PAST);
  const taken = new ReadOnlyResponses();
  walkTaken(req, path, taken);
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
  private readonly levels: ResponseOp[][] = [this.out];

  op(r: LeafRequest): void {
    if (r.$case !== 'requestRange') return;
    const into: ResponseOp = { response: undefined };
    this.levels[this.levels.length - 1]!.push(into);
    this.reads.push({ request: r.value, into });
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
