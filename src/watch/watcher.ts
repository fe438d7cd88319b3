// One client watch: its range, options and position, and the filtering of a
// revision's events for it (range, NOPUT/NODELETE filters, prev_kv only when
// asked).

import { Event_EventType, type Event } from '../proto/gen/kv.js';
import { WatchCreateRequest_FilterType as Filter, type WatchCreateRequest } from '../proto/gen/rpc.js';
import { inRange } from '../util/bytes.js';

/** Where a watcher's events go: its client stream. */
export interface WatchSink {
  deliver(w: Watcher, revision: number, events: Event[]): void;
  /** Cuts the watch off (the client relists): its continuity cannot be kept. */
  invalidate(w: Watcher, reason: string): void;
}

export class Watcher {
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  readonly prevKv: boolean;
  readonly noPut: boolean;
  readonly noDelete: boolean;
  readonly progressNotify: boolean;
  readonly fragment: boolean;
  /** Next revision this watcher is owed. */
  nextRev: number;
  /** Receiving released revisions live (as opposed to catching up from the past). */
  synced = false;
  /** Whether anything was sent since the last progress tick. */
  sentSinceTick = false;
  canceled = false;

  constructor(
    readonly id: bigint,
    req: WatchCreateRequest,
    startRev: number,
    readonly sink: WatchSink,
  ) {
    this.key = req.key;
    this.rangeEnd = req.rangeEnd;
    this.prevKv = req.prevKv;
    this.noPut = req.filters.includes(Filter.NOPUT);
    this.noDelete = req.filters.includes(Filter.NODELETE);
    this.progressNotify = req.progressNotify;
    this.fragment = req.fragment;
    this.nextRev = startRev;
  }

  matches(key: Buffer): boolean {
    return inRange(key, this.key, this.rangeEnd);
  }

  /** This watcher's view of a revision's events (already known to be in range when `inRangeKnown`). */
  select(events: Event[], inRangeKnown = false): Event[] {
    const out: Event[] = [];
    for (const ev of events) {
      if (!inRangeKnown && !this.matches(ev.kv!.key)) continue;
      if (ev.type === Event_EventType.PUT ? this.noPut : this.noDelete) continue;
      out.push(this.prevKv || !ev.prevKv ? ev : { type: ev.type, kv: ev.kv, prevKv: undefined });
    }
    return out;
  }
}
