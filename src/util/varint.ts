// Unsigned LEB128 varints for the compact binary records metaetcd stores in
// member clusters (value envelopes and clock records).

export function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    len++;
  }
  return len;
}

/** Writes `n` (a non-negative safe integer) at `offset`; returns the offset after it. */
export function writeVarint(buf: Buffer, offset: number, n: number): number {
  while (n >= 0x80) {
    buf[offset++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  buf[offset++] = n;
  return offset;
}

/** Reads a varint at `offset`; returns [value, offset after it]. Throws on truncated input. */
export function readVarint(buf: Buffer, offset: number): [number, number] {
  let result = 0;
  let scale = 1;
  for (;;) {
    if (offset >= buf.length) throw new RangeError('truncated varint');
    const b = buf[offset++]!;
    result += (b & 0x7f) * scale;
    if (b < 0x80) return [result, offset];
    scale *= 0x80;
    if (scale > 2 ** 63) throw new RangeError('varint too long');
  }
}

/** Reads a count, then that many varints, at `offset`; returns [values, offset after them]. */
export function readVarintList(buf: Buffer, offset: number): [number[], number] {
  let n: number;
  [n, offset] = readVarint(buf, offset);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let x: number;
    [x, offset] = readVarint(buf, offset);
    out.push(x);
  }
  return [out, offset];
}

export function varintLengthBig(n: bigint): number {
  let len = 1;
  while (n >= 0x80n) {
    n >>= 7n;
    len++;
  }
  return len;
}

export function writeVarintBig(buf: Buffer, offset: number, n: bigint): number {
  while (n >= 0x80n) {
    buf[offset++] = Number(n & 0x7fn) | 0x80;
    n >>= 7n;
  }
  buf[offset++] = Number(n);
  return offset;
}

export function readVarintBig(buf: Buffer, offset: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (offset >= buf.length) throw new RangeError('truncated varint');
    const b = buf[offset++]!;
    result |= BigInt(b & 0x7f) << shift;
    if (b < 0x80) return [result, offset];
    shift += 7n;
    if (shift > 63n) throw new RangeError('varint too long');
  }
}
