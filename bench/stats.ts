// Measurement helpers: latency samples and percentiles, CPU time and RSS of a
// process (or of a process and its descendants) read from /proc, and number
// formatting for the report.

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

// ---------------------------------------------------------------------------
// Latency samples

/** Growing array of samples in milliseconds. */
export class Samples {
  #data = new Float64Array(1024);
  #n = 0;
  #sorted: Float64Array | undefined;

  add(ms: number): void {
    if (this.#n === this.#data.length) {
      const next = new Float64Array(this.#data.length * 2);
      next.set(this.#data);
      this.#data = next;
    }
    this.#data[this.#n++] = ms;
    this.#sorted = undefined;
  }

  get count(): number {
    return this.#n;
  }

  /** Nearest-rank percentile, q in [0, 1]; NaN when empty. */
  quantile(q: number): number {
    if (this.#n === 0) return NaN;
    this.#sorted ??= this.#data.slice(0, this.#n).sort();
    const rank = Math.min(this.#n - 1, Math.max(0, Math.ceil(q * this.#n) - 1));
    return this.#sorted[rank]!;
  }

  /** All the samples of several sets, as one set. */
  static merged(sets: Samples[]): Samples {
    const out = new Samples();
    for (const set of sets) for (let i = 0; i < set.#n; i++) out.add(set.#data[i]!);
    return out;
  }

  mean(): number {
    if (this.#n === 0) return NaN;
    let sum = 0;
    for (let i = 0; i < this.#n; i++) sum += this.#data[i]!;
    return sum / this.#n;
  }
}

/** Milliseconds since an arbitrary origin, from the monotonic clock. */
export function nowMs(): number {
  return performance.now();
}

// ---------------------------------------------------------------------------
// /proc

let clockTicks: number | undefined;

/** sysconf(_SC_CLK_TCK), 100 on every Linux we run on. */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** The fields after the command name of /proc/<pid>/stat; fields[0] is field 3 (state). */
function statFields(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may contain spaces.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime of a process (all its threads), plus cutime + cstime (its children that exited and were waited for), in seconds. */
function cpuSeconds(pid: number): number {
  const fields = statFields(pid);
  // utime, stime, cutime, cstime are fields 14 to 17.
  const ticks = fields.slice(11, 15).map(Number);
  if (ticks.length !== 4 || !ticks.every(Number.isFinite)) throw new Error(`cannot parse /proc/${pid}/stat`);
  return ticks.reduce((a, b) => a + b, 0) / ticksPerSecond();
}

/** VmRSS of a process, in bytes. */
function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** Every live process descended from `root` (children, their children, ...), from the ppid field of each /proc/[pid]/stat. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const ppid = Number(orGone(() => statFields(Number(name))[1]));
    if (!Number.isFinite(ppid)) continue;
    children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
  }
  const out: number[] = [];
  for (let queue = [root]; queue.length > 0; ) {
    const next = children.get(queue.shift()!) ?? [];
    out.push(...next);
    queue.push(...next);
  }
  return out;
}

/** `read()`, or undefined when the process it reads has exited meanwhile. */
function orGone<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw err;
  }
}

export interface ProcessRef {
  label: string;
  pid: number;
  /** Also count every descendant of the process (e.g. the workers of `metaetcd --workers N`), found anew at each reading. */
  tree?: boolean;
}

function pidsOf(p: ProcessRef): number[] {
  return p.tree ? [p.pid, ...descendants(p.pid)] : [p.pid];
}

/** Sum of `read` over the process (and its descendants, for a tree); processes that exit while being read count 0. */
function sumOver(p: ProcessRef, read: (pid: number) => number): number {
  const [root, ...rest] = pidsOf(p);
  return read(root!) + rest.reduce((a, pid) => a + (orGone(() => read(pid)) ?? 0), 0);
}

/** CPU seconds of a process (with its descendants, for a tree). */
export function cpuSecondsOf(p: ProcessRef): number {
  return sumOver(p, cpuSeconds);
}

/** RSS of a process (with its descendants, for a tree), in bytes. */
export function rssOf(p: ProcessRef): number {
  return sumOver(p, rssBytes);
}

/** CPU seconds of each process at one moment; `cpuDelta` subtracts two of them. */
export type CpuSnapshot = Map<string, number>;

export function cpuSnapshot(procs: ProcessRef[]): CpuSnapshot {
  const snap: CpuSnapshot = new Map();
  for (const p of procs) snap.set(p.label, cpuSecondsOf(p));
  const self = process.cpuUsage();
  snap.set('load generator', (self.user + self.system) / 1e6);
  return snap;
}

export function cpuDelta(before: CpuSnapshot, after: CpuSnapshot): Map<string, number> {
  const out = new Map<string, number>();
  for (const [label, v] of after) out.set(label, v - (before.get(label) ?? 0));
  return out;
}

// ---------------------------------------------------------------------------
// Formatting

export function fmt(n: number, digits = 2): string {
  if (!Number.isFinite(n)) return '–';
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US');
  if (Math.abs(n) >= 100) return n.toFixed(Math.min(digits, 1));
  return n.toFixed(digits);
}

export function ratio(a: number, b: number): string {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '–';
  return `${(a / b).toFixed(2)}×`;
}

export function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

export function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

/** A markdown table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

/** An integer setting of at least `min` (1: positive) from the environment (the opt-in phases' BENCH_MOVE_*, BENCH_ADD_*). */
export function envInt(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  const n = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name}=${raw}: expected ${min === 1 ? 'a positive integer' : `an integer of at least ${min}`}`);
  return n;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
