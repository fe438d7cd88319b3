// Issue 15 (4): crash safety of cross-member transactions.
//
// Proxy P1 runs as a child process with the test hook
// METAETCD_TEST_CROSS_HOLD=<step>: the first cross-member transaction that
// reaches <step> of its protocol prints "holding after <step>" and never goes on.
// P1 is then killed -9 there. Proxy P2 (in-process, same members and
// coordinator, --fence-after 200ms) must then:
//   - answer its reads (they do not hang on the dead proxy's revisions or intents);
//   - after-prepare: show the transaction applied nowhere;
//     after-commit (primary member committed, others not yet applied) and
//     after-apply: show it applied everywhere, at one revision;
//   - at EVERY revision since the start, show either none or all of it;
//   - deliver its events through a watch (with prev_kv) in one response at that
//     one revision, or none of them;
//   - accept a later cross-member transaction on the same keys (the dead
//     proxy's intents do not block them);
// and a proxy started afterwards sees the same. While P1 holds (before the kill),
// a read through P2 must answer too, with none or all of it.
// The same with the coordinator lost (kill -9, wiped, an empty etcd on its
// address) while P1 holds after-commit, and after-prepare.
//
// A member stopped mid-commit: a proxy P1 (child, --request-timeout 2s) reaches
// the primary member through a relay (test/harness/grpc-tap.ts) that sees the
// commit (the primary's part with its m/xtxn record) before the member does.
// There the test SIGSTOPs the secondary member (prepared, not yet applied) or
// the primary itself (prepared, the commit not yet read by it), then lets the
// commit go on. The client must get an answer (success, or Unavailable /
// deadline) within a bound; a read through P2 while the member is stopped
// answers (an error, or none or all of it); once the member is continued, the
// transaction is all-or-nothing at every revision, readers do not hang, and a
// later transaction on the same keys succeeds through either proxy.
//
// Last, with the same relay holding back a transaction's read of its state
// while another transaction fences its revision: the answer must be of one
// snapshot (a product bug this found, see the comment above the test).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { Event_EventType, type KeyValue } from '../../src/proto/gen/kv.js';
import { TxnRequest, type DeepPartial } from '../../src/proto/gen/rpc.js';
import { CROSS_RECORD_PREFIX, InternalKey, toMemberKey } from '../../src/store/keyspace.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { ChildProxy, codeOf, describeErr, hang, loseAndReplace, sleep, Status, waitUntil, within } from '../harness/faults.js';
import { GrpcTap } from '../harness/grpc-tap.js';
import { checkMultiKey, type MkOp, type MkState } from '../harness/multikey-linearizability.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { describeResponse, prefixEnd, WatchRecorder } from '../harness/watch-checker.js';

const FENCE_AFTER_MS = 200;
const HOLD_ENV = 'METAETCD_TEST_CROSS_HOLD';
const BOUND = { timeout: 120_000 };

let set: EtcdSet;
let P2: TestProxy;
let c2: EtcdClient;
const children: ChildProxy[] = [];
const closers: (() => void)[] = [];
const stops: (() => Promise<void>)[] = [];

before(async () => {
  set = await startEtcdSet({ name: 'xcrash' });
  P2 = await startTestProxy(set, { fenceAfterMs: FENCE_AFTER_MS });
  c2 = clientFor(P2.url, 'proxy P2', 10_000);
});

after(async () => {
  for (const c of closers) c();
  c2?.close();
  for (const c of children) await c.stop();
  for (const s of stops) await s().catch(() => undefined);
  await P2?.stop();
  for (const m of set?.members ?? []) if (m.running) m.signal('SIGCONT');
  await set?.stop();
});

const B = (s: string) => Buffer.from(s);
const P = (prefix: string) => ({ key: B(prefix), rangeEnd: prefixEnd(prefix) });

/** Retries `f` until it succeeds (bounded); the errors seen meanwhile are returned. */
async function firstSuccess<T>(what: string, f: () => Promise<T>, timeoutMs: number): Promise<{ value: T; errors: string[] }> {
  const t0 = performance.now();
  const errors: string[] = [];
  for (;;) {
    try {
      return { value: await f(), errors };
    } catch (err) {
      errors.push(describeErr(err));
      if (performance.now() - t0 > timeoutMs) throw new Error(`${what}: no success within ${timeoutMs} ms; errors: ${errors.slice(-5).join(' | ')}`);
      await sleep(100);
    }
  }
}

