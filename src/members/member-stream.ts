// One watch over a member's whole keyspace (with prev_kv), held for the life of
// the proxy. Each member revision it reports is turned into a MemberBatch: the
// member revision, the clock record written in it (its meta revision), and the
// client-key events. The timeline learns every revision from it; the watch hub
// merges batches of all members. After a stream error it resumes from the next
// member revision; if the member compacted past that point, continuity is lost:
// it reseeds from the member's current state and reports a reset.

import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { Event_EventType, type Event } from '../proto/gen/kv.js';
import { WatchRequest, type WatchResponse } from '../proto/gen/rpc.js';
import { asRange, op, txn, headerRevision } from '../proto/build.js';
import { decodeClockRecord, type ClockRecord } from '../store/clock-record.js';
import { InternalKey, isDataKey, leaseOfRecordKey } from '../store/keyspace.js';
import type { MemberTimeline } from '../revision/member-timeline.js';
import { decodeU64BE } from '../util/bytes.js';
import type { EtcdClient } from './etcd-client.js';
import { splitByMetaRevision } from './batch-split.js';

export interface MemberBatch {
  member: number;
  memberRevision: number;
  /** The clock record written at this member revision, if any. */
  record: ClockRecord | undefined;
  /** Events on client keys, in member order (member key form, values enveloped). */
  events: Event[];
}

export interface MemberStreamOptions {
  member: number;
  client: EtcdClient;
  timeline: MemberTimeline;
  log: Logger;
  metrics: Metrics;
  /** One member revision: one batch, or one per meta revision when a write batch carried several. */
  onBatch?: (parts: MemberBatch[]) => void;
  /** Continuity was lost (the member compacted past our resume point); state was reseeded. */
  onReset?: (member: number) => void;
  /** A compaction of the meta cluster was recorded in this member (the stored value: revision + 1). */
  onCompacted?: (stored: number) => void;
  /** A lease record disappeared: the lease expired or was revoked. */
  onLeaseGone?: (lease: bigint) => void;
  /** A partition move or placement change recorded its state in this member (m/move/state was put). */
  onMoveState?: () => void;
  /** A change of the auth record (auth/store.ts): its new value (undefined: deleted) and member revision. */
  onAuth?: (value: Buffer | undefined, memberRevision: number) => void;
}

const ALL_KEYS = Buffer.from([0]);

export class MemberStream {
  private readonly o: MemberStreamOptions;
  private readonly log: Logger;
  private stream: ClientDuplexStream<WatchRequest, WatchResponse> | undefined;
  private stopped = false;
  private backoffMs = 100;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private connected = false;

  constructor(o: MemberStreamOptions) {
    this.o = o;
    this.log = o.log.child({ component: 'member-stream', member: o.member });
    o.timeline.link.onWanted = () => this.reconnectNow();
  }

  private firstCreated: (() => void) | undefined;

