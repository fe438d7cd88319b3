// The value envelope: what metaetcd stores as a member key's value. It carries
// the key's meta mod revision, meta create revision and meta lease in front of
// the client's bytes, so reads and watch events need no extra lookups and the
// metadata survives member compaction. The version counter is the member's
// own plus the envelope's version base: a key copied into another member by a
// partition move (docs/notes/repartitioning.md) starts there at member version
// 1, and the base makes the reported version continue the source's.
//
// Layout: 0x01 | uvarint modRevision | uvarint createRevision | uvarint lease (u64) | value
//         0x02 | uvarint modRevision | uvarint createRevision | uvarint lease (u64) | uvarint versionBase | value
// Format 1 is written whenever the base is 0, so members that never saw a move
// keep the format older proxies read.

import { readVarint, readVarintBig, varintLength, varintLengthBig, writeVarint, writeVarintBig } from '../util/varint.js';

const FORMAT_1 = 0x01;
const FORMAT_2 = 0x02;

export interface Envelope {
  modRevision: number;
  createRevision: number;
  /** Meta lease ID (0 = none), as a signed 64-bit value like etcd's. */
  lease: bigint;
  /** Added to the member's version to give the reported one (0 unless the key was copied by a move). */
  versionBase: number;
  value: Buffer;
}

export function encodeEnvelope(e: Envelope): Buffer {
  const lease = BigInt.asUintN(64, e.lease);
  const base = e.versionBase;
  if (!Number.isSafeInteger(base) || base < 0) throw new Error(`invalid envelope version base ${base}`);
  const size =
    1 +
    varintLength(e.modRevision) +
    varintLength(e.createRevision) +
    varintLengthBig(lease) +
    (base === 0 ? 0 : varintLength(base)) +
    e.value.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = base === 0 ? FORMAT_1 : FORMAT_2;
  let o = writeVarint(out, 1, e.modRevision);
  o = writeVarint(out, o, e.createRevision);
  o = writeVarintBig(out, o, lease);
  if (base !== 0) o = writeVarint(out, o, base);
  e.value.copy(out, o);
  return out;
}

export function decodeEnvelope(raw: Buffer): Envelope {
  const format = raw[0];
  if (format !== FORMAT_1 && format !== FORMAT_2) {
    throw new Error(`value is not a metaetcd envelope (format byte ${format ?? 'missing'})`);
  }
  const [modRevision, o1] = readVarint(raw, 1);
  const [createRevision, o2] = readVarint(raw, o1);
  const [lease, o3] = readVarintBig(raw, o2);
  const [versionBase, o4] = format === FORMAT_2 ? readVarint(raw, o3) : [0, o3];
  return { modRevision, createRevision, lease: BigInt.asIntN(64, lease), versionBase, value: raw.subarray(o4) };
}

/** Bytes an envelope adds to a value of the given revisions (for request-size accounting). */
export const MAX_ENVELOPE_OVERHEAD = 1 + 9 + 9 + 10 + 9;
