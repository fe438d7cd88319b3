// The meta cluster's logical clock, held in the coordinator etcd.
//
// - tick(member) hands out one meta revision for a write on a member. Ticks of
//   concurrent writes are batched: one compare-and-swap of the coordinator's
//   clock record allocates a run of revisions (group commit).
// - now() is a linearizable read of the clock: its revision is at least that of
//   every write acknowledged before the call, and `last` tells, per member,
//   which revision that member must reach before its data reflects all of them.
// - The ceiling makes the clock durable without making the coordinator durable:
//   no revision above the ceiling is handed out (or shown by now()) until the
//   ceiling has been raised in at least one member.
// - When the coordinator has no clock record (first start, or it was wiped), the
//   clock is rebuilt from the members (rebuild.ts).

import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { asRange, cmp, op, txn } from '../proto/build.js';
import { isKind, messageOf, unavailable } from '../errors/etcd-error.js';
import { InternalKey } from '../store/keyspace.js';
import { encodeU64BE } from '../util/bytes.js';
import { CLOCK_KEY, decodeCoordinatorRecord, encodeCoordinatorRecord, type CoordinatorRecord } from './coordinator-record.js';
import { SlotGroup, type Slot } from './slot-group.js';
import { rebuildClock } from './rebuild.js';

/**
 * A revision for a write on one member. `group` holds the revisions handed, in
 * the same coordinator round trip, to writes on the same member (this one
 * included, ascending, at most SLOT_GROUP of them): those writes may take any of
 * them, whichever reaches the member first taking the lowest.
 */
export interface Tick extends Slot {
  group: SlotGroup;
  /**
   * A priority revision on this write's member that was handed out before this
   * write's: the write must not land before the member's clock reaches it (0: none).
   */
  first: number;
}

/**
 * One revision for a transaction that writes several members (or compares keys
 * on them): it is a priority revision on each, so nothing allocated after it may
 * land on them before it.
 */
export interface CrossTick {
  revision: number;
  allocation: number[];
  /** Per member of the request (same order): the last revision handed to a write on it before this one. */
  prior: number[];
}

export interface ClockSnapshot {
  revision: number;
  last: number[];
}

export interface ClockOptions {
  coordinator: EtcdClient;
  members: EtcdClient[];
  log: Logger;
  metrics: Metrics;
  /** How far the ceiling is raised beyond the revision that needed it. */
  ceilingWindow?: number;
  /** Most ticks allocated by one coordinator round trip. */
  maxBatch?: number;
  /**
   * The highest meta revision known to have landed in a member (from the member
   * streams). A coordinator record below it is stale (e.g. the coordinator was
   * restored from an old copy) and is rebuilt, never trusted.
   */
  floor?: () => number;
  /** The highest meta revision member m has shown in its stream (clears priorities that are done). */
  watermark?: (member: number) => number;
}

interface Cached extends CoordinatorRecord {
  /** Coordinator mod_revision of the record, for compare-and-swap. */
  modRevision: number;
}

interface TickRequest {
  member: number;
  priority: boolean;
  /** A cross-member tick: every member it is for (then `member` is the first of them). */
  cross?: number[];
}

interface PendingTick extends TickRequest {
  resolve: (t: Tick | CrossTick) => void;
  reject: (e: unknown) => void;
}

interface PendingRead {
  resolve: (s: ClockSnapshot) => void;
  reject: (e: unknown) => void;
}

const MAX_CAS_ATTEMPTS = 64;

export class Clock {
  private readonly coordinator: EtcdClient;
  private readonly members: EtcdClient[];
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly ceilingWindow: number;
  private readonly maxBatch: number;

  /** The record to compare-and-swap against (forgotten when an outcome is unknown). */
  private cached: Cached | undefined;
  /** The newest record known, for readers: a true past state even when `cached` was forgotten. */
  private known: ClockSnapshot | undefined;
  private pendingTicks: PendingTick[] = [];
  private ticking = false;
  private pendingReads: PendingRead[] = [];
  private reading = false;
  private rebuilding: Promise<void> | undefined;
  /** The highest clock revision this proxy has read or handed out. */
  private highest = 0;
  private readonly floor: () => number;
  private readonly watermark: (member: number) => number;

  constructor(o: ClockOptions) {
    this.coordinator = o.coordinator;
    this.members = o.members;
    this.log = o.log.child({ component: 'clock' });
    this.metrics = o.metrics;
    this.ceilingWindow = o.ceilingWindow ?? 10_000;
    this.maxBatch = o.maxBatch ?? 1024;
    this.floor = o.floor ?? (() => 0);
    this.watermark = o.watermark ?? (() => -1);
  }

  /**
   * Allocates a meta revision for a write on `member`. A priority revision is
   * for a write that keeps losing the race to its member (other proxies' later
   * revisions landing first): writes on the member allocated after it carry its
   * revision as `first` and wait for it, so it cannot be overtaken again.
   */
  tick(member: number, priority = false): Promise<Tick> {
    return new Promise<Tick>((resolve, reject) => {
      this.pendingTicks.push({ member, priority, resolve: (t) => resolve(t as Tick), reject });
      if (!this.ticking) void this.runTicks();
    });
  }

