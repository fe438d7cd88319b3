// Translation of member key-values into what clients see: the "d" prefix is
// stripped and the value envelope is unpacked into meta revisions and lease,
// and the version is the reported one (member version + the envelope's base).

import type { KeyValue } from '../proto/gen/kv.js';
import { decodeEnvelope } from '../store/envelope.js';
import { toClientKey } from '../store/keyspace.js';

export function toClientKv(kv: KeyValue): KeyValue {
  const env = decodeEnvelope(kv.value);
  return {
    key: toClientKey(kv.key),
    createRevision: BigInt(env.createRevision),
    modRevision: BigInt(env.modRevision),
    version: kv.version + BigInt(env.versionBase),
    value: env.value,
    lease: env.lease,
  };
}

/** A member key-value's meta create revision, mod revision and lease, without copying the value. */
export function metaOf(kv: KeyValue): { createRevision: number; modRevision: number; lease: bigint; versionBase: number; value: Buffer } {
  return decodeEnvelope(kv.value);
}
