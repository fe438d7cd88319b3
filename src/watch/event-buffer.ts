// The in-memory window of recent released revisions, bounded by event count
// (--watch-buffer-len) and bytes (--watch-buffer-bytes). `start` is the
// revision below which the window is incomplete: every event with a revision
// greater than `start` (up to the hub's frontier) is in the buffer.

import type { RevisionBatch } from './events.js';

export class EventBuffer {
  private batches: RevisionBatch[] = [];
  private head = 0;
  private eventCount = 0;
  private byteCount = 0;
  private startRev: number;

  constructor(
    private readonly maxEvents: number,
    private readonly maxBytes: number,
    start: number,
  ) {
    this.startRev = start;
  }

  get start(): number {
    return this.startRev;
  }

  get events(): number {
    return this.eventCount;
  }

  get bytes(): number {
    return this.byteCount;
  }

  append(b: RevisionBatch): void {
    this.batches.push(b);
    this.eventCount += b.events.length;
    this.byteCount += b.bytes;
    while (this.batches.length - this.head > 1 && (this.eventCount > this.maxEvents || this.byteCount > this.maxBytes)) {
      const old = this.batches[this.head]!;
      this.head++;
      this.eventCount -= old.events.length;
      this.byteCount -= old.bytes;
      this.startRev = old.revision;
    }
    if (this.head > 1024 && this.head * 2 > this.batches.length) {
      this.batches = this.batches.slice(this.head);
      this.head = 0;
    }
  }

  /** Drops everything and restarts the window at `start` (after continuity was lost). */
  reset(start: number): void {
    this.batches = [];
    this.head = 0;
    this.eventCount = 0;
    this.byteCount = 0;
    this.startRev = start;
  }

  /** Batches with revision >= from, oldest first; `from` must be > start. */
  since(from: number): RevisionBatch[] {
    let lo = this.head;
    let hi = this.batches.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.batches[mid]!.revision < from) lo = mid + 1;
      else hi = mid;
    }
    return this.batches.slice(lo);
  }
}
