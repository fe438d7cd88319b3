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
//   clock is rebuilt from the members: the highest revision or ceiling any member
//   holds, after fencing every member at that revision so that no write still in
//   flight from before can land below it. Concurrent rebuilds by several proxies
//   agree (they compute the same value; one create wins, the rest read it).

import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { asRange, cmp, op, txn } from '../proto/build.js';
import { fromUpstream, unavailable } from '../server/errors.js';
import { ClockKind, clockGuardValue, decodeClockRecord, encodeClockRecord } from '../store/clock-record.js';
import { InternalKey } from '../store/keyspace.js';
import { decodeU64BE, encodeU64BE } from '../util/bytes.js';
import { CLOCK_KEY, decodeCoordinatorRecord, encodeCoordinatorRecord, type CoordinatorRecord } from './coordinator-record.js';

export interface Slot {
  revision: number;
  /** Allocation vector at this revision (see store/clock-record.ts). */
  allocation: number[];
}

/**
 * A revision for a write on one member. `slots` are the revisions handed, in
 * the same coordinator round trip, to writes on the same member (this one
 * included, ascending, at most SLOT_GROUP of them): those writes may take any of
 * them, whichever reaches the member first taking the lowest.
 */
export interface Tick extends Slot {
  slots: Slot[];
}

/** Most revisions that concurrent writes on one member may share as slots. */
export const SLOT_GROUP = 8;

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
}

interface Cached extends CoordinatorRecord {
  /** Coordinator mod_revision of the record, for compare-and-swap. */
  modRevision: number;
}

interface PendingTick {
  member: number;
  resolve: (t: Tick) => void;
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

  private cached: Cached | undefined;
  private pendingTicks: PendingTick[] = [];
  private ticking = false;
  private pendingReads: PendingRead[] = [];
  private reading = false;
  private rebuilding: Promise<void> | undefined;

  constructor(o: ClockOptions) {
    this.coordinator = o.coordinator;
    this.members = o.members;
    this.log = o.log.child({ component: 'clock' });
    this.metrics = o.metrics;
    this.ceilingWindow = o.ceilingWindow ?? 10_000;
    this.maxBatch = o.maxBatch ?? 1024;
  }

