// "No empty revisions" for writes that change nothing: the same sequence against
// one plain etcd and against the proxy over 3 members, and after every step the
// store's revision must have moved by exactly as much on both (etcd moves it
// once per change, never for a transaction whose branch taken only reads or a
// delete that finds nothing). Answers are compared too: succeeded, deleted,
// values, and the inner range headers against the outer header. First on keys
// the proxy knows (its key cache saw them written), then where the cache cannot
// tell: through a second proxy started after the keys were written, with VALUE
// compares, and over one member with compares and deletes over a range.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { Compare_CompareResult, Compare_CompareTarget, type DeepPartial, type TxnRequest } from '../../src/proto/gen/rpc.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';

let set: EtcdSet;
let proxy: TestProxy;
let oracle: EtcdClient;
let client: EtcdClient;

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'quiet' });
  proxy = await startTestProxy(set);
  oracle = clientFor(set.oracle!.clientUrl, 'oracle');
  client = clientFor(proxy.url, 'proxy');
});
after(async () => {
  client?.close();
  oracle?.close();
  try {
    await proxy?.stop();
  } finally {
    await set?.stop();
  }
});

const B = (s: string) => Buffer.from(s);

/** The current revision, by a read. */
async function current(c: EtcdClient): Promise<bigint> {
  return (await c.range({ key: B('\0'), countOnly: true })).header!.revision;
}

interface Side {
  c: EtcdClient;
  rev: bigint;
}

/** Runs `step` on the oracle and on `proxy` (this file's proxy by default) and checks the revision moved by the same amount (and by `moves`). */
/** `proxyMoves`: the proxy's move where a documented caveat differs from etcd's `moves`. */
async function both<T>(name: string, moves: bigint, step: (c: EtcdClient) => Promise<T>, same: (t: T) => unknown, proxy: EtcdClient = client, proxyMoves = moves): Promise<void> {
  const sides: Side[] = [
    { c: oracle, rev: await current(oracle) },
    { c: proxy, rev: await current(proxy) },
  ];
  const answers: unknown[] = [];
  for (const s of sides) {
    const answer = await step(s.c);
    const now = await current(s.c);
    const expected = s.c === oracle ? moves : proxyMoves;
    assert.equal(now - s.rev, expected, `${name}: the ${s.c === oracle ? 'oracle' : 'proxy'}'s revision moved by ${now - s.rev}, expected ${expected}`);
    answers.push(same(answer));
  }
  assert.deepEqual(answers[1], answers[0], `${name}: answers differ`);
}

const modIs = (key: string, rev: bigint): DeepPartial<TxnRequest>['compare'] => [
  { key: B(key), target: Compare_CompareTarget.MOD, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'modRevision', value: rev } },
];

/** What of a transaction response both sides must agree on, and that inner headers match the outer one. */
function txnShape(r: Awaited<ReturnType<EtcdClient['txn']>>) {
  const outer = r.header!.revision;
  return {
    succeeded: r.succeeded,
    ops: r.responses.map((op) => {
      const v = op.response;
      if (v?.$case === 'responseRange') {
        assert.equal(v.value.header!.revision, outer, 'an inner range header carries the transaction revision');
        return { range: v.value.kvs.map((kv) => [kv.key.toString(), kv.value.toString(), kv.version]) };
      }
      if (v?.$case === 'responseDeleteRange') return { deleted: v.value.deleted, prev: v.value.prevKvs.length };
      if (v?.$case === 'responsePut') return { put: true };
      return { other: v?.$case };
    }),
  };
}

test('a failed compare with a branch of reads takes no revision (kube-apiserver conflicting update)', async () => {
  for (const c of [oracle, client]) await c.put({ key: B('/registry/pods/a'), value: B('v1') });
  await both('conflicting update', 0n, (c) => c.txnPartial({ compare: modIs('/registry/pods/a', 1n), success: [{ request: { $case: 'requestPut', value: { key: B('/registry/pods/a'), value: B('v2') } } }], failure: [{ request: { $case: 'requestRange', value: { key: B('/registry/pods/a') } } }] }), txnShape);
  // The update that follows takes exactly one revision on both.
  await both('update', 1n, (c) => c.put({ key: B('/registry/pods/a'), value: B('v3') }), () => true);
});