type Step = 'after-prepare' | 'after-commit' | 'after-apply';

/** The state before a transaction (key → value) and after it. */
interface States {
  old: Map<string, string>;
  new: Map<string, string>;
}

interface Scenario extends States {
  keys: { k0: string; k1: string; k2: string; j1: string };
  /** The transaction P1 is sent: compare on member 0, delete on member 0, puts on members 1 (two keys) and 2. */
  txn: DeepPartial<TxnRequest>;
}

/** The `skip`-th key `${base}<i>` of member `m`. */
function keyOn(m: number, base: string, skip = 0): string {
  const found: string[] = [];
  for (let i = 0; found.length <= skip; i++) if (P2.handle.router.memberOf(B(`${base}${i}`)) === m) found.push(`${base}${i}`);
  return found[skip]!;
}

function scenario(pfx: string): Scenario {
  const keys = { k0: keyOn(0, pfx), k1: keyOn(1, pfx), k2: keyOn(2, pfx), j1: keyOn(1, pfx, 1) };
  const put = (k: string, v: string, prevKv = true) => ({ request: { $case: 'requestPut' as const, value: { key: B(k), value: B(v), prevKv } } });
  const txn: DeepPartial<TxnRequest> = {
    compare: [{ key: B(keys.k0), target: 3 /* VALUE */, result: 0 /* EQUAL */, targetUnion: { $case: 'value', value: B('old') } }],
    success: [{ request: { $case: 'requestDeleteRange', value: { key: B(keys.k0), prevKv: true } } }, put(keys.k1, 'new'), put(keys.k2, 'new'), put(keys.j1, 'new', false)],
    failure: [{ request: { $case: 'requestRange', value: { key: B(keys.k0) } } }],
  };
  const old = new Map([keys.k0, keys.k1, keys.k2].map((k) => [k, 'old']));
  const neu = new Map([keys.k1, keys.k2, keys.j1].map((k) => [k, 'new']));
  return { keys, txn, old, new: neu };
}

const stateOf = (kvs: KeyValue[]) => new Map(kvs.map((kv) => [kv.key.toString(), kv.value.toString()]));
const showState = (m: Map<string, string>) => [...m].map(([k, v]) => `${k}=${v}`).sort().join(' ');

/** Which of the two states `kvs` is: 'old', 'new', or a description of a partial one. */
function classify(s: States, kvs: KeyValue[]): 'old' | 'new' | string {
  const got = showState(stateOf(kvs));
  if (got === showState(s.old)) return 'old';
  if (got === showState(s.new)) return 'new';
  return `PARTIAL: ${got}`;
}

/**
 * The state under `pfx` through `client` at every revision from `from` to `to`
 * (a sample when the span is huge, e.g. after a coordinator loss): 'old' up to
 * some revision, 'new' from then on (when `applied`), nothing else.
 */
async function everyRevision(client: EtcdClient, s: States, pfx: string, from: bigint, to: bigint, applied: bigint | undefined, label: string): Promise<number> {
  const revs = new Set<bigint>();
  const add = (lo: bigint, hi: bigint) => {
    for (let r = lo < from ? from : lo; r <= hi && r <= to; r++) revs.add(r);
  };
  if (to - from <= 3000n) add(from, to);
  else {
    add(from, from + 500n);
    add(to - 500n, to);
    if (applied !== undefined) add(applied - 50n, applied + 50n);
  }
  const problems: string[] = [];
  const sorted = [...revs].sort((x, y) => (x < y ? -1 : 1));
  for (let i = 0; i < sorted.length; i += 16) {
    await Promise.all(
      sorted.slice(i, i + 16).map(async (rev) => {
        let kvs: KeyValue[];
        try {
          kvs = (await client.range({ ...P(pfx), revision: rev })).kvs;
        } catch (err) {
          problems.push(`read at revision ${rev} failed: ${describeErr(err)}`);
          return;
        }
        const c = classify(s, kvs);
        const want = applied !== undefined && rev >= applied ? 'new' : 'old';
        if (c !== want) problems.push(`at revision ${rev}: ${c === 'old' || c === 'new' ? `the ${c} state` : c}, expected the ${want} state${applied !== undefined ? ` (the transaction is at ${applied})` : ''}`);
      }),
    );
  }
  assert.deepEqual(problems.slice(0, 10), [], `${label}: ${problems.length} problems over ${revs.size} revisions ${from}..${to}`);
  return revs.size;
}

