// Locks and elections under contention, differential: every scenario runs
// against one plain etcd (every client on it) and against the proxy over three
// members through two proxies (clients split over both), and the two must
// behave alike.
//
//   (a) `etcdctl lock NAME -- cmd`, 6 holders at once (Go's concurrency.Mutex:
//       each holder's key is NAME/<lease ID hex>, on whatever member it hashes
//       to; a waiter reads every key of the prefix and waits for the deletion
//       of the one created last before its own — reads over every member). The
//       commands append start/end lines to one log: they must never
//       interleave, all six must run, in the order of their keys' create
//       revisions (the Mutex is FIFO), and no lock key may be left. Through the
//       proxy the keys must land on at least two members (checked with the
//       router), so that the ordering is one across members.
//   (b) the etcd3 npm client's Lock (a single key, acquire fails while held),
//       8 acquirers retrying through both proxies, each doing a
//       read-modify-write of a counter (a get, then a put; no transaction)
//       under the lock: no increment is lost.
//   (c) `etcdctl elect` with 3 candidates elected in a known order and an
//       `etcdctl elect -l` observer: the leader is stopped (SIGTERM, it
//       resigns) in turn; the observer reports each leader exactly once, in
//       election order, the same sequence as on etcd.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Etcd3, EtcdLockFailedError } from 'etcd3';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { RangeRequest_SortOrder, RangeRequest_SortTarget } from '../../src/proto/gen/rpc.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { etcdctl, type EtcdctlResult } from '../harness/etcdctl.js';
import { sleep, waitUntil } from '../harness/faults.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { prefixEnd } from '../harness/watch-checker.js';

const BOUND = { timeout: 90_000 };

type Target = 'etcd' | 'proxy';
const TARGETS: Target[] = ['etcd', 'proxy'];

let set: EtcdSet;
let P1: TestProxy;
let P2: TestProxy;
/** Per target: the two endpoints clients are split over (host:port for etcdctl, URLs for the clients). */
const endpoints: Record<Target, string[]> = { etcd: [], proxy: [] };
const urls: Record<Target, string[]> = { etcd: [], proxy: [] };
const raws: EtcdClient[] = [];

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'lockc' });
  [P1, P2] = await Promise.all([startTestProxy(set), startTestProxy(set)]);
  const oracle = set.oracle!.clientUrl;
  endpoints.etcd = [oracle.replace('http://', ''), oracle.replace('http://', '')];
  urls.etcd = [oracle, oracle];
  endpoints.proxy = [P1.endpoint, P2.endpoint];
  urls.proxy = [P1.url, P2.url];
});

after(async () => {
  for (const r of raws) r.close();
  await P1?.stop();
  await P2?.stop();
  await set?.stop();
});

function raw(t: Target): EtcdClient {
  const c = clientFor(urls[t][0]!, `${t} raw`);
  raws.push(c);
  return c;
}

