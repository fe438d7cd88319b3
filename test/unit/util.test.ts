// Varints, byte-string helpers and Go durations.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compareBytes, decodeU64BE, encodeU64BE, inRange, isFromKey, nextKey, prefixEnd } from '../../src/util/bytes.js';
import { parseDuration } from '../../src/util/duration.js';
import { readVarint, readVarintBig, varintLength, varintLengthBig, writeVarint, writeVarintBig } from '../../src/util/varint.js';
import { rng } from '../harness/watch-checker.js';

test('varints round trip and have the announced length', () => {
  const r = rng(10);
  const values = [0, 1, 127, 128, 255, 16383, 16384, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER];
  for (let i = 0; i < 500; i++) values.push(Math.floor(r() * 2 ** Math.floor(r() * 53)));
  for (const v of values) {
    const buf = Buffer.alloc(12, 0xee);
    const end = writeVarint(buf, 2, v);
    assert.equal(end - 2, varintLength(v), String(v));
    assert.deepEqual(readVarint(buf, 2), [v, end]);
    const big = BigInt(v);
    const end2 = writeVarintBig(buf, 1, big);
    assert.equal(end2 - 1, varintLengthBig(big));
    assert.deepEqual(readVarintBig(buf, 1), [big, end2]);
  }
  const max = 2n ** 64n - 1n;
  const buf = Buffer.alloc(10);
  assert.equal(writeVarintBig(buf, 0, max), 10);
  assert.deepEqual(readVarintBig(buf, 0), [max, 10]);
  const three = Buffer.alloc(2);
  writeVarint(three, 0, 300);
  assert.deepEqual([...three], [0xac, 0x02], 'LEB128, low group first');
});

test('varints: truncated and overlong input is refused', () => {
  assert.throws(() => readVarint(Buffer.from([0x80]), 0), /truncated/);
  assert.throws(() => readVarint(Buffer.alloc(0), 0), /truncated/);
  assert.throws(() => readVarintBig(Buffer.from([0xff, 0xff]), 0), /truncated/);
  assert.throws(() => readVarint(Buffer.alloc(11, 0xff), 0), /too long/);
  assert.throws(() => readVarintBig(Buffer.alloc(11, 0xff), 0), /too long/);
});

test('prefixEnd: the smallest key above every key with the prefix', () => {
  assert.deepEqual(prefixEnd(Buffer.from('abc')), Buffer.from('abd'));
  assert.deepEqual(prefixEnd(Buffer.from([0x61, 0xff, 0xff])), Buffer.from([0x62]));
  assert.deepEqual(prefixEnd(Buffer.from([0xff, 0xff])), Buffer.from([0]));
  assert.deepEqual(prefixEnd(Buffer.alloc(0)), Buffer.from([0]));
  const p = Buffer.from('abc');
  prefixEnd(p);
  assert.deepEqual(p, Buffer.from('abc'), 'the prefix is not modified');
  const r = rng(11);
  for (let i = 0; i < 500; i++) {
    const prefix = Buffer.from(Array.from({ length: 1 + Math.floor(r() * 4) }, () => (r() < 0.3 ? 0xff : Math.floor(r() * 256))));
    const end = prefixEnd(prefix);
    const withPrefix = Buffer.concat([prefix, Buffer.from(Array.from({ length: Math.floor(r() * 4) }, () => Math.floor(r() * 256)))]);
    if (isFromKey(end)) assert.ok(prefix.every((x) => x === 0xff));
    else {
      assert.ok(compareBytes(withPrefix, end) < 0);
      assert.ok(compareBytes(prefix, end) < 0);
      assert.ok(!end.subarray(0, prefix.length).equals(prefix), 'the end does not itself have the prefix');
    }
  }
});

test('nextKey, inRange, isFromKey, u64 big-endian', () => {
  assert.deepEqual(nextKey(Buffer.from('a')), Buffer.from([0x61, 0]));
  assert.ok(inRange(Buffer.from('a'), Buffer.from('a'), Buffer.alloc(0)));
  assert.ok(!inRange(Buffer.from('ab'), Buffer.from('a'), Buffer.alloc(0)));
  assert.ok(inRange(Buffer.from('ab'), Buffer.from('a'), Buffer.from('b')));
  assert.ok(!inRange(Buffer.from('b'), Buffer.from('a'), Buffer.from('b')));
  assert.ok(!inRange(Buffer.from('0'), Buffer.from('a'), Buffer.from([0])));
  assert.ok(inRange(Buffer.from([0xff, 0xff]), Buffer.from('a'), Buffer.from([0])));
  assert.ok(inRange(Buffer.from('a'), Buffer.from('a'), nextKey(Buffer.from('a'))));
  assert.ok(!inRange(nextKey(Buffer.from('a')), Buffer.from('a'), nextKey(Buffer.from('a'))));
  assert.ok(isFromKey(Buffer.from([0])) && !isFromKey(Buffer.from([0, 0])) && !isFromKey(Buffer.alloc(0)));
  for (const n of [0, 1, 255, 256, 2 ** 40, Number.MAX_SAFE_INTEGER]) assert.equal(decodeU64BE(encodeU64BE(n)), n);
  assert.ok(compareBytes(encodeU64BE(255), encodeU64BE(256)) < 0, 'byte order is numeric order');
});

test('Go durations', () => {
  const cases: [string, number][] = [
    ['0', 0],
    ['300ms', 300],
    ['10s', 10_000],
    ['1.5h', 5_400_000],
    ['2h45m', 9_900_000],
    ['1m30s', 90_000],
    ['-1.5s', -1500],
    ['+5s', 5000],
    ['1000us', 1],
    ['1000000ns', 1],
    ['1000µs', 1],
    ['.5s', 500],
    [' 2s ', 2000],
  ];
  for (const [s, ms] of cases) assert.equal(parseDuration(s), ms, s);
  for (const bad of ['', '-', '10', 's', '1x', '1s2', '1.5', '5 s']) assert.throws(() => parseDuration(bad), /invalid duration/, bad);
});
