// Linearizability of multi-key transactions (test/harness/multikey-linearizability.ts),
// with a bank-style workload over 9 accounts on 3 members (3 each) and 3 note
// keys (one per member):
//   - transfers: a read of two accounts (a transaction of two gets), then a
//     transaction "if mod(a) and mod(b) are as read, put both new balances,
//     else read both" — mostly between accounts on different members, so a
//     cross-member commit;
//   - multi-key reads: one transaction of gets over every key;
//   - single-key puts of a note.
// Every value is unique (balance#writer.n), so a read tells which write it saw.
// Eight clients, four through each of two proxies; the proxy P1 (a child
// process) is killed -9 mid-run and its clients go on through P2. The recorded
// history (invocation/response times, compare outcomes, values read, header
// revisions; errors as indeterminate) must be linearizable in revision order,
// also when P1 holds its cross-member transactions after their commit or
// after their prepare (METAETCD_TEST_CROSS_HOLD) until it is killed,
// and every acknowledged read sees the balances sum to the initial total.
// The same workload against one plain etcd must pass too (the checker's
// sanity).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { Router } from '../../src/shard/layout.js';
import type { DeepPartial, RequestOp, TxnRequest, TxnResponse } from '../../src/proto/gen/rpc.js';
import { Compare_CompareResult, Compare_CompareTarget } from '../../src/proto/gen/rpc.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { ChildProxy, describeErr, sleep, waitUntil } from '../harness/faults.js';
import { checkMultiKey, describeMkOp, type MkBranch, type MkCompare, type MkOp, type MkRead, type MkReport, type MkState } from '../harness/multikey-linearizability.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';

const FENCE_AFTER_MS = 200;
const BOUND = { timeout: 90_000 };
const CLIENTS = 8;
const ACCOUNTS_PER_MEMBER = 3;
const INITIAL_BALANCE = 100;

let set: EtcdSet;
let P2: TestProxy;
const children: ChildProxy[] = [];
const closers: (() => void)[] = [];
let shutdown = false;

before(async () => {
  set = await startEtcdSet({ name: 'mklin', oracle: true });
  P2 = await startTestProxy(set, { fenceAfterMs: FENCE_AFTER_MS });
});

after(async () => {
  shutdown = true;
  for (const c of closers) c();
  for (const c of children) await c.stop();
  await P2?.stop();
  await set?.stop();
});

const B = (s: string) => Buffer.from(s);

/** `n` keys `${base}<i>` of member `m`. */
function keysOf(router: Router, base: string, m: number, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (router.memberOf(B(`${base}${i}`)) === m) out.push(`${base}${i}`);
  return out;
}

interface Keys {
  accounts: string[];
  notes: string[];
}

function keysFor(router: Router, pfx: string): Keys {
  const members = router.allMembers();
  return {
    accounts: members.flatMap((m) => keysOf(router, `${pfx}acct-`, m, ACCOUNTS_PER_MEMBER)),
    notes: members.flatMap((m) => keysOf(router, `${pfx}note-`, m, 1)),
  };
}

const balanceOf = (v: string) => Number(v.split('#')[0]);

function toRequest(compares: MkCompare[], success: MkBranch, failure: MkBranch): DeepPartial<TxnRequest> {
  const ops = (b: MkBranch): DeepPartial<RequestOp>[] => [
    ...(b.reads ?? []).map((k) => ({ request: { $case: 'requestRange' as const, value: { key: B(k) } } })),
    ...(b.puts ?? []).map((p) => ({ request: { $case: 'requestPut' as const, value: { key: B(p.key), value: B(p.value) } } })),
    ...(b.deletes ?? []).map((k) => ({ request: { $case: 'requestDeleteRange' as const, value: { key: B(k) } } })),
  ];
  return {
    compare: compares.map((c) => ({
      key: B(c.key),
      target: { value: Compare_CompareTarget.VALUE, version: Compare_CompareTarget.VERSION, create: Compare_CompareTarget.CREATE, mod: Compare_CompareTarget.MOD }[c.target],
      result: { '=': Compare_CompareResult.EQUAL, '!=': Compare_CompareResult.NOT_EQUAL, '<': Compare_CompareResult.LESS, '>': Compare_CompareResult.GREATER }[c.result],
      targetUnion:
        c.target === 'value'
          ? { $case: 'value' as const, value: B(c.value as string) }
          : c.target === 'mod'
            ? { $case: 'modRevision' as const, value: c.value as bigint }
            : c.target === 'create'
              ? { $case: 'createRevision' as const, value: c.value as bigint }
              : { $case: 'version' as const, value: c.value as bigint },
    })),
    success: ops(success),
    failure: ops(failure),
  };
}

