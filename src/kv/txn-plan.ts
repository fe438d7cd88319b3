// Static analysis of a transaction before it runs: which members its writes go
// to, which members its compares and reads touch, and which keys' current state
// the proxy must read to evaluate compares and build its puts. A transaction
// whose writes (in either branch) or compares reach more than one member is a
// cross-member transaction (kv/txn/cross-member.ts), committed atomically over
// all of them. Read-only transactions may span members. In a single-member
// writing transaction, a read of the current state (revision 0) that reaches
// other members after its writes is served after the write, as a snapshot at the
// write's own revision, which is what etcd's atomic transaction would have read;
// one with such a read before a write, or at an explicit revision, goes the
// cross-member way over its one member, which serves those reads exactly.

import { Compare_CompareResult, Compare_CompareTarget, type Compare, type RangeRequest, type RequestOp, type TxnRequest } from '../proto/gen/rpc.js';
import type { Router } from '../shard/layout.js';

export interface ClientRange {
  key: Buffer;
  rangeEnd: Buffer;
}

export interface TxnPlan {
  /** The member every write goes to; undefined when no branch writes anything, or for a cross-member transaction. */
  writeMember: number | undefined;
  /**
   * A writing transaction whose writes or compares reach several members: all of
   * them, ascending (committed atomically across them, kv/txn/cross-member.ts).
   */
  crossMembers?: number[];
  /** Members touched by compares and range reads. */
  readMembers: Set<number>;
  /** A writing transaction's range reads of the current state that reach other members (served after the write). */
  deferredReads: Set<RangeRequest>;
  /** Single keys whose current state is needed (compare keys and put keys), client form, unique. */
  stateKeys: Buffer[];
  /** Compare ranges (compares with a range_end), client form, unique. */
  stateRanges: ClientRange[];
  /** Whether the write needs current values (VALUE compares, ignore_value puts), not just metadata. */
  needsValues: boolean;
  /** latin1 client keys compared as absent (MOD, CREATE or VERSION equal to 0): the create pattern. */
  comparedAbsent: Set<string>;
}

