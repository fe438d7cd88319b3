// The walk over the branch a transaction takes: which ops it visits, in which
// order, with which index in their branch, and how it enters nested transactions.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { op, txn } from '../../src/proto/build.js';
import type { TxnRequest } from '../../src/proto/gen/rpc.js';
import { walkTaken, type TakenVisitor } from '../../src/kv/txn/walk.js';

const b = (s: string) => Buffer.from(s);

/** Records the walk as strings: "put a@0", "enter@1 ok", "leave". */
function trace(req: TxnRequest, path: boolean[]): string[] {
  const out: string[] = [];
  const visitor: TakenVisitor = {
    op(r, i) {
      const key = r.value.key.toString();
      out.push(`${r.$case === 'requestPut' ? 'put' : r.$case === 'requestRange' ? 'get' : 'del'} ${key}@${i}`);
    },
    enter(_t, ok, i) {
      out.push(`enter@${i} ${ok ? 'ok' : 'fail'}`);
    },
    leave(_t, ok) {
      out.push(`leave ${ok ? 'ok' : 'fail'}`);
    },
  };
  walkTaken(req, path, visitor);
  return out;
}

test('a flat transaction: the ops of the branch taken, with their index', () => {
  const req = txn([], [op.put(b('a'), b('1')), op.range(b('b'))], [op.deleteRange(b('c'))]);
  assert.deepEqual(trace(req, [true]), ['put a@0', 'get b@1']);
  assert.deepEqual(trace(req, [false]), ['del c@0']);
});

test('nested transactions: depth first in op order, each taking the branch its path entry says', () => {
  const inner1 = txn([], [op.put(b('i1s'), b(''))], [op.put(b('i1f'), b(''))]);
  const deepest = txn([], [op.range(b('d'))], [op.range(b('dfail'))]);
  const inner2 = txn([], [op.txn(deepest), op.put(b('i2s'), b(''))], [op.put(b('i2f'), b(''))]);
  const req = txn([], [op.range(b('top')), op.txn(inner1), op.txn(inner2), op.put(b('last'), b(''))]);
  // Path: top ok, inner1 fails, inner2 ok, deepest ok.
  assert.deepEqual(trace(req, [true, false, true, true]), [
    'get top@0',
    'enter@1 fail',
    'put i1f@0',
    'leave fail',
    'enter@2 ok',
    'enter@0 ok',
    'get d@0',
    'leave ok',
    'put i2s@1',
    'leave ok',
    'put last@3',
  ]);
});

test('nested transactions on the branch not taken are not visited and take no path entry', () => {
  const notTaken = txn([], [op.put(b('never'), b(''))]);
  const taken = txn([], [op.put(b('yes'), b(''))], [op.put(b('no'), b(''))]);
  const req = txn([], [op.txn(notTaken)], [op.txn(taken)]);
  assert.deepEqual(trace(req, [false, true]), ['enter@0 ok', 'put yes@0', 'leave ok']);
});

test('enter and leave are optional', () => {
  const seen: string[] = [];
  walkTaken(txn([], [op.txn(txn([], [op.range(b('x'))]))]), [true, true], { op: (r) => seen.push(r.value.key.toString()) });
  assert.deepEqual(seen, ['x']);
});

test('an empty op is refused as etcd does (key not found)', () => {
  assert.throws(() => walkTaken(txn([], [{ request: undefined }]), [true], { op: () => undefined }), /key not found/);
});