/** The reads of the branch taken, from a response (the branch's gets come first). */
function readsOf(resp: TxnResponse, keys: string[]): MkRead[] {
  return keys.map((key, i) => {
    const r = resp.responses[i]?.response;
    const kv = r?.$case === 'responseRange' ? r.value.kvs[0] : undefined;
    return kv ? { key, value: kv.value.toString(), mod: kv.modRevision } : { key, value: null };
  });
}

interface Recorder {
  history: MkOp[];
  nextId: number;
  /** Acknowledged reads of every account whose balances did not add up. */
  badSums: string[];
}

/** Runs one transaction and records it (errors as indeterminate). */
async function run(rec: Recorder, client: string, via: string, c: EtcdClient, compares: MkCompare[], success: MkBranch, failure: MkBranch = {}): Promise<MkOp> {
  const h: MkOp = { id: rec.nextId++, client, via, compares, success, failure, start: performance.now(), end: Infinity, ok: false };
  try {
    const resp = await c.txnPartial(toRequest(compares, success, failure)); // the client's deadline
    h.end = performance.now();
    h.ok = true;
    h.succeeded = resp.succeeded;
    h.revision = resp.header!.revision;
    h.reads = readsOf(resp, (resp.succeeded ? success : failure).reads ?? []);
  } catch (err) {
    h.error = describeErr(err);
  }
  rec.history.push(h);
  return h;
}

interface Via {
  name: string;
  client: EtcdClient;
}

/** One client of the bank: transfers, reads of everything, note puts, until `stop()`. */
async function bankClient(rec: Recorder, keys: Keys, name: string, seed: number, via: () => Via, stop: () => boolean): Promise<void> {
  let n = 0;
  let x = seed;
  const rand = (k: number) => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x % k;
  };
  const everything = [...keys.accounts, ...keys.notes];
  while (!stop() && !shutdown) {
    const i = n++;
    const v = via();
    const kind = rand(10);
    let failed = false;
    if (kind < 5) {
      // A transfer: mostly between members (accounts 3k .. 3k+2 share member k).
      const a = rand(keys.accounts.length);
      let b = rand(keys.accounts.length);
      if (b === a) b = (a + ACCOUNTS_PER_MEMBER) % keys.accounts.length;
      const [ka, kb] = [keys.accounts[a]!, keys.accounts[b]!];
      const read = await run(rec, name, v.name, v.client, [], { reads: [ka, kb] });
      if (!read.ok) failed = true;
      else {
        const [ra, rb] = read.reads!;
        const amount = 1 + rand(5);
        const mods: [bigint, bigint] = [ra!.mod ?? 0n, rb!.mod ?? 0n];
        const t = await run(
          rec,
          name,
          v.name,
          v.client,
          [
            { key: ka, target: 'mod', result: '=', value: mods[0] },
            { key: kb, target: 'mod', result: '=', value: mods[1] },
          ],
          {
            puts: [
              { key: ka, value: `${balanceOf(ra!.value!) - amount}#${name}.${i}` },
              { key: kb, value: `${balanceOf(rb!.value!) + amount}#${name}.${i}` },
            ],
          },
          { reads: [ka, kb] },
        );
        failed = !t.ok;
      }
    } else if (kind < 8) {
      const r = await run(rec, name, v.name, v.client, [], { reads: everything });
      failed = !r.ok;
      if (r.ok) {
        const sum = r.reads!.filter((x) => keys.accounts.includes(x.key)).reduce((s, x) => s + (x.value === null ? 0 : balanceOf(x.value)), 0);
        if (sum !== INITIAL_BALANCE * keys.accounts.length) rec.badSums.push(`${describeMkOp(r)}: sum ${sum}`);
      }
    } else {
      const note = keys.notes[rand(keys.notes.length)]!;
      const r = await run(rec, name, v.name, v.client, [], { puts: [{ key: note, value: `note#${name}.${i}` }] });
      failed = !r.ok;
    }
    if (failed) await sleep(20);
  }
}