/** Plans `req`. */
export function planTxn(router: Router, req: TxnRequest): TxnPlan {
  const membersOf = (key: Buffer, rangeEnd: Buffer) => router.membersOf(key, rangeEnd);
  const memberOf = (key: Buffer) => router.memberOf(key);
  const writeMembers = new Set<number>();
  const readMembers = new Set<number>();
  const keys = new Map<string, Buffer>();
  const ranges = new Map<string, ClientRange>();
  let needsValues = false;
  const comparedAbsent = new Set<string>();
  /** Members of compares and of reads that must run inside the member transaction. */
  const boundMembers = new Set<number>();
  /** Members of compares: a cross-member transaction holds them still while it commits. */
  const compareMembers = new Set<number>();
  /** Current-state reads and their members: a writing transaction may serve them afterwards. */
  const currentReads: { read: RangeRequest; members: number[] }[] = [];

  const visitCompare = (c: Compare) => {
    for (const m of membersOf(c.key, c.rangeEnd)) {
      readMembers.add(m);
      boundMembers.add(m);
      compareMembers.add(m);
    }
    if (c.target === Compare_CompareTarget.VALUE) needsValues = true;
    const u = c.targetUnion;
    if (
      c.rangeEnd.length === 0 &&
      c.result === Compare_CompareResult.EQUAL &&
      ((u?.$case === 'modRevision' || u?.$case === 'createRevision' || u?.$case === 'version') && u.value === 0n)
    ) {
      comparedAbsent.add(c.key.toString('latin1'));
    }
    if (c.rangeEnd.length === 0) keys.set(c.key.toString('latin1'), c.key);
    else ranges.set(rangeId(c.key, c.rangeEnd), { key: c.key, rangeEnd: c.rangeEnd });
  };
  const visitOps = (ops: RequestOp[]) => {
    for (const o of ops) {
      const r = o.request;
      switch (r?.$case) {
        case 'requestRange': {
          const ms = membersOf(r.value.key, r.value.rangeEnd);
          for (const m of ms) readMembers.add(m);
          if (r.value.revision === 0n) currentReads.push({ read: r.value, members: ms });
          else for (const m of ms) boundMembers.add(m);
          break;
        }
        case 'requestPut':
          writeMembers.add(memberOf(r.value.key));
          if (r.value.ignoreValue) needsValues = true;
          keys.set(r.value.key.toString('latin1'), r.value.key);
          break;
        case 'requestDeleteRange':
          for (const m of membersOf(r.value.key, r.value.rangeEnd)) writeMembers.add(m);
          break;
        case 'requestTxn':
          visitTxn(r.value);
          break;
        default:
          break;
      }
    }
  };
  const visitTxn = (t: TxnRequest) => {
    t.compare.forEach(visitCompare);
    visitOps(t.success);
    visitOps(t.failure);
  };
  visitTxn(req);

  const stateKeys = [...keys.values()];
  const stateRanges = [...ranges.values()];
  if (writeMembers.size > 1 || (writeMembers.size === 1 && [...compareMembers].some((m) => !writeMembers.has(m)))) {
    const crossMembers = [...new Set([...writeMembers, ...compareMembers])].sort((a, b) => a - b);
    return { writeMember: undefined, crossMembers, readMembers, deferredReads: new Set(), stateKeys, stateRanges, needsValues, comparedAbsent };
  }
  const writeMember = writeMembers.size === 1 ? [...writeMembers][0]! : undefined;
  if (writeMember !== undefined && ([...boundMembers].some((m) => m !== writeMember) || readsOthersBeforeWrite(req, router, writeMember))) {
    // One member writes, but a read of another member comes before a write, or is at an
    // explicit revision: the single-member path cannot answer it as etcd would; the
    // cross-member commit (over that one member) serves such reads exactly.
    return { writeMember: undefined, crossMembers: [writeMember], readMembers, deferredReads: new Set(), stateKeys, stateRanges, needsValues, comparedAbsent };
  }
  return {
    writeMember,
    readMembers,
    deferredReads: new Set(writeMember === undefined ? [] : currentReads.filter((c) => !onlyOn(c.members, writeMember)).map((c) => c.read)),
    stateKeys,
    stateRanges,
    needsValues,
    comparedAbsent,
  };
}

/**
 * Whether, on some branch, a read of the current state reaching members other
 * than `member` comes before a write (nested transactions included, taken as
 * possibly running either branch).
 */
function readsOthersBeforeWrite(req: TxnRequest, router: Router, member: number): boolean {
  let found = false;
  /** Walks one branch; returns whether it writes and whether it reads other members. */
  const branch = (ops: RequestOp[], readBefore: boolean): { writes: boolean; reads: boolean } => {
    let reads = readBefore;
    let writes = false;
    for (const o of ops) {
      const r = o.request;
      if (r?.$case === 'requestRange') {
        if (r.value.revision === 0n && !onlyOn(router.membersOf(r.value.key, r.value.rangeEnd), member)) reads = true;
      } else if (r?.$case === 'requestPut' || r?.$case === 'requestDeleteRange') {
        writes = true;
        if (reads) found = true;
      } else if (r?.$case === 'requestTxn') {
        const then = branch(r.value.success, reads);
        const els = branch(r.value.failure, reads);
        writes ||= then.writes || els.writes;
        reads ||= then.reads || els.reads;
      }
    }
    return { writes, reads };
  };
  branch(req.success, false);
  branch(req.failure, false);
  return found;
}

function onlyOn(members: number[], member: number): boolean {
  return members.length === 1 && members[0] === member;
}

export function rangeId(key: Buffer, rangeEnd: Buffer): string {
  return `${key.toString('hex')}:${rangeEnd.toString('hex')}`;
}