async function crashAt(step: Step, pfx: string, opts: { loseCoordinator?: boolean } = {}): Promise<void> {
  const s = scenario(pfx);
  const expectApplied = step !== 'after-prepare';
  const P1 = await ChildProxy.start(set, { flags: ['--fence-after', `${FENCE_AFTER_MS}ms`], env: { [HOLD_ENV]: step } });
  children.push(P1);
  const c1 = clientFor(P1.url, 'proxy P1 (child)', 30_000);
  closers.push(() => c1.close());

  // The old state, written through P2 one key at a time (single-member writes: no hold).
  let r0 = 0n;
  for (const k of s.old.keys()) r0 = (await c2.put({ key: B(k), value: B('old') })).header!.revision;
  // P1 serves and sees it.
  await firstSuccess('P1 serves', async () => assert.equal(classify(s, (await c1.range(P(pfx))).kvs), 'old'), 20_000);
  const watch = new WatchRecorder(c2, `watch via P2 ${pfx}`);
  closers.push(() => watch.close());
  watch.create({ ...P(pfx), startRevision: r0 + 1n, prevKv: true });
  await watch.untilCreated(0n);

  // The transaction through P1, which stops at `step`.
  let answer: string | undefined;
  const sent = c1.txnPartial(s.txn).then(
    (r) => void (answer = `answered succeeded=${r.succeeded} at ${r.header!.revision}`),
    (err) => void (answer = `failed: ${describeErr(err)}`),
  );
  await Promise.race([
    P1.untilOutput(`holding after ${step}`, 20_000),
    sent.then(() => {
      throw new Error(`the transaction through P1 was ${answer} instead of holding after ${step}`);
    }),
  ]);

  // While P1 holds: a read through P2 answers, with none or all of the transaction.
  const during = await c2.range(P(pfx)).then(
    (r) => classify(s, r.kvs),
    (err) => `read failed: ${describeErr(err)}`,
  );
  assert.ok(during === 'old' || during === 'new', `a read through P2 while P1 holds ${step}: ${during}`);
  if (step === 'after-prepare') assert.equal(during, 'old', 'while held after prepare, nothing is decided: nothing may be visible');

  if (opts.loseCoordinator) await loseAndReplace(set.coordinator);
  await P1.kill9();
  await sent;
  assert.ok(answer?.startsWith('failed'), `the client of the killed proxy got no success: ${answer}`);

  // P2's next linearizable read: it answers (bounded by the client deadline, or by the coordinator's rebuild), all or nothing.
  const read = await firstSuccess('linearizable read through P2 after the kill', () => c2.range(P(pfx)), opts.loseCoordinator ? 30_000 : 1);
  const state = classify(s, read.value.kvs);
  assert.equal(state, expectApplied ? 'new' : 'old', `after the kill at ${step}${opts.loseCoordinator ? ' with the coordinator lost' : ''}: P2 reads the ${expectApplied ? 'new' : 'old'} state`);
  let applied: bigint | undefined;
  if (expectApplied) {
    const revs = new Set(read.value.kvs.map((kv) => kv.modRevision));
    assert.equal(revs.size, 1, `every key of the transaction at one revision: ${read.value.kvs.map((kv) => `${kv.key}@${kv.modRevision}`).join(' ')}`);
    applied = [...revs][0]!;
    assert.ok(applied > r0, `the transaction's revision ${applied} is after the old state's ${r0}`);
    const j1 = read.value.kvs.find((kv) => kv.key.toString() === s.keys.j1)!;
    assert.deepEqual([j1.createRevision, j1.version], [applied, 1n], 'j1 created by the transaction, at its revision');
  }

  // A marker write through P2 after everything; the watch must deliver the transaction (or nothing of it), then the marker.
  const marker = await firstSuccess('marker put through P2', () => c2.put({ key: B(`${pfx}~marker`), value: B('m') }), 20_000);
  const markerRev = marker.value.header!.revision;
  await watch.until(() => watch.events(0n).some((e) => e.kv!.key.toString() === `${pfx}~marker`), 20_000, 'the marker event');
  const withEvents = watch.forId(0n).filter((r) => r.events.length > 0);
  const shape = withEvents.map((r) => r.events.map((e) => `${e.type === Event_EventType.PUT ? 'PUT' : 'DEL'} ${e.kv!.key}@${e.kv!.modRevision} prev=${e.prevKv ? `${e.prevKv.value}` : '-'}`));
  const k = s.keys;
  const expected = expectApplied
    ? [
        [`DEL ${k.k0}@${applied} prev=old`, `PUT ${k.k1}@${applied} prev=old`, `PUT ${k.k2}@${applied} prev=old`, `PUT ${k.j1}@${applied} prev=-`].sort(),
        [`PUT ${pfx}~marker@${markerRev} prev=-`],
      ]
    : [[`PUT ${pfx}~marker@${markerRev} prev=-`]];
  assert.deepEqual(
    shape.map((evs, i) => (i === 0 && expectApplied ? [...evs].sort() : evs)),
    expected,
    `the watch through P2 (one response per revision, prev_kv)\n${watch.summary()}`,
  );
  // Events of one transaction in key order? etcd delivers them in operation order; only the grouping is checked above, the order here:
  if (expectApplied) {
    assert.deepEqual(
      withEvents[0]!.events.map((e) => e.kv!.key.toString()),
      [k.k0, k.k1, k.k2, k.j1],
      `the transaction's events in operation order (as etcd): ${describeResponse(withEvents[0]!)}`,
    );
  }

  // No partial state at any revision from the old state to the marker.
  const checked = await everyRevision(c2, s, pfx, r0, markerRev - 1n, applied, `through P2 after the kill at ${step}`);
  console.log(`${step}${opts.loseCoordinator ? ' (coordinator lost)' : ''}: the client of P1 ${answer}; read while held: ${during}; P2 reads ${state}${applied ? ` at ${applied}` : ''}; ${checked} revisions checked; ${read.errors.length} failed reads before the first success`);

  // A proxy started now sees the same, and a cross-member transaction on the same keys goes through P2 (no intent left blocking it).
  const P3 = await startTestProxy(set, { fenceAfterMs: FENCE_AFTER_MS });
  stops.push(() => P3.stop());
  const c3 = clientFor(P3.url, 'proxy P3', 10_000);
  closers.push(() => c3.close());
  const seen3 = await firstSuccess('read through a new proxy', () => c3.range(P(pfx)), 20_000);
  assert.equal(classify(s, seen3.value.kvs.filter((kv) => !kv.key.toString().endsWith('~marker'))), state, 'a proxy started after the crash reads the same state');
  const again = await c2.txnPartial({
    success: [k.k0, k.k1, k.k2].map((key) => ({ request: { $case: 'requestPut' as const, value: { key: B(key), value: B('after') } } })),
  });
  const now = await c3.range(P(pfx));
  assert.deepEqual(
    now.kvs.filter((kv) => kv.value.toString() === 'after').map((kv) => `${kv.key}@${kv.modRevision}`),
    [k.k0, k.k1, k.k2].sort().map((key) => `${key}@${again.header!.revision}`),
    'a later cross-member transaction on the same keys is applied, at one revision, seen by another proxy',
  );
  await P3.stop();
}

