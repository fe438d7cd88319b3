// Sizing and splitting watch responses for the wire: the byte estimate the
// outbox's slow-consumer bound counts, and etcd's fragmentation of responses over
// the request-size limit.

import { Event, type Event as EventT } from '../proto/gen/kv.js';
import { WatchResponse } from '../proto/gen/rpc.js';
import { varintLength } from '../util/varint.js';

/** Roughly the encoded size of a response carrying `events` (what the outbox's byte bound counts). */
export function estimate(events: EventT[]): number {
  let n = 64;
  for (const ev of events) n += 48 + ev.kv!.key.length + ev.kv!.value.length + (ev.prevKv ? ev.prevKv.key.length + ev.prevKv.value.length + 32 : 0);
  return n;
}

/**
 * etcd's sendFragments: a response over the request-size limit with more than
 * one event is split into parts under the limit (each with at least one event);
 * every part but the last has fragment=true.
 */
export function fragments(resp: WatchResponse, limit: number): WatchResponse[] {
  const sizes = resp.events.map((ev) => {
    const n = Event.encode(ev).finish().length;
    return 1 + varintLength(n) + n;
  });
  const base = WatchResponse.encode({ ...resp, events: [] }).finish().length;
  const total = base + sizes.reduce((a, b) => a + b, 0);
  if (total < limit || resp.events.length < 2) return [resp];
  const parts: WatchResponse[] = [];
  let i = 0;
  while (i < resp.events.length) {
    const start = i;
    let size = base;
    while (i < resp.events.length) {
      size += sizes[i]!;
      if (i > start && size >= limit) break;
      i++;
    }
    parts.push({ ...resp, events: resp.events.slice(start, i), fragment: i < resp.events.length });
  }
  return parts;
}