  /** Allocates one meta revision for a transaction across `members` (a priority revision on each). */
  tickCross(members: number[]): Promise<CrossTick> {
    return new Promise<CrossTick>((resolve, reject) => {
      this.pendingTicks.push({ member: members[0]!, priority: true, cross: members, resolve: (t) => resolve(t as CrossTick), reject });
      if (!this.ticking) void this.runTicks();
    });
  }

  /** A linearizable snapshot of the clock. Concurrent callers share coordinator reads. */
  now(): Promise<ClockSnapshot> {
    return new Promise<ClockSnapshot>((resolve, reject) => {
      this.pendingReads.push({ resolve, reject });
      if (!this.reading) void this.runReads();
    });
  }

  /** The newest clock state this proxy has seen, without a round trip (may be stale). */
  latest(): ClockSnapshot | undefined {
    return this.known ? { revision: this.known.revision, last: [...this.known.last] } : undefined;
  }

  /**
   * The highest revision known to exist (handed out by this proxy, read from the
   * coordinator, or landed in a member), without a round trip; 0 when none is.
   */
  highestSeen(): number {
    return this.seen();
  }

  /**
   * Drops the coordinator's history of clock records (it holds nothing else):
   * done with every meta compaction. A failure is harmless and only logged.
   */
  async compactHistory(): Promise<void> {
    try {
      const head = await this.coordinator.range({ key: CLOCK_KEY, countOnly: true });
      await this.coordinator.compact({ revision: head.header!.revision, physical: false });
    } catch (err) {
      if (!isKind(err, 'compacted')) this.log.warn({ err: messageOf(err) }, 'could not compact the coordinator (harmless: it only holds the clock)');
    }
  }

  private learn(rec: CoordinatorRecord): void {
    if (!this.known || rec.revision > this.known.revision) this.known = { revision: rec.revision, last: [...rec.last] };
    this.highest = Math.max(this.highest, rec.revision);
  }