describe('kill -9 of a proxy in the middle of a cross-member transaction', () => {
  test('held after prepare (nothing decided): applied nowhere; readers do not hang; no partial state at any revision', BOUND, async () => {
    await crashAt('after-prepare', 'xk-prep/');
  });

  test('held after commit (primary member committed, others not applied): applied everywhere at one revision; one watch response', BOUND, async () => {
    await crashAt('after-commit', 'xk-commit/');
  });

  test('held after apply: applied everywhere at one revision; one watch response', BOUND, async () => {
    await crashAt('after-apply', 'xk-apply/');
  });
});

describe('the coordinator lost while a proxy holds a cross-member transaction, then the proxy killed', () => {
  test('coordinator lost after commit: the transaction is applied everywhere at one revision, never partially', BOUND, async () => {
    await crashAt('after-commit', 'xk-coord-commit/', { loseCoordinator: true });
  });

  test('coordinator lost after prepare: the transaction is applied nowhere', BOUND, async () => {
    await crashAt('after-prepare', 'xk-coord-prep/', { loseCoordinator: true });
  });
});

// ---------------------------------------------------------------------------
// A member stopped mid-commit

/** Is `message` (a gRPC request body) the commit of a cross-member transaction: a Txn putting both an m/xtxn record and m/clock? */
function isCommit(message: Buffer): boolean {
  let req: TxnRequest;
  try {
    req = TxnRequest.decode(message);
  } catch {
    return false;
  }
  const puts = req.success.flatMap((o) => (o.request?.$case === 'requestPut' ? [o.request.value.key] : []));
  return puts.some((k) => k.subarray(0, CROSS_RECORD_PREFIX.length).equals(CROSS_RECORD_PREFIX)) && puts.some((k) => k.equals(InternalKey.clock));
}

