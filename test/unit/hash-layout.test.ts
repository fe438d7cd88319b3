// Key placement: FNV-1 64 + jump consistent hash, and the layout's router. Data
// placement depends on these exact functions, so known values are pinned: a
// change here moves keys between members of an existing meta cluster.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fnv1_64, fnv1Reference, jumpHash, partitionOf } from '../../src/shard/hash.js';
import { decodeLayout, encodeLayout, newLayout, Router } from '../../src/shard/layout.js';
import { rng } from '../harness/watch-checker.js';

const b = (s: string) => Buffer.from(s);
const full = (k: Uint8Array) => {
  const [hi, lo] = fnv1_64(k);
  return (BigInt(hi) << 32n) | BigInt(lo);
};
function randomKey(r: () => number): Buffer {
  return Buffer.from(Array.from({ length: Math.floor(r() * 40) }, () => Math.floor(r() * 256)));
}

test('FNV-1 64 matches the published test vectors and the BigInt reference', () => {
  assert.equal(full(b('')), 0xcbf29ce484222325n);
  assert.equal(full(b('a')), 0xaf63bd4c8601b7ben);
  assert.equal(full(b('foobar')), 0x340d8765a4dda9c2n);
  const r = rng(1);
  for (let i = 0; i < 2000; i++) {
    const k = randomKey(r);
    assert.equal(full(k), fnv1Reference(k), k.toString('hex'));
  }
});

test('pinned partitions of known keys (data placement must not change)', () => {
  const pinned: [string, number, number][] = [
    ['', 266, 13],
    ['a', 26, 7],
    ['foobar', 582, 1],
    ['/registry/pods/default/x', 105, 12],
    ['key-0', 606, 11],
  ];
  for (const [k, p1024, p16] of pinned) {
    assert.equal(partitionOf(b(k), 1024), p1024, k);
    assert.equal(partitionOf(b(k), 16), p16, k);
  }
  assert.equal(jumpHash(0n, 1), 0);
  assert.equal(jumpHash(1n, 10), 6);
  assert.equal(jumpHash(0xdeadbeefn, 1000), 285);
  assert.equal(jumpHash(256n, 1024), 520);
});

test('jump hash: in range, and growing the bucket count only moves keys to the new bucket', () => {
  const r = rng(2);
  for (let i = 0; i < 300; i++) {
    const key = BigInt(Math.floor(r() * 2 ** 32)) * 4294967296n + BigInt(Math.floor(r() * 2 ** 32));
    let prev = jumpHash(key, 1);
    assert.equal(prev, 0);
    for (let n = 2; n <= 64; n++) {
      const cur = jumpHash(key, n);
      assert.ok(cur >= 0 && cur < n);
      assert.ok(cur === prev || cur === n - 1, `key ${key}: ${prev} -> ${cur} at ${n} buckets`);
      prev = cur;
    }
  }
});

test('partitions are spread roughly evenly', () => {
  const counts = new Array<number>(16).fill(0);
  const n = 32_000;
  for (let i = 0; i < n; i++) counts[partitionOf(b(`/registry/things/ns-${i % 97}/obj-${i}`), 16)]!++;
  for (const c of counts) assert.ok(Math.abs(c - n / 16) < (n / 16) * 0.1, counts.join(' '));
});

test('layout: round-robin assignment, encode/decode round trip, malformed records refused', () => {
  const l = newLayout('00112233aabbccdd', 3, 16);
  assert.deepEqual(l.assignment, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
  assert.deepEqual(decodeLayout(encodeLayout(l)), l);
  assert.throws(() => newLayout('x', 0));
  assert.throws(() => newLayout('x', 17, 16));
  for (const bad of [{ ...l, format: 4 }, { ...l, assignment: l.assignment.slice(1) }, { ...l, assignment: [...l.assignment.slice(1), 3] }, { ...l, clusterId: 5 }]) {
    assert.throws(() => decodeLayout(Buffer.from(JSON.stringify(bad))), /malformed/);
  }
  assert.throws(() => decodeLayout(b('{')));
});

test('router: a key goes to its partition\'s member; a range may touch every member', () => {
  const router = new Router(newLayout('c', 3, 16));
  const r = rng(3);
  for (let i = 0; i < 500; i++) {
    const k = randomKey(r);
    const m = router.memberOf(k);
    assert.equal(m, partitionOf(k, 16) % 3);
    assert.deepEqual(router.membersOf(k, Buffer.alloc(0)), [m]);
  }
  assert.deepEqual(router.membersOf(b('a'), b('b')), [0, 1, 2]);
  assert.deepEqual(router.membersOf(b('a'), Buffer.from([0])), [0, 1, 2]);
  assert.equal(router.memberCount, 3);
});
