// The write executor's retry rules against a scripted member and clock (no
// etcd): which attempt outcome leads to what, which ticks are taken, and when
// a slot group's unused revisions are released.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tick } from '../../src/clock/clock.js';
import { SlotGroup } from '../../src/clock/slot-group.js';
import { CompactionState, type KvContext } from '../../src/kv/context.js';
import { KeyCache } from '../../src/kv/key-cache.js';
import { KeyTurns } from '../../src/kv/txn/key-turns.js';
import { Member, MemberSet } from '../../src/members/member.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { MemberTimeline } from '../../src/revision/member-timeline.js';
import { MemberSequencer } from '../../src/members/member-sequencer.js';
import { executeTxn } from '../../src/kv/txn/execute.js';
import { cmp, op, txn } from '../../src/proto/build.js';
import type { DeepPartial, ResponseOp, TxnRequest, TxnResponse } from '../../src/proto/gen/rpc.js';
import { newLayout, Router } from '../../src/shard/layout.js';
import { ClockKind, clockGuardValue, encodeClockRecord } from '../../src/store/clock-record.js';
import { InternalKey, toMemberKey } from '../../src/store/keyspace.js';

const b = (s: string) => Buffer.from(s);
const header = (revision: number) => ({ clusterId: 0n, memberId: 0n, revision: BigInt(revision), raftTerm: 0n });
const txnResponse = (succeeded: boolean, responses: ResponseOp[]): ResponseOp => ({ response: { $case: 'responseTxn', value: { header: header(0), succeeded, responses } } });
const rangeResponse = (kvs: { key: Buffer; value: Buffer }[]): ResponseOp => ({
  response: { $case: 'responseRange', value: { header: header(0), kvs: kvs.map((k) => ({ ...k, createRevision: 1n, modRevision: 1n, version: 1n, lease: 0n })), more: false, count: BigInt(kvs.length) } },
});

/** The member's answer when the write landed at slot `slot` (its put seen at member revision m). */
function landed(slot: number, m: number): TxnResponse {
  let level = txnResponse(true, [{ response: { $case: 'responsePut', value: { header: header(m), prevKv: undefined } } }]);
  for (let j = 0; j < slot; j++) level = txnResponse(false, [level]);
  return { header: header(m), succeeded: true, responses: [level] };
}

/** The member's answer when the state guards failed: its clock, then the key (absent). */
function refused(clock: number): TxnResponse {
  const record = encodeClockRecord({ revision: clock, kind: ClockKind.Write, allocation: [] });
  return { header: header(20), succeeded: false, responses: [rangeResponse([{ key: InternalKey.clock, value: record }]), rangeResponse([])] };
}

/** The member's answer when the guards held but every slot was taken. */
function overtaken(slots: number): TxnResponse {
  let level = rangeResponse([]);
  for (let j = 0; j < slots; j++) level = txnResponse(false, [level]);
  return { header: header(20), succeeded: true, responses: [level] };
}

interface Fake {
  ctx: KvContext;
  /** Member transactions of the write, in sending order. */
  sent: TxnRequest[];
  /** Revisions released (clock := top). */
  released: number[];
  outcomes: string[];
  /** Priority flag of every tick asked for. */
  asked: boolean[];
  /** Revisions waited for on the member's timeline. */
  waited: number[];
  /** Upstream calls in order: 'tick', 'range' (a state read), 'read' (a read-only member transaction), 'write'. */
  calls: string[];
}

/** A one-member context whose clock hands out `groups` (one tick of each, in order) and whose member answers `answers`. */
function fake(groups: number[][], answers: TxnResponse[], first = 0): Fake {
  const f: Fake = { ctx: undefined as unknown as KvContext, sent: [], released: [], outcomes: [], asked: [], waited: [], calls: [] };
  const ticks: Tick[] = groups.map((revisions) => {
    const group = new SlotGroup();
    for (const revision of revisions) group.add({ revision, allocation: [revision] });
    return { ...group.slots[0]!, group, first };
  });
  const member = {
    range: async () => {
      f.calls.push('range');
      return { header: header(5), kvs: [], more: false, count: 0n };
    },
    txn: async (req: DeepPartial<TxnRequest>, o?: { readOnly?: boolean }) => {
      const t = req as TxnRequest;
      const put = t.success[0]?.request;
      if (t.success.length === 1 && put?.$case === 'requestPut' && put.value.key.equals(InternalKey.clock)) {
        f.released.push(Number(put.value.value.readBigUInt64BE(0)));
        return { header: header(0), succeeded: true, responses: [] };
      }
      f.calls.push(o?.readOnly ? 'read' : 'write');
      f.sent.push(t);
      const answer = answers.shift();
      if (!answer) throw new Error('no scripted answer left');
      return answer;
    },
  };
  f.ctx = {
    router: new Router(newLayout('0123456789abcdef', 1)),
    members: new MemberSet([
      new Member(
        0,
        member as unknown as EtcdClient,
        { link: { connected: true }, waitFor: async (target: number) => void f.waited.push(target) } as unknown as MemberTimeline,
        new MemberSequencer(Infinity),
      ),
    ]),
    keyCache: new KeyCache(100),
    writeTurns: new KeyTurns(1000),
    clock: {
      tick: async (_m: number, priority: boolean) => {
        f.calls.push('tick');
        f.asked.push(priority);
        const t = ticks.shift();
        if (!t) throw new Error('no tick left');
        return t;
      },
    },
    compaction: new CompactionState(),
    leases: { exists: async () => true, attached: () => undefined },
    limits: { maxRequestBytes: 1 << 20, maxTxnOps: 128, requestTimeoutMs: 1000, batchWrites: false },
    metrics: { writeAttempts: { inc: (l: { outcome: string }) => f.outcomes.push(l.outcome) } },
    log: { debug: () => undefined },
  } as unknown as KvContext;
  return f;
}

