// Byte-string helpers for etcd keys: etcd orders keys by their raw bytes, and
// range ends follow etcd's conventions (empty = single key, "\0" = to the end).

export const EMPTY = Buffer.alloc(0);
const ZERO = Buffer.from([0]);

/** True when `rangeEnd` is etcd's "from key to the end of the keyspace" marker ("\0"). */
export function isFromKey(rangeEnd: Buffer): boolean {
  return rangeEnd.length === 1 && rangeEnd[0] === 0;
}

/** The smallest key greater than every key with the given prefix, or "\0" when none exists. */
export function prefixEnd(prefix: Buffer): Buffer {
  for (let i = prefix.length - 1; i >= 0; i--) {
    const b = prefix[i]!;
    if (b < 0xff) {
      const end = Buffer.from(prefix.subarray(0, i + 1));
      end[i] = b + 1;
      return end;
    }
  }
  return ZERO;
}

/** The key immediately after `key` in byte order. */
export function nextKey(key: Buffer): Buffer {
  return Buffer.concat([key, ZERO]);
}

export function compareBytes(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

/**
 * Whether `key` lies in the client range [start, end) with etcd's conventions:
 * an empty end means exactly `start`, "\0" means every key >= start.
 */
export function inRange(key: Buffer, start: Buffer, end: Buffer): boolean {
  if (end.length === 0) return key.equals(start);
  if (Buffer.compare(key, start) < 0) return false;
  if (isFromKey(end)) return true;
  return Buffer.compare(key, end) < 0;
}

/** Encodes a non-negative integer below 2^53 as 8 big-endian bytes (byte order = numeric order). */
export function encodeU64BE(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

export function decodeU64BE(b: Buffer, offset = 0): number {
  return Number(b.readBigUInt64BE(offset));
}