  private async runTicks(): Promise<void> {
    this.ticking = true;
    try {
      while (this.pendingTicks.length > 0) {
        const batch = this.pendingTicks.splice(0, this.maxBatch);
        try {
          const ticks = await this.allocate(batch);
          batch.forEach((p, i) => p.resolve(ticks[i]!));
        } catch (err) {
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.ticking = false;
    }
  }

  private async runReads(): Promise<void> {
    this.reading = true;
    try {
      while (this.pendingReads.length > 0) {
        // Every caller in this batch arrived before the read below is sent, so
        // its result is linearizable for all of them.
        const batch = this.pendingReads.splice(0);
        try {
          const rec = await this.read();
          const snap = { revision: rec.revision, last: rec.last };
          for (const p of batch) p.resolve({ revision: snap.revision, last: [...snap.last] });
        } catch (err) {
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.reading = false;
    }
  }

  /** Reads the clock record, rebuilding it first when the coordinator has none. */
  private async read(): Promise<Cached> {
    for (let attempt = 0; attempt < 3; attempt++) {
      this.metrics.clockRoundTrips.inc({ kind: 'read' });
      const seen = this.seen();
      const resp = await this.coordinator.range({ key: CLOCK_KEY });
      const kv = resp.kvs[0];
      const rec = kv ? this.adopt(kv.value, Number(kv.modRevision), seen) : undefined;
      if (rec) return rec;
      await this.rebuild(kv ? Number(kv.modRevision) : undefined);
    }
    throw unavailable('the clock record in the coordinator kept disappearing or going stale during rebuild');
  }

  /** The highest revision known to exist right now: handed out by this proxy, or landed in a member. */
  private seen(): number {
    return Math.max(this.highest, this.floor());
  }

  /**
   * Takes the coordinator's record as the current one — unless it is below a
   * revision that was already known when the request was sent (`seen`), in
   * which case the coordinator lost updates (it was restored from an old copy, or
   * recovered from a lagging node): returns undefined, and the caller rebuilds.
   * (Only what was known at sending counts: an answer may legitimately predate a
   * compare-and-swap this proxy made while the request was in flight.)
   */
  private adopt(raw: Buffer, modRevision: number, seen: number): Cached | undefined {
    const rec = decodeCoordinatorRecord(raw, this.members.length);
    if (rec.revision < seen) {
      this.log.error({ coordinator: rec.revision, seen }, 'the coordinator holds an older clock than revisions already seen; rebuilding it');
      this.cached = undefined;
      return undefined;
    }
    // Keep the newer of two records when answers cross (the mod revision orders them).
    if (!this.cached || modRevision >= this.cached.modRevision) this.cached = { ...rec, modRevision };
    this.learn(rec);
    return { ...rec, modRevision };
  }

  private async allocate(requests: TickRequest[]): Promise<(Tick | CrossTick)[]> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const base = this.cached ?? (await this.read());
      const last = [...base.last];
      // Priorities stay until their member shows them.
      const first = (base.first ?? base.last.map(() => 0)).map((f, m) => (f > 0 && this.watermark(m) < f ? f : 0));
      let revision = base.revision;
      const ticks: (Tick | CrossTick)[] = [];
      const groups = new Map<number, SlotGroup>();
      for (const { member: m, priority, cross } of requests) {
        revision++;
        if (cross) {
          const prior = cross.map((c) => last[c]!);
          for (const c of cross) {
            last[c] = revision;
            first[c] = revision;
            groups.delete(c);
          }
          ticks.push({ revision, allocation: [...last], prior });
          continue;
        }
        last[m] = revision;
        const slot: Slot = { revision, allocation: [...last] };
        if (priority) {
          // A slot group of its own, and everything allocated after it on m waits for it; it
          // waits itself for an earlier priority revision on m that has not landed yet.
          const earlier = first[m]!;
          first[m] = revision;
          groups.delete(m);
          const own = new SlotGroup();
          own.add(slot);
          ticks.push({ ...slot, group: own, first: earlier });
          continue;
        }
        let group = groups.get(m);
        if (!group || group.full) groups.set(m, (group = new SlotGroup()));
        group.add(slot);
        ticks.push({ ...slot, group, first: first[m]! });
      }
      let ceiling = base.ceiling;
      if (revision > ceiling) {
        ceiling = revision + this.ceilingWindow;
        await this.raiseCeiling(ceiling);
      }
      // The layout generation is set only by partition moves (repartition/); every tick keeps it.
      const record: CoordinatorRecord = { format: 1, revision, ceiling, last, first, ...(base.layoutGeneration ? { layoutGeneration: base.layoutGeneration } : {}) };
      this.metrics.clockRoundTrips.inc({ kind: attempt === 0 ? 'allocate' : 'conflict' });
      const seen = this.seen();
      let resp;
      try {
        resp = await this.coordinator.txn(
          txn(
            [cmp.modEqual(CLOCK_KEY, base.modRevision)],
            [op.put(CLOCK_KEY, encodeCoordinatorRecord(record))],
            [op.range(CLOCK_KEY)],
          ),
        );
      } catch (err) {
        // The outcome is unknown; forget the cached record so the next attempt re-reads it.
        this.cached = undefined;
        throw err;
      }
      if (resp.succeeded) {
        this.cached = { ...record, modRevision: Number(resp.header!.revision) };
        this.learn(record);
        this.metrics.clockTicks.inc(ticks.length);
        return ticks;
      }
      // The record changed (another proxy), vanished (coordinator lost) or went back (restored).
      const kv = asRange(resp.responses[0]).kvs[0];
      if (kv && this.adopt(kv.value, Number(kv.modRevision), seen)) {
        // The failed compare-and-swap read the current record: allocate from it.
        this.cached = { ...decodeCoordinatorRecord(kv.value, this.members.length), modRevision: Number(kv.modRevision) };
      } else {
        this.cached = undefined;
        await this.rebuild(kv ? Number(kv.modRevision) : undefined);
      }
    }
    throw unavailable('could not allocate a revision: too many concurrent clock updates');
  }

  /** Makes `ceiling` durable in at least one member (in all that answer). */
  private async raiseCeiling(ceiling: number): Promise<void> {
    this.metrics.clockRoundTrips.inc({ kind: 'ceiling' });
    const value = encodeU64BE(ceiling);
    const results = await Promise.allSettled(
      this.members.map((m) =>
        m.txn(txn([cmp.valueLess(InternalKey.ceiling, value)], [op.put(InternalKey.ceiling, value)])),
      ),
    );
    if (!results.some((r) => r.status === 'fulfilled')) {
      const reasons = results.map((r, i) => `member ${i}: ${r.status === 'rejected' ? messageOf(r.reason) : 'ok'}`);
      throw unavailable(`cannot raise the clock ceiling, no member reachable (${reasons.join('; ')})`);
    }
  }

  /**
   * Rebuilds the clock record from the members; concurrent callers share one
   * rebuild. `staleModRevision`: the record to replace (otherwise there is none).
   */
  private rebuild(staleModRevision?: number): Promise<void> {
    this.rebuilding ??= this.doRebuild(staleModRevision).finally(() => {
      this.rebuilding = undefined;
    });
    return this.rebuilding;
  }

  private async doRebuild(staleModRevision: number | undefined): Promise<void> {
    if (staleModRevision === undefined) this.log.warn('the coordinator holds no clock; rebuilding it from the members');
    const out = await rebuildClock({
      coordinator: this.coordinator,
      members: this.members,
      log: this.log,
      metrics: this.metrics,
      staleModRevision,
      atLeast: Math.max(this.highest, this.floor()),
    });
    if ('published' in out) {
      this.metrics.clockReconstitution.inc();
      this.cached = { ...out.published, modRevision: out.modRevision };
      this.learn(out.published);
      this.log.warn({ revision: out.published.revision, layoutGeneration: out.published.layoutGeneration ?? 1 }, 'clock rebuilt from the members');
    } else {
      if (out.adopted) this.adopt(out.adopted, out.modRevision, 0);
      this.log.info('another proxy rebuilt the clock first');
    }
  }
}
