// What this proxy knows about one member's history in meta-revision terms:
//
// - the watermark: the highest meta revision the member's stream has shown.
//   Because writes land on a member in strictly increasing meta revision (the
//   clock-record guard), no write at or below the watermark can land later;
// - the revision index: which member revision holds the member's state at a
//   meta revision (in memory for recent history, by binary search over the
//   member's own clock-record history beyond that);
// - waiting until the watermark reaches a revision, and fencing the member when
//   a write holding that revision stalls (its proxy died, say): the fence takes
//   the revision, so the stalled write can only retry with a newer one.

import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { op, txn } from '../proto/build.js';
import { Errors, isKind, unavailable } from '../errors/etcd-error.js';
import { ClockKind, decodeClockRecord, type ClockRecord } from '../store/clock-record.js';
import { InternalKey, toMemberRange } from '../store/keyspace.js';
import { readVarint } from '../util/varint.js';
import { StreamLink } from '../members/stream-link.js';
import { closeRevision, type MemberPeers } from '../commit/close-revision.js';
import { RevisionIndex } from './revision-index.js';

export interface MemberTimelineOptions {
  member: number;
  client: EtcdClient;
  log: Logger;
  metrics: Metrics;
  maxIndexEntries?: number;
  /** How long a revision may stay unresolved before the member is fenced at it. */
  fenceAfterMs?: number;
  /** Every member cluster by slot: a fence may have to resolve a cross-member transaction first. */
  peers: MemberPeers;
}

/** A key a batch wrote (latin1 member key) and the meta revision it was written at. */
export interface BatchWrite {
  key: string;
  revision: number;
}

/** Batch compositions kept in memory; older ones are read from the member when needed. */
const MAX_BATCHES_KEPT = 4096;

interface Waiter {
  target: number;
  resolve: () => void;
}

export class MemberTimeline {
  readonly member: number;
  private readonly client: EtcdClient;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly index: RevisionIndex;
  private readonly fenceAfterMs: number;
  private readonly peers: MemberPeers;
  private mark = -1;
  private processedRev = 0;
  private waiters: Waiter[] = [];
  /** Recent batch member revisions: which key each wrote at which meta revision. */
  private readonly batches = new Map<number, BatchWrite[]>();
  /** Whether the member's watch stream is up (set by the member stream). */
  readonly link = new StreamLink();

  constructor(o: MemberTimelineOptions) {
    this.member = o.member;
    this.client = o.client;
    this.log = o.log.child({ component: 'timeline', member: o.member });
    this.metrics = o.metrics;
    this.index = new RevisionIndex(o.maxIndexEntries ?? 500_000);
    this.fenceAfterMs = o.fenceAfterMs ?? 1000;
    this.peers = o.peers;
  }

  /** Highest meta revision this member's stream has shown (-1 before the first). */
  get watermark(): number {
    return this.mark;
  }

  /** Newest member revision the stream has shown. */
  get processed(): number {
    return this.processedRev;
  }

  /**
   * Starts (or restarts, after the stream lost continuity) from the member's
   * current clock record. Entries learned before are dropped: revisions in the
   * gap are answered from the member's history instead.
   */
  seed(metaRev: number, recordMemberRev: number, processed: number): void {
    this.index.clear();
    this.index.append(metaRev, recordMemberRev);
    this.processedRev = Math.max(this.processedRev, processed);
    this.advance(metaRev);
  }

  /** Records member revision `memberRev`, which carried a clock record for `metaRev` if given. */
  observe(memberRev: number, metaRev: number | undefined): void {
    // A batch's member revision comes once per meta revision it carries (members/batch-split.ts).
    if (metaRev !== undefined) {
      this.index.append(metaRev, memberRev);
      this.processedRev = memberRev;
      this.advance(metaRev);
    } else if (memberRev > this.processedRev) {
      this.processedRev = memberRev;
    }
  }

  /**
   * Makes sure the member has a revision above `memberRev` (a reader of its
   * history up to `memberRev` needs to see one to know it has seen everything):
   * writes the empty bookkeeping key m/nudge when the stream has not shown one.
   */
  async passRevision(memberRev: number): Promise<void> {
    if (this.processedRev > memberRev) return;
    await this.client.txn(txn([], [op.put(InternalKey.nudge, Buffer.alloc(0))]));
  }

  /** Resolves once the watermark is at least `target`; fences stalled revisions; Unavailable at the deadline. */
  async waitFor(target: number, deadline: number): Promise<void> {
    if (this.mark >= target) return;
    let fenceAt = Date.now() + this.fenceAfterMs;
    for (;;) {
      const until = Math.min(fenceAt, deadline);
      await this.waitUntil(target, until);
      if (this.mark >= target) return;
      if (Date.now() >= deadline) {
        throw unavailable(`member ${this.member} has not reached meta revision ${target} (at ${this.mark}); is it down?`);
      }
      await this.fence(target).catch((err: unknown) => {
        this.log.warn({ target, err: String(err) }, 'fence failed');
      });
      fenceAt = Date.now() + this.fenceAfterMs;
    }
  }

  /**
   * The member revision that holds this member's state at meta revision
   * `metaRev`. The caller must first have waited until the watermark covers
   * every write on this member at or below `metaRev`.
   */
  async memberRevisionAt(metaRev: number): Promise<number> {
    return (await this.locate(metaRev)).memberRevision;
  }