test('a create of an existing key (failed ModRevision == 0 compare) takes no revision', async () => {
  await both('create of an existing key', 0n, (c) => c.txnPartial({ compare: modIs('/registry/pods/a', 0n), success: [{ request: { $case: 'requestPut', value: { key: B('/registry/pods/a'), value: B('x') } } }], failure: [{ request: { $case: 'requestRange', value: { key: B('/registry/pods/a') } } }] }), txnShape);
});

test("kube-apiserver's compactor transaction on compact_rev_key: the losing side takes no revision", async () => {
  const key = 'compact_rev_key';
  const compactor = (c: EtcdClient, version: bigint) =>
    c.txnPartial({
      compare: [{ key: B(key), target: Compare_CompareTarget.VERSION, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'version', value: version } }],
      success: [{ request: { $case: 'requestPut', value: { key: B(key), value: B('7') } } }],
      failure: [{ request: { $case: 'requestRange', value: { key: B(key) } } }],
    });
  await both('first compactor (wins)', 1n, (c) => compactor(c, 0n), txnShape);
  await both('second compactor with the old version (loses)', 0n, (c) => compactor(c, 0n), txnShape);
});

test('deletes that find nothing take no revision, alone and inside a transaction', async () => {
  for (const c of [oracle, client]) {
    await c.put({ key: B('/gone'), value: B('1') });
    await c.deleteRange({ key: B('/gone') });
  }
  await both('delete of a deleted key', 0n, (c) => c.deleteRange({ key: B('/gone'), prevKv: true }), (r) => ({ deleted: r.deleted, prev: r.prevKvs.length }));
  await both('transaction deleting a deleted key and reading another', 0n, (c) => c.txnPartial({ success: [{ request: { $case: 'requestDeleteRange', value: { key: B('/gone') } } }, { request: { $case: 'requestRange', value: { key: B('/registry/pods/a') } } }] }), txnShape);
  // A delete that does find its key still takes one.
  for (const c of [oracle, client]) await c.put({ key: B('/gone'), value: B('2') });
  await both('delete of a present key', 1n, (c) => c.deleteRange({ key: B('/gone') }), (r) => r.deleted);
});

test('an update whose compare holds still takes exactly one revision', async () => {
  for (const c of [oracle, client]) await c.put({ key: B('/registry/pods/b'), value: B('1') });
  const revs = await Promise.all([oracle, client].map(async (c) => (await c.range({ key: B('/registry/pods/b') })).kvs[0]!.modRevision));
  await both('update with the right revision', 1n, (c) => c.txnPartial({ compare: modIs('/registry/pods/b', revs[c === oracle ? 0 : 1]!), success: [{ request: { $case: 'requestPut', value: { key: B('/registry/pods/b'), value: B('2') } } }], failure: [{ request: { $case: 'requestRange', value: { key: B('/registry/pods/b') } } }] }), txnShape);
});

test('concurrent conflicting updates of one key through one proxy: one revision per update that succeeds, as in etcd', async () => {
  // kube-apiserver's optimistic updates: read, then "if mod == what I read then put else get",
  // from many clients at once. The conflicts arise while the winning update is still in flight.
  const key = '/registry/pods/contended';
  for (const c of [oracle, client]) await c.put({ key: B(key), value: B('0') });
  for (const [name, c] of [['oracle', oracle], ['proxy', client]] as const) {
    const start = await current(c);
    let succeeded = 0;
    let failed = 0;
    await Promise.all(
      Array.from({ length: 12 }, async (_, w) => {
        for (let i = 0; i < 15; i++) {
          const seen = (await c.range({ key: B(key) })).kvs[0]!.modRevision;
          const r = await c.txnPartial({ compare: modIs(key, seen), success: [put(key, `${w}-${i}`)], failure: [get(key)] });
          if (r.succeeded) succeeded++;
          else {
            failed++;
            const got = r.responses[0]!.response;
            assert.ok(got?.$case === 'responseRange' && got.value.kvs.length === 1 && got.value.kvs[0]!.modRevision > seen, `${name}: a failed update reads the newer value`);
          }
        }
      }),
    );
    assert.ok(succeeded > 0 && failed > 0, `${name}: the updates conflicted (${succeeded} succeeded, ${failed} failed)`);
    assert.equal((await current(c)) - start, BigInt(succeeded), `${name}: the revision moved once per update that succeeded (${succeeded} of ${succeeded + failed})`);
  }
});

