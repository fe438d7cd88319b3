// The transaction compiler, without etcd: the member transaction a write sends
// (guards, op order, slot chain), what a member response says, and how member
// responses become client responses.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tick } from '../../src/clock/clock.js';
import { SlotGroup } from '../../src/clock/slot-group.js';
import { compileClientOps, type WriteInput } from '../../src/kv/txn/member-ops.js';
import { checkTakenRanges, type PastRevisions } from '../../src/kv/txn/taken-ranges.js';
import { attemptOutcome, buildMemberTxn } from '../../src/kv/txn/member-txn.js';
import { metaRevision, translateResponses } from '../../src/kv/txn/responses.js';
import { compareLookup, stateOps, type WriteState } from '../../src/kv/txn/write-state.js';
import { compareToPath } from '../../src/kv/txn-compare.js';
import { planTxn, type TxnPlan } from '../../src/kv/txn-plan.js';
import type { KeyValue } from '../../src/proto/gen/kv.js';
import { cmp, op, txn } from '../../src/proto/build.js';
import { type Compare, Compare_CompareResult, Compare_CompareTarget, type RequestOp, type ResponseOp, type TxnRequest, type TxnResponse } from '../../src/proto/gen/rpc.js';
import { newLayout, Router } from '../../src/shard/layout.js';
import { ClockKind, clockAtLeastValue, clockGuardValue, encodeClockRecord } from '../../src/store/clock-record.js';
import { decodeEnvelope, encodeEnvelope } from '../../src/store/envelope.js';
import { InternalKey, toMemberKey } from '../../src/store/keyspace.js';

const b = (s: string) => Buffer.from(s);
const mk = (s: string) => toMemberKey(b(s));
const NO_PAST: PastRevisions = new Map();
const ONE_MEMBER = new Router(newLayout('0123456789abcdef', 1));

/** A member key-value as stored: value enveloped with its meta revisions. */
function stored(key: string, memberRev: number, metaRev: number, value = 'old', versionBase = 0): KeyValue {
  return {
    key: mk(key),
    createRevision: BigInt(memberRev),
    modRevision: BigInt(memberRev),
    version: 1n,
    value: encodeEnvelope({ modRevision: metaRev, createRevision: metaRev, lease: 0n, versionBase, value: b(value) }),
    lease: 0n,
  };
}

function stateOf(keys: Record<string, KeyValue | undefined>, clock?: number): WriteState {
  return { memberRevision: 5, clock, keys: new Map(Object.entries(keys).map(([k, v]) => [mk(k).toString('latin1'), v])), ranges: new Map() };
}

function tickOf(revisions: number[], own: number, first = 0): Tick {
  const group = new SlotGroup();
  for (const revision of revisions) group.add({ revision, allocation: [revision] });
  return { ...group.slots.find((s) => s.revision === own)!, group, first };
}

function inputOf(req: TxnRequest, state: WriteState, plan: TxnPlan = planTxn(ONE_MEMBER, req)): WriteInput {
  return { req, plan, path: compareToPath(req, compareLookup(state)), state, past: NO_PAST };
}

function compile(input: WriteInput, tick: Tick) {
  checkTakenRanges(input.req, input.path, -1, input.past);
  const own = compileClientOps(input, tick.revision);
  return { own, write: buildMemberTxn(input, own, tick, stateOps(input.plan)) };
}

/** One slot's level of the chain: if clock < R then ops, clock := R else next. */
function slotLevel(R: number, ops: RequestOp[], next: RequestOp[]): RequestOp {
  const record = encodeClockRecord({ revision: R, kind: ClockKind.Write, allocation: [R] });
  return op.txn(txn([cmp.valueLess(InternalKey.clock, clockGuardValue(R))], [...ops, op.put(InternalKey.clock, record)], next));
}

const putAt = (key: string, value: string, R: number, createRevision = R, versionBase = 0) =>
  op.put(mk(key), encodeEnvelope({ modRevision: R, createRevision, lease: 0n, versionBase, value: b(value) }));

test('a simple put: guarded by the key as read, one slot, the state read again on failure', () => {
  const req = txn([], [op.put(b('k'), b('v'))]);
  const input = inputOf(req, stateOf({ k: undefined }));
  const { own, write } = compile(input, tickOf([7], 7));
  assert.deepEqual(write.txn, txn([cmp.modEqual(mk('k'), 0)], [slotLevel(7, [putAt('k', 'v', 7)], [op.range(InternalKey.clock)])], [op.range(InternalKey.clock), op.range(mk('k'))]));
  assert.deepEqual(write.slots.map((s) => s.revision), [7]);
  assert.deepEqual(own.written, [{ key: mk('k').toString('latin1'), put: { version: 1n, versionBase: 0, createRevision: undefined, lease: 0n } }]);
});

