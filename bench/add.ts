// `BENCH_ADD=1 npm run bench`: throughput before and after adding a member (issue 13).
// Adds and moves are made with the proxies stopped for now (docs/operations.md,
// "Adding a member"), so, like bench/move.ts, this measures the service before and
// after, and the offline steps in between: over a fresh proxy cluster of
// BENCH_ADD_MEMBERS members with the usual pods preloaded, clients run guarded
// updates and gets of random pods (half each; 10% of the updates carry a stale
// revision, as in the KV mix) for a window; then the proxy is stopped, one more
// empty etcd is started, `metaetcd members add` makes it the next member slot and
// `metaetcd rebalance` moves it its share of the partitions; the proxy is started
// again over all the members and the clients run the same window. Both windows run
// on a freshly started proxy (the first one is restarted after the preload), each
// after the same unmeasured warm-up: a restarted proxy is cold (JIT) and the
// clients' connections reconnect.
//
// Reported: keys and partitions per member before and after (`members list -w
// json`); each offline step's duration and the keys it moved; the downtime (proxy
// stopped → serving again; it includes a `members list` check between the add and
// the rebalance, shown as its own step); throughput and p50/p99 latency; the CPU
// milliseconds per op of the proxy, the members (summed) and the coordinator, read
// from /proc around each window. Everything runs on this one machine, so the new
// member brings no cores of its own: a note under the table says how throughput moved.
//
// Settings: BENCH_ADD_MEMBERS (2), BENCH_ADD_CLIENTS (32), BENCH_ADD_SECONDS (5),
// BENCH_ADD_WARMUP_SECONDS (1; 0 skips).

import os from 'node:os';
import { join } from 'node:path';
import { ConnectionPool } from './client.js';
import { runMetaetcd, scratchDir, startProxyCluster, type Target } from './cluster.js';
import { DEFAULT_SHAPE, Keyspace, preload, runMix, totalErrors, totalOps, type MixResult, type Weights } from './load.js';
import { cpuDelta, cpuSnapshot, envInt, fmt, nowMs, ratio, Samples, table } from './stats.js';

const TIMEOUT_MS = 10_000;
const WEIGHTS: Weights = { create: 0, update: 1, get: 1, list: 0, 'list-all': 0 };

interface Window {
  mix: MixResult;
  /** CPU seconds of each process over the window. */
  cpu: Map<string, number>;
  ops: number;
  errors: number;
  /** The machine's 1-minute load average when the window ended (other work on it shows here). */
  load: number;
}

/** What `members list -w json` prints (the fields used here). */
interface Listing {
  members: { endpoints: string[]; partitions: number; keys: number }[];
}

interface Step {
  name: string;
  ms: number;
  keysMoved?: number;
  output: string;
}

