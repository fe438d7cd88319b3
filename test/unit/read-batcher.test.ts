// The member read batcher against a scripted member client (no etcd): when
// reads share a call, what each read gets back, and how a failed batch is
// answered read by read. Against real etcd the batcher is exercised by every
// suite that reads under concurrency (kv, multi-proxy, linearizability).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { MemberReadBatcher } from '../../src/members/read-batcher.js';
import type { RangeRequest, RangeResponse, ResponseOp, TxnRequest, TxnResponse } from '../../src/proto/gen/rpc.js';
import { InternalKey } from '../../src/store/keyspace.js';

const b = (s: string) => Buffer.from(s);

/** A member that answers each range op with one kv whose value names the key and revision asked for. */
class ScriptedMember {
  readonly calls: TxnRequest[] = [];
  private gates: (() => void)[] = [];
  /** Keys whose range fails the whole transaction (as a compacted revision would). */
  readonly failing = new Set<string>();
  held = false;

  async txn(req: TxnRequest): Promise<TxnResponse> {
    this.calls.push(req);
    if (this.held) await new Promise<void>((go) => this.gates.push(go));
    const ranges = req.success.map((o) => (o.request?.$case === 'requestRange' ? o.request.value : undefined));
    if (ranges.some((r) => r && this.failing.has(r.key.toString()))) throw new Error('etcdserver: mvcc: required revision has been compacted');
    return {
      header: undefined,
      succeeded: true,
      responses: ranges.map((r): ResponseOp => ({ response: { $case: 'responseRange', value: answer(r!) } })),
    };
  }

  release(): void {
    this.held = false;
    for (const g of this.gates.splice(0)) g();
  }
}

function answer(r: RangeRequest): RangeResponse {
  const value = b(`${r.key.toString()}@${r.revision}${r.serializable ? ' s' : ''}`);
  return { header: undefined, kvs: [{ key: r.key, value, createRevision: 1n, modRevision: 1n, version: 1n, lease: 0n }], more: false, count: 1n };
}

const ranges = (t: TxnRequest) => t.success.map((o) => (o.request?.$case === 'requestRange' ? o.request.value.key.toString() : '?'));

function batcher(maxInFlight = 1): { m: ScriptedMember; reads: MemberReadBatcher } {
  const m = new ScriptedMember();
  return { m, reads: new MemberReadBatcher(m as unknown as EtcdClient, maxInFlight) };
}

test('a read with nothing in flight goes out alone, at once', async () => {
  const { m, reads } = batcher();
  const got = await reads.read({ key: b('a'), revision: 5n }, false);
  assert.equal(m.calls.length, 1);
  assert.deepEqual(ranges(m.calls[0]!), ['a']);
  assert.equal(got.range.kvs[0]!.value.toString(), 'a@5 s', 'serializable, at its own revision');
  assert.equal(got.clock, undefined);
});

test('reads that arrive while a call is in flight share the next call, each with its own revision and answer', async () => {
  const { m, reads } = batcher();
  m.held = true;
  const first = reads.read({ key: b('a') }, true);
  await Promise.resolve();
  const rest = [reads.read({ key: b('b'), revision: 7n }, false), reads.read({ key: b('c') }, true), reads.read({ key: b('d'), revision: 9n }, false)];
  assert.equal(m.calls.length, 1, 'the others wait for the call in flight');
  m.release();
  await first;
  m.release();
  const got = await Promise.all(rest);
  assert.equal(m.calls.length, 2, 'three reads, one call');
  assert.deepEqual(ranges(m.calls[1]!), [InternalKey.clock.toString(), 'b', 'c', 'd'], 'the clock record once, first');
  assert.deepEqual(got.map((g) => g.range.kvs[0]!.value.toString()), ['b@7 s', 'c@0 s', 'd@9 s']);
  assert.equal(got[0]!.clock, undefined, 'a read that did not ask for the clock record gets none');
  assert.equal(got[1]!.clock!.kvs[0]!.key.toString(), InternalKey.clock.toString());
});

test('a batch that fails as a whole is answered read by read: only the failing read fails', async () => {
  const { m, reads } = batcher();
  m.held = true;
  const first = reads.read({ key: b('x') }, false);
  await Promise.resolve();
  m.failing.add('bad');
  const ok1 = reads.read({ key: b('good1') }, false);
  const bad = reads.read({ key: b('bad'), revision: 2n }, false);
  const ok2 = reads.read({ key: b('good2') }, false);
  m.release();
  await first;
  assert.equal((await ok1).range.kvs[0]!.value.toString(), 'good1@0 s');
  assert.equal((await ok2).range.kvs[0]!.value.toString(), 'good2@0 s');
  await assert.rejects(bad, /compacted/);
  assert.deepEqual(m.calls.slice(1).map(ranges), [['good1', 'bad', 'good2'], ['good1'], ['bad'], ['good2']]);
});

test('a batch holds at most 64 reads; the rest go in the next call', async () => {
  const { m, reads } = batcher();
  m.held = true;
  const first = reads.read({ key: b('first') }, false);
  await Promise.resolve();
  const many = Array.from({ length: 100 }, (_, i) => reads.read({ key: b(`k${i}`) }, false));
  m.release();
  await first;
  m.release();
  await Promise.all(many);
  assert.deepEqual(m.calls.map((c) => c.success.length), [1, 64, 36]);
});

test('with two batches allowed in flight, the second read goes out at once and the third waits', async () => {
  const { m, reads } = batcher(2);
  m.held = true;
  const first = reads.read({ key: b('a') }, false);
  const second = reads.read({ key: b('b') }, false);
  const third = reads.read({ key: b('c') }, false);
  const fourth = reads.read({ key: b('d') }, false);
  await Promise.resolve();
  assert.deepEqual(m.calls.map(ranges), [['a'], ['b']]);
  m.release();
  await Promise.all([first, second, third, fourth]);
  assert.deepEqual(m.calls.map(ranges), [['a'], ['b'], ['c', 'd']]);
});
