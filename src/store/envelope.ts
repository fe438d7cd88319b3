// The value envelope: what metaetcd stores as a member key's value. It carries
// the key's meta mod revision, meta create revision and meta lease in front of
// the client's bytes, so reads and watch events need no extra lookups and the
// metadata survives member compaction. The version counter is the member's own
// (a key lives its whole life in one member).
//
// Layout: 0x01 | uvarint modRevision | uvarint createRevision | uvarint lease (u64) | value

import { readVarint, readVarintBig, varintLength, varintLengthBig, writeVarint, writeVarintBig } from '../util/varint.js';

const FORMAT = 0x01;

export interface Envelope {
  modRevision: number;
  createRevision: number;
  /** Meta lease ID (0 = none), as a signed 64-bit value like etcd's. */
  lease: bigint;
  value: Buffer;
}

export function encodeEnvelope(e: Envelope): Buffer {
  const lease = BigInt.asUintN(64, e.lease);
  const size =
    1 + varintLength(e.modRevision) + varintLength(e.createRevision) + varintLengthBig(lease) + e.value.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = FORMAT;
  let o = writeVarint(out, 1, e.modRevision);
  o = writeVarint(out, o, e.createRevision);
  o = writeVarintBig(out, o, lease);
  e.value.copy(out, o);
  return out;
}

export function decodeEnvelope(raw: Buffer): Envelope {
  if (raw.length === 0 || raw[0] !== FORMAT) {
    throw new Error(`value is not a metaetcd envelope (format byte ${raw[0] ?? 'missing'})`);
  }
  const [modRevision, o1] = readVarint(raw, 1);
  const [createRevision, o2] = readVarint(raw, o1);
  const [lease, o3] = readVarintBig(raw, o2);
  return { modRevision, createRevision, lease: BigInt.asIntN(64, lease), value: raw.subarray(o3) };
}

/** Bytes an envelope adds to a value of the given revisions (for request-size accounting). */
export const MAX_ENVELOPE_OVERHEAD = 1 + 9 + 9 + 10;
