// Fault-injection helpers for test/faults: timing and polling, gRPC status
// helpers, metrics reads, "lose the coordinator" (kill -9, wipe, fresh etcd on
// the same address), a proxy run as a child process (so it can be kill -9'd and
// its memory measured), and raw gRPC-over-HTTP/2 calls with hand-built bytes.
//
// Everything is bounded in time and signals processes by pid only.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { connect as http2Connect, constants as h2 } from 'node:http2';
import { createConnection } from 'node:net';
import { join, resolve } from 'node:path';
import { status as Status } from '@grpc/grpc-js';
import { freePort, type EtcdProcess } from '../../src/sandbox/etcd-process.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { Metrics } from '../../src/metrics.js';
import type { KeyValue } from '../../src/proto/gen/kv.js';
import type { EtcdSet } from './etcd-set.js';
import { within } from './watch-checker.js';

export { within };

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const ALL = Buffer.from([0]);

// ---------------------------------------------------------------------------
// Time

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every `everyMs` until it holds; throws naming `what` after `timeoutMs`. */
export async function waitUntil(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 25): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    let ok = false;
    try {
      ok = await cond();
    } catch {
      ok = false;
    }
    if (ok) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export interface Timed<T> {
  ms: number;
  value?: T;
  err?: unknown;
}

/** Runs `f`, measuring how long it took to resolve or reject (never throws). */
export async function timed<T>(f: () => Promise<T>): Promise<Timed<T>> {
  const t0 = performance.now();
  try {
    const value = await f();
    return { ms: performance.now() - t0, value };
  } catch (err) {
    return { ms: performance.now() - t0, err };
  }
}