export async function runAddBench(): Promise<void> {
  const members = envInt('BENCH_ADD_MEMBERS', 2);
  const clients = envInt('BENCH_ADD_CLIENTS', 32);
  const seconds = envInt('BENCH_ADD_SECONDS', 5);
  const warmupSeconds = envInt('BENCH_ADD_WARMUP_SECONDS', 1, 0);
  const target = await startProxyCluster(join(scratchDir(), 'add'), { memberCount: members, nodeArgs: [] });
  const pool = new ConnectionPool(target.address, 4);
  try {
    const ks = new Keyspace(DEFAULT_SHAPE);
    await preload(pool, ks, 64, TIMEOUT_MS);
    // The proxy after the add is a fresh process (cold JIT, connections anew): restart this one
    // too, so that both windows measure a proxy started the same way with the same warm-up.
    await target.stopProxy!();
    await target.startProxy!();
    console.log(`\n[add] ${ks.pods.length} pods preloaded over ${members} members; pids ${target.processes.map((p) => `${p.label} ${p.pid}`).join(', ')}`);

    const options = { clients, weights: WEIGHTS, timeoutMs: TIMEOUT_MS };
    const window = async (when: string): Promise<Window> => {
      if (warmupSeconds > 0) {
        const warm = await runMix(pool, ks, { ...options, seconds: warmupSeconds });
        console.log(`[add] warm-up ${when}: ${totalOps(warm)} ops, ${totalErrors(warm)} errors`);
      }
      const cpuBefore = cpuSnapshot(target.processes);
      const mix = await runMix(pool, ks, { ...options, seconds });
      const cpu = cpuDelta(cpuBefore, cpuSnapshot(target.processes));
      const w = { mix, cpu, ops: totalOps(mix), errors: totalErrors(mix), load: os.loadavg()[0]! };
      console.log(`[add] window ${when}: ${w.ops} ops in ${fmt(mix.elapsedS)} s, ${w.errors} errors${w.errors ? ` (${mix.errorMessages.join(' | ')})` : ''}`);
      return w;
    };

    const before = await window(`over ${members} members`);
    const listBefore = await membersList(target);

    // Offline: proxy stopped → one more etcd → members add → (check) → rebalance → proxy serving.
    const steps: Step[] = [];
    const step = async <T>(name: string, run: () => Promise<T>, describe: (r: T) => Omit<Step, 'name' | 'ms'>): Promise<T> => {
      const t = nowMs();
      const r = await run();
      steps.push({ name, ms: nowMs() - t, ...describe(r) });
      return r;
    };
    const down = nowMs();
    await step('stop the proxy', () => target.stopProxy!(), () => ({ output: '' }));
    const oldMembers = [...target.clusters!.members];
    const coordinator = target.clusters!.coordinator;
    const newUrl = await step('start an empty etcd', () => target.addMember!(), (url) => ({ output: url }));
    const add = await step(
      `metaetcd members add (--members ${members})`,
      () => runMetaetcd(['members', 'add', '--coordinator', coordinator, '--members', oldMembers.join(','), newUrl]),
      (out) => ({ output: firstLine(out.stdout) }),
    );
    if (add.code !== 0) throw new Error(`members add failed (exit ${add.code}):\n${add.tail}`);
    const listAdded = await step(
      'metaetcd members list (check)',
      () => membersList(target),
      (l) => ({ output: `new member: ${l.members[members]?.partitions ?? '?'} partitions, ${l.members[members]?.keys ?? '?'} keys` }),
    );
    steps.find((s) => s.name.startsWith('metaetcd members add'))!.keysMoved = keysMovedBetween(listBefore, listAdded);
    const rebalance = await step(
      `metaetcd rebalance (--members ${members + 1})`,
      () => runMetaetcd(['rebalance', '--coordinator', coordinator, '--members', target.clusters!.members.join(',')]),
      (out) => ({ ...movedBy(out.stdout), output: movesSummary(out.stdout) }),
    );
    if (rebalance.code !== 0) throw new Error(`rebalance failed (exit ${rebalance.code}):\n${rebalance.tail}`);
    await step(`start the proxy (--members ${members + 1})`, () => target.startProxy!(), () => ({ output: `pid ${target.front.pid}` }));
    const downMs = nowMs() - down;

    const after = await window(`over ${members + 1} members`);
    const listAfter = await membersList(target);

    const perMember = (l: Listing, f: (m: Listing['members'][number]) => number) => l.members.map(f).join(' / ');
    const quantile = (w: Window, q: number, types: ('update' | 'get')[]) => Samples.merged(types.map((t) => w.mix.ops.get(t)!.samples)).quantile(q);
    const latency = (w: Window, q: number, types: ('update' | 'get')[]) => fmt(quantile(w, q, types));
    /** CPU seconds of the processes picked by `pick` over the window. */
    const cpuS = (w: Window, pick: (label: string) => boolean) => {
      let s = 0;
      for (const [label, v] of w.cpu) if (pick(label)) s += v;
      return s;
    };
    const cpuMs = (w: Window, pick: (label: string) => boolean) => (cpuS(w, pick) * 1000) / Math.max(1, w.ops);
    const opsPerS = (w: Window) => w.ops / w.mix.elapsedS;
    const cores = (w: Window, pick: (label: string) => boolean) => cpuS(w, pick) / w.mix.elapsedS;
    const metric = (name: string, f: (w: Window) => number, digits = 2): string[] => [name, fmt(f(before), digits), fmt(f(after), digits), ratio(f(after), f(before))];
    const text = (name: string, b: string, a: string): string[] => [name, b, a, ''];
    const isMember = (l: string) => l.startsWith('member-');
    const isServer = (l: string) => l !== 'load generator';

    console.log(`\n### Adding a member: ${members} → ${members + 1} members, proxy stopped (${clients} clients, updates and gets, ${seconds} s windows)\n`);
    console.log(
      table(
        ['', `before (${members} members)`, `after (${members + 1} members)`, 'after/before'],
        [
          text('keys per member', perMember(listBefore, (m) => m.keys), perMember(listAfter, (m) => m.keys)),
          text('partitions per member', perMember(listBefore, (m) => m.partitions), perMember(listAfter, (m) => m.partitions)),
          metric('ops/s', opsPerS, 0),
          metric('p50 ms', (w) => quantile(w, 0.5, ['update', 'get'])),
          metric('p99 ms', (w) => quantile(w, 0.99, ['update', 'get'])),
          text('update p50 / p99 ms', `${latency(before, 0.5, ['update'])} / ${latency(before, 0.99, ['update'])}`, `${latency(after, 0.5, ['update'])} / ${latency(after, 0.99, ['update'])}`),
          text('get p50 / p99 ms', `${latency(before, 0.5, ['get'])} / ${latency(before, 0.99, ['get'])}`, `${latency(after, 0.5, ['get'])} / ${latency(after, 0.99, ['get'])}`),
          metric('CPU ms/op: proxy', (w) => cpuMs(w, (l) => l === 'proxy'), 3),
          metric('CPU ms/op: members (sum)', (w) => cpuMs(w, isMember), 3),
          metric('CPU ms/op: coordinator', (w) => cpuMs(w, (l) => l === 'coordinator'), 3),
          metric('CPU ms/op: all servers', (w) => cpuMs(w, isServer), 3),
          metric('cores used: all servers', (w) => cores(w, isServer)),
          metric('cores used: load generator', (w) => cores(w, (l) => l === 'load generator')),
          text('load average (1 min) at the end', fmt(before.load), fmt(after.load)),
          text('failed ops', String(before.errors), String(after.errors)),
        ],
      ),
    );
    console.log('');
    console.log(
      table(
        ['offline step', 's', 'keys moved', 'output'],
        [
          ...steps.map((s) => [s.name, fmt(s.ms / 1000), s.keysMoved === undefined ? '' : String(s.keysMoved), cell(s.output)]),
          ['downtime (proxy stopped → serving again)', fmt(downMs / 1000), '', ''],
        ],
      ),
    );
    const change = opsPerS(after) / opsPerS(before);
    const cpus = os.cpus().length;
    const used = (w: Window) => cores(w, () => true);
    console.log(
      `\nnote: ${cpus} CPUs shared by the proxy, the coordinator, ${members + 1} member etcds and the load generator: ` +
        `the new member brings no cores of its own, so this measures what one more member costs, not the gain of spreading ` +
        `members over machines. Throughput after/before: ${ratio(opsPerS(after), opsPerS(before))} — ` +
        `${change > 1.05 ? 'it rose' : change < 0.95 ? 'it fell' : 'about the same'}.` +
        (Math.min(used(before), used(after)) < 0.75 * cpus
          ? ` The bench's processes used ${fmt(used(before))} cores before and ${fmt(used(after))} after, of ${cpus}: other work on the machine ` +
            `(load average ${fmt(before.load)} / ${fmt(after.load)}) took the rest, so the figures are noisy.`
          : ''),
    );
    if (before.errors + after.errors > 0) throw new Error(`${before.errors + after.errors} operations failed`);
  } finally {
    pool.close();
    await target.stop();
  }
}

