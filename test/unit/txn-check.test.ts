// etcd's request validation (v3rpc key.go): too many operations, empty keys,
// empty ops, duplicate keys (nested transactions, deletes overlapping puts).
// Errors are matched by etcd's message, which clients depend on.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkDelete, checkPut, checkRange, checkTxn } from '../../src/kv/txn-check.js';
import { Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest } from '../../src/proto/gen/rpc.js';

const k = (s: string) => Buffer.from(s);
const put = (key: string) => RequestOp.fromPartial({ request: { $case: 'requestPut', value: { key: k(key), value: k('v') } } });
const get = (key: string) => RequestOp.fromPartial({ request: { $case: 'requestRange', value: { key: k(key) } } });
const del = (key: string, rangeEnd = '') => RequestOp.fromPartial({ request: { $case: 'requestDeleteRange', value: { key: k(key), rangeEnd: k(rangeEnd) } } });
const delFrom = (key: string) => del(key, '\0');
const txn = (success: RequestOp[], failure: RequestOp[] = [], compare: Compare[] = []) => TxnRequest.fromPartial({ compare, success, failure });
const nested = (success: RequestOp[], failure: RequestOp[] = []) => RequestOp.fromPartial({ request: { $case: 'requestTxn', value: txn(success, failure) } });
const cmp = (key: string) => Compare.fromPartial({ key: k(key) });

/** etcd's status: INVALID_ARGUMENT (3) with its exact message. */
const invalid = (message: string) => ({ code: 3, message: `etcdserver: ${message}` });
const DUP = invalid('duplicate key given in txn request');
const FROM_KEY_PUT = { code: 3, message: /^metaetcd: transaction puts a key inside the range of its own from-key delete/ };
const TOO_MANY = invalid('too many operations in txn request');
const EMPTY_KEY = invalid('key is not provided');
type Expected = { code: number; message: string | RegExp };
const ok = (t: TxnRequest, why = '', max = 128) => assert.doesNotThrow(() => checkTxn(t, max), why);
const refused = (t: TxnRequest, re: Expected, why = '', max = 128) => assert.throws(() => checkTxn(t, max), re, why);

test('single requests: empty keys, ignore_value / ignore_lease with a value / lease', () => {
  assert.throws(() => checkRange(RangeRequest.fromPartial({})), EMPTY_KEY);
  assert.throws(() => checkPut(PutRequest.fromPartial({})), EMPTY_KEY);
  assert.throws(() => checkDelete(DeleteRangeRequest.fromPartial({})), EMPTY_KEY);
  assert.doesNotThrow(() => checkPut(PutRequest.fromPartial({ key: k('a'), ignoreValue: true })));
  assert.throws(() => checkPut(PutRequest.fromPartial({ key: k('a'), ignoreValue: true, value: k('x') })), invalid('value is provided'));
  assert.throws(() => checkPut(PutRequest.fromPartial({ key: k('a'), ignoreLease: true, lease: 5n })), invalid('lease is provided'));
});

test('too many operations: the largest of compares, success and failure, nested budgets shrink', () => {
  const many = (n: number) => Array.from({ length: n }, (_, i) => put(`k${i}`));
  ok(txn(many(3)), '', 3);
  refused(txn(many(4)), TOO_MANY, '', 3);
  refused(txn([], many(4)), TOO_MANY, '', 3);
  refused(txn([], [], [cmp('a'), cmp('b'), cmp('c'), cmp('d')]), TOO_MANY, '', 3);
  // A nested txn gets what its parent left: parent 2 ops of 4 -> nested may have 2.
  ok(txn([put('a'), nested([put('b'), put('c')])]), '', 4);
  refused(txn([put('a'), nested([put('b'), put('c'), put('d')])]), TOO_MANY, '', 4);
});

test('empty keys in compares or ops, and empty ops', () => {
  refused(txn([], [], [cmp('')]), EMPTY_KEY);
  refused(txn([put('')]), EMPTY_KEY);
  refused(txn([], [get('')]), EMPTY_KEY);
  refused(txn([del('')]), EMPTY_KEY);
  refused(txn([nested([put('')])]), EMPTY_KEY);
  refused(txn([RequestOp.fromPartial({})]), invalid('key not found'));
  ok(txn([]));
});

test('duplicate keys: puts, puts in nested transactions, deletes overlapping puts', () => {
  refused(txn([put('a'), put('a')]), DUP);
  ok(txn([put('a')], [put('a')]), 'success and failure are exclusive');
  ok(txn([put('a'), put('b'), get('a'), get('a')]), 'reads may repeat');
  ok(txn([del('a'), del('a')]), 'deletes may repeat');
  refused(txn([put('a'), del('a')]), DUP);
  refused(txn([del('a', 'c'), put('b')]), DUP);
  ok(txn([del('a', 'c'), put('c')]), 'range ends are exclusive');
  // etcd's affine intervals: range_end "\0" is not +inf there, so etcd lets a from-key delete overlap a
  // put (etcd 3.4 quirk); the members see a real range and would refuse, so metaetcd refuses it up front.
  refused(txn([delFrom('a'), put('zzz')]), FROM_KEY_PUT, 'a put inside a from-key delete (metaetcd caveat)');
  refused(txn([put('a'), delFrom('a')]), FROM_KEY_PUT, 'a from-key delete over an earlier put');
  refused(txn([delFrom('b'), nested([put('c')])]), FROM_KEY_PUT, 'nested');
  ok(txn([delFrom('b'), put('a')]), 'a put before the from-key range');
  refused(txn([put('a'), nested([put('a')])]), DUP);
  refused(txn([nested([put('a')]), nested([put('a')])]), DUP);
  refused(txn([del('a', 'z'), nested([put('m')])]), DUP);
  refused(txn([nested([del('a', 'z')]), put('m')]), DUP, 'a nested delete overlaps a parent put');
  ok(txn([nested([put('a')], [put('a')])]), 'then and else of one nested txn are exclusive');
  refused(txn([nested([put('a')]), nested([], [put('a')])]), DUP);
  refused(txn([nested([nested([put('a')])]), put('a')]), DUP, 'two levels deep');
  refused(txn([], [put('x'), nested([], [put('x')])]), DUP, 'the failure branch is checked too');
});
