// The watch hub merges the member streams into one stream of revisions in
// strictly increasing meta-revision order, each exactly once, and keeps a bounded
// window of recent revisions for watches that start in the past.
//
// Release rule. Every member write carries the clock's allocation vector
// A(R): for each member m, the highest revision <= R handed to a write on m.
// Revision R may be released once every member m has shown A(R)[m] or later
// in its own stream (its watermark): no member can then still produce a
// revision <= R. Revisions are released smallest first, so the released
// frontier F means "every change at or below F has been delivered". Idle
// members never hold others back (their entries in A(R) stay old), revisions
// taken by writes that failed are closed by the write's own release or by a
// fence, and a member whose revision stalls past the fence delay is fenced.
// Only when a member cannot be reached for --watch-timeout is a revision given
// up on (counted in metaetcd_time_buffer_timeouts_count): the stream moves on,
// and if that member later shows an older revision, it is reported as late so
// that watches it concerns are cut off rather than served out of order.

import type { Clock, ClockSnapshot } from '../clock/clock.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { MemberBatch } from '../members/member-stream.js';
import type { MemberTimeline } from '../revision/member-timeline.js';
import { ClockKind } from '../store/clock-record.js';
import { unavailable } from '../errors/etcd-error.js';
import { EventBuffer } from './event-buffer.js';
import { mergeParts, toClientEvents, type RevisionBatch } from './events.js';

export interface HubListener {
  /** A released revision with events (in order, exactly once). */
  onRevision(b: RevisionBatch): void;
  /** A revision at or below the frontier arrived after it was given up on. */
  onLate(b: RevisionBatch): void;
  /** Continuity was lost (a member stream had to be reseeded): live watches cannot be trusted. */
  onReset(): void;
}

interface Pending {
  batch: MemberBatch;
  revision: number;
  since: number;
}

export interface WatchHubOptions {
  timelines: MemberTimeline[];
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  watchTimeoutMs: number;
  fenceAfterMs: number;
  bufferEvents: number;
  bufferBytes: number;
}

export class WatchHub {
  private readonly o: WatchHubOptions;
  private readonly log: Logger;
  private readonly queues: Pending[][];
  private readonly listeners = new Set<HubListener>();
  private frontierRev = -1;
  private started = false;
  private buffer: EventBuffer;
  private stallTimer: NodeJS.Timeout | undefined;
  private lastFence = 0;
  /** Per member, the highest allocated revision given up on after --watch-timeout. */
  private readonly givenUp: number[];

  constructor(o: WatchHubOptions) {
    this.o = o;
    this.log = o.log.child({ component: 'watch-hub' });
    this.queues = o.timelines.map(() => []);
    this.givenUp = o.timelines.map(() => -1);
    this.buffer = new EventBuffer(o.bufferEvents, o.bufferBytes, 0);
  }

  /** Everything at or below this revision has been released. */
  get frontier(): number {
    return this.frontierRev;
  }

  /** Revisions above this one (up to the frontier) are all in memory. */
  get bufferStart(): number {
    return this.buffer.start;
  }

  /** Released batches from revision `from` on (from > bufferStart). */
  since(from: number): RevisionBatch[] {
    return this.buffer.since(from);
  }