/** Writes the initial balances (one transaction) and returns the state as read, and its revision. */
async function initialState(c: EtcdClient, keys: Keys): Promise<{ state: MkState; revision: bigint }> {
  await c.txnPartial({ success: keys.accounts.map((k) => ({ request: { $case: 'requestPut' as const, value: { key: B(k), value: B(`${INITIAL_BALANCE}#init`) } } })) });
  const all = [...keys.accounts, ...keys.notes];
  const r = await c.txnPartial({ success: all.map((k) => ({ request: { $case: 'requestRange' as const, value: { key: B(k) } } })) });
  const state: MkState = new Map();
  r.responses.forEach((resp, i) => {
    const kv = resp.response?.$case === 'responseRange' ? resp.response.value.kvs[0] : undefined;
    if (kv) state.set(all[i]!, { value: kv.value.toString(), create: kv.createRevision, mod: kv.modRevision, version: kv.version });
  });
  return { state, revision: r.header!.revision };
}

function judge(label: string, rec: Recorder, state: MkState, revision: bigint): MkReport {
  const report = checkMultiKey(rec.history, state, revision);
  const errors = rec.history.filter((h) => !h.ok);
  const errorKinds = new Map<string, number>();
  for (const h of errors) errorKinds.set(h.error!.slice(0, 80), (errorKinds.get(h.error!.slice(0, 80)) ?? 0) + 1);
  const transfers = rec.history.filter((h) => h.compares.length > 0 && h.ok);
  console.log(
    `${label}: ${rec.history.length} operations (${report.writes} writes, ${report.readOnly} read-only; ` +
      `${transfers.filter((h) => h.succeeded).length}/${transfers.length} acknowledged transfers succeeded); ` +
      `${errors.length} errored (${report.erroredApplied} seen applied, ${report.erroredDropped} left out)` +
      `${errorKinds.size ? ': ' + [...errorKinds].map(([e, n]) => `${n}× ${e}`).join(' | ') : ''}`,
  );
  assert.equal(report.ok, true, `${label}: not linearizable: ${report.violation}\n(${report.violations.length} violations; the first ones:\n${report.violations.slice(0, 5).join('\n')})\naround the first one:\n${(report.context ?? []).join('\n')}`);
  assert.deepEqual(rec.badSums.slice(0, 5), [], `${label}: reads of every account whose balances do not add up`);
  assert.ok(transfers.filter((h) => h.succeeded).length > 20, `${label}: too few transfers succeeded to say anything`);
  return report;
}

/**
 * The workload through P1 (a child process) and P2; P1 killed -9 mid-run, its clients going on through P2.
 * With `hold`, P1 holds every cross-member transaction at that step of its commit (METAETCD_TEST_CROSS_HOLD):
 * its clients' transfers across members time out (indeterminate), and P2's readers settle them — rolled
 * forward after the commit, discarded after the prepare — so the checker must place them from what was read.
 */