  /** Allocates a meta revision for a write on `member`. */
  tick(member: number): Promise<Tick> {
    return new Promise<Tick>((resolve, reject) => {
      this.pendingTicks.push({ member, resolve, reject });
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
    return this.cached ? { revision: this.cached.revision, last: [...this.cached.last] } : undefined;
  }

  private async runTicks(): Promise<void> {
    this.ticking = true;
    try {
      while (this.pendingTicks.length > 0) {
        const batch = this.pendingTicks.splice(0, this.maxBatch);
        try {
          const ticks = await this.allocate(batch.map((p) => p.member));
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
      let resp;
      try {
        resp = await this.coordinator.range({ key: CLOCK_KEY });
      } catch (err) {
        throw fromUpstream(err, 'coordinator');
      }
      const kv = resp.kvs[0];
      if (kv) return this.remember(kv.value, Number(kv.modRevision));
      await this.rebuild();
    }
    throw unavailable('the clock record disappeared from the coordinator repeatedly during rebuild');
  }

  private remember(raw: Buffer, modRevision: number): Cached {
    const rec = decodeCoordinatorRecord(raw, this.members.length);
    // Keep the newest record we have seen (the coordinator revision orders them).
    if (!this.cached || modRevision >= this.cached.modRevision || rec.revision > this.cached.revision) {
      this.cached = { ...rec, modRevision };
    }
    return { ...rec, modRevision };
  }

  private async allocate(members: number[]): Promise<Tick[]> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const base = this.cached ?? (await this.read());
      const last = [...base.last];
      let revision = base.revision;
      const ticks: Tick[] = [];
      const groups = new Map<number, Slot[]>();
      for (const m of members) {
        revision++;
        last[m] = revision;
        let group = groups.get(m);
        if (!group || group.length >= SLOT_GROUP) groups.set(m, (group = []));
        const slot: Slot = { revision, allocation: [...last] };
        group.push(slot);
        ticks.push({ ...slot, slots: group });
      }
      let ceiling = base.ceiling;
      if (revision > ceiling) {
        ceiling = revision + this.ceilingWindow;
        await this.raiseCeiling(ceiling);
      }
      const record: CoordinatorRecord = { format: 1, revision, ceiling, last };
      this.metrics.clockRoundTrips.inc({ kind: attempt === 0 ? 'allocate' : 'conflict' });
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
        throw fromUpstream(err, 'coordinator');
      }
      if (resp.succeeded) {
        this.cached = { ...record, modRevision: Number(resp.header!.revision) };
        this.metrics.clockTicks.inc(ticks.length);
        return ticks;
      }
      const kv = asRange(resp.responses[0]).kvs[0];
      if (kv) this.remember(kv.value, Number(kv.modRevision));
      else {
        this.cached = undefined;
        await this.rebuild();
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
      const reasons = results.map((r, i) => `member ${i}: ${r.status === 'rejected' ? String(fromUpstream(r.reason, `member ${i}`).message) : 'ok'}`);
      throw unavailable(`cannot raise the clock ceiling, no member reachable (${reasons.join('; ')})`);
    }
  }

  /** Rebuilds the clock record from the members; concurrent callers share one rebuild. */
  private rebuild(): Promise<void> {
    this.rebuilding ??= this.doRebuild().finally(() => {
      this.rebuilding = undefined;
    });
    return this.rebuilding;
  }

  private async doRebuild(): Promise<void> {
    this.log.warn('the coordinator holds no clock; rebuilding it from the members');
    // 1. The highest revision any member holds, and the highest ceiling.
    const states = await Promise.all(
      this.members.map(async (m, i) => {
        try {
          const resp = await m.txn(txn([], [op.range(InternalKey.clock), op.range(InternalKey.ceiling)]), {
            readOnly: true,
          });
          const clockKv = asRange(resp.responses[0]).kvs[0];
          const ceilingKv = asRange(resp.responses[1]).kvs[0];
          if (!clockKv) throw new Error(`member ${i} has no clock record (not bootstrapped)`);
          return {
            revision: decodeClockRecord(clockKv.value).revision,
            ceiling: ceilingKv ? decodeU64BE(ceilingKv.value) : 0,
          };
        } catch (err) {
          throw fromUpstream(err, `member ${i} (needed to rebuild the clock)`);
        }
      }),
    );
    // A fresh etcd is at revision 1 (clients treat 0 as an error); so is a fresh meta cluster.
    const revision = Math.max(1, ...states.map((s) => Math.max(s.revision, s.ceiling)));
    // 2. Fence every member at that revision: any write still in flight from
    //    before the coordinator was lost carries a revision <= the old ceiling
    //    <= `revision`, so it can no longer land.
    await Promise.all(
      this.members.map(async (m, i) => {
        try {
          await m.txn(
            txn(
              [cmp.valueLess(InternalKey.clock, clockGuardValue(revision))],
              [op.put(InternalKey.clock, encodeClockRecord({ revision, kind: ClockKind.Fence, allocation: [] }))],
            ),
          );
        } catch (err) {
          throw fromUpstream(err, `member ${i} (needed to rebuild the clock)`);
        }
      }),
    );
    // 3. Publish the clock unless another proxy already did.
    const record: CoordinatorRecord = { format: 1, revision, ceiling: revision, last: this.members.map(() => revision) };
    let resp;
    try {
      resp = await this.coordinator.txn(
        txn(
          [cmp.createEqual(CLOCK_KEY, 0)],
          [op.put(CLOCK_KEY, encodeCoordinatorRecord(record))],
          [op.range(CLOCK_KEY)],
        ),
      );
    } catch (err) {
      throw fromUpstream(err, 'coordinator');
    }
    if (resp.succeeded) {
      this.metrics.clockReconstitution.inc();
      this.cached = { ...record, modRevision: Number(resp.header!.revision) };
      this.log.warn({ revision }, 'clock rebuilt from the members');
    } else {
      const kv = asRange(resp.responses[0]).kvs[0];
      if (kv) this.remember(kv.value, Number(kv.modRevision));
      this.log.info('another proxy rebuilt the clock first');
    }
  }
}