  subscribe(l: HubListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /**
   * Establishes the starting frontier: the clock's current revision once every
   * member has resolved all revisions handed to it. Changes at or below it are
   * history (served from the members), not part of the live stream.
   */
  async start(deadlineMs: number): Promise<void> {
    const snap = await this.o.clock.now();
    const deadline = Date.now() + deadlineMs;
    await Promise.all(this.o.timelines.map((t, m) => t.waitFor(snap.last[m]!, deadline)));
    this.frontierRev = snap.revision;
    this.buffer.reset(snap.revision);
    for (const q of this.queues) {
      while (q.length > 0 && q[0]!.revision <= snap.revision) q.shift();
    }
    this.started = true;
    this.publishFrontier();
    this.release();
  }

  /**
   * Called by member streams for every member revision with a clock record or
   * client events: its parts (several when a write batch carried several meta
   * revisions) are all queued before anything is released, so that no other
   * member's revision can be released between two of them.
   */
  push(parts: MemberBatch[]): void {
    for (const b of parts) this.queue(b);
    this.release();
  }

  private queue(b: MemberBatch): void {
    if (!b.record) {
      if (b.events.length > 0) {
        this.log.error(
          { member: b.member, memberRevision: b.memberRevision, events: b.events.length },
          'member changed client keys without a meta revision (was it written to directly?); these changes are not delivered',
        );
      }
      return;
    }
    const revision = b.record.revision;
    // Fences and bootstrap records only advance the member's watermark.
    if (b.record.kind !== ClockKind.Write) return;
    if (this.started && revision <= this.frontierRev) {
      if (b.events.length > 0) {
        const { events, bytes } = toClientEvents(b.events, revision);
        this.log.error({ member: b.member, revision, frontier: this.frontierRev }, 'a revision arrived after it was given up on');
        for (const l of this.listeners) l.onLate({ revision, events, bytes });
      }
      return;
    }
    this.queues[b.member]!.push({ batch: b, revision, since: Date.now() });
    this.o.metrics.timeBufferLen.set(this.pendingCount());
  }

  /** Continuity of a member stream was lost: drop the window and tell every listener. */
  reset(): void {
    this.log.error('a member stream lost continuity; resetting every live watch');
    this.buffer.reset(Math.max(this.frontierRev, 0));
    for (const l of this.listeners) l.onReset();
  }

  /**
   * Resolves once every change at or below the clock snapshot's revision has been
   * released. It waits until each member has resolved the last revision handed
   * to it at the snapshot (fencing stalled ones); every pending revision at or
   * below the snapshot is then releasable, and the frontier can be raised to the
   * snapshot even when its last revisions ended as fences.
   */
  async catchUp(snap: ClockSnapshot, deadline: number): Promise<void> {
    if (this.frontierRev >= snap.revision) return;
    await Promise.all(this.o.timelines.map((t, m) => t.waitFor(snap.last[m]!, deadline)));
    if (!this.started || this.frontierRev >= snap.revision) return;
    this.release();
    const h = this.head();
    if (h && h.p.revision <= snap.revision) {
      throw unavailable(`watch stream could not release revision ${h.p.revision}`);
    }
    if (this.frontierRev < snap.revision) {
      this.frontierRev = snap.revision;
      this.publishFrontier();
    }
  }

  private timeline(m: number): MemberTimeline {
    const t = this.o.timelines[m];
    if (!t) throw new Error(`no member cluster in slot ${m}`);
    return t;
  }

  stop(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }

  private pendingCount(): number {
    return this.queues.reduce((n, q) => n + q.length, 0);
  }

  private head(): { member: number; p: Pending } | undefined {
    let best: { member: number; p: Pending } | undefined;
    this.queues.forEach((q, member) => {
      const p = q[0];
      if (p && (!best || p.revision < best.p.revision)) best = { member, p };
    });
    return best;
  }

  /** Members whose watermark is still below what revision `p` needs. */
  private lagging(member: number, p: Pending): number[] {
    const alloc = p.batch.record!.allocation;
    const out: number[] = [];
    this.o.timelines.forEach((t, m) => {
      if (m !== member && Math.max(t.watermark, this.givenUp[m]!) < (alloc[m] ?? 0)) out.push(m);
    });
    return out;
  }

  private release(): void {
    if (!this.started) return;
    let advanced = false;
    for (;;) {
      const h = this.head();
      if (!h) break;
      const lag = this.lagging(h.member, h.p);
      if (lag.length > 0) {
        const waited = Date.now() - h.p.since;
        if (waited < this.o.watchTimeoutMs) {
          this.pursue(h.p, lag, waited);
          break;
        }
        this.o.metrics.timeBufferTimeouts.inc();
        this.log.error({ revision: h.p.revision, members: lag, waitedMs: waited }, 'giving up on revisions held by unreachable members');
        const alloc = h.p.batch.record!.allocation;
        for (const m of lag) this.givenUp[m] = Math.max(this.givenUp[m]!, alloc[m]!);
      }
      this.queues[h.member]!.shift();
      // A cross-member transaction's parts share one revision: they go out together.
      const parts = [h.p];
      for (const q of this.queues) {
        if (q[0]?.revision === h.p.revision) parts.push(q.shift()!);
      }
      this.emit(parts);
      advanced = true;
    }
    if (advanced) {
      this.o.metrics.timeBufferLen.set(this.pendingCount());
      this.publishFrontier();
    }
  }

  /** Arms a timer for the stalled head: fence lagging members after the fence delay, give up at the timeout. */
  private pursue(p: Pending, lag: number[], waited: number): void {
    if (waited >= this.o.fenceAfterMs) {
      this.log.debug(
        { revision: p.revision, waitedMs: waited, lagging: lag.map((m) => ({ member: m, watermark: this.timeline(m).watermark, needs: p.batch.record!.allocation[m] })) },
        'a released revision is waiting for lagging members',
      );
    }
    if (waited >= this.o.fenceAfterMs && Date.now() - this.lastFence >= this.o.fenceAfterMs) {
      this.lastFence = Date.now();
      const alloc = p.batch.record!.allocation;
      for (const m of lag) {
        this.timeline(m).fence(alloc[m]!).catch((err: unknown) => this.log.warn({ member: m, err: String(err) }, 'fence failed'));
      }
    }
    if (this.stallTimer) return;
    const next = waited < this.o.fenceAfterMs ? this.o.fenceAfterMs - waited : Math.min(this.o.fenceAfterMs, this.o.watchTimeoutMs - waited);
    this.stallTimer = setTimeout(() => {
      this.stallTimer = undefined;
      this.release();
    }, Math.max(10, next));
  }

  /** Releases one revision: its part on each member it wrote (one, but for a cross-member transaction). */
  private emit(parts: Pending[]): void {
    const revision = parts[0]!.revision;
    this.frontierRev = Math.max(this.frontierRev, revision);
    const memberEvents = parts.length === 1 ? parts[0]!.batch.events : mergeParts(parts.map((p) => ({ events: p.batch.events, ranks: p.batch.record?.ranks })));
    if (memberEvents.length === 0) return;
    const { events, bytes } = toClientEvents(memberEvents, revision);
    const b: RevisionBatch = { revision, events, bytes };
    this.buffer.append(b);
    this.o.metrics.watchEventCount.inc(events.length);
    for (const l of this.listeners) l.onRevision(b);
  }

  private publishFrontier(): void {
    this.o.metrics.timeBufferVisibleMax.set(this.frontierRev);
  }
}

