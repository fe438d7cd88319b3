// Every client watcher of this proxy, indexed so that a released revision is
// matched against groups of watchers with the same range (a map for single-key
// watchers, a list of distinct ranges for the others) rather than every watcher.

import type { Event } from '../proto/gen/kv.js';
import { inRange } from '../util/bytes.js';
import type { RevisionBatch } from './events.js';
import type { Watcher } from './watcher.js';

interface RangeGroup {
  key: Buffer;
  rangeEnd: Buffer;
  watchers: Set<Watcher>;
}

export class WatcherRegistry {
  private readonly exact = new Map<string, Set<Watcher>>();
  private readonly ranges = new Map<string, RangeGroup>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  add(w: Watcher): void {
    this.count++;
    if (w.rangeEnd.length === 0) {
      const k = w.key.toString('latin1');
      let set = this.exact.get(k);
      if (!set) this.exact.set(k, (set = new Set()));
      set.add(w);
      return;
    }
    const id = `${w.key.toString('latin1')}\u0000${w.rangeEnd.toString('latin1')}`;
    let g = this.ranges.get(id);
    if (!g) this.ranges.set(id, (g = { key: w.key, rangeEnd: w.rangeEnd, watchers: new Set() }));
    g.watchers.add(w);
  }

  remove(w: Watcher): void {
    if (w.rangeEnd.length === 0) {
      const k = w.key.toString('latin1');
      const set = this.exact.get(k);
      if (set?.delete(w)) {
        this.count--;
        if (set.size === 0) this.exact.delete(k);
      }
      return;
    }
    const id = `${w.key.toString('latin1')}\u0000${w.rangeEnd.toString('latin1')}`;
    const g = this.ranges.get(id);
    if (g?.watchers.delete(w)) {
      this.count--;
      if (g.watchers.size === 0) this.ranges.delete(id);
    }
  }

  /** Calls `fn` for every watcher (synced or not) with the events of `b` in its range. */
  forEachMatch(b: RevisionBatch, fn: (w: Watcher, events: Event[]) => void): void {
    if (this.exact.size > 0) {
      for (const ev of b.events) {
        const set = this.exact.get(ev.kv!.key.toString('latin1'));
        if (set) for (const w of set) fn(w, [ev]);
      }
    }
    for (const g of this.ranges.values()) {
      const inGroup = b.events.filter((ev) => inRange(ev.kv!.key, g.key, g.rangeEnd));
      if (inGroup.length > 0) for (const w of g.watchers) fn(w, inGroup);
    }
  }
}
