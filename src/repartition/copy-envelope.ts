// The value envelope of keys the mover puts into a target member. The copy is a
// create on the target (member version 1, or one more per later catch-up put),
// so it carries a versionBase that makes the reported version (member version +
// versionBase) equal the source's.

import { decodeEnvelope, encodeEnvelope } from '../store/envelope.js';

/**
 * The envelope of a key put into the target whose member version there will be
 * `targetVersion`, so that it reports the source's version.
 */
export function retargetEnvelope(sourceRaw: Buffer, sourceMemberVersion: number, targetVersion: number): Buffer {
  const e = decodeEnvelope(sourceRaw);
  const reported = sourceMemberVersion + e.versionBase;
  const versionBase = reported - targetVersion;
  if (versionBase < 0) throw new Error(`target version ${targetVersion} is above the source's reported version ${reported}`);
  return encodeEnvelope({ ...e, versionBase });
}
