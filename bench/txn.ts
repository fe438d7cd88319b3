// `BENCH_TXN=1 npm run bench`: what a transaction over several members costs
// against one over a single member (issue 15), side by side with plain etcd.
//
// Accounts: BENCH_TXN_ACCOUNTS keys under /bank/, 1 KiB each. A transfer reads
// the two accounts' mod revisions (kept by the clients, as an STM would) and
// sends Txn(If MOD(a) == ra && MOD(b) == rb Then Put a, Put b Else Range a,
// Range b) — a failed compare refreshes the revisions from the else branch. Three
// runs of BENCH_TXN_SECONDS at each client count (BENCH_TXN_CLIENTS): plain etcd
// (any two accounts), the proxy with both accounts on one member, the proxy with
// them on two different members. Reported: transfers/s, conflicts (failed
// compares) per transfer, p50/p99 latency, proxy CPU ms per transfer, and the
// ratios cross-member / single-member.

import { join } from 'node:path';
import type { TxnResponse } from '../src/proto/gen/rpc.js';
import { Compare_CompareResult, Compare_CompareTarget } from '../src/proto/gen/rpc.js';
import { newLayout, Router } from '../src/shard/layout.js';
import { ConnectionPool, type BenchConnection } from './client.js';
import { scratchDir, startDirect, startProxyCluster, type Target } from './cluster.js';
import { cpuDelta, cpuSnapshot, envInt, fmt, nowMs, ratio, Samples, table } from './stats.js';

const TIMEOUT_MS = 10_000;
const MEMBERS = 3;

type Pairing = 'any' | 'same member' | 'cross-member';

interface Run {
  target: string;
  pairing: Pairing;
  clients: number;
  transfers: number;
  conflicts: number;
  errors: number;
  seconds: number;
  latency: Samples;
  proxyCpuSeconds: number | undefined;
}

export async function runTxnBench(): Promise<void> {
  const accounts = envInt('BENCH_TXN_ACCOUNTS', 64);
  const seconds = envInt('BENCH_TXN_SECONDS', 5);
  const clientCounts = (process.env.BENCH_TXN_CLIENTS ?? '1,16').split(',').map(Number);
  const root = join(scratchDir(), 'txn');
  const keys = Array.from({ length: accounts }, (_, i) => Buffer.from(`/bank/account-${String(i).padStart(4, '0')}`));
  const router = new Router(newLayout('bench', MEMBERS));
  const byMember = new Map<number, Buffer[]>();
  for (const k of keys) byMember.set(router.memberOf(k), [...(byMember.get(router.memberOf(k)) ?? []), k]);
  const runs: Run[] = [];

  const measure = async (t: Target, label: string, pairing: Pairing, pick: () => [Buffer, Buffer]) => {
    const pool = new ConnectionPool(t.address, 4);
    try {
      const revs = new Map<string, number>();
      const value = Buffer.alloc(1024, 0x61);
      for (const k of keys) {
        const put = await pool.get(0).txn({ success: [{ request: { $case: 'requestPut', value: { key: k, value } } }] }, TIMEOUT_MS);
        revs.set(k.toString(), Number(put.header!.revision));
      }
      for (const clients of clientCounts) {
        const proxy = t.processes.filter((p) => p.label === 'proxy');
        const before = cpuSnapshot(proxy);
        const run: Run = { target: label, pairing, clients, transfers: 0, conflicts: 0, errors: 0, seconds, latency: new Samples(), proxyCpuSeconds: undefined };
        const end = nowMs() + seconds * 1000;
        await Promise.all(
          Array.from({ length: clients }, async (_, c) => {
            while (nowMs() < end) {
              const [a, b] = pick();
              const started = nowMs();
              try {
                const resp = await transfer(pool.get(c), a, b, revs, value);
                run.latency.add(nowMs() - started);
                if (resp.succeeded) run.transfers++;
                else run.conflicts++;
                learn(resp, a, b, revs);
              } catch {
                run.errors++;
              }
            }
          }),
        );
        if (proxy.length > 0) run.proxyCpuSeconds = [...cpuDelta(before, cpuSnapshot(proxy)).entries()].filter(([l]) => l === 'proxy').reduce((s, [, v]) => s + v, 0);
        runs.push(run);
        console.log(`[txn] ${label}, ${pairing}, ${clients} clients: ${run.transfers} transfers, ${run.conflicts} conflicts, ${run.errors} errors`);
      }
    } finally {
      pool.close();
    }
  };

  const random = <T>(list: T[]): T => list[Math.floor(Math.random() * list.length)]!;
  const twoOf = (list: Buffer[]): [Buffer, Buffer] => {
    const a = random(list);
    let b = random(list);
    while (b.equals(a)) b = random(list);
    return [a, b];
  };
  const members = [...byMember.keys()].sort((x, y) => x - y);

  const direct = await startDirect(join(root, 'direct'));
  try {
    await measure(direct, 'etcd', 'any', () => twoOf(keys));
  } finally {
    await direct.stop();
  }
  const proxy = await startProxyCluster(join(root, 'proxy'), { memberCount: MEMBERS, nodeArgs: (process.env.BENCH_PROXY_NODE_ARGS ?? '').split(/\s+/).filter(Boolean) });
  try {
    await measure(proxy, 'metaetcd', 'same member', () => twoOf(byMember.get(random(members))!));
    await measure(proxy, 'metaetcd', 'cross-member', () => {
      const m1 = random(members);
      let m2 = random(members);
      while (m2 === m1) m2 = random(members);
      return [random(byMember.get(m1)!), random(byMember.get(m2)!)];
    });
  } finally {
    await proxy.stop();
  }
  print(runs);
}