test('a put over an existing key keeps its create revision and is guarded by its member mod revision', () => {
  const req = txn([], [op.put(b('k'), b('new'))]);
  const input = inputOf(req, stateOf({ k: stored('k', 4, 3) }));
  const { write } = compile(input, tickOf([9], 9));
  assert.deepEqual(write.txn.compare, [cmp.modEqual(mk('k'), 4)]);
  assert.deepEqual(write.txn.success, [slotLevel(9, [putAt('k', 'new', 9, 3)], [op.range(InternalKey.clock)])]);
});

test('a put over a key copied by a move keeps its version base: the reported version continues', () => {
  // Member version 1 + base 6: the client saw version 7 before the move.
  const versionIs7: Compare = { key: b('k'), rangeEnd: Buffer.alloc(0), target: Compare_CompareTarget.VERSION, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'version', value: 7n } };
  const req = txn([versionIs7], [op.put(b('k'), b('new'))]);
  const input = inputOf(req, stateOf({ k: stored('k', 4, 3, 'old', 6) }));
  assert.deepEqual(input.path, [true]);
  const { own, write } = compile(input, tickOf([9], 9));
  assert.deepEqual(write.txn.success, [slotLevel(9, [putAt('k', 'new', 9, 3, 6)], [op.range(InternalKey.clock)])]);
  assert.deepEqual(own.written, [{ key: mk('k').toString('latin1'), put: { version: 8n, versionBase: 6, createRevision: 3, lease: 0n } }]);
});

test('a guarded create, If ModRevision(k) == 0 Then Put Else Get: the branch follows the state read', () => {
  const req = txn([cmp.modEqual(b('k'), 0)], [op.put(b('k'), b('v'))], [op.range(b('k'))]);
  const absent = inputOf(req, stateOf({ k: undefined }));
  assert.deepEqual(absent.path, [true]);
  assert.deepEqual(compile(absent, tickOf([5], 5)).write.txn.success, [slotLevel(5, [putAt('k', 'v', 5)], [op.range(InternalKey.clock)])]);

  const present = inputOf(req, stateOf({ k: stored('k', 4, 3) }));
  assert.deepEqual(present.path, [false]);
  const { own, write } = compile(present, tickOf([5], 5));
  // The Get is read inside the member transaction; the clock still moves to R (the transaction has a revision).
  assert.deepEqual(write.txn.success, [slotLevel(5, [op.range(mk('k'), { limit: 0n })], [op.range(InternalKey.clock)])]);
  assert.deepEqual(write.txn.compare, [cmp.modEqual(mk('k'), 4)]);
  assert.deepEqual(own.written, []);
});

test('nested transactions: the member ops nest like the client ops of the branch taken', () => {
  const inner = txn([cmp.modEqual(b('a'), 0)], [op.put(b('a'), b('1'))], [op.deleteRange(b('a'))]);
  const req = txn([], [op.txn(inner), op.put(b('c'), b('3'))]);
  const input = inputOf(req, stateOf({ a: stored('a', 2, 2), c: undefined }));
  assert.deepEqual(input.path, [true, false]);
  const { own, write } = compile(input, tickOf([8], 8));
  const ops = [op.txn(txn([], [op.deleteRange(mk('a'))])), putAt('c', '3', 8)];
  assert.deepEqual(write.txn.success, [slotLevel(8, ops, [op.range(InternalKey.clock)])]);
  assert.deepEqual(own.written.map((w) => [Buffer.from(w.key, 'latin1').toString(), w.put === undefined]), [['da', true], ['dc', false]]);
});

test('a slot chain of 3: each slot carries the ops enveloped with its own revision, lowest first', () => {
  const req = txn([], [op.put(b('k'), b('v'))]);
  const input = inputOf(req, stateOf({ k: undefined }));
  const { write } = compile(input, tickOf([10, 11, 12], 11));
  assert.deepEqual(write.slots.map((s) => s.revision), [10, 11, 12]);
  const chain = slotLevel(10, [putAt('k', 'v', 10)], [slotLevel(11, [putAt('k', 'v', 11)], [slotLevel(12, [putAt('k', 'v', 12)], [op.range(InternalKey.clock)])])]);
  assert.deepEqual(write.txn.success, [chain]);
});