// The same, where the proxy's key cache cannot tell what the transaction writes:
// keys written before the proxy serving the request started (a second proxy
// beside the first, whose cache never saw them), VALUE compares (the cache holds
// no values), compares and deletes over a range.

const put = (key: string, value: string) => ({ request: { $case: 'requestPut' as const, value: { key: B(key), value: B(value) } } });
const get = (key: string, rangeEnd?: string) => ({ request: { $case: 'requestRange' as const, value: { key: B(key), ...(rangeEnd ? { rangeEnd: B(rangeEnd) } : {}) } } });
const del = (key: string, rangeEnd?: string) => ({ request: { $case: 'requestDeleteRange' as const, value: { key: B(key), ...(rangeEnd ? { rangeEnd: B(rangeEnd) } : {}) } } });
const valueIs = (key: string, value: string): DeepPartial<TxnRequest>['compare'] => [
  { key: B(key), target: Compare_CompareTarget.VALUE, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'value', value: B(value) } },
];

/** Keys for transactions over two members (two of them are on different members). */
const SPAN = Array.from({ length: 6 }, (_, i) => `/cold/span-${i}`);

describe('a second proxy, started after the keys were written (its key cache never saw them)', () => {
  let cold: TestProxy;
  let fresh: EtcdClient;
  before(async () => {
    for (const c of [oracle, client]) for (const k of ['/cold/pod', '/cold/exists', '/cold/value', '/cold/compact', ...SPAN]) await c.put({ key: B(k), value: B('v1') });
    cold = await startTestProxy(set);
    fresh = clientFor(cold.url, 'second proxy');
  });
  after(async () => {
    fresh?.close();
    await cold?.stop();
  });
  const on = <T>(name: string, moves: bigint, step: (c: EtcdClient) => Promise<T>, same: (t: T) => unknown, proxyMoves = moves) => both(name, moves, step, same, fresh, proxyMoves);
  const deleted = (r: { deleted: bigint; prevKvs: unknown[] }) => ({ deleted: r.deleted, prev: r.prevKvs.length });

  test('a conflicting update takes no revision', () => on('conflicting update', 0n, (c) => c.txnPartial({ compare: modIs('/cold/pod', 1n), success: [put('/cold/pod', 'v2')], failure: [get('/cold/pod')] }), txnShape));
  // The caveat: a create of a key this proxy never saw is taken as absent (no read before every
  // create); when it exists after all, the answer is etcd's but its revision is left empty.
  test('a create of an existing key it never saw answers as etcd, leaving one empty revision (the caveat)', () =>
    on('create of an existing key', 0n, (c) => c.txnPartial({ compare: modIs('/cold/exists', 0n), success: [put('/cold/exists', 'x')], failure: [get('/cold/exists')] }), txnShape, 1n));
  test('a failed VALUE compare takes no revision', async () => {
    await on('failed VALUE compare', 0n, (c) => c.txnPartial({ compare: valueIs('/cold/value', 'other'), success: [put('/cold/value', 'v2')], failure: [get('/cold/value')] }), txnShape);
    await on('failed VALUE compare on a missing key', 0n, (c) => c.txnPartial({ compare: valueIs('/cold/missing', ''), success: [put('/cold/missing', 'v')] }), txnShape);
  });
  test("the compactor's losing transaction takes no revision", () =>
    on(
      'compactor with an old version',
      0n,
      (c) =>
        c.txnPartial({
          // The version the compactor last saw, long gone (a compare with 0 is a create: see the caveat above).
          compare: [{ key: B('/cold/compact'), target: Compare_CompareTarget.VERSION, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'version', value: 5n } }],
          success: [put('/cold/compact', '9')],
          failure: [get('/cold/compact')],
        }),
      txnShape,
    ));
  test('deletes of a key never written take no revision, alone and inside a transaction', async () => {
    await on('delete of a key never written', 0n, (c) => c.deleteRange({ key: B('/cold/never'), prevKv: true }), deleted);
    await on('transaction deleting a missing key and reading another', 0n, (c) => c.txnPartial({ success: [del('/cold/never'), get('/cold/pod')] }), txnShape);
    // One key (the writes of a transaction must be on one member): absent, so its compare fails and its delete finds nothing.
    await on('failed compare whose other branch deletes a missing key', 0n, (c) => c.txnPartial({ compare: modIs('/cold/absent', 5n), success: [put('/cold/absent', 'v')], failure: [del('/cold/absent'), get('/cold/pod')] }), txnShape);
  });
  test('a transaction over two members whose compare fails takes no revision; one whose compare holds takes one', async () => {
    const a = SPAN[0]!;
    const other = SPAN.find((k) => proxy.handle.router.memberOf(B(k)) !== proxy.handle.router.memberOf(B(a)))!;
    assert.ok(other, 'two keys on different members');
    const txnOver = (value: string) => (c: EtcdClient) =>
      c.txnPartial({ compare: [...valueIs(a, value)!, ...valueIs(other, 'v1')!], success: [put(a, 'v2'), put(other, 'v2')], failure: [get(a), get(other)] });
    await on('cross-member transaction whose VALUE compare fails', 0n, txnOver('other'), txnShape);
    await on('cross-member transaction whose VALUE compares hold', 1n, txnOver('v1'), txnShape);
  });
  test('what does write still takes exactly one revision', async () => {
    await on('VALUE compare that holds', 1n, (c) => c.txnPartial({ compare: valueIs('/cold/value', 'v1'), success: [put('/cold/value', 'v2')], failure: [get('/cold/value')] }), txnShape);
    await on('create of a new key', 1n, (c) => c.txnPartial({ compare: modIs('/cold/new', 0n), success: [put('/cold/new', 'v')], failure: [get('/cold/new')] }), txnShape);
    await on('delete of a key the proxy has not seen', 1n, (c) => c.deleteRange({ key: B('/cold/exists'), prevKv: true }), deleted);
    await on('plain put of a key the proxy has not seen', 1n, (c) => c.put({ key: B('/cold/pod'), value: B('v3') }), () => true);
  });
});

