// `npm run bench`: plain etcd vs metaetcd over three members, side by side in one
// run on one machine. The targets are direct etcd and the proxy once per worker
// count (BENCH_WORKERS). Each target gets the machine to itself in turn:
//   1. start it; the watcher fan-out test (while its processes are fresh);
//   2. preload ~5000 pods of 1 KiB; then for each client count (BENCH_CLIENTS):
//      warm up, run the KV mix, reading the CPU time of every serving process
//      (a proxy's summed over its workers) and the round-trip counters around it;
//   3. run each op type alone for a moment (at BENCH_PROBE_CLIENTS clients):
//      CPU and round trips per op type;
//   4. stop it.
// Then markdown tables with the ratios proxy/direct: the issue's compact table
// (one row per client count: ops/s, p50, proxy CPU ms/op, whole-system CPU
// ratio, coordinator round trips and member calls per write), the proxy by
// worker count with the growth over 1 worker, each client count in detail
// (ops/s and p50/p99 per op type, CPU ms per op of every process), watchers,
// and each op type alone. The bench exits 0 unless
// something broke (a target failed, more than 1% of operations failed, or a
// watcher missed an event).
//
// Settings (environment; defaults in parentheses):
//   BENCH_SECONDS (10)            KV mix duration per client count per target
//   BENCH_WARMUP_SECONDS (2)      unmeasured mix before each
//   BENCH_CLIENTS (1,64)          concurrent clients, a list: one KV mix per count; BENCH_CONNECTIONS (4) HTTP/2 connections
//   BENCH_WORKERS (1)             proxy worker counts, a list, e.g. "1,2": one proxy target per count, run as
//                                 `metaetcd --workers N` (so 1 means one process, not the proxy's default of one per
//                                 core); needs a proxy build with --workers (from its --help): one without the flag
//                                 runs only BENCH_WORKERS=1, and then no --workers is passed
//   BENCH_MIX                     e.g. "create=10,update=40,get=48,list=1.5,list-all=0.5"
//   BENCH_PROBE_SECONDS (2)       each op type alone, per target; 0 skips
//   BENCH_PROBE_CLIENTS           clients of those probes (the highest of BENCH_CLIENTS)
//   BENCH_WATCHERS (1000)         0 skips; BENCH_WATCH_PREFIXES (100), BENCH_WATCHES_PER_STREAM (100)
//   BENCH_WATCH_SECONDS (15), BENCH_WATCH_PUTS (200 puts/s), BENCH_DIRECT_WATCH (1; 0 skips etcd's)
//   BENCH_TARGETS (direct,proxy; empty: none, e.g. to run only BENCH_MOVE or BENCH_ADD), BENCH_MEMBERS (3)
//   BENCH_NO_BUILD=1              measure dist/ as it is instead of running tsc first
//   BENCH_KUBE=1                 also run the simulated Kubernetes control plane (bench/kube.ts; its BENCH_KUBE_* settings)
//   BENCH_MOVE=1                 also move partitions under an update load (bench/move.ts; its BENCH_MOVE_* settings)
//   BENCH_ADD=1                  also measure throughput before and after adding a member (bench/add.ts; its BENCH_ADD_* settings)
//   BENCH_TXN=1                  also compare transactions over one member and over two (bench/txn.ts; its BENCH_TXN_* settings)
//   BENCH_PROXY_NODE_ARGS         node flags for the proxy, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
//                                 (the profile is written when the bench stops the proxy)
//   BENCH_PROXY_FLAGS             extra proxy flags, e.g. "--write-batching off"