const PRIMARY = 0;
const SECONDARY = 1;

async function memberStoppedAtCommit(which: 'secondary' | 'primary', pfx: string): Promise<void> {
  // Two keys on the primary (it has the most ops, so it decides), one on the secondary.
  const keys = { a1: keyOn(PRIMARY, pfx, 0), a2: keyOn(PRIMARY, pfx, 1), b1: keyOn(SECONDARY, pfx, 0) };
  const all = [keys.a1, keys.a2, keys.b1];
  const states: States = { old: new Map(all.map((k) => [k, 'old'])), new: new Map(all.map((k) => [k, 'new'])) };
  const put = (k: string, v: string) => ({ request: { $case: 'requestPut' as const, value: { key: B(k), value: B(v) } } });
  const txn: DeepPartial<TxnRequest> = {
    compare: [{ key: B(keys.a1), target: 3 /* VALUE */, result: 0 /* EQUAL */, targetUnion: { $case: 'value', value: B('old') } }],
    success: all.map((k) => put(k, 'new')),
    failure: [{ request: { $case: 'requestRange', value: { key: B(keys.a1) } } }],
  };
  const victim = set.members[which === 'secondary' ? SECONDARY : PRIMARY]!;
  let stopped = false;
  let continued = false;
  const tap = await GrpcTap.start(set.members[PRIMARY]!.clientUrl, async (message) => {
    if (stopped || !isCommit(message)) return;
    stopped = true;
    await hang(victim);
  });
  stops.push(() => tap.close());
  const P1 = await ChildProxy.start(set, {
    flags: ['--fence-after', `${FENCE_AFTER_MS}ms`, '--request-timeout', '2s'],
    memberUrls: set.members.map((m, i) => (i === PRIMARY ? tap.url : m.clientUrl)),
  });
  children.push(P1);
  const c1 = clientFor(P1.url, 'proxy P1 (child, through the relay)', 30_000);
  const short = clientFor(P2.url, 'proxy P2 (2 s deadline)', 2000);
  closers.push(() => c1.close(), () => short.close());

  let r0 = 0n;
  for (const k of all) r0 = (await c2.put({ key: B(k), value: B('old') })).header!.revision;
  await firstSuccess('P1 serves', async () => assert.equal(classify(states, (await c1.range(P(pfx))).kvs), 'old'), 20_000);

  let answer: { ok: true; revision: bigint; succeeded: boolean } | { ok: false; err: unknown };
  let during: string;
  try {
    // The client's own deadline (30 s) bounds the answer; `within` reports a hang beyond it plainly.
    answer = await within(45_000, 'the answer to the transaction through P1', c1.txnPartial(txn).then(
      (r) => ({ ok: true as const, revision: r.header!.revision, succeeded: r.succeeded }),
      (err: unknown) => ({ ok: false as const, err }),
    ));
    assert.ok(stopped, `the relay never saw the commit (the transaction was ${answer.ok ? 'answered' : `refused: ${describeErr(answer.err)}`})`);
    if (!answer.ok) {
      assert.ok([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED].includes(codeOf(answer.err)!), `the client got Unavailable or a deadline, not ${describeErr(answer.err)}`);
    }
    // While the member is stopped, a read through P2 answers within its deadline: an error, or none or all of the transaction.
    during = await short.range(P(pfx)).then(
      (r) => classify(states, r.kvs),
      (err) => `read failed: ${describeErr(err)}`,
    );
    assert.ok(during === 'old' || during === 'new' || during.startsWith('read failed: '), `a read through P2 while the ${which} is stopped: ${during}`);
  } finally {
    if (stopped && !continued) {
      victim.signal('SIGCONT');
      continued = true;
    }
  }

  // The member is back: readers answer (bounded), and see all or nothing.
  const read = await firstSuccess('linearizable read through P2 after the member is continued', () => c2.range(P(pfx)), 30_000);
  const state = classify(states, read.value.kvs);
  assert.ok(state === 'old' || state === 'new', `after the ${which} is back: ${state}`);
  if (answer.ok) assert.equal(state, answer.succeeded ? 'new' : 'old', 'the transaction was acknowledged: its outcome is the one reported');
  let applied: bigint | undefined;
  if (state === 'new') {
    const revs = new Set(read.value.kvs.map((kv) => kv.modRevision));
    assert.equal(revs.size, 1, `every key of the transaction at one revision: ${read.value.kvs.map((kv) => `${kv.key}@${kv.modRevision}`).join(' ')}`);
    applied = [...revs][0]!;
    if (answer.ok) assert.equal(applied, answer.revision, 'at the revision the client was told');
  }
  // Through P1 too (it went through the stop itself).
  const seen1 = await firstSuccess('linearizable read through P1', () => c1.range(P(pfx)), 30_000);
  assert.equal(classify(states, seen1.value.kvs), state, 'P1 reads the same state');
  const marker = await firstSuccess('marker put through P2', () => c2.put({ key: B(`${pfx}~marker`), value: B('m') }), 20_000);
  const checked = await everyRevision(c2, states, pfx, r0, marker.value.header!.revision - 1n, applied, `through P2 after the ${which} was stopped mid-commit`);

  // A later transaction on the same keys succeeds, through each proxy.
  for (const [name, c] of [['P2', c2], ['P1', c1]] as const) {
    const v = `after-${name}`;
    const again = await firstSuccess(`a later cross-member transaction through ${name}`, () => c.txnPartial({ success: all.map((k) => put(k, v)) }), 30_000);
    const now = await c2.range(P(pfx));
    assert.deepEqual(
      now.kvs.filter((kv) => all.includes(kv.key.toString())).map((kv) => `${kv.key}=${kv.value}@${kv.modRevision}`),
      [...all].sort().map((k) => `${k}=${v}@${again.value.header!.revision}`),
      `a later transaction through ${name} on the same keys is applied, at one revision`,
    );
  }
  console.log(
    `${which} stopped at the commit: the client ${answer.ok ? `got succeeded=${answer.succeeded} at ${answer.revision}` : `got ${describeErr(answer.err)}`}; ` +
      `read while stopped: ${during}; after: ${state}${applied ? ` at ${applied}` : ''}; ${checked} revisions checked; ${read.errors.length} failed reads before the first success`,
  );
  await P1.stop();
  await tap.close();
}