  /**
   * memberRevisionAt, and whether `metaRev` falls strictly inside a batch there
   * (that member revision then also holds writes above `metaRev`).
   */
  async locate(metaRev: number): Promise<{ memberRevision: number; insideBatch: boolean }> {
    const hit = this.index.locate(metaRev, this.processedRev);
    if (hit !== undefined) return hit;
    const { answer: before, after } = await this.historyLookup(metaRev);
    // The member revision after it wrote a clock record above metaRev: a batch whose first revision is not.
    let rec = after;
    if (!rec && before + 1 <= this.processedRev) {
      const kv = (await this.client.range({ key: InternalKey.clock, revision: BigInt(before + 1) })).kvs[0];
      rec = kv ? decodeClockRecord(kv.value) : undefined;
    }
    if (rec?.kind === ClockKind.Batch && rec.batch![0]! <= metaRev) return { memberRevision: before + 1, insideBatch: true };
    return { memberRevision: before, insideBatch: false };
  }

  /** The member revision at which the member's last write at or below meta revision `metaRev` committed. */
  async recordRevisionAt(metaRev: number): Promise<number> {
    const hit = this.index.recordRevision(metaRev);
    if (hit !== undefined) return hit;
    const { answer: end } = await this.historyLookup(metaRev);
    const resp = await this.client.range({ key: InternalKey.clock, revision: BigInt(end) });
    return Number(resp.kvs[0]?.modRevision ?? BigInt(end));
  }

  /** Records which keys a batch member revision wrote at which meta revision (from the member stream). */
  noteBatch(memberRev: number, writes: BatchWrite[]): void {
    this.batches.set(memberRev, writes);
    if (this.batches.size > MAX_BATCHES_KEPT) this.batches.delete(this.batches.keys().next().value!);
  }

  /** The keys the batch at member revision `memberRevision` wrote, from memory or, for an older batch, from the member. */
  async batchWrites(memberRevision: number): Promise<BatchWrite[]> {
    let writes = this.batches.get(memberRevision);
    if (!writes) {
      // Every key the batch wrote has that member revision as its mod revision there.
      const all = toMemberRange(Buffer.from([0]), Buffer.from([0]));
      const resp = await this.client.range({ key: all.key, rangeEnd: all.rangeEnd, revision: BigInt(memberRevision), minModRevision: BigInt(memberRevision), maxModRevision: BigInt(memberRevision) });
      writes = resp.kvs.map((kv) => ({ key: kv.key.toString('latin1'), revision: readVarint(kv.value, 1)[0] }));
      this.noteBatch(memberRevision, writes);
    }
    return writes;
  }

  /** Meta revision in effect at member revision `memberRev`, if still in the index. */
  metaAt(memberRev: number): number | undefined {
    return this.index.metaAt(memberRev);
  }

  /**
   * Closes meta revision `target` on this member unless a write already took it or
   * a later one (resolving first any cross-member transaction in the way).
   */
  async fence(target: number): Promise<boolean> {
    const fenced = await closeRevision(this.peers, this.member, target);
    if (fenced) {
      this.metrics.fences.inc({ member: String(this.member) });
      this.log.warn({ target }, 'fenced a stalled meta revision');
    }
    return fenced;
  }

  private advance(metaRev: number): void {
    if (metaRev <= this.mark) return;
    this.mark = metaRev;
    this.metrics.memberRevision.set({ member: String(this.member) }, metaRev);
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.target <= metaRev) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  private waitUntil(target: number, until: number): Promise<void> {
    if (this.mark >= target) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiter: Waiter = {
        target,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve();
      }, Math.max(0, until - Date.now()));
      this.waiters.push(waiter);
    });
  }

  /**
   * Binary search over the member's own history of its clock record for the
   * newest member revision whose clock is <= metaRev (for revisions older than
   * the in-memory index, e.g. after a proxy restart), and the clock record of the
   * member revision after it when the search read it.
   */
  private async historyLookup(metaRev: number): Promise<{ answer: number; after: ClockRecord | undefined }> {
    const firstMember = this.index.firstMember;
    if (firstMember === undefined) throw unavailable(`member ${this.member} is not being watched yet`);
    let probes = 0;
    /** Clock records read, by member revision: the one at answer + 1 (written there) tells whether it is a batch. */
    const seen = new Map<number, ClockRecord>();
    const clockAt = async (memberRev: number): Promise<number | 'compacted'> => {
      probes++;
      try {
        const resp = await this.client.range({ key: InternalKey.clock, revision: BigInt(memberRev) });
        const kv = resp.kvs[0];
        if (!kv) return -1;
        const rec = decodeClockRecord(kv.value);
        seen.set(memberRev, rec);
        return rec.revision;
      } catch (err) {
        if (isKind(err, 'compacted')) return 'compacted';
        throw err;
      }
    };
    try {
      // Smallest x in [1, firstMember] whose clock exceeds metaRev; the answer is x - 1.
      let lo = 1;
      let hi = firstMember;
      while (lo < hi) {
        const mid = Math.floor((lo + hi) / 2);
        const r = await clockAt(mid);
        if (r === 'compacted' || r <= metaRev) lo = mid + 1;
        else hi = mid;
      }
      const answer = lo - 1;
      const r = answer >= 1 ? await clockAt(answer) : 'compacted';
      if (r === 'compacted' || r > metaRev || r < 0) throw Errors.compacted();
      return { answer, after: seen.get(lo) };
    } finally {
      this.metrics.getMemberRevDepth.observe(probes);
    }
  }
}
