// Key placement hashing: FNV-1 (64-bit) of the key bytes, then Lamping & Veach's
// jump consistent hash onto a fixed number of partitions. FNV-1 is computed on two
// 32-bit halves with exact double arithmetic (fast, no BigInt per byte); the jump
// hash needs a 64-bit multiply and uses BigInt for its handful of iterations.

const TWO32 = 4294967296;
const OFFSET_HI = 0xcbf29ce4;
const OFFSET_LO = 0x84222325;
const PRIME_LOW = 0x1b3; // FNV 64-bit prime = 2^40 + 0x1b3

/** FNV-1 64-bit hash of `key` as an unsigned bigint. */
export function fnv1Reference(key: Uint8Array): bigint {
  // Straightforward BigInt FNV-1 (multiply, then xor); used by tests to check fnv1_64.
  let h = 0xcbf29ce484222325n;
  for (const b of key) {
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
    h ^= BigInt(b);
  }
  return h;
}

/** FNV-1 64-bit hash of `key`, returned as [hi, lo] 32-bit unsigned halves. */
export function fnv1_64(key: Uint8Array): [number, number] {
  let hi = OFFSET_HI;
  let lo = OFFSET_LO;
  for (let i = 0; i < key.length; i++) {
    // h *= 2^40 + 435  (mod 2^64)
    const lo435 = lo * PRIME_LOW; // < 2^41, exact
    const carry = Math.floor(lo435 / TWO32);
    const newLo = lo435 - carry * TWO32;
    const newHi = (hi * PRIME_LOW + carry + (lo % 0x1000000) * 256) % TWO32;
    hi = newHi;
    lo = (newLo ^ key[i]!) >>> 0;
  }
  return [hi, lo];
}

const JUMP_MULT = 2862933555777941757n;
const MASK64 = 0xffffffffffffffffn;

/** Jump consistent hash: maps a 64-bit key to a bucket in [0, buckets). */
export function jumpHash(key: bigint, buckets: number): number {
  let b = -1;
  let j = 0;
  while (j < buckets) {
    b = j;
    key = (key * JUMP_MULT + 1n) & MASK64;
    j = Math.floor((b + 1) * (2147483648 / (Number(key >> 33n) + 1)));
  }
  return b;
}

/** The partition of `key` among `partitions` partitions. */
export function partitionOf(key: Uint8Array, partitions: number): number {
  const [hi, lo] = fnv1_64(key);
  return jumpHash((BigInt(hi) << 32n) | BigInt(lo), partitions);
}