describe('a member stopped (SIGSTOP) in the middle of a cross-member transaction, then continued', () => {
  test('the secondary, prepared, stopped before the commit: the client gets an answer; all or nothing once it is back; later transactions succeed', BOUND, async () => {
    await memberStoppedAtCommit('secondary', 'xk-stop-sec/');
  });

  test('the primary stopped before it reads the commit: the client gets an answer; all or nothing once it is back; later transactions succeed', BOUND, async () => {
    await memberStoppedAtCommit('primary', 'xk-stop-prim/');
  });
});

// ---------------------------------------------------------------------------
// A cross-member transaction whose revision is fenced while it reads its state

/** Is `message` a read-only Txn of ranges (a transaction's state read) that reads member key `key`? */
function isStateRead(message: Buffer, key: Buffer): boolean {
  let req: TxnRequest;
  try {
    req = TxnRequest.decode(message);
  } catch {
    return false;
  }
  if (req.compare.length > 0 || req.success.length === 0) return false;
  return req.success.every((o) => o.request?.$case === 'requestRange') && req.success.some((o) => o.request?.$case === 'requestRange' && o.request.value.key.equals(key));
}

/*
 * Found by test/faults/multikey-linearizability.test.ts (P1 holding after prepare; about one run in four).
 * T1 (through P1) compares the mod revisions of a (member 0) and b (member 1), puts both on success, reads
 * both on failure. It takes revision R1 and waits for its members; its read of b's member is held back by a
 * relay. Meanwhile T2 (through P2) compares b and c (member 2) as they are and puts both: it takes R2 > R1,
 * finds R1 stalled on member 1 and fences it after --fence-after, and commits at R2. Then T1's read of
 * member 1 goes on and sees b as T2 left it: T1's compare fails, its branch taken writes nothing, and it is
 * answered at R1 - 1 with reads at R1 - 1 — where b is still as compared. The answer "compare failed" with
 * reads showing the compared mod revisions is no etcd answer (and not linearizable): T1 evaluated its
 * compares on a state later than the snapshot it reports. A writing branch was caught by the commit's guard
 * (m/clock < R1); the nothing-written path (nothingWritten in src/kv/txn/cross-member.ts) did not check
 * that R1 was still open when it read. Now it closes R1 itself on every member or goes again.
 */
