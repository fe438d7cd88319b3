// Starting what the bench measures, each as its own process so that its CPU can
// be read from /proc separately from the load generator's:
//   - a plain etcd, with the same flags as a member ("direct");
//   - a coordinator and three members, and the compiled proxy over them,
//     spawned as `node bin/metaetcd.js ... [--workers N]` ("proxy"); its CPU and
//     RSS are read over the process and its descendants (the workers).
// Everything started is registered in `running`, so main can stop it all on
// errors and signals; the proxy is also SIGKILLed on process exit. Processes
// are only ever signalled by their pid.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EtcdProcess, defaultScratchRoot, freePort } from '../src/sandbox/etcd-process.js';
import { memberEtcdSettings } from '../src/sandbox/member-settings.js';
import { BenchConnection } from './client.js';
import type { ScrapeTargets } from './prom.js';
import { sleep, type ProcessRef } from './stats.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The proxy's defaults (--max-request-bytes, --max-txn-ops); members get the settings for them. */
const PROXY_MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;
const PROXY_MAX_TXN_OPS = 128;
const PROXY_READY_TIMEOUT_MS = 60_000;
const PROXY_STOP_TIMEOUT_MS = 15_000;
const BUILD_TIMEOUT_MS = 300_000;

export interface Target {
  kind: 'direct' | 'proxy';
  /** Client address, host:port. */
  address: string;
  /** The process clients talk to (for RSS): the etcd, or the proxy. */
  front: ProcessRef;
  /** Every process that serves this target (for CPU). */
  processes: ProcessRef[];
  scrape: ScrapeTargets;
  /** The proxy's coordinator and member client URLs (for operator commands such as `partitions move`). */
  clusters?: { coordinator: string; members: string[] };
  /** The proxy alone, stopped and started again over the same clusters and address (proxy targets). */
  stopProxy?(): Promise<void>;
  startProxy?(): Promise<void>;
  /**
   * Starts one more empty member etcd (proxy targets) and returns its client URL. It joins
   * `clusters.members`, `processes` and `scrape` at once, and the --members of the next
   * `startProxy`; making it a member of the meta cluster (`metaetcd members add`) is the caller's.
   */
  addMember?(): Promise<string>;
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Cleanup registry

const running = new Set<() => Promise<void>>();

let stopping: Promise<void> | undefined;

/** Stops everything still running, in reverse start order; never throws. Concurrent callers share one stop. */
export function stopEverything(): Promise<void> {
  stopping ??= (async () => {
    while (running.size > 0) {
      const stoppers = [...running].reverse();
      running.clear();
      for (const stop of stoppers) {
        try {
          await stop();
        } catch (err) {
          console.error(`bench: stopping a process failed: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    }
  })().finally(() => (stopping = undefined));
  return stopping;
}

function register(stop: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  const once = () => {
    running.delete(once);
    done ??= stop();
    return done;
  };
  running.add(once);
  return once;
}

// ---------------------------------------------------------------------------
// Scratch space

export function scratchDir(): string {
  const dir = join(defaultScratchRoot(), `metaetcd-bench-${process.pid}-${randomBytes(3).toString('hex')}`);
  mkdirSync(dir, { recursive: true });
  register(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function startEtcd(name: string, dataDir: string): Promise<EtcdProcess> {
  const etcd = await EtcdProcess.start({ name, dataDir, ...memberEtcdSettings(PROXY_MAX_REQUEST_BYTES, PROXY_MAX_TXN_OPS) });
  register(() => etcd.stop());
  return etcd;
}

// ---------------------------------------------------------------------------
// Direct: one plain etcd

export async function startDirect(root: string): Promise<Target> {
  const etcd = await startEtcd('bench-direct', join(root, 'direct'));
  const front = { label: 'etcd', pid: etcd.pid };
  return {
    kind: 'direct',
    address: `${etcd.host}:${etcd.clientPort}`,
    front,
    processes: [front],
    scrape: { etcds: [{ label: 'etcd', url: `${etcd.clientUrl}/metrics` }] },
    stop: () => etcd.stop(),
  };
}

// ---------------------------------------------------------------------------
// Proxy: coordinator + members + `node bin/metaetcd.js`

/** Compiles src/ to dist/ (what bin/metaetcd.js runs). Type errors elsewhere are reported, not fatal, if dist was emitted. */
export function buildProxy(): void {
  const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: BUILD_TIMEOUT_MS });
  if (r.error) throw new Error(`building the proxy failed: ${r.error.message}`);
  if (r.status !== 0) {
    const out = `${r.stdout}${r.stderr}`.trim().split('\n').slice(0, 20).join('\n');
    if (!existsSync(join(REPO_ROOT, 'dist', 'cli.js'))) throw new Error(`tsc -p tsconfig.build.json failed:\n${out}`);
    console.error(`bench: warning: tsc reported errors (dist/ was emitted anyway; measuring it):\n${out}`);
  }
}

export interface ProxyOptions {
  memberCount: number;
  /** Extra node flags for the proxy process, e.g. ["--cpu-prof", "--cpu-prof-dir=.bench/prof"]. */
  nodeArgs: string[];
  /** `--workers N`; undefined passes no --workers flag (the proxy's own default). */
  workers?: number;
  /** Extra proxy flags, e.g. ["--write-batching", "off"]. */
  flags?: string[];
}

/** Whether the built proxy has a --workers flag (from its --help). */
export function proxyHasWorkersFlag(): boolean {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'metaetcd.js'), '--help'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 30_000 });
  return /^\s*--workers\b/m.test(`${r.stdout}${r.stderr}`);
}

export async function startProxyCluster(root: string, o: ProxyOptions): Promise<Target> {
  const [coordinator, ...members] = await Promise.all([
    startEtcd('bench-coordinator', join(root, 'coordinator')),
    ...Array.from({ length: o.memberCount }, (_, i) => startEtcd(`bench-member-${i}`, join(root, `member-${i}`))),
  ]);
  const port = await freePort();
  const metricsPort = await freePort();
  const spawnServing = async () => {
    const p = await spawnProxy(o.nodeArgs, [
      '--coordinator',
      coordinator!.clientUrl,
      '--members',
      members.map((m) => m.clientUrl).join(','),
      '--listen-addr',
      `127.0.0.1:${port}`,
      '--metrics-addr',
      '127.0.0.1',
      '--metrics-port',
      String(metricsPort),
      '-v',
      'warn',
      ...(o.workers === undefined ? [] : ['--workers', String(o.workers)]),
      ...(o.flags ?? []),
    ]);
    try {
      await waitServing(`127.0.0.1:${port}`, p);
    } catch (err) {
      await p.stop();
      throw err;
    }
    return p;
  };
  let proxy = await spawnServing();
  const address = `127.0.0.1:${port}`;
  // With --workers N the proxy's CPU and RSS are those of the primary and all its workers.
  const front = { label: 'proxy', pid: proxy.pid, tree: true };
  const processes = [front, { label: 'coordinator', pid: coordinator!.pid }, ...members.map((m, i) => ({ label: `member-${i}`, pid: m.pid }))];
  const clusters = { coordinator: coordinator!.clientUrl, members: members.map((m) => m.clientUrl) };
  const scrape = {
    proxy: `http://127.0.0.1:${metricsPort}/metrics`,
    etcds: [
      { label: 'coordinator', url: `${coordinator!.clientUrl}/metrics` },
      ...members.map((m, i) => ({ label: `member-${i}`, url: `${m.clientUrl}/metrics` })),
    ],
  };
  return {
    kind: 'proxy',
    address,
    front,
    processes,
    clusters,
    scrape,
    stopProxy: () => proxy.stop(),
    startProxy: async () => {
      proxy = await spawnServing();
      front.pid = proxy.pid;
    },
    addMember: async () => {
      const i = members.length;
      const m = await startEtcd(`bench-member-${i}`, join(root, `member-${i}`));
      members.push(m);
      processes.push({ label: `member-${i}`, pid: m.pid });
      clusters.members.push(m.clientUrl);
      scrape.etcds.push({ label: `member-${i}`, url: `${m.clientUrl}/metrics` });
      return m.clientUrl;
    },
    stop: async () => {
      await proxy.stop();
      await Promise.all([coordinator!, ...members].map((e) => e.stop()));
    },
  };
}

interface ProxyProcess {
  pid: number;
  alive(): boolean;
  exited: Promise<void>;
  output(): string;
  stop(): Promise<void>;
}

const liveChildren = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of liveChildren) {
    try {
      if (c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

async function spawnProxy(nodeArgs: string[], args: string[]): Promise<ProxyProcess> {
  const child = spawn(process.execPath, [...nodeArgs, join(REPO_ROOT, 'bin', 'metaetcd.js'), ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error('could not spawn the proxy');
  liveChildren.add(child);
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-16_384);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let alive = true;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      alive = false;
      liveChildren.delete(child);
      resolve();
    });
  });
  const pid = child.pid;
  const stop = register(async () => {
    if (!alive) return;
    process.kill(pid, 'SIGTERM');
    const timer = setTimeout(() => alive && process.kill(pid, 'SIGKILL'), PROXY_STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  });
  return { pid, alive: () => alive, exited, output: () => tail, stop };
}

/**
 * Runs `metaetcd <args>` (the build in dist/) to completion. `stdout` is all of its
 * standard output (what the commands print as their result: `moved ...`, `added ...`,
 * `members list -w json`); `summary` is the last line of stdout and stderr together
 * (progress goes to stderr), `tail` their last 16 KiB (for errors).
 */
export function runMetaetcd(args: string[]): Promise<{ code: number; stdout: string; summary: string; tail: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'metaetcd.js'), ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let tail = '';
    const keep = (chunk: Buffer) => {
      tail = (tail + chunk.toString('utf8')).slice(-16_384);
    };
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
      keep(chunk);
    });
    child.stderr.on('data', keep);
    child.once('error', reject);
    child.once('exit', (code) => {
      const lines = tail.split(/\r?\n|\r/).map((l) => l.trim()).filter(Boolean);
      resolve({ code: code ?? 1, stdout, summary: lines[lines.length - 1] ?? '', tail });
    });
  });
}

/** Polls a Range on the proxy until it answers; fails early if the proxy exits. */
async function waitServing(address: string, proxy: ProxyProcess): Promise<void> {
  const conn = new BenchConnection(address);
  const deadline = Date.now() + PROXY_READY_TIMEOUT_MS;
  let lastErr = '';
  try {
    while (Date.now() < deadline) {
      if (!proxy.alive()) throw new Error(`the proxy exited before serving:\n${proxy.output().trim()}`);
      try {
        await conn.range({ key: Buffer.from('/bench/ready') }, 1_000);
        return;
      } catch (err) {
        lastErr = err instanceof Error ? err.message : String(err);
      }
      await Promise.race([sleep(200), proxy.exited]);
    }
    throw new Error(`the proxy did not serve a Range within ${PROXY_READY_TIMEOUT_MS} ms (last error: ${lastErr})\n${proxy.output().trim()}`);
  } finally {
    conn.close();
  }
}
