// A member's clock record (InternalKey.clock): written in the same member
// transaction as every client write, it names the meta revision of that member
// revision. Because every write also requires the stored revision to be lower
// than its own (a VALUE compare on the 8-byte big-endian prefix), a member's
// history is strictly increasing in meta revision ("per-member order").
//
// Layout: u64 BE metaRevision | kind | uvarint n | n × uvarint allocation[i]
//
// `allocation` (writes only) is the clock's allocation vector at this revision:
// allocation[i] = the highest meta revision <= this one that was handed to a
// write on member i. A watcher of all members can release revision R once every
// member i has shown revision allocation[i] (or later) in its own stream.

import { decodeU64BE, encodeU64BE } from '../util/bytes.js';
import { readVarint, varintLength, writeVarint, readVarintList } from '../util/varint.js';

export enum ClockKind {
  /** A client write (or a transaction that only read) took this revision. */
  Write = 0,
  /** A fence: the revision was closed so that a stalled write can never land at or below it. */
  Fence = 1,
  /** Written once when the member joined the meta cluster. */
  Bootstrap = 2,
  /**
   * Several client writes took the revisions in `batch` (ascending, the last one is
   * `revision`) in this one member revision (docs/notes/write-batching.md).
   */
  Batch = 3,
}

export interface ClockRecord {
  revision: number;
  kind: ClockKind;
  allocation: number[];
  /** Kind Batch: every meta revision this member revision carries, ascending, ending with `revision`. */
  batch?: number[];
  /**
   * Kind Write, one member's part of a cross-member transaction: for each of its
   * client-key events, in member order, the index of the transaction op that made
   * it — so that the parts' events can be sent in the transaction's op order.
   */
  ranks?: number[];
}

// Kind Batch appends: uvarint n | n - 1 × uvarint (revision - batch[i]) for the
// revisions below the last. Kind Write may append: uvarint n | n × uvarint ranks[i].

export function encodeClockRecord(r: ClockRecord): Buffer {
  let size = 8 + 1 + varintLength(r.allocation.length);
  for (const a of r.allocation) size += varintLength(a);
  const batch = r.kind === ClockKind.Batch ? (r.batch ?? [r.revision]) : undefined;
  const ranks = r.kind === ClockKind.Write ? r.ranks : undefined;
  if (ranks) {
    size += varintLength(ranks.length);
    for (const x of ranks) size += varintLength(x);
  }
  if (batch) {
    if (batch[batch.length - 1] !== r.revision) throw new Error(`batch clock record: the last revision of ${batch.join(',')} is not ${r.revision}`);
    size += varintLength(batch.length);
    for (let i = 0; i < batch.length - 1; i++) size += varintLength(r.revision - batch[i]!);
  }
  const out = Buffer.allocUnsafe(size);
  out.writeBigUInt64BE(BigInt(r.revision), 0);
  out[8] = r.kind;
  let o = writeVarint(out, 9, r.allocation.length);
  for (const a of r.allocation) o = writeVarint(out, o, a);
  if (batch) {
    o = writeVarint(out, o, batch.length);
    for (let i = 0; i < batch.length - 1; i++) o = writeVarint(out, o, r.revision - batch[i]!);
  }
  if (ranks) {
    o = writeVarint(out, o, ranks.length);
    for (const x of ranks) o = writeVarint(out, o, x);
  }
  return out;
}

export function decodeClockRecord(raw: Buffer): ClockRecord {
  if (raw.length < 9) throw new Error('malformed metaetcd clock record');
  const revision = decodeU64BE(raw, 0);
  const kind = raw[8] as ClockKind;
  let allocation: number[] = [];
  let o = 9;
  if (o < raw.length) [allocation, o] = readVarintList(raw, o);
  if (kind === ClockKind.Write && o < raw.length) {
    const [ranks] = readVarintList(raw, o);
    return { revision, kind, allocation, ranks };
  }
  if (kind !== ClockKind.Batch) return { revision, kind, allocation };
  let n: number;
  [n, o] = readVarint(raw, o);
  const batch: number[] = [];
  for (let i = 0; i < n - 1; i++) {
    let d: number;
    [d, o] = readVarint(raw, o);
    batch.push(revision - d);
  }
  batch.push(revision);
  return { revision, kind, allocation, batch };
}

/**
 * The bytes a clock record is compared with for "stored revision >= rev": every
 * record of a lower revision sorts below them (its bytes after the revision start
 * with a kind byte, never 0xff), every record of `rev` or more above them.
 */
export function clockAtLeastValue(revision: number): Buffer {
  return Buffer.concat([encodeU64BE(revision - 1), Buffer.alloc(16, 0xff)]);
}

/** The bytes a member write compares the clock record against: "stored < mine". */
export function clockGuardValue(revision: number): Buffer {
  return encodeU64BE(revision);
}