const describe = (r: EtcdctlResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

async function keysUnder(c: EtcdClient, prefix: string): Promise<string[]> {
  const r = await c.range({ key: Buffer.from(prefix), rangeEnd: prefixEnd(prefix), keysOnly: true });
  return r.kvs.map((kv) => kv.key.toString());
}

// ---------------------------------------------------------------------------
// (a) etcdctl lock

interface LockRound {
  /** The log lines, in order. */
  lines: string[];
  /** Holder name -> its lock key and the key's create revision (ETCD_LOCK_KEY, ETCD_LOCK_REV). */
  held: Map<string, { key: string; rev: bigint }>;
}

const HOLDERS = 6;

async function lockRound(t: Target, name: string): Promise<LockRound> {
  const dir = mkdtempSync(join(tmpdir(), 'metaetcd-lockc-'));
  try {
    const log = join(dir, 'log');
    const holder = (i: number) =>
      etcdctl(
        endpoints[t][i % 2]!,
        ['lock', name, '--', 'sh', '-c', `echo "start h${i} $ETCD_LOCK_KEY $ETCD_LOCK_REV" >> ${log}; sleep 0.1; echo "end h${i}" >> ${log}`],
        { timeoutMs: 60_000 },
      );
    const results = await Promise.all(Array.from({ length: HOLDERS }, (_, i) => holder(i)));
    for (const r of results) assert.equal(r.code, 0, `${t}: a lock holder failed: ${describe(r)}`);
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    const held = new Map<string, { key: string; rev: bigint }>();
    for (const l of lines) {
      const [what, who, key, rev] = l.split(' ');
      if (what === 'start') held.set(who!, { key: key!, rev: BigInt(rev!) });
    }
    return { lines, held };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Mutual exclusion, every holder ran once, FIFO by create revision; returns the problems. */
function judgeLockRound(t: Target, name: string, round: LockRound): string[] {
  const problems: string[] = [];
  const { lines } = round;
  if (lines.length !== 2 * HOLDERS) problems.push(`${lines.length} log lines, expected ${2 * HOLDERS}`);
  const ran = new Set<string>();
  for (let i = 0; i < lines.length; i += 2) {
    const [s, who] = lines[i]!.split(' ');
    const [e, whoEnd] = (lines[i + 1] ?? '').split(' ');
    if (s !== 'start' || e !== 'end' || who !== whoEnd) problems.push(`lines ${i}-${i + 1} are "${lines[i]}" / "${lines[i + 1]}": not the start and end of one holder`);
    if (ran.has(who!)) problems.push(`${who} ran twice`);
    ran.add(who!);
  }
  if (ran.size !== HOLDERS) problems.push(`${ran.size} holders ran, expected ${HOLDERS}`);
  const revs = lines.filter((l) => l.startsWith('start ')).map((l) => round.held.get(l.split(' ')[1]!)!);
  for (let i = 1; i < revs.length; i++) {
    if (!(revs[i]!.rev > revs[i - 1]!.rev)) problems.push(`holder ${i} in log order has key revision ${revs[i]!.rev}, not above the previous holder's ${revs[i - 1]!.rev} (the Mutex is FIFO by create revision)`);
  }
  for (const { key } of round.held.values()) if (!key.startsWith(`${name}/`)) problems.push(`lock key ${key} is not under ${name}/`);
  return problems.map((p) => `${t}: ${p}\n  log: ${lines.join(' | ')}`);
}

test('(a) etcdctl lock: 6 holders through 2 proxies (keys on several members) run one at a time, in create-revision order, as on etcd', BOUND, async () => {
  const router = P1.handle.router;
  for (const t of TARGETS) {
    const c = raw(t);
    let members = new Set<number>();
    // The holders' keys are NAME/<lease ID>: where they land depends on the lease IDs. Through the proxy, another
    // round (same checks) when all of them happened to hash to one member (chance 3^-5 per round).
    for (let attempt = 0; attempt < 3; attempt++) {
      const name = `lockc-a-${t}-${attempt}`;
      const round = await lockRound(t, name);
      assert.deepEqual(judgeLockRound(t, name, round), []);
      assert.deepEqual(await keysUnder(c, `${name}/`), [], `${t}: no lock key left under ${name}/`);
      assert.deepEqual(await keysUnder(c, name), [], `${t}: nothing left under ${name}`);
      if (t === 'etcd') break;
      members = new Set([...round.held.values()].map((h) => router.memberOf(Buffer.from(h.key))));
      console.log(`(a) ${t}: lock keys ${[...round.held.values()].map((h) => `${h.key}@${h.rev}->m${router.memberOf(Buffer.from(h.key))}`).join(' ')}`);
      if (members.size >= 2) break;
    }
    if (t === 'proxy') assert.ok(members.size >= 2, `the lock keys landed on one member in three rounds: ${[...members].join(',')}`);
  }
});

// ---------------------------------------------------------------------------
// (b) the etcd3 client's Lock around a read-modify-write

const ACQUIRERS = 8;
const INCREMENTS_EACH = 3;

test('(b) etcd3 Lock: 8 acquirers through 2 proxies increment a counter by get-then-put under the lock; no increment lost, as on etcd', BOUND, async () => {
  const router = P1.handle.router;
  // The lock key and the counter on different members (through the proxy).
  const lockKey = 'lockc-b/lock';
  let counterKey = 'lockc-b/counter';
  for (let i = 0; router.memberOf(Buffer.from(counterKey)) === router.memberOf(Buffer.from(lockKey)); i++) counterKey = `lockc-b/counter${i}`;
  for (const t of TARGETS) {
    const clients = urls[t].map((u) => new Etcd3({ hosts: u, dialTimeout: 5000 }));
    try {
      await clients[0]!.put(counterKey).value('0');
      let failedAcquires = 0;
      let inside = 0;
      let overlaps = 0;
      const acquirer = async (i: number) => {
        const c = clients[i % 2]!;
        for (let n = 0; n < INCREMENTS_EACH; n++) {
          const deadline = Date.now() + 60_000;
          for (;;) {
            try {
              await c
                .lock(lockKey)
                .ttl(10)
                .do(async () => {
                  if (++inside > 1) overlaps++;
                  try {
                    const v = Number(await c.get(counterKey).string());
                    await sleep(5);
                    await c.put(counterKey).value(String(v + 1));
                  } finally {
                    inside--;
                  }
                });
              break;
            } catch (err) {
              if (!(err instanceof EtcdLockFailedError)) throw err;
              failedAcquires++;
              if (Date.now() > deadline) throw new Error(`acquirer ${i}: could not take the lock within 60 s`);
              await sleep(5 + ((i * 7 + n * 13) % 20));
            }
          }
        }
      };
      await Promise.all(Array.from({ length: ACQUIRERS }, (_, i) => acquirer(i)));
      const final = await clients[1]!.get(counterKey).string();
      assert.equal(overlaps, 0, `${t}: two bodies ran under the lock at once`);
      assert.equal(final, String(ACQUIRERS * INCREMENTS_EACH), `${t}: the counter after ${ACQUIRERS * INCREMENTS_EACH} increments under the lock`);
      assert.equal(await clients[0]!.get(lockKey).string(), null, `${t}: the lock key is gone`);
      console.log(`(b) ${t}: counter ${final}, ${failedAcquires} failed acquires retried${t === 'proxy' ? ` (lock on member ${router.memberOf(Buffer.from(lockKey))}, counter on ${router.memberOf(Buffer.from(counterKey))})` : ''}`);
    } finally {
      for (const c of clients) c.close();
    }
  }
});

// ---------------------------------------------------------------------------
// (c) etcdctl elect with an observer

const CANDIDATES = ['alpha', 'beta', 'gamma'];

async function electRound(t: Target, name: string): Promise<{ heard: string[]; outputs: string[] }> {
  const c = raw(t);
  const stops = CANDIDATES.map(() => new AbortController());
  const observerStop = new AbortController();
  const running: Promise<EtcdctlResult>[] = [];
  const printed = CANDIDATES.map(() => '');
  try {
    const proposals = async () => (await c.range({ key: Buffer.from(`${name}/`), rangeEnd: prefixEnd(`${name}/`), sortOrder: RangeRequest_SortOrder.ASCEND, sortTarget: RangeRequest_SortTarget.CREATE })).kvs.map((kv) => kv.value.toString());
    // Candidates campaign one after another, alternating endpoints: their keys' create revisions give the order.
    for (const [i, who] of CANDIDATES.entries()) {
      running.push(etcdctl(endpoints[t][i % 2]!, ['elect', name, who], { stop: stops[i]!.signal, timeoutMs: 60_000, onStdout: (out) => (printed[i] = out) }));
      await waitUntil(`${t}: ${who} campaigns`, async () => (await proposals()).join(',') === CANDIDATES.slice(0, i + 1).join(','), 20_000, 50);
    }
    let heardSoFar = '';
    const observer = etcdctl(endpoints[t][1]!, ['elect', '-l', name], { stop: observerStop.signal, timeoutMs: 60_000, onStdout: (out) => (heardSoFar = out) });
    const heardNames = () => heardSoFar.split('\n').filter((l) => CANDIDATES.includes(l));
    await waitUntil(`${t}: the observer hears alpha`, () => heardNames().length >= 1, 20_000, 20);
    for (const [i, who] of CANDIDATES.entries()) {
      // The leader learns it leads (and prints its proposal) once the keys before its own are gone; then it is stopped.
      await waitUntil(`${t}: ${who} knows it leads`, () => printed[i]!.includes(`\n${who}\n`), 20_000, 20);
      for (const [j, other] of CANDIDATES.entries()) if (j > i) assert.equal(printed[j], '', `${t}: ${other} printed before ${who} resigned`);
      stops[i]!.abort();
      const out = await running[i]!;
      assert.match(out.stdout, new RegExp(`^${name}/[0-9a-f]+\\n${who}\\n`), `${t}: ${who} was elected (printed its key and proposal): ${describe(out)}`);
      await waitUntil(`${t}: ${who}'s key gone`, async () => !(await proposals()).includes(who), 20_000, 50);
      if (i + 1 < CANDIDATES.length) await waitUntil(`${t}: the observer hears ${CANDIDATES[i + 1]}`, () => heardNames().length >= i + 2, 20_000, 20);
    }
    // Nobody leads any more; give the observer a moment to print anything more it would.
    await sleep(300);
    observerStop.abort();
    const heard = (await observer).stdout;
    return { heard: heard.split('\n').filter((l) => CANDIDATES.includes(l)), outputs: [heard] };
  } finally {
    for (const s of stops) s.abort();
    observerStop.abort();
    await Promise.allSettled(running);
  }
}

test('(c) etcdctl elect: 3 candidates through 2 proxies, the leader stopped in turn; an observer sees each leader once, in election order, as on etcd', BOUND, async () => {
  const heard: Record<Target, string[]> = { etcd: [], proxy: [] };
  for (const t of TARGETS) {
    const name = `lockc-c-${t}`;
    const r = await electRound(t, name);
    heard[t] = r.heard;
    assert.deepEqual(await keysUnder(raw(t), `${name}/`), [], `${t}: no campaign key left`);
  }
  assert.deepEqual(heard.etcd, CANDIDATES, `etcd's observer: ${heard.etcd.join(',')}`);
  assert.deepEqual(heard.proxy, heard.etcd, 'the observer through the proxy sees the same leaders as on etcd');
});