test('a cross-member transaction whose revision is fenced while it reads: its compare outcome and its reads are of one snapshot', BOUND, async () => {
  const pfx = 'xk-fenced-read/';
  const keys = { a: keyOn(0, pfx), b: keyOn(1, pfx), c: keyOn(2, pfx) };
  const memberB = toMemberKey(B(keys.b));
  let armed = false;
  let held = false;
  let releaseRead: () => void = () => undefined;
  const released = new Promise<void>((r) => (releaseRead = r));
  const tap = await GrpcTap.start(set.members[1]!.clientUrl, async (message) => {
    if (!armed || held || !isStateRead(message, memberB)) return;
    held = true;
    await within(20_000, 'the release of the held state read', released).catch(() => undefined);
  });
  stops.push(() => tap.close());
  const P1 = await ChildProxy.start(set, { flags: ['--fence-after', `${FENCE_AFTER_MS}ms`], memberUrls: set.members.map((m, i) => (i === 1 ? tap.url : m.clientUrl)) });
  children.push(P1);
  const c1 = clientFor(P1.url, 'proxy P1 (child, through the relay)', 30_000);
  closers.push(() => c1.close());
  try {
    const initial: MkState = new Map();
    let r0 = 0n;
    for (const k of Object.values(keys)) {
      const r = await c2.put({ key: B(k), value: B(`${k}=init`) });
      r0 = r.header!.revision;
      initial.set(k, { value: `${k}=init`, create: r0, mod: r0, version: 1n });
    }
    await firstSuccess('P1 serves', () => c1.range(P(pfx)), 20_000);
    const mod = (k: string) => initial.get(k)!.mod;
    const history: MkOp[] = [];
    const record = async (client: string, c: EtcdClient, x: string, y: string, rec: MkOp) => {
      try {
        const resp = await c.txnPartial({
          compare: [x, y].map((k) => ({ key: B(k), target: 2 /* MOD */, result: 0 /* EQUAL */, targetUnion: { $case: 'modRevision' as const, value: mod(k) } })),
          success: [x, y].map((k) => ({ request: { $case: 'requestPut' as const, value: { key: B(k), value: B(`${k}=${client}`) } } })),
          failure: [x, y].map((k) => ({ request: { $case: 'requestRange' as const, value: { key: B(k) } } })),
        });
        Object.assign(rec, { end: performance.now(), ok: true, succeeded: resp.succeeded, revision: resp.header!.revision });
        rec.reads = resp.succeeded
          ? []
          : [x, y].map((key, i) => {
              const r = resp.responses[i]?.response;
              const kv = r?.$case === 'responseRange' ? r.value.kvs[0] : undefined;
              return kv ? { key, value: kv.value.toString(), mod: kv.modRevision } : { key, value: null };
            });
      } catch (err) {
        rec.error = describeErr(err);
      }
    };
    const op = (id: number, client: string, x: string, y: string): MkOp => ({
      id,
      client,
      compares: [x, y].map((k) => ({ key: k, target: 'mod' as const, result: '=' as const, value: mod(k) })),
      success: { puts: [x, y].map((k) => ({ key: k, value: `${k}=${client}` })) },
      failure: { reads: [x, y] },
      start: performance.now(),
      end: Infinity,
      ok: false,
    });
    armed = true;
    const t1 = op(1, 'T1@P1', keys.a, keys.b);
    const t1Done = record('T1@P1', c1, keys.a, keys.b, t1);
    await waitUntil('T1 reads its state', () => held, 20_000, 5);
    const t2 = op(2, 'T2@P2', keys.b, keys.c);
    await within(20_000, 'T2 through P2', record('T2@P2', c2, keys.b, keys.c, t2));
    releaseRead();
    await within(40_000, 'T1 through P1', t1Done);
    history.push(t1, t2);
    const report = checkMultiKey(history, initial, r0);
    console.log(`fenced read: T1 ${t1.ok ? `succeeded=${t1.succeeded} at ${t1.revision} reads ${JSON.stringify(t1.reads?.map((r) => `${r.key}@${r.mod}`))}` : t1.error}; T2 ${t2.ok ? `succeeded=${t2.succeeded} at ${t2.revision}` : t2.error}`);
    assert.equal(report.ok, true, report.violation);
  } finally {
    releaseRead();
    await P1.stop();
    await tap.close();
  }
});