test('slots at or below the member clock known from a failed attempt are skipped; none left: the tick alone', () => {
  const req = txn([], [op.put(b('k'), b('v'))]);
  const tick = tickOf([10, 11, 12], 11);
  assert.deepEqual(compile(inputOf(req, stateOf({ k: undefined }, 10)), tick).write.slots.map((s) => s.revision), [11, 12]);
  assert.deepEqual(compile(inputOf(req, stateOf({ k: undefined }, 12)), tick).write.slots.map((s) => s.revision), [11]);
});

test('a tick allocated after a priority revision is guarded by it', () => {
  const req = txn([], [op.put(b('k'), b('v'))]);
  const { write } = compile(inputOf(req, stateOf({ k: undefined })), tickOf([20], 20, 18));
  assert.deepEqual(write.txn.compare, [cmp.valueGreater(InternalKey.clock, clockAtLeastValue(18)), cmp.modEqual(mk('k'), 0)]);
});

test('metaRevision: m or above is R, below m is R - 1, 0 stays 0', () => {
  assert.equal(metaRevision(0, 50, 10), 0);
  assert.equal(metaRevision(10, 50, 10), 50);
  assert.equal(metaRevision(11, 50, 10), 50);
  assert.equal(metaRevision(9, 50, 10), 49);
});

const header = (revision: number) => ({ clusterId: 0n, memberId: 0n, revision: BigInt(revision), raftTerm: 0n });
const txnResponse = (succeeded: boolean, responses: ResponseOp[]): ResponseOp => ({ response: { $case: 'responseTxn', value: { header: header(10), succeeded, responses } } });
/** The member's response when the write landed at slot `slot` of its chain, answering its ops with `responses`. */
function landedAt(slot: number, responses: ResponseOp[]): TxnResponse {
  let level = txnResponse(true, responses);
  for (let j = 0; j < slot; j++) level = txnResponse(false, [level]);
  return { header: header(10), succeeded: true, responses: [level] };
}
/** The member's response when every one of `slots` slots was taken: the chain ends with the clock read. */
function allTaken(slots: number): TxnResponse {
  let level: ResponseOp = { response: { $case: 'responseRange', value: { header: header(10), kvs: [], more: false, count: 1n } } };
  for (let j = 0; j < slots; j++) level = txnResponse(false, [level]);
  return { header: header(10), succeeded: true, responses: [level] };
}

test('response translation: a read before the write shows R - 1, the put R, prev_kv in client form', () => {
  const req = txn([], [op.range(b('k')), op.put(b('k'), b('v'), { prevKv: true })]);
  const input = inputOf(req, stateOf({ k: stored('k', 4, 3) }));
  const tick = tickOf([30, 31], 30);
  const { write } = compile(input, tick);
  const member: ResponseOp[] = [
    { response: { $case: 'responseRange', value: { header: header(9), kvs: [stored('k', 4, 3)], more: false, count: 1n } } },
    { response: { $case: 'responsePut', value: { header: header(10), prevKv: stored('k', 4, 3) } } },
  ];
  // Landed at the second slot (31): the member's response nests one level deeper.
  const resp = landedAt(1, member);
  const outcome = attemptOutcome(resp, write, tick, input.plan, stateOps(input.plan));
  assert.equal(outcome.kind, 'landed');
  if (outcome.kind !== 'landed') return;
  assert.equal(outcome.slot.revision, 31);
  const out = translateResponses(input, outcome.responses, outcome.slot.revision, 10);
  assert.deepEqual(out.deferred, []);
  const client = { key: b('k'), createRevision: 3n, modRevision: 3n, version: 1n, value: b('old'), lease: 0n };
  assert.deepEqual(out.responses, [
    { response: { $case: 'responseRange', value: { header: header(30), kvs: [client], more: false, count: 1n } } },
    { response: { $case: 'responsePut', value: { header: header(31), prevKv: client } } },
  ]);
});

test('response translation of nested transactions keeps their branch', () => {
  const inner = txn([cmp.modEqual(b('k'), 0)], [op.put(b('k'), b('v'))], [op.range(b('k'), { countOnly: true })]);
  const req = txn([], [op.txn(inner)]);
  const input = inputOf(req, stateOf({ k: stored('k', 4, 3) }));
  const member: ResponseOp[] = [
    { response: { $case: 'responseTxn', value: { header: header(10), succeeded: true, responses: [{ response: { $case: 'responseRange', value: { header: header(9), kvs: [], more: false, count: 1n } } }] } } },
  ];
  const out = translateResponses(input, member, 40, 10);
  assert.deepEqual(out.responses, [
    {
      response: {
        $case: 'responseTxn',
        value: { header: header(0), succeeded: false, responses: [{ response: { $case: 'responseRange', value: { header: header(39), kvs: [], more: false, count: 1n } } }] },
      },
    },
  ]);
});