function transfer(conn: BenchConnection, a: Buffer, b: Buffer, revs: Map<string, number>, value: Buffer): Promise<TxnResponse> {
  const mod = (k: Buffer) => ({
    key: k,
    target: Compare_CompareTarget.MOD,
    result: Compare_CompareResult.EQUAL,
    targetUnion: { $case: 'modRevision' as const, value: BigInt(revs.get(k.toString()) ?? 0) },
  });
  return conn.txn(
    {
      compare: [mod(a), mod(b)],
      success: [{ request: { $case: 'requestPut', value: { key: a, value } } }, { request: { $case: 'requestPut', value: { key: b, value } } }],
      failure: [{ request: { $case: 'requestRange', value: { key: a } } }, { request: { $case: 'requestRange', value: { key: b } } }],
    },
    TIMEOUT_MS,
  );
}

/** The accounts' mod revisions after a transfer (its revision) or a conflict (the else branch's reads). */
function learn(resp: TxnResponse, a: Buffer, b: Buffer, revs: Map<string, number>): void {
  if (resp.succeeded) {
    const rev = Number(resp.header!.revision);
    revs.set(a.toString(), rev);
    revs.set(b.toString(), rev);
    return;
  }
  for (const r of resp.responses) {
    if (r.response?.$case !== 'responseRange') continue;
    for (const kv of r.response.value.kvs) revs.set(kv.key.toString(), Number(kv.modRevision));
  }
}

function print(runs: Run[]): void {
  console.log('\n## Transactions: two-account transfers (BENCH_TXN)\n');
  const rows = runs.map((r) => [
    r.target,
    r.pairing,
    String(r.clients),
    fmt(r.transfers / r.seconds, 0),
    fmt(r.conflicts / Math.max(1, r.transfers), 2),
    fmt(r.latency.quantile(0.5), 2),
    fmt(r.latency.quantile(0.99), 2),
    r.proxyCpuSeconds === undefined ? '–' : fmt((r.proxyCpuSeconds * 1000) / Math.max(1, r.transfers + r.conflicts), 2),
    String(r.errors),
  ]);
  console.log(table(['target', 'accounts', 'clients', 'transfers/s', 'conflicts per transfer', 'p50 ms', 'p99 ms', 'proxy CPU ms/txn', 'errors'], rows));
  const find = (pairing: Pairing, clients: number) => runs.find((r) => r.pairing === pairing && r.clients === clients);
  const ratios = [...new Set(runs.map((r) => r.clients))].map((c) => {
    const same = find('same member', c);
    const cross = find('cross-member', c);
    const etcd = find('any', c);
    const rate = (r: Run | undefined) => (r ? r.transfers / r.seconds : NaN);
    return [String(c), ratio(rate(cross), rate(same)), ratio(cross?.latency.quantile(0.5) ?? NaN, same?.latency.quantile(0.5) ?? NaN), ratio(rate(cross), rate(etcd)), ratio(rate(same), rate(etcd))];
  });
  console.log('\n' + table(['clients', 'cross/same transfers/s', 'cross/same p50', 'cross/etcd transfers/s', 'same/etcd transfers/s'], ratios));
}
