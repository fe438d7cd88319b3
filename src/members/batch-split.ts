// A member revision written by a batch (members/write-batcher.ts) carries the
// writes of several meta revisions: the clock record lists them, and each put's
// value envelope names its own. Watchers, the key cache and the history reader
// see one revision per meta revision, as if the writes had landed one by one.

import { Event_EventType, type Event } from '../proto/gen/kv.js';
import { ClockKind, type ClockRecord } from '../store/clock-record.js';
import { readVarint } from '../util/varint.js';

export interface MetaRevisionPart {
  /** The record as a lone write at this meta revision would have written it (the batch's allocation vector). */
  record: ClockRecord;
  events: Event[];
}

/** Splits a member revision by meta revision; a record of any other kind is returned whole. */
export function splitByMetaRevision(record: ClockRecord, events: Event[]): MetaRevisionPart[] {
  if (record.kind !== ClockKind.Batch || !record.batch) return [{ record, events }];
  const parts = record.batch.map((revision): MetaRevisionPart => ({ record: { revision, kind: ClockKind.Write, allocation: record.allocation }, events: [] }));
  const at = new Map(parts.map((p) => [p.record.revision, p]));
  for (const ev of events) {
    // Batches hold puts only (see kv/txn/member-txn.ts batchPartOf); the envelope's first field is the mod revision.
    const revision = ev.type === Event_EventType.PUT ? readVarint(ev.kv!.value, 1)[0] : record.revision;
    const part = at.get(revision);
    if (!part) throw new Error(`a batch member revision holds an event at meta revision ${revision}, not one of ${record.batch.join(',')}`);
    part.events.push(ev);
  }
  return parts;
}