/** A proxy's /health answer (served on its metrics port): HTTP status and JSON body. */
export async function healthOf(metricsPort: number | undefined): Promise<{ status: number; body: { health: string; reason: string } }> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/health`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: (await res.json()) as { health: string; reason: string } };
}

// ---------------------------------------------------------------------------
// gRPC statuses

export function codeOf(err: unknown): number | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? Number((err as { code: unknown }).code) : undefined;
}

export function detailsOf(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'details' in err) return String((err as { details: unknown }).details);
  return err instanceof Error ? err.message : String(err);
}

export function describeErr(err: unknown): string {
  const c = codeOf(err);
  return `${c !== undefined ? (Status[c] ?? c) : 'no code'}: ${detailsOf(err)}`;
}

export { Status };

// ---------------------------------------------------------------------------
// Metrics

/** Sum of every sample of metric `name` in an in-process proxy's registry (0 when absent). */
export async function metricSum(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = metrics.registry.getSingleMetric(name);
  if (!m) return 0;
  const got = await m.get();
  let sum = 0;
  for (const v of got.values) {
    if (Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want)) sum += v.value;
  }
  return sum;
}

/** Sum of every sample of `name` in a Prometheus text exposition. */
export function metricFromText(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (m && m[1] === name) sum += Number(m[3]);
  }
  return sum;
}

// ---------------------------------------------------------------------------
// etcd process faults

/** kill -9, wait for the exit, rm -rf the data dir, and start a fresh empty etcd on the same ports. */
export async function loseAndReplace(etcd: EtcdProcess): Promise<void> {
  etcd.signal('SIGKILL');
  await etcd.stop();
  await etcd.wipe();
  await etcd.restart();
}

/**
 * SIGSTOP, then waits until every thread of the process is in the stopped state
 * (the stat file of each task under /proc/PID/task), so that a test's "while it hangs" window begins only
 * once the process can no longer answer anything.
 */
export async function hang(etcd: EtcdProcess): Promise<void> {
  const pid = etcd.pid;
  etcd.signal('SIGSTOP');
  await waitUntil(`every thread of etcd pid ${pid} stopped`, () => threadStates(pid).every((s) => s === 'T' || s === 't'), 5000, 2);
}

/** The scheduler state letter of each thread of `pid` (empty when it is gone). */
function threadStates(pid: number): string[] {
  const dir = `/proc/${pid}/task`;
  if (!existsSync(dir)) return [];
  return readdirSync(dir).map((tid) => {
    try {
      // "TID (comm) S ...": the state follows the last ')' (comm may hold spaces or parentheses).
      const stat = readFileSync(join(dir, tid, 'stat'), 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      return 'T'; // the thread exited meanwhile
    }
  });
}

/** kill -9 and wait for the exit (data kept). */
export async function killHard(etcd: EtcdProcess): Promise<void> {
  etcd.signal('SIGKILL');
  await etcd.stop();
}

// ---------------------------------------------------------------------------
// Reading the whole keyspace

/** Every client key through `client` (a proxy or a plain etcd), at `revision` (0: now). */
export async function allKvs(client: EtcdClient, prefix?: Buffer, revision = 0n): Promise<{ kvs: KeyValue[]; revision: bigint }> {
  const key = prefix ?? ALL;
  const rangeEnd = prefix ? prefixEnd(prefix) : ALL;
  const r = await client.range({ key, rangeEnd, revision });
  return { kvs: r.kvs, revision: r.header!.revision };
}

export function prefixEnd(prefix: Buffer): Buffer {
  const p = Buffer.from(prefix);
  for (let i = p.length - 1; i >= 0; i--) {
    if (p[i]! < 0xff) {
      const end = Buffer.from(p.subarray(0, i + 1));
      end[i] = p[i]! + 1;
      return end;
    }
  }
  return ALL;
}

// ---------------------------------------------------------------------------
// A proxy as a child process (bin/metaetcd.js over dist/)

let built = false;

/** Compiles src to dist when dist is missing or older than src (tsc emits despite type errors elsewhere). */
export function buildIfStale(): void {
  if (built) return;
  const newest = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((m, e) => {
      const p = join(dir, e.name);
      return Math.max(m, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
    }, 0);
  const cli = join(ROOT, 'dist', 'cli.js');
  if (!existsSync(cli) || statSync(cli).mtimeMs < newest(join(ROOT, 'src'))) {
    const r = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 180_000,
    });
    if (!existsSync(cli)) throw new Error(`build failed: ${r.stdout}${r.stderr}`);
  }
  built = true;
}

const children = new Set<ChildProxy>();
process.on('exit', () => {
  for (const c of children) c.killNow();
});

export interface ChildProxyOptions {
  /** Extra flags, e.g. ['--fence-after', '200ms']. */
  flags?: string[];
  /** Serve /metrics on a free port (default true). */
  metrics?: boolean;
  /** -v (default 'warn'). */
  logLevel?: string;
  /** Flags for node itself, e.g. ['--max-old-space-size=96']. */
  nodeFlags?: string[];
  /** Extra environment variables of the child (e.g. a test hold hook such as METAETCD_TEST_CROSS_HOLD). */
  env?: Record<string, string>;
  /** The members' URLs as --members gives them (default the set's; e.g. a relay in front of one, test/harness/grpc-tap.ts). */
  memberUrls?: string[];
}

/** `node bin/metaetcd.js --coordinator … --members …` on a free loopback port. */
export class ChildProxy {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly port: number;
  readonly metricsPort: number | undefined;
  output = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;

  private constructor(args: string[], port: number, metricsPort: number | undefined, nodeFlags: string[], env: Record<string, string> = {}) {
    this.port = port;
    this.metricsPort = metricsPort;
    this.proc = spawn(process.execPath, [...nodeFlags, join(ROOT, 'bin', 'metaetcd.js'), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.pid = this.proc.pid!;
    const keep = (s: string) => {
      this.output += s;
      if (this.output.length > 256 * 1024) this.output = this.output.slice(-128 * 1024);
    };
    this.proc.stdout!.setEncoding('utf8').on('data', keep);
    this.proc.stderr!.setEncoding('utf8').on('data', keep);
    this.exited = new Promise((res) =>
      this.proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        children.delete(this);
        res();
      }),
    );
    children.add(this);
  }

  static async start(set: EtcdSet, o: ChildProxyOptions = {}): Promise<ChildProxy> {
    buildIfStale();
    const port = await freePort();
    const metricsPort = o.metrics === false ? undefined : await freePort();
    const args = [
      '--coordinator',
      set.coordinator.clientUrl,
      '--members',
      (o.memberUrls ?? set.members.map((m) => m.clientUrl)).join(','),
      '--listen-addr',
      `127.0.0.1:${port}`,
      '--metrics-port',
      String(metricsPort ?? 0),
      '-v',
      o.logLevel ?? 'warn',
      // One process unless a test asks for workers: the fault tests signal "the proxy" by its pid.
      ...(o.flags?.includes('--workers') ? [] : ['--workers', '1']),
      ...(o.flags ?? []),
    ];
    const c = new ChildProxy(args, port, metricsPort, o.nodeFlags ?? [], o.env);
    try {
      await waitUntil(`metaetcd child pid ${c.pid} listening on ${port}`, async () => {
        if (!c.running) throw new Error('exited');
        return canConnect(port);
      }, 30_000, 50);
    } catch (err) {
      c.killNow();
      throw new Error(`${String(err)}\n${c.describe()}`);
    }
    if (!c.running) throw new Error(`metaetcd child exited during start: ${c.describe()}`);
    return c;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  describe(): string {
    return `metaetcd child pid ${this.pid} exit ${JSON.stringify(this.exit)}; last output:\n${this.output.slice(-4000)}`;
  }

  /** Waits (bounded) until the child's output contains `text` (e.g. "holding after after-commit"). */
  async untilOutput(text: string, timeoutMs: number): Promise<void> {
    try {
      await waitUntil(`"${text}" in the output of metaetcd child pid ${this.pid}`, () => this.output.includes(text) || !this.running, timeoutMs, 10);
    } catch (err) {
      throw new Error(`${String(err)}\n${this.describe()}`);
    }
    if (!this.output.includes(text)) throw new Error(`metaetcd child exited before printing "${text}": ${this.describe()}`);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) process.kill(this.pid, sig);
  }

  /** SIGKILL and wait for the exit. */
  async kill9(): Promise<void> {
    this.signal('SIGKILL');
    await within(10_000, `exit of pid ${this.pid}`, this.exited);
  }

  /** SIGTERM, SIGKILL after `graceMs`; resolves on exit. */
  async stop(graceMs = 8000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    const t = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.exited.finally(() => clearTimeout(t));
  }

  killNow(): void {
    try {
      if (this.running) process.kill(this.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }

  /** Pids of the child's own children (its worker processes), from /proc. */
  childPids(): number[] {
    try {
      return readdirSync(`/proc/${this.pid}/task`).flatMap((tid) =>
        readFileSync(`/proc/${this.pid}/task/${tid}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number),
      );
    } catch {
      return [];
    }
  }

  /** Resident set size of the child, from /proc. */
  rssBytes(): number {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  }

  async metricsText(): Promise<string> {
    if (!this.metricsPort) throw new Error('metrics are disabled for this child');
    const res = await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
    return res.text();
  }

  async metric(name: string): Promise<number> {
    return metricFromText(await this.metricsText(), name);
  }
}