import os from 'node:os';
import { join } from 'node:path';
import { ConnectionPool } from './client.js';
import { buildProxy, proxyHasWorkersFlag, scratchDir, startDirect, startProxyCluster, stopEverything, type Target } from './cluster.js';
import { DEFAULT_SHAPE, DEFAULT_WEIGHTS, Keyspace, OP_TYPES, preload, runMix, totalErrors, totalOps, type MixResult, type OpType, type Weights } from './load.js';
import { roundTrips, scrapeAll, type RoundTrips } from './prom.js';
import { printMix, printProbes, printWatch, summary, targetLabel, type Cell, type Probe, type TargetResult } from './report.js';
import { cpuDelta, cpuSnapshot, descendants, nowMs, type ProcessRef } from './stats.js';
import { runWatchers, type WatchResult } from './watchers.js';
import { runKubeBench } from './kube.js';
import { runMoveBench } from './move.js';
import { runAddBench } from './add.js';
import { runTxnBench } from './txn.js';

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${raw}: expected a non-negative number`);
  return n;
}

/** "1,64" → [1, 64]: positive integers, without repeats, ascending. */
function envCounts(name: string, fallback: number[]): number[] {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const counts = raw.split(',').map((part) => Number(part.trim()));
  if (!counts.every((n) => Number.isInteger(n) && n >= 1)) throw new Error(`${name}=${raw}: expected positive integers separated by commas`);
  return [...new Set(counts)].sort((a, b) => a - b);
}

/** "create=10,update=40,..." → weights (unnamed op types keep their default). */
function mixWeights(raw: string | undefined): Weights {
  const w = { ...DEFAULT_WEIGHTS };
  if (!raw) return w;
  for (const part of raw.split(',').filter(Boolean)) {
    const [name, value] = part.split('=');
    if (!OP_TYPES.includes(name as OpType) || !Number.isFinite(Number(value)) || Number(value) < 0) {
      throw new Error(`BENCH_MIX: bad entry ${JSON.stringify(part)} (op types: ${OP_TYPES.join(', ')})`);
    }
    w[name as OpType] = Number(value);
  }
  return w;
}

function settings() {
  const targets = (process.env.BENCH_TARGETS ?? 'direct,proxy').split(',').map((s) => s.trim()).filter(Boolean);
  for (const t of targets) if (t !== 'direct' && t !== 'proxy') throw new Error(`BENCH_TARGETS: unknown target ${t} (direct, proxy)`);
  const clients = envCounts('BENCH_CLIENTS', [1, 64]);
  return {
    targets: targets as ('direct' | 'proxy')[],
    seconds: envNumber('BENCH_SECONDS', 10),
    weights: mixWeights(process.env.BENCH_MIX),
    warmupSeconds: envNumber('BENCH_WARMUP_SECONDS', 2),
    clients,
    workers: envCounts('BENCH_WORKERS', [1]),
    connections: Math.max(1, Math.floor(envNumber('BENCH_CONNECTIONS', 4))),
    probeSeconds: envNumber('BENCH_PROBE_SECONDS', 2),
    probeClients: Math.max(1, Math.floor(envNumber('BENCH_PROBE_CLIENTS', clients[clients.length - 1]!))),
    members: Math.max(1, Math.floor(envNumber('BENCH_MEMBERS', 3))),
    watchers: Math.floor(envNumber('BENCH_WATCHERS', 1000)),
    watchPrefixes: Math.max(1, Math.floor(envNumber('BENCH_WATCH_PREFIXES', 100))),
    watchesPerStream: Math.max(1, Math.floor(envNumber('BENCH_WATCHES_PER_STREAM', 100))),
    watchSeconds: envNumber('BENCH_WATCH_SECONDS', 15),
    watchPutsPerSecond: envNumber('BENCH_WATCH_PUTS', 200),
    directWatch: process.env.BENCH_DIRECT_WATCH !== '0',
    build: process.env.BENCH_NO_BUILD !== '1',
    proxyNodeArgs: (process.env.BENCH_PROXY_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
    proxyFlags: (process.env.BENCH_PROXY_FLAGS ?? '').split(/\s+/).filter(Boolean),
    requestTimeoutMs: 10_000,
  };
}
type Settings = ReturnType<typeof settings>;

/** Problems make the bench exit 1; warnings (failures under 1%) are only printed. */
const problems: string[] = [];
const warnings: string[] = [];

/** What to start: direct etcd, or the proxy with `--workers N` (undefined: no --workers flag). */
interface TargetSpec {
  kind: 'direct' | 'proxy';
  workers: number | undefined;
}

function describe(spec: TargetSpec, s: Settings): string {
  return spec.kind === 'direct' ? 'direct etcd' : `${targetLabel(spec)} over ${s.members} members`;
}

async function benchTarget(target: Target, spec: TargetSpec, s: Settings): Promise<TargetResult> {
  const label = describe(spec, s);
  // Watchers first, while the processes are fresh: their RSS is then steadier than after the KV mix.
  const watch = s.watchers > 0 && (target.kind === 'proxy' || s.directWatch) ? await watchPhase(target, spec, s, label) : undefined;
  const pool = new ConnectionPool(target.address, s.connections);
  try {
    const ks = new Keyspace(DEFAULT_SHAPE);
    const t = nowMs();
    await preload(pool, ks, s.clients[s.clients.length - 1]!, s.requestTimeoutMs);
    console.log(`\n[${label}] preloaded ${ks.pods.length} pods of ${ks.shape.valueBytes} B in ${((nowMs() - t) / 1000).toFixed(1)} s`);
    const result: TargetResult = { ...spec, cells: [], probes: new Map(), probeClients: s.probeClients, watch: watch?.result, watchError: watch?.error };
    for (const clients of s.clients) {
      const cell = await mixCell(target, pool, ks, clients, s, label);
      result.cells.push(cell);
      printMix(result, cell);
    }
    if (s.probeSeconds > 0) {
      await probes(target, pool, ks, s, label, result.probes);
      printProbes(result);
    }
    return result;
  } finally {
    pool.close();
  }
}

/** The KV mix at one client count: warm-up, then measured. */
async function mixCell(target: Target, pool: ConnectionPool, ks: Keyspace, clients: number, s: Settings, label: string): Promise<Cell> {
  const options = { clients, weights: s.weights, timeoutMs: s.requestTimeoutMs };
  if (s.warmupSeconds > 0) {
    const warm = await runMix(pool, ks, { ...options, seconds: s.warmupSeconds });
    console.log(`\n[${label}] warm-up, ${clients} clients: ${totalOps(warm)} ops, ${totalErrors(warm)} errors`);
  }
  console.log(`[${label}] KV mix: ${clients} clients over ${s.connections} connections for ${s.seconds} s`);
  const kv = await measured(target, () => runMix(pool, ks, { ...options, seconds: s.seconds }));
  checkErrors(label, `KV mix at ${clients} clients`, totalOps(kv.mix), totalErrors(kv.mix), kv.mix.errorMessages);
  return { clients, ...kv };
}

/** Each op type alone for BENCH_PROBE_SECONDS at BENCH_PROBE_CLIENTS clients. */
async function probes(target: Target, pool: ConnectionPool, ks: Keyspace, s: Settings, label: string, into: Map<OpType, Probe>): Promise<void> {
  for (const type of OP_TYPES) {
    const weights = Object.fromEntries(OP_TYPES.map((x) => [x, x === type ? 1 : 0])) as Weights;
    const p = await measured(target, () => runMix(pool, ks, { clients: s.probeClients, seconds: s.probeSeconds, weights, timeoutMs: s.requestTimeoutMs }));
    const probe: Probe = { ops: totalOps(p.mix), errors: totalErrors(p.mix), elapsedS: p.mix.elapsedS, cpu: p.cpu, rt: p.rt };
    into.set(type, probe);
    checkErrors(label, `${type} probe`, probe.ops, probe.errors, p.mix.errorMessages);
  }
}

/** Runs `work` between two readings of every process's CPU time and of the round-trip counters. */
async function measured(target: Target, work: () => Promise<MixResult>): Promise<{ mix: MixResult; cpu: Map<string, number>; rt: RoundTrips }> {
  const scrapeBefore = await scrapeAll(target.scrape);
  const cpuBefore = cpuSnapshot(target.processes);
  const mix = await work();
  const cpu = cpuDelta(cpuBefore, cpuSnapshot(target.processes));
  const rt = roundTrips(scrapeBefore, await scrapeAll(target.scrape));
  return { mix, cpu, rt };
}

function checkErrors(label: string, what: string, ok: number, errors: number, messages: string[]): void {
  if (errors === 0) return;
  const msg = `${label}: ${errors} of ${ok + errors} operations of the ${what} failed: ${messages.join(' | ')}`;
  (errors > 0.01 * (ok + errors) ? problems : warnings).push(msg);
}

async function watchPhase(target: Target, spec: TargetSpec, s: Settings, label: string): Promise<{ result?: WatchResult; error?: string }> {
  const watchPool = new ConnectionPool(target.address, Math.min(10, Math.ceil(s.watchers / s.watchesPerStream)));
  try {
    console.log(`\n[${label}] watchers: ${s.watchers} on ${s.watchPrefixes} prefixes, ${s.watchesPerStream} per stream; ${s.watchPutsPerSecond} puts/s for ${s.watchSeconds} s`);
    const w = await runWatchers(watchPool, target.front, target.processes, {
      watchers: s.watchers,
      prefixes: s.watchPrefixes,
      perStream: s.watchesPerStream,
      seconds: s.watchSeconds,
      putsPerSecond: s.watchPutsPerSecond,
      valueBytes: 512,
      timeoutMs: s.requestTimeoutMs,
    });
    printWatch(spec, w);
    if (w.delivered !== w.expected) problems.push(`${label}: watchers received ${w.delivered} events, expected ${w.expected}`);
    checkErrors(label, 'watch-test puts', w.puts - w.putErrors, w.putErrors, w.anomalies.filter((a) => a.startsWith('put')).slice(0, 1));
    return { result: w };
  } catch (err) {
    const error = err instanceof Error ? err.message : String(err);
    problems.push(`${label}: watcher test failed: ${error}`);
    console.log(`[${label}] watcher test failed: ${error}`);
    return { error };
  } finally {
    watchPool.close();
  }
}

/** Direct etcd, then the proxy once per worker count. */
function targetSpecs(s: Settings): TargetSpec[] {
  const workersFlag = s.targets.includes('proxy') && proxyHasWorkersFlag();
  if (!workersFlag && s.targets.includes('proxy') && s.workers.some((n) => n !== 1)) {
    throw new Error(`BENCH_WORKERS=${s.workers.join(',')}: this proxy build has no --workers flag (only BENCH_WORKERS=1 runs on it)`);
  }
  return s.targets.flatMap((kind): TargetSpec[] =>
    kind === 'direct' ? [{ kind, workers: undefined }] : s.workers.map((n) => ({ kind, workers: workersFlag ? n : undefined })),
  );
}

async function startTarget(spec: TargetSpec, root: string, s: Settings): Promise<Target> {
  if (spec.kind === 'direct') return startDirect(root);
  return startProxyCluster(root, { memberCount: s.members, nodeArgs: s.proxyNodeArgs, workers: spec.workers, flags: s.proxyFlags });
}

async function main(): Promise<number> {
  const s = settings();
  const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  console.log(
    `metaetcd bench — ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), load average ${load}, node ${process.version}\n` +
      `KV mix: ${s.clients.join(', ')} clients, ${s.seconds} s each per target after ${s.warmupSeconds} s warm-up; weights ${OP_TYPES.map((t) => `${t} ${s.weights[t]}`).join(', ')}\n` +
      `keyspace: ${DEFAULT_SHAPE.namespaces} namespaces × ${DEFAULT_SHAPE.podsPerNamespace} pods of ${DEFAULT_SHAPE.valueBytes} B, page limit ${DEFAULT_SHAPE.pageLimit}`,
  );
  // The opt-in phases run the proxy too, also when BENCH_TARGETS has no proxy target.
  const optIn = ['BENCH_KUBE', 'BENCH_MOVE', 'BENCH_ADD', 'BENCH_TXN'].some((v) => process.env[v] === '1');
  if ((s.targets.includes('proxy') || optIn) && s.build) {
    const t = nowMs();
    buildProxy();
    console.log(`built the proxy (tsc -p tsconfig.build.json) in ${((nowMs() - t) / 1000).toFixed(1)} s`);
  }
  const specs = targetSpecs(s);
  const root = scratchDir();
  const results: TargetResult[] = [];
  for (const [i, spec] of specs.entries()) {
    const t = nowMs();
    const target = await startTarget(spec, join(root, String(i)), s);
    console.log(`\n## ${describe(spec, s)} (started in ${((nowMs() - t) / 1000).toFixed(1)} s; pids ${target.processes.map((p) => `${p.label} ${pidList(p)}`).join(', ')})`);
    try {
      results.push(await benchTarget(target, spec, s));
    } finally {
      await target.stop();
    }
  }
  console.log('\n## Summary (proxy/direct: > 1 means the proxy is higher)\n');
  console.log(summary(results));
  // The simulated Kubernetes control plane (bench/kube.ts), opt-in: BENCH_KUBE=1.
  if (process.env.BENCH_KUBE === '1') await runKubeBench({ built: true, members: s.members });
  // Moving partitions under load (bench/move.ts), opt-in: BENCH_MOVE=1.
  if (process.env.BENCH_MOVE === '1') await runMoveBench({ members: s.members });
  // Throughput before and after adding a member (bench/add.ts), opt-in: BENCH_ADD=1.
  if (process.env.BENCH_ADD === '1') await runAddBench();
  // Transactions over one member and over two (bench/txn.ts), opt-in: BENCH_TXN=1.
  if (process.env.BENCH_TXN === '1') await runTxnBench();
  if (warnings.length) console.log(`\nWARNINGS (under 1% of operations failed):\n${warnings.map((w) => `- ${w}`).join('\n')}`);
  if (problems.length) {
    console.log(`\nPROBLEMS:\n${problems.map((p) => `- ${p}`).join('\n')}`);
    return 1;
  }
  return 0;
}

/** "1234", or "1234 (+ 5678, 5679)" for a process with descendants. */
function pidList(p: ProcessRef): string {
  const rest = p.tree ? descendants(p.pid) : [];
  return rest.length ? `${p.pid} (+ ${rest.join(', ')})` : String(p.pid);
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\nbench: ${sig}, stopping every process it started`);
    void stopEverything().finally(() => process.exit(130));
  });
}

const started = nowMs();
main()
  .then(
    (code) => code,
    (err: unknown) => {
      // After a signal, requests fail because their target is being stopped: not worth a stack.
      if (!interrupted) console.error(`\nbench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      return 1;
    },
  )
  .then(async (code) => {
    await stopEverything();
    if (interrupted) return; // the signal handler exits once everything is stopped
    console.log(`\n(bench took ${((nowMs() - started) / 1000).toFixed(0)} s)`);
    process.exit(code);
  });