test('a read of other members after the write is served later, at R; one before a write makes it a cross-member transaction', () => {
  const router = new Router(newLayout('0123456789abcdef', 2));
  const all = { rangeEnd: b('\0') };
  const req = txn([], [op.put(b('k'), b('v')), op.range(b('a'), all)]);
  const plan = planTxn(router, req);
  const input = inputOf(req, stateOf({ k: undefined }), plan);
  const { write } = compile(input, tickOf([12], 12));
  assert.deepEqual(write.txn.success, [slotLevel(12, [putAt('k', 'v', 12), op.range(InternalKey.clock, { countOnly: true })], [op.range(InternalKey.clock)])]);
  const member: ResponseOp[] = [
    { response: { $case: 'responsePut', value: { header: header(10), prevKv: undefined } } },
    { response: { $case: 'responseRange', value: { header: header(10), kvs: [], more: false, count: 0n } } },
  ];
  const out = translateResponses(input, member, 12, 10);
  assert.equal(out.deferred.length, 1);
  assert.equal(out.deferred[0]!.revision, 12);
  assert.equal(out.deferred[0]!.response, (out.responses[1]!.response as { value: unknown }).value, 'filled in place later');

  // The single-member compiler could not answer that read as etcd would: the planner sends it the cross-member way, over its one member.
  const before = txn([], [op.range(b('a'), all), op.put(b('k'), b('v'))]);
  const planned = planTxn(router, before);
  assert.equal(planned.writeMember, undefined);
  assert.deepEqual(planned.crossMembers, [router.memberOf(b('k'))]);
});

test('attempt outcomes of a failed attempt: order lost, priority wait, stale', () => {
  const req = txn([], [op.put(b('k'), b('v'))]);
  const input = inputOf(req, stateOf({ k: undefined }));
  const failed = (clock: number): TxnResponse => ({
    header: header(11),
    succeeded: false,
    responses: [
      { response: { $case: 'responseRange', value: { header: header(11), kvs: [{ ...stored('x', 1, 1), value: encodeClockRecord({ revision: clock, kind: ClockKind.Write, allocation: [] }) }], more: false, count: 1n } } },
      { response: { $case: 'responseRange', value: { header: header(11), kvs: [stored('k', 11, clock)], more: false, count: 1n } } },
    ],
  });
  const tick = tickOf([20, 21], 20, 15);
  const { write } = compile(input, tick);
  const reads = stateOps(input.plan);
  assert.equal(attemptOutcome(failed(21), write, tick, input.plan, reads).kind, 'order-lost', 'the clock reached the top slot');
  assert.equal(attemptOutcome(failed(14), write, tick, input.plan, reads).kind, 'priority-wait', 'the priority revision 15 has not landed');
  const stale = attemptOutcome(failed(16), write, tick, input.plan, reads);
  assert.equal(stale.kind, 'stale');
  if (stale.kind === 'stale') {
    assert.equal(stale.state.clock, 16);
    assert.equal(stale.state.keys.get(mk('k').toString('latin1'))?.modRevision, 11n);
  }
  // Succeeded, but every slot tried was taken.
  assert.equal(attemptOutcome(allTaken(2), write, tick, input.plan, reads).kind, 'all-slots-taken');
});

test('ranges on the branch taken: compacted and unresolved past revisions raise, others do not', () => {
  const req = txn([], [op.range(b('k'), { revision: 3n })], [op.range(b('k'), { revision: 9n })]);
  const past: PastRevisions = new Map<number, number | Error>([[3, 2], [9, new Error('future')]]);
  assert.doesNotThrow(() => checkTakenRanges(req, [true], -1, past));
  assert.throws(() => checkTakenRanges(req, [true], 4, past), /compacted/);
  assert.throws(() => checkTakenRanges(req, [false], -1, past), /future/);
});

test('put values are enveloped with the slot revision', () => {
  const req = txn([], [op.put(b('k'), b('v'))]);
  const { own } = compile(inputOf(req, stateOf({ k: undefined })), tickOf([3], 3));
  const put = own.ops[0]!.request;
  assert.equal(put?.$case, 'requestPut');
  if (put?.$case === 'requestPut') assert.deepEqual(decodeEnvelope(put.value.value), { modRevision: 3, createRevision: 3, lease: 0n, versionBase: 0, value: b('v') });
});
