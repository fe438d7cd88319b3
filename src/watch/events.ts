// Member watch events in client terms. A member revision's events carry the
// meta revision of the clock record written with them: PUTs also carry it in
// their value envelope; DELETEs get it as their kv.mod_revision, as etcd reports
// a delete's revision there.

import { Event_EventType, type Event, type KeyValue } from '../proto/gen/kv.js';
import { toClientKey } from '../store/keyspace.js';
import { toClientKv } from '../kv/translate.js';

/** The changes of one meta revision, in client form, as delivered to watchers. */
export interface RevisionBatch {
  revision: number;
  events: Event[];
  /** Approximate size in bytes, for the buffer's byte bound. */
  bytes: number;
}

export function toClientEvents(events: Event[], revision: number): { events: Event[]; bytes: number } {
  let bytes = 0;
  const out = events.map((ev): Event => {
    const prevKv = ev.prevKv ? toClientKv(ev.prevKv) : undefined;
    let kv: KeyValue;
    if (ev.type === Event_EventType.PUT) {
      kv = toClientKv(ev.kv!);
    } else {
      kv = { key: toClientKey(ev.kv!.key), createRevision: 0n, modRevision: BigInt(revision), version: 0n, value: Buffer.alloc(0), lease: 0n };
    }
    bytes += 64 + kv.key.length + kv.value.length + (prevKv ? prevKv.key.length + prevKv.value.length + 32 : 0);
    return { type: ev.type, kv, prevKv };
  });
  return { events: out, bytes };
}

/** One member's part of a revision: its events, and for each the index of its transaction op (see ClockRecord.ranks). */
export interface RevisionPart<E> {
  events: E[];
  ranks?: number[] | undefined;
}

/**
 * The events of a revision's parts on several members (a cross-member
 * transaction) in the transaction's op order, as etcd sends them: by op index,
 * then key (the keys of one range delete, in key order). A part without ranks
 * sorts by key alone.
 */
export function mergeParts<E extends { kv?: { key: Buffer } | undefined }>(parts: RevisionPart<E>[]): E[] {
  const ranked = parts.flatMap((p) => p.events.map((e, i) => ({ e, rank: p.ranks?.length === p.events.length ? p.ranks[i]! : 0 })));
  ranked.sort((a, b) => a.rank - b.rank || Buffer.compare(a.e.kv?.key ?? Buffer.alloc(0), b.e.kv?.key ?? Buffer.alloc(0)));
  return ranked.map((x) => x.e);
}