  /** Seeds the timeline from the member's current clock record, opens the watch and waits until it is established. */
  async start(timeoutMs = 10_000): Promise<void> {
    await this.seed();
    const created = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`member ${this.o.member}: watch not established within ${timeoutMs} ms`)), timeoutMs);
      this.firstCreated = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.open();
    await created;
  }

  stop(): void {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.setConnected(false);
    this.stream?.cancel();
    this.stream = undefined;
  }

  private async seed(): Promise<void> {
    const resp = await this.o.client.txn(txn([], [op.range(InternalKey.clock)]), { readOnly: true });
    const kv = asRange(resp.responses[0]).kvs[0];
    if (!kv) throw new Error(`member ${this.o.member} has no clock record`);
    this.o.timeline.seed(decodeClockRecord(kv.value).revision, Number(kv.modRevision), headerRevision(resp));
  }

  private open(): void {
    if (this.stopped) return;
    this.o.metrics.watchesDialing.inc();
    const stream = this.o.client.watch();
    this.stream = stream;
    const attempt = this.o.timeline.link.attemptStarted();
    let dialing = true;
    const settleDialing = () => {
      if (dialing) {
        dialing = false;
        this.o.metrics.watchesDialing.dec();
      }
    };
    stream.on('data', (resp: WatchResponse) => {
      if (resp.created) {
        settleDialing();
        this.setConnected(true);
        this.backoffMs = 100;
        this.firstCreated?.();
        this.firstCreated = undefined;
      }
      if (resp.compactRevision > 0n) {
        this.log.error({ compactRevision: Number(resp.compactRevision) }, 'member compacted past our resume point; continuity lost');
        stream.cancel();
        void this.reseedAndReopen();
        return;
      }
      if (resp.events.length > 0) this.handleEvents(resp.events);
    });
    stream.on('error', (err: Error) => {
      settleDialing();
      if (this.stopped) return;
      const wanted = !this.connected && this.o.timeline.link.attemptFailed(attempt);
      this.log.warn({ err: err.message }, 'member watch stream failed; resuming');
      this.scheduleReopen();
      if (wanted) this.reconnectNow();
    });
    stream.on('end', () => {
      settleDialing();
      if (this.stopped) return;
      this.scheduleReopen();
    });
    stream.write(
      WatchRequest.fromPartial({
        requestUnion: {
          $case: 'createRequest',
          value: {
            key: ALL_KEYS,
            rangeEnd: ALL_KEYS,
            startRevision: BigInt(this.o.timeline.processed + 1),
            prevKv: true,
          },
        },
      }),
    );
  }

  private setConnected(on: boolean): void {
    if (on === this.connected) return;
    this.connected = on;
    this.o.timeline.link.set(on);
    if (on) this.o.metrics.watchesRunning.inc();
    else this.o.metrics.watchesRunning.dec();
  }

  private scheduleReopen(): void {
    this.setConnected(false);
    if (this.reconnectTimer || this.stopped) return;
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    this.o.client.rotate();
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, 2000);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.open();
    }, delay);
  }

  /** A write is waiting for the stream: skip what is left of the back-off. */
  private reconnectNow(): void {
    if (!this.reconnectTimer || this.stopped) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.open();
  }

  private async reseedAndReopen(): Promise<void> {
    this.setConnected(false);
    this.stream = undefined;
    for (;;) {
      if (this.stopped) return;
      try {
        await this.seed();
        break;
      } catch (err) {
        this.log.warn({ err: String(err) }, 'reseed failed; retrying');
        await new Promise((r) => setTimeout(r, this.backoffMs));
        this.backoffMs = Math.min(this.backoffMs * 2, 2000);
      }
    }
    this.o.onReset?.(this.o.member);
    this.open();
  }

  private handleEvents(events: Event[]): void {
    // Events arrive in member-revision order; a revision's events are never split
    // across responses (we do not ask for fragments).
    let i = 0;
    while (i < events.length) {
      const rev = Number(events[i]!.kv!.modRevision);
      let record: ClockRecord | undefined;
      let marked = false;
      const data: Event[] = [];
      for (; i < events.length && Number(events[i]!.kv!.modRevision) === rev; i++) {
        const ev = events[i]!;
        const key = ev.kv!.key;
        if (isDataKey(key)) data.push(ev);
        else if (ev.type === Event_EventType.PUT && key.equals(InternalKey.clock)) record = decodeClockRecord(ev.kv!.value);
        else if (ev.type === Event_EventType.PUT && key.equals(InternalKey.moveMarker)) marked = true;
        else if (ev.type === Event_EventType.PUT && key.equals(InternalKey.compacted)) this.o.onCompacted?.(decodeU64BE(ev.kv!.value));
        else if (ev.type === Event_EventType.PUT && key.equals(InternalKey.move)) this.o.onMoveState?.();
        else if (key.equals(InternalKey.auth)) this.o.onAuth?.(ev.type === Event_EventType.PUT ? ev.kv!.value : undefined, rev);
        else if (ev.type === Event_EventType.DELETE) {
          const lease = leaseOfRecordKey(key);
          if (lease !== undefined) this.o.onLeaseGone?.(lease);
        }
      }
      if (rev <= this.o.timeline.processed) continue; // already seen (seeded past it)
      // A partition move's copy or clean-up (docs/notes/repartitioning.md): bookkeeping, not client
      // changes — the client saw them when they were written in the source member.
      const delivered = marked ? [] : data;
      if (!record) {
        this.o.timeline.observe(rev, undefined);
        if (delivered.length > 0) this.o.onBatch?.([{ member: this.o.member, memberRevision: rev, record, events: delivered }]);
        continue;
      }
      const parts = splitByMetaRevision(record, delivered);
      if (parts.length > 1) this.o.timeline.noteBatch(rev, parts.flatMap((p) => p.events.map((e) => ({ key: e.kv!.key.toString('latin1'), revision: p.record.revision }))));
      for (const p of parts) this.o.timeline.observe(rev, p.record.revision);
      this.o.onBatch?.(parts.map((p) => ({ member: this.o.member, memberRevision: rev, record: p.record, events: p.events })));
    }
  }
}