describe('over one member: compares and deletes over a range', () => {
  // With one member every range is on it (with several, a writing transaction may not hold a range).
  let one: EtcdSet;
  let lone: TestProxy;
  let p: EtcdClient;
  before(async () => {
    one = await startEtcdSet({ name: 'quiet-one', members: 1 });
    lone = await startTestProxy(one);
    p = clientFor(lone.url, 'one-member proxy');
    for (const c of [oracle, p]) for (const k of ['/r/a', '/r/b']) await c.put({ key: B(k), value: B('1') });
  });
  after(async () => {
    p?.close();
    try {
      await lone?.stop();
    } finally {
      await one?.stop();
    }
  });
  const on = <T>(name: string, moves: bigint, step: (c: EtcdClient) => Promise<T>, same: (t: T) => unknown) => both(name, moves, step, same, p);
  const versionOfRange = (v: bigint): DeepPartial<TxnRequest>['compare'] => [
    { key: B('/r/'), rangeEnd: B('/r0'), target: Compare_CompareTarget.VERSION, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'version', value: v } },
  ];

  test('a failed compare over a range takes no revision', () => on('failed compare over a range', 0n, (c) => c.txnPartial({ compare: versionOfRange(7n), success: [put('/r/a', '2')], failure: [get('/r/', '/r0')] }), txnShape));
  test('a range delete that finds nothing takes no revision, alone and inside a transaction', async () => {
    await on('range delete that finds nothing', 0n, (c) => c.deleteRange({ key: B('/none/'), rangeEnd: B('/none0'), prevKv: true }), (r) => ({ deleted: r.deleted, prev: r.prevKvs.length }));
    await on('transaction with a range delete that finds nothing', 0n, (c) => c.txnPartial({ success: [del('/none/', '/none0'), get('/r/', '/r0')] }), txnShape);
  });
  test('a compare over a range that holds and a range delete that finds keys take one revision each', async () => {
    await on('compare over a range that holds', 1n, (c) => c.txnPartial({ compare: versionOfRange(1n), success: [put('/r/a', '2')], failure: [get('/r/', '/r0')] }), txnShape);
    await on('range delete that finds keys', 1n, (c) => c.deleteRange({ key: B('/r/'), rangeEnd: B('/r0') }), (r) => r.deleted);
  });
});
