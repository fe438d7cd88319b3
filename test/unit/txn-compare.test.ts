// Transaction compares with etcd's semantics (etcd server/etcdserver/apply.go
// applyCompare / compareKV): every target × result, missing keys, ranges, and
// the nested "txn path".

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyValue } from '../../src/proto/gen/kv.js';
import { Compare, Compare_CompareResult as Result, Compare_CompareTarget as Target, RequestOp, TxnRequest } from '../../src/proto/gen/rpc.js';
import { applyCompare, compareToPath } from '../../src/kv/txn-compare.js';
import { rng } from '../harness/watch-checker.js';

type Num = 'version' | 'createRevision' | 'modRevision' | 'lease';
const numTargets: [Target, Num][] = [
  [Target.VERSION, 'version'],
  [Target.CREATE, 'createRevision'],
  [Target.MOD, 'modRevision'],
  [Target.LEASE, 'lease'],
];
const results: [Result, (d: number) => boolean][] = [
  [Result.EQUAL, (d) => d === 0],
  [Result.NOT_EQUAL, (d) => d !== 0],
  [Result.GREATER, (d) => d > 0],
  [Result.LESS, (d) => d < 0],
];

function kv(key: string, p: Partial<KeyValue> = {}): KeyValue {
  return KeyValue.fromPartial({ key: Buffer.from(key), value: Buffer.from('v'), version: 1n, createRevision: 2n, modRevision: 3n, lease: 0n, ...p });
}
function numCompare(target: Target, field: Num, result: Result, value: bigint, key = 'k'): Compare {
  return Compare.fromPartial({ key: Buffer.from(key), target, result, targetUnion: { $case: field, value } });
}
function valueCompare(result: Result, value: string | Buffer, key = 'k'): Compare {
  return Compare.fromPartial({ key: Buffer.from(key), target: Target.VALUE, result, targetUnion: { $case: 'value', value: Buffer.from(value) } });
}
const sign = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0);

test('numeric targets × results on an existing key (property)', () => {
  const r = rng(20);
  for (let i = 0; i < 2000; i++) {
    const [target, field] = numTargets[Math.floor(r() * 4)]!;
    const [result, holds] = results[Math.floor(r() * 4)]!;
    const stored = BigInt(Math.floor(r() * 5));
    const given = BigInt(Math.floor(r() * 5));
    const c = numCompare(target, field, result, given);
    assert.equal(applyCompare(c, [kv('k', { [field]: stored })]), holds(sign(stored, given)), `${Target[target]} ${Result[result]} stored ${stored} given ${given}`);
  }
});

test('VALUE × results compares bytes (property, binary values and the empty value)', () => {
  const r = rng(21);
  const pick = () => Buffer.from(Array.from({ length: Math.floor(r() * 3) }, () => [0, 1, 0x61, 0xff][Math.floor(r() * 4)]!));
  for (let i = 0; i < 2000; i++) {
    const [result, holds] = results[Math.floor(r() * 4)]!;
    const stored = pick();
    const given = pick();
    assert.equal(applyCompare(valueCompare(result, given), [kv('k', { value: stored })]), holds(Buffer.compare(stored, given)), `${Result[result]} ${stored.toString('hex')} vs ${given.toString('hex')}`);
  }
  assert.ok(applyCompare(valueCompare(Result.LESS, 'b'), [kv('k', { value: Buffer.from('ab') })]), 'lexicographic, not by length');
  assert.ok(applyCompare(valueCompare(Result.GREATER, 'a'), [kv('k', { value: Buffer.from('ab') })]), 'a prefix sorts first');
});

test('a missing key: VALUE fails for every result; other targets compare zero values', () => {
  for (const [result] of results) {
    assert.equal(applyCompare(valueCompare(result, ''), []), false, `VALUE ${Result[result]} ''`);
    assert.equal(applyCompare(valueCompare(result, 'x'), []), false, `VALUE ${Result[result]} x`);
  }
  for (const [target, field] of numTargets) {
    assert.ok(applyCompare(numCompare(target, field, Result.EQUAL, 0n), []), `${Target[target]} == 0`);
    assert.ok(!applyCompare(numCompare(target, field, Result.EQUAL, 1n), []));
    assert.ok(applyCompare(numCompare(target, field, Result.LESS, 1n), []));
    assert.ok(applyCompare(numCompare(target, field, Result.NOT_EQUAL, 5n), []));
    assert.ok(!applyCompare(numCompare(target, field, Result.GREATER, 0n), []));
  }
  // The create-if-absent idiom: version == 0 / create_revision == 0.
  assert.ok(!applyCompare(numCompare(Target.VERSION, 'version', Result.EQUAL, 0n), [kv('k')]));
});

test('a compare over a range holds only when it holds for every key in it', () => {
  const keys = [kv('a', { version: 1n }), kv('b', { version: 2n }), kv('c', { version: 3n })];
  assert.ok(applyCompare(numCompare(Target.VERSION, 'version', Result.GREATER, 0n), keys));
  assert.ok(!applyCompare(numCompare(Target.VERSION, 'version', Result.GREATER, 1n), keys));
  assert.ok(!applyCompare(numCompare(Target.VERSION, 'version', Result.EQUAL, 2n), keys));
  assert.ok(applyCompare(numCompare(Target.VERSION, 'version', Result.LESS, 4n), keys));
  assert.ok(!applyCompare(valueCompare(Result.EQUAL, 'v'), [...keys, kv('d', { value: Buffer.from('w') })]));
  assert.ok(applyCompare(valueCompare(Result.EQUAL, 'v'), keys));
  const r = rng(22);
  for (let i = 0; i < 500; i++) {
    const vs = Array.from({ length: 1 + Math.floor(r() * 4) }, (_, j) => kv(`k${j}`, { modRevision: BigInt(Math.floor(r() * 4)) }));
    const [result, holds] = results[Math.floor(r() * 4)]!;
    const given = BigInt(Math.floor(r() * 4));
    assert.equal(applyCompare(numCompare(Target.MOD, 'modRevision', result, given), vs), vs.every((x) => holds(sign(x.modRevision, given))));
  }
});

test('compareToPath: top-level outcome, then nested transactions of the taken branch, depth first in op order', () => {
  const state = new Map([['x', kv('x', { version: 1n })]]);
  const lookup = (c: Compare) => (state.has(c.key.toString()) ? [state.get(c.key.toString())!] : []);
  const exists = (k: string) => numCompare(Target.VERSION, 'version', Result.GREATER, 0n, k);
  const txn = (compare: Compare[], success: RequestOp[] = [], failure: RequestOp[] = []) => TxnRequest.fromPartial({ compare, success, failure });
  const nested = (t: TxnRequest) => RequestOp.fromPartial({ request: { $case: 'requestTxn', value: t } });
  const put = RequestOp.fromPartial({ request: { $case: 'requestPut', value: { key: Buffer.from('p'), value: Buffer.from('1') } } });

  assert.deepEqual(compareToPath(txn([]), lookup), [true], 'no compares: success');
  assert.deepEqual(compareToPath(txn([exists('x'), exists('y')]), lookup), [false], 'all compares must hold');
  const deep = txn([exists('x')], [put, nested(txn([exists('y')], [], [nested(txn([exists('x')]))])), nested(txn([exists('x')]))], [nested(txn([exists('x')]))]);
  // success taken: nested#1 fails (-> its failure branch: nested true), then nested#2 true.
  assert.deepEqual(compareToPath(deep, lookup), [true, false, true, true]);
  // With x missing, the failure branch is taken: its one nested txn fails too.
  state.clear();
  assert.deepEqual(compareToPath(deep, lookup), [false, false]);
});