const PUT = txn([], [op.put(b('k'), b('v'))]);

test('landing at once: the put answered at the tick revision, nothing released', async () => {
  const f = fake([[7]], [landed(0, 6)]);
  const out = await executeTxn(f.ctx, PUT);
  assert.equal(out.revision, 7);
  assert.deepEqual(out.responses, [{ response: { $case: 'responsePut', value: { header: header(7), prevKv: undefined } } }]);
  assert.deepEqual(f.outcomes, ['ok']);
  assert.deepEqual(f.released, []);
  assert.equal(f.ctx.members.get(0).sequencer.pending, 0);
  assert.equal(f.ctx.keyCache.get(toMemberKey(b('k')).toString('latin1'))?.present?.modRevision, 7);
});

test('stale: retried in the same tick with the state the failed attempt read', async () => {
  const f = fake([[7]], [refused(3), landed(0, 21)]);
  const out = await executeTxn(f.ctx, PUT);
  assert.equal(out.revision, 7);
  assert.deepEqual(f.outcomes, ['stale', 'ok']);
  assert.deepEqual(f.asked, [false]);
  assert.equal(f.sent.length, 2);
  assert.deepEqual(f.sent[1]!.compare, [cmp.modEqual(toMemberKey(b('k')), 0)]);
});

test('order lost: the old tick is given up (its group released) and a new one taken', async () => {
  const f = fake([[7], [9]], [refused(7), landed(0, 21)]);
  const out = await executeTxn(f.ctx, PUT);
  assert.equal(out.revision, 9);
  assert.deepEqual(f.outcomes, ['order', 'ok']);
  assert.deepEqual(f.released, [7]);
  const guard = (f.sent[1]!.success[0]!.request as { value: TxnRequest }).value.compare;
  assert.deepEqual(guard, [cmp.valueLess(InternalKey.clock, clockGuardValue(9))]);
});

test('every slot taken counts as an order loss; after three, the write asks for a priority revision', async () => {
  const f = fake([[1, 2], [3], [4], [5]], [overtaken(2), refused(3), refused(4), landed(0, 30)]);
  const out = await executeTxn(f.ctx, PUT);
  assert.equal(out.revision, 5);
  assert.deepEqual(f.outcomes, ['order', 'order', 'order', 'ok']);
  assert.deepEqual(f.asked, [false, false, false, true]);
  // 3 and 4 are released; the group [1, 2] was handed to two writes and the other one has not finished.
  assert.deepEqual(f.released, [3, 4]);
  assert.equal(f.ctx.members.get(0).sequencer.pending, 0);
});

test('priority wait: a refused write allocated after a priority revision waits for it, then retries in the same tick', async () => {
  const f = fake([[7]], [refused(3), landed(0, 21)], 5);
  const out = await executeTxn(f.ctx, PUT);
  assert.equal(out.revision, 7);
  assert.deepEqual(f.outcomes, ['priority', 'ok']);
  assert.deepEqual(f.waited, [5]);
  assert.deepEqual(f.asked, [false]);
});

test('a write that fails gives its tick up', async () => {
  const f = fake([[7]], []);
  await assert.rejects(executeTxn(f.ctx, PUT), /no scripted answer left/);
  assert.deepEqual(f.released, [7]);
  assert.equal(f.ctx.members.get(0).sequencer.pending, 0);
});

const CREATE = txn([cmp.modEqual(b('k'), 0)], [op.put(b('k'), b('v'))], [op.range(b('k'))]);

test('a key the cache knows: a conditional update takes its tick at once, reading nothing', async () => {
  const f = fake([[7]], [landed(0, 6)]);
  f.ctx.keyCache.set(toMemberKey(b('k')).toString('latin1'), { rev: 4, present: { version: 1n, versionBase: 0, createRevision: 3, modRevision: 3, lease: 0n } });
  const out = await executeTxn(f.ctx, txn([cmp.modEqual(b('k'), 3)], [op.put(b('k'), b('v'))], [op.range(b('k'))]));
  assert.equal(out.revision, 7);
  assert.deepEqual(f.calls, ['tick', 'write']);
});

test('a plain put of a key the cache does not know reads it in parallel with taking its tick', async () => {
  const f = fake([[7]], [landed(0, 6)]);
  await executeTxn(f.ctx, PUT);
  assert.deepEqual(f.calls, ['tick', 'range', 'write']);
});

test('a create of a key the cache does not know takes it as absent: its tick at once, no read, the member guard checks', async () => {
  const f = fake([[7]], [landed(0, 6)]);
  const out = await executeTxn(f.ctx, CREATE);
  assert.equal(out.revision, 7);
  assert.deepEqual(f.calls, ['tick', 'write']);
  assert.deepEqual(f.sent[0]!.compare, [cmp.modEqual(toMemberKey(b('k')), 0)]);
});

test('a create of a key the cache knows is absent takes its tick at once', async () => {
  const f = fake([[7]], [landed(0, 6)]);
  f.ctx.keyCache.set(toMemberKey(b('k')).toString('latin1'), { rev: 4 });
  await executeTxn(f.ctx, CREATE);
  assert.deepEqual(f.calls, ['tick', 'write']);
});
