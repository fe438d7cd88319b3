// How metaetcd lays out a member cluster's keyspace. Every client key K is
// stored as "d" + K, so client keys keep their byte order and can never collide
// with metaetcd's own bookkeeping keys, which all live under "m/". Client ranges
// translate to member ranges by prefixing both ends.

import { EMPTY, isFromKey } from '../util/bytes.js';

const DATA = 0x64; // 'd'
const DATA_END = Buffer.from([DATA + 1]); // 'e': end of the data keyspace

/** Bookkeeping keys in every member (never visible to clients). */
export const InternalKey = {
  /** The member's clock record: the meta revision of its latest write (see store/clock-record.ts). */
  clock: Buffer.from('m/clock'),
  /** Highest meta revision any proxy may hand out before raising it again (8-byte big-endian). */
  ceiling: Buffer.from('m/ceiling'),
  /** Meta revision the meta cluster was last compacted at (8-byte big-endian). */
  compacted: Buffer.from('m/compacted'),
  /** JSON {clusterId, index}: which meta cluster and which member slot this cluster is. */
  identity: Buffer.from('m/identity'),
  /** The meta cluster's layout (shard/layout.ts). */
  layout: Buffer.from('m/layout'),
  /**
   * The auth store (users, roles, enabled flag, auth revision, token secret) as
   * one JSON record, kept only in the member at slot 0 (see auth/store.ts).
   */
  auth: Buffer.from('m/auth'),
  /**
   * Written (any value) in every member transaction of a partition move that
   * copies keys in or removes source copies: the member revision carrying it is
   * bookkeeping, and its client-key events are never delivered to watches.
   */
  moveMarker: Buffer.from('m/move/marker'),
  /** JSON state of the partition move in progress, kept in the target member (see repartition/). */
  move: Buffer.from('m/move/state'),
  /** Empty; written only to give the member a revision past a history being read (see MemberTimeline.passRevision). */
  nudge: Buffer.from('m/nudge'),
} as const;

/**
 * Prefix of the records of cross-member transactions still being committed:
 * "m/xtxn/" + the meta revision as 8 bytes big-endian (see commit/cross-record.ts).
 */
export const CROSS_RECORD_PREFIX = Buffer.from('m/xtxn/');

/** The key of the cross-member transaction record at meta revision `revision`. */
export function crossRecordKey(revision: number): Buffer {
  const out = Buffer.allocUnsafe(CROSS_RECORD_PREFIX.length + 8);
  CROSS_RECORD_PREFIX.copy(out, 0);
  out.writeBigUInt64BE(BigInt(revision), CROSS_RECORD_PREFIX.length);
  return out;
}

/** Prefix of every lease attachment index entry (see leaseIndexKey). */
export const LEASE_INDEX_PREFIX = Buffer.from('m/lease/');

/**
 * Lease record: "m/leases/<lease as 16 hex digits>" in the lease's home member,
 * attached to that member's etcd lease of the same ID, so the record disappears
 * (an event on the member's stream) when the lease expires or is revoked.
 */
export const LEASE_RECORD_PREFIX = Buffer.from('m/leases/');

export function leaseHex(lease: bigint): string {
  return BigInt.asUintN(64, lease).toString(16).padStart(16, '0');
}

export function leaseRecordKey(lease: bigint): Buffer {
  return Buffer.from(`m/leases/${leaseHex(lease)}`);
}

/** The lease ID of a lease record key, or undefined for any other key. */
export function leaseOfRecordKey(key: Buffer): bigint | undefined {
  if (key.length !== LEASE_RECORD_PREFIX.length + 16 || !key.subarray(0, LEASE_RECORD_PREFIX.length).equals(LEASE_RECORD_PREFIX)) return undefined;
  return BigInt.asIntN(64, BigInt(`0x${key.subarray(LEASE_RECORD_PREFIX.length).toString('latin1')}`));
}

export function toMemberKey(clientKey: Buffer): Buffer {
  const out = Buffer.allocUnsafe(clientKey.length + 1);
  out[0] = DATA;
  clientKey.copy(out, 1);
  return out;
}

export function isDataKey(memberKey: Buffer): boolean {
  return memberKey.length > 0 && memberKey[0] === DATA;
}

/** The client key of a data key (a view on the same bytes). */
export function toClientKey(memberKey: Buffer): Buffer {
  return memberKey.subarray(1);
}

export interface MemberRange {
  key: Buffer;
  rangeEnd: Buffer;
}

/**
 * Translates a client range (etcd conventions: empty end = single key, "\0" =
 * to the end) into the member's data keyspace. The result never has an empty
 * keyspace-wide end, so it can never reach bookkeeping keys.
 */
export function toMemberRange(key: Buffer, rangeEnd: Buffer): MemberRange {
  const mkey = toMemberKey(key);
  if (rangeEnd.length === 0) return { key: mkey, rangeEnd: EMPTY };
  if (isFromKey(rangeEnd)) return { key: mkey, rangeEnd: DATA_END };
  return { key: mkey, rangeEnd: toMemberKey(rangeEnd) };
}

/**
 * Lease attachment index: "m/lease/<lease as 16 hex digits>/<client key>" exists
 * in the member holding the key while the key may be attached to the lease. It is
 * written with every put that carries a lease and cleaned up lazily (an entry
 * whose key was deleted or re-put without the lease is skipped at expiry).
 */
export function leaseIndexPrefix(lease: bigint): Buffer {
  return Buffer.from(`m/lease/${leaseHex(lease)}/`);
}

/** The lease ID and client key of a lease index key. */
export function parseLeaseIndexKey(key: Buffer): { lease: bigint; clientKey: Buffer } | undefined {
  const p = LEASE_INDEX_PREFIX.length;
  if (key.length < p + 17 || !key.subarray(0, p).equals(LEASE_INDEX_PREFIX) || key[p + 16] !== 0x2f) return undefined;
  return { lease: BigInt.asIntN(64, BigInt(`0x${key.subarray(p, p + 16).toString('latin1')}`)), clientKey: key.subarray(p + 17) };
}

export function leaseIndexKey(lease: bigint, clientKey: Buffer): Buffer {
  return Buffer.concat([leaseIndexPrefix(lease), clientKey]);
}
