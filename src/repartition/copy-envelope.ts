// The value envelope of keys the mover puts into a target member. The copy is a
// create on the target (member version 1), so it carries a versionBase that
// makes the reported version (member version + versionBase) equal the source's.
// Envelope format 2: 0x02 | uvarint mod | uvarint create | uvarint lease (u64) | uvarint versionBase | value.
// Format 1 (no versionBase, base 0) is still read: most source keys are format 1.
// This is the mover's own codec; it is swapped for store/envelope.ts's once that
// module speaks format 2 as well.

import { readVarint, readVarintBig, varintLength, varintLengthBig, writeVarint, writeVarintBig } from '../util/varint.js';

export interface CopyEnvelope {
  modRevision: number;
  createRevision: number;
  /** Meta lease ID (0 = none), signed 64-bit like etcd's. */
  lease: bigint;
  /** Added to the member's version to give the reported version (0 for format 1). */
  versionBase: number;
  value: Buffer;
}

export function encodeCopyEnvelope(e: CopyEnvelope): Buffer {
  if (!Number.isSafeInteger(e.versionBase) || e.versionBase < 0) throw new Error(`invalid versionBase ${e.versionBase}`);
  const lease = BigInt.asUintN(64, e.lease);
  const size =
    1 + varintLength(e.modRevision) + varintLength(e.createRevision) + varintLengthBig(lease) + varintLength(e.versionBase) + e.value.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = 0x02;
  let o = writeVarint(out, 1, e.modRevision);
  o = writeVarint(out, o, e.createRevision);
  o = writeVarintBig(out, o, lease);
  o = writeVarint(out, o, e.versionBase);
  e.value.copy(out, o);
  return out;
}

export function decodeCopyEnvelope(raw: Buffer): CopyEnvelope {
  const format = raw[0];
  if (format !== 0x01 && format !== 0x02) throw new Error(`value is not a metaetcd envelope (format byte ${format ?? 'missing'})`);
  const [modRevision, o1] = readVarint(raw, 1);
  const [createRevision, o2] = readVarint(raw, o1);
  const [lease, o3] = readVarintBig(raw, o2);
  let versionBase = 0;
  let o4 = o3;
  if (format === 0x02) [versionBase, o4] = readVarint(raw, o3);
  return { modRevision, createRevision, lease: BigInt.asIntN(64, lease), versionBase, value: raw.subarray(o4) };
}

/**
 * The envelope of a key put into the target whose member version there will be
 * `targetVersion`, so that it reports the source's version `sourceVersion`.
 */
export function retargetEnvelope(sourceRaw: Buffer, sourceMemberVersion: number, targetVersion: number): Buffer {
  const e = decodeCopyEnvelope(sourceRaw);
  const reported = sourceMemberVersion + e.versionBase;
  const versionBase = reported - targetVersion;
  if (versionBase < 0) throw new Error(`target version ${targetVersion} is above the source's reported version ${reported}`);
  return encodeCopyEnvelope({ ...e, versionBase });
}
