// The hand-written RangeResponse encoder gives the generated encoder's bytes,
// for random responses and for the edges (no header, empty lists, zero and
// negative int64s, 64-bit extremes, large values), and refuses what the
// generated encoder refuses (values outside 64 bits).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KeyValue } from '../../src/proto/gen/kv.js';
import { RangeResponse } from '../../src/proto/gen/rpc.js';
import { encodeRangeResponse } from '../../src/proto/range-response-codec.js';
import { framed } from '../../src/proto/grpc-frame.js';

/** A small deterministic generator (xorshift). */
function rng(seed: number) {
  let x = seed | 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  return { next, int: (n: number) => Math.floor(next() * n) };
}

const EDGES = [0n, 1n, 127n, 128n, 16_383n, 16_384n, 2n ** 31n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n - 1n, -1n, -(2n ** 63n)];

function randomInt64(r: ReturnType<typeof rng>): bigint {
  if (r.next() < 0.3) return EDGES[r.int(EDGES.length)]!;
  return BigInt(r.int(2 ** 30)) * BigInt(1 + r.int(1000));
}

function randomBytes(r: ReturnType<typeof rng>, max: number): Buffer {
  const n = r.next() < 0.2 ? 0 : r.int(max);
  return Buffer.from(Array.from({ length: n }, () => r.int(256)));
}

function randomKv(r: ReturnType<typeof rng>): KeyValue {
  return {
    key: randomBytes(r, 40),
    createRevision: randomInt64(r),
    modRevision: randomInt64(r),
    version: randomInt64(r),
    value: randomBytes(r, r.next() < 0.1 ? 70_000 : 300),
    lease: r.next() < 0.5 ? 0n : randomInt64(r),
  };
}

test('encodes exactly as the generated encoder, for 200 random responses and the edges', () => {
  const r = rng(20261207);
  const cases: RangeResponse[] = [
    { header: undefined, kvs: [], more: false, count: 0n },
    { header: { clusterId: 0n, memberId: 0n, revision: 0n, raftTerm: 0n }, kvs: [], more: true, count: 0n },
    { header: { clusterId: 2n ** 64n - 1n, memberId: 1n, revision: 2n ** 63n - 1n, raftTerm: 5n }, kvs: [randomKv(r)], more: false, count: 2n ** 63n - 1n },
  ];
  for (let i = 0; i < 200; i++) {
    cases.push({
      header: r.next() < 0.1 ? undefined : { clusterId: randomInt64(r) < 0n ? 7n : BigInt(r.int(2 ** 31)), memberId: BigInt(r.int(1000)), revision: randomInt64(r), raftTerm: BigInt(r.int(10)) },
      kvs: Array.from({ length: r.int(30) }, () => randomKv(r)),
      more: r.next() < 0.5,
      count: randomInt64(r),
    });
  }
  for (const [i, m] of cases.entries()) {
    const want = Buffer.from(RangeResponse.encode(m).finish());
    const got = encodeRangeResponse(m);
    assert.ok(got.equals(want), `case ${i}: ${got.length} bytes vs the generated ${want.length}`);
    assert.deepEqual(RangeResponse.decode(got), RangeResponse.decode(want));
  }
});

test('refuses values outside 64 bits, as the generated encoder does', () => {
  const kv: KeyValue = { key: Buffer.from('k'), createRevision: 2n ** 64n, modRevision: 1n, version: 1n, value: Buffer.alloc(0), lease: 0n };
  assert.throws(() => RangeResponse.encode({ header: undefined, kvs: [kv], more: false, count: 1n }));
  assert.throws(() => encodeRangeResponse({ header: undefined, kvs: [kv], more: false, count: 1n }), /out of range/);
});

test('a list page is encoded behind its gRPC prefix, which framing then sends as it is (no copy)', () => {
  const r = rng(8);
  const m: RangeResponse = { header: { clusterId: 1n, memberId: 2n, revision: 3n, raftTerm: 4n }, kvs: Array.from({ length: 50 }, () => randomKv(r)), more: true, count: 99n };
  const msg = encodeRangeResponse(m);
  const whole = framed(msg);
  assert.equal(whole.length, msg.length + 5);
  assert.equal(whole[0], 0, 'not compressed');
  assert.equal(whole.readUInt32BE(1), msg.length);
  assert.ok(whole.buffer === msg.buffer && whole.byteOffset + 5 === msg.byteOffset, 'the prefix sits in front of the message, in the same memory');
  assert.ok(whole.subarray(5).equals(Buffer.from(RangeResponse.encode(m).finish())));
  // Any other message is copied behind a new prefix; a slice of a framed one is not mistaken for it.
  const plain = Buffer.from('hello');
  const f = framed(plain);
  assert.deepEqual([...f], [0, 0, 0, 0, 5, ...plain]);
  plain[0] = 0x4a;
  assert.equal(f[5], 0x68, 'a copy');
  assert.equal(framed(msg.subarray(1)).readUInt32BE(1), msg.length - 1);
});