async function throughTwoProxies(label: string, pfx: string, hold?: 'after-commit' | 'after-prepare'): Promise<void> {
  const router = P2.handle.router;
  const keys = keysFor(router, pfx);
  const c2 = clientFor(P2.url, 'proxy P2', 5000);
  closers.push(() => c2.close());
  const P1 = await ChildProxy.start(set, { flags: ['--fence-after', `${FENCE_AFTER_MS}ms`], ...(hold ? { env: { METAETCD_TEST_CROSS_HOLD: hold } } : {}) });
  children.push(P1);
  // Held transactions never answer: their clients give up sooner.
  const c1 = clientFor(P1.url, 'proxy P1 (child)', hold ? 2000 : 5000);
  closers.push(() => c1.close());
  await waitUntil('P1 serves', async () => (await c1.range({ key: B(pfx) }), true), 20_000, 100);
  const { state, revision } = await initialState(c2, keys);

  const rec: Recorder = { history: [], nextId: 0, badSums: [] };
  let killed = false;
  let done = false;
  const viaP1: Via = { name: 'P1', client: c1 };
  const viaP2: Via = { name: 'P2', client: c2 };
  const clients = Array.from({ length: CLIENTS }, (_, i) =>
    bankClient(rec, keys, `c${i}`, 7 + i * 31, () => (i % 2 === 0 && !killed ? viaP1 : viaP2), () => done),
  );
  const transfers = (from: number, via?: string) => rec.history.slice(from).filter((h) => h.ok && (via === undefined || h.via === via) && h.compares.length > 0 && h.succeeded).length;
  const erroredTransfers = (via: string) => rec.history.filter((h) => !h.ok && h.via === via && h.compares.length > 0).length;
  try {
    // Load through both, then the kill, then load through P2 alone.
    if (hold) await waitUntil('transfers through P1 held and timed out', () => erroredTransfers('P1') >= 4 && transfers(0, 'P2') >= 30, 45_000, 20);
    else await waitUntil('transfers through P1', () => transfers(0, 'P1') >= 30, 30_000, 20);
    await P1.kill9();
    killed = true;
    const atKill = rec.history.length;
    await waitUntil('transfers through P2 after the kill', () => transfers(atKill) >= 30, 30_000, 20);
  } finally {
    done = true;
    await Promise.all(clients);
  }
  // A last read of everything (linearizable: it settles what the dead proxy left), recorded too.
  await run(rec, 'final', 'P2', c2, [], { reads: [...keys.accounts, ...keys.notes] });
  assert.equal(rec.history.at(-1)!.ok, true, `the final read: ${rec.history.at(-1)!.error}`);
  const viaP1Errors = rec.history.filter((h) => h.via === 'P1' && !h.ok).length;
  assert.ok(viaP1Errors > 0, 'no operation through P1 failed: nothing indeterminate to check');
  const report = judge(label, rec, state, revision);
  if (hold === 'after-commit') assert.ok(report.erroredApplied > 0, 'transactions held after their commit were rolled forward, and read');
}

test('bank transfers over 3 members through 2 proxies, one killed -9 mid-run: the history of multi-key transactions is linearizable', BOUND, async () => {
  await throughTwoProxies('through 2 proxies, P1 killed', 'mkl/');
});

test('the same with P1 holding every cross-member transaction after its commit (rolled forward by the other proxy\'s readers), then killed: linearizable', BOUND, async () => {
  await throughTwoProxies('P1 holding after commit, then killed', 'mkl-commit/', 'after-commit');
});

// This run found a product bug (about one run in four): a transfer through P2 answered "compare failed" with
// failure-branch reads (at its revision - 1) showing exactly the mod revisions it compared — its revision was
// fenced by a concurrent transfer while it read its state (the held transactions make members stall past
// --fence-after), so it evaluated its compares on a later state. Reproduced deterministically by
// test/faults/cross-member-crash.test.ts: 'a cross-member transaction whose revision is fenced while it reads …'.
test('the same with P1 holding every cross-member transaction after its prepare (discarded by the other proxy\'s readers), then killed: linearizable', BOUND, async () => {
  await throughTwoProxies('P1 holding after prepare, then killed', 'mkl-prep/', 'after-prepare');
});

test('the same workload against one plain etcd: linearizable (sanity of the checker and the workload)', BOUND, async () => {
  const router = P2.handle.router;
  const keys = keysFor(router, 'mkl-etcd/');
  const c = clientFor(set.oracle!.clientUrl, 'etcd', 5000);
  closers.push(() => c.close());
  const { state, revision } = await initialState(c, keys);
  const rec: Recorder = { history: [], nextId: 0, badSums: [] };
  let done = false;
  const via: Via = { name: 'etcd', client: c };
  const clients = Array.from({ length: CLIENTS }, (_, i) => bankClient(rec, keys, `c${i}`, 7 + i * 31, () => via, () => done));
  try {
    await waitUntil('transfers on etcd', () => rec.history.filter((h) => h.ok && h.compares.length > 0 && h.succeeded).length >= 150, 30_000, 20);
  } finally {
    done = true;
    await Promise.all(clients);
  }
  judge('plain etcd', rec, state, revision);
  // The checker is not vacuous here: the same history with one read altered is refused.
  const i = rec.history.findIndex((h) => h.ok && h.compares.length === 0 && (h.reads?.length ?? 0) > 2);
  const bad = rec.history.map((h, j) => (j === i ? { ...h, reads: h.reads!.map((r, k) => (k === 0 ? { ...r, value: `${INITIAL_BALANCE}#init`, mod: revision - 1n } : r)) } : h));
  const h0 = rec.history[i]!;
  if (h0.reads![0]!.value !== `${INITIAL_BALANCE}#init`) assert.equal(checkMultiKey(bad, state, revision).ok, false, 'an altered read must be refused');
});