export function canConnect(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.setTimeout(1000);
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
    s.once('timeout', () => (s.destroy(), res(false)));
  });
}

// ---------------------------------------------------------------------------
// Raw gRPC over HTTP/2

/** A gRPC length-prefixed message: flag byte, 4-byte big-endian length, body. */
export function grpcFrame(body: Uint8Array, opts: { compressed?: boolean; length?: number } = {}): Buffer {
  const head = Buffer.alloc(5);
  head[0] = opts.compressed ? 1 : 0;
  head.writeUInt32BE(opts.length ?? body.length, 1);
  return Buffer.concat([head, Buffer.from(body)]);
}

export interface RawResult {
  /** HTTP :status. */
  http: number | undefined;
  /** grpc-status (from headers or trailers); undefined when the stream was reset without one. */
  code: number | undefined;
  message: string;
  /** Response messages (bodies of the length-prefixed frames). */
  messages: Buffer[];
  rstCode: number | undefined;
  timedOut: boolean;
}

export interface RawCallOptions {
  /** Default application/grpc. */
  contentType?: string;
  headers?: Record<string, string>;
  timeoutMs?: number;
  /** End the request stream after writing (default true). */
  end?: boolean;
}

/**
 * One gRPC call with a hand-built request payload (already framed), on its own
 * HTTP/2 session. Returns the status the server answered with.
 */
export function rawCall(url: string, path: string, payload: Buffer, o: RawCallOptions = {}): Promise<RawResult> {
  return new Promise((resolveCall) => {
    const session = http2Connect(url);
    const result: RawResult = { http: undefined, code: undefined, message: '', messages: [], rstCode: undefined, timedOut: false };
    let pending = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      session.destroy();
      resolveCall(result);
    };
    const timer = setTimeout(() => {
      result.timedOut = true;
      finish();
    }, o.timeoutMs ?? 10_000);
    session.on('error', () => finish());
    const onStatus = (h: Record<string, unknown>) => {
      if (h[':status'] !== undefined) result.http = Number(h[':status']);
      if (h['grpc-status'] !== undefined) {
        result.code = Number(h['grpc-status']);
        result.message = decodeURIComponent(String(h['grpc-message'] ?? ''));
      }
    };
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': o.contentType ?? 'application/grpc',
      te: 'trailers',
      ...(o.headers ?? {}),
    });
    stream.on('response', onStatus);
    stream.on('trailers', onStatus);
    stream.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 5) {
        const len = pending.readUInt32BE(1);
        if (pending.length < 5 + len) break;
        result.messages.push(Buffer.from(pending.subarray(5, 5 + len)));
        pending = pending.subarray(5 + len);
      }
    });
    stream.on('error', () => undefined);
    stream.on('close', () => {
      result.rstCode = stream.rstCode === h2.NGHTTP2_NO_ERROR ? undefined : stream.rstCode;
      finish();
    });
    if (o.end === false) stream.write(payload);
    else stream.end(payload);
  });
}

export const KV = {
  range: '/etcdserverpb.KV/Range',
  put: '/etcdserverpb.KV/Put',
  deleteRange: '/etcdserverpb.KV/DeleteRange',
  txn: '/etcdserverpb.KV/Txn',
  compact: '/etcdserverpb.KV/Compact',
};