/** `metaetcd members list -w json` over the target's current members. */
async function membersList(target: Target): Promise<Listing> {
  const out = await runMetaetcd(['members', 'list', '-w', 'json', '--coordinator', target.clusters!.coordinator, '--members', target.clusters!.members.join(',')]);
  if (out.code !== 0) throw new Error(`members list failed (exit ${out.code}):\n${out.tail}`);
  const l = JSON.parse(out.stdout) as Listing;
  if (!Array.isArray(l.members)) throw new Error(`members list -w json: no members array in ${out.stdout.slice(0, 200)}`);
  return l;
}

/** Keys that changed member between two listings: what the members holding fewer keys lost (a new member counts from 0). */
function keysMovedBetween(a: Listing, b: Listing): number {
  let lost = 0;
  for (const [i, m] of a.members.entries()) lost += Math.max(0, m.keys - (b.members[i]?.keys ?? 0));
  return lost;
}

/** The mover's `moved N partitions from member A to member B: K keys copied, ...` lines, summed. */
function movedBy(stdout: string): { keysMoved: number } {
  let keysMoved = 0;
  for (const m of stdout.matchAll(/^moved \d+ partitions from member \d+ to member \d+(?: \(resumed\))?: (\d+) keys copied/gm)) keysMoved += Number(m[1]);
  return { keysMoved };
}

function movesSummary(stdout: string): string {
  const moves = [...stdout.matchAll(/^moved (\d+) partitions from member (\d+) to member (\d+).*?frozen (\d+) ms/gm)];
  if (moves.length === 0) return firstLine(stdout);
  return moves.map((m) => `${m[1]} partitions ${m[2]}→${m[3]} (frozen ${m[4]} ms)`).join(', ');
}

function firstLine(s: string): string {
  return s.split('\n').find((l) => l.trim())?.trim() ?? '';
}

function cell(s: string): string {
  return s.replaceAll('|', '\\|');
}
