// Starting and stopping real single-node etcd processes (etcd 3.4 flags), for
// `metaetcd sandbox` and for every test.
//
// EtcdProcess.start() spawns `etcd` as a plain (non-detached) child on loopback
// ports (free ones unless the caller fixes them), keeps the last ~64 KiB of its
// output, and resolves once GET /health answers {"health":"true"}. If etcd
// exits early because a port it was given is taken, start() picks new ports and
// tries again (only for ports the caller did not fix). Everything is signalled
// by pid; nothing is ever killed by name.
//
// Leak safety: every live child is in a module-level registry. On process
// 'exit' (and on SIGINT/SIGTERM/SIGHUP when nobody else handles them) the
// registry is SIGKILLed synchronously. Children and their output pipes are
// unref'd, so a forgotten etcd never keeps Node alive: the process exits and
// the exit hook kills the child.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import type { Socket } from 'node:net';
import {
  canRetryPorts,
  etcdArgs,
  etcdEnv,
  isMissingOrEmpty,
  PortInUseError,
  portInUse,
  resolveConfig,
  validateOptions,
  type Config,
  type EtcdProcessOptions,
  type EtcdTls,
} from './etcd-config.js';
import { DEFAULT_HOST } from './local-resources.js';

export type { EtcdProcessOptions, EtcdTls } from './etcd-config.js';
export { defaultScratchRoot, freePort } from './local-resources.js';

const DEFAULT_STOP_TIMEOUT_MS = 5_000;
const LOG_CAPACITY_BYTES = 64 * 1024;
const ERROR_LOG_TAIL_CHARS = 4_000;
const PORT_ATTEMPTS = 5;
const HEALTH_POLL_MS = 50;
const HEALTH_REQUEST_TIMEOUT_MS = 1_000;

// ---------------------------------------------------------------------------
// EtcdProcess

/** One incarnation of the etcd binary. */
interface Incarnation {
  child: ChildProcess;
  pid: number;
  alive: boolean;
  exited: Promise<void>;
  exitInfo: { code: number | null; signal: NodeJS.Signals | null; error?: Error } | undefined;
  stopping: Promise<void> | undefined;
  /** Where this incarnation's output starts in the shared log. */
  logStart: number;
}

export class EtcdProcess {
  readonly name: string;
  readonly dataDir: string;
  readonly host: string;
  readonly clientPort: number;
  readonly peerPort: number;

  readonly #config: Config;
  readonly #log: LogRing;
  #current: Incarnation | undefined;

  private constructor(config: Config, log: LogRing) {
    this.#config = config;
    this.#log = log;
    this.name = config.name;
    this.dataDir = config.dataDir;
    this.host = config.host;
    this.clientPort = config.clientPort;
    this.peerPort = config.peerPort;
  }

  /** Spawns etcd and resolves once it reports healthy. */
  static async start(opts: EtcdProcessOptions): Promise<EtcdProcess> {
    validateOptions(opts);
    const host = opts.host ?? DEFAULT_HOST;
    const createdDataDir = !existsSync(opts.dataDir);
    const freshDataDir = isMissingOrEmpty(opts.dataDir);
    const log = new LogRing(LOG_CAPACITY_BYTES);
    for (let attempt = 1; ; attempt++) {
      const config = await resolveConfig(opts, host);
      const proc = new EtcdProcess(config, log);
      try {
        await proc.#launch();
        return proc;
      } catch (err) {
        const retry = err instanceof PortInUseError && canRetryPorts(opts, err.port) && attempt < PORT_ATTEMPTS;
        // A fresh data dir may hold a half-initialised member with the old peer URL;
        // one we created ourselves is not left behind after a failure.
        if ((retry && freshDataDir) || (!retry && createdDataDir)) await rm(opts.dataDir, { recursive: true, force: true });
        if (!retry) throw err;
      }
    }
  }

  /** Pid of the current (or last) incarnation. */
  get pid(): number {
    if (!this.#current) throw new Error(`etcd ${this.name} has no process`);
    return this.#current.pid;
  }

  get clientUrl(): string {
    return `${this.#config.tls ? 'https' : 'http'}://${this.host}:${this.clientPort}`;
  }

  get peerUrl(): string {
    return `http://${this.host}:${this.peerPort}`;
  }

  get running(): boolean {
    return this.#current?.alive ?? false;
  }

  /** Last ~64 KiB of combined stdout/stderr over all incarnations. */
  logs(): string {
    return this.#log.toString();
  }

  /** Sends a raw signal to the current incarnation's pid. */
  signal(sig: NodeJS.Signals): void {
    const inc = this.#current;
    if (!inc?.alive) throw new Error(`${this.#describe()} is not running; cannot send ${sig}`);
    process.kill(inc.pid, sig);
  }

  /** SIGCONT + SIGTERM, SIGKILL after `timeoutMs`; resolves once exited. Idempotent. */
  stop(timeoutMs: number = DEFAULT_STOP_TIMEOUT_MS): Promise<void> {
    const inc = this.#current;
    if (!inc) return Promise.resolve();
    if (!inc.alive) return inc.exited;
    inc.stopping ??= terminate(inc, timeoutMs);
    return inc.stopping;
  }

  /** Stops (if running) and starts again with the same name, ports and data dir. */
  async restart(): Promise<void> {
    await this.stop();
    await this.#launch();
  }

  /** rm -rf the data dir; refuses while running. */
  async wipe(): Promise<void> {
    if (this.running) throw new Error(`${this.#describe()} is running; stop it before wiping ${this.dataDir}`);
    await rm(this.dataDir, { recursive: true, force: true });
  }

  // -- internals -------------------------------------------------------------

  async #launch(): Promise<void> {
    if (this.running) throw new Error(`${this.#describe()} is already running`);
    mkdirSync(this.dataDir, { recursive: true });
    const inc = spawnIncarnation(this.#config, this.#log);
    this.#current = inc;
    try {
      await this.#waitReady(inc);
    } catch (err) {
      await killNow(inc);
      throw err;
    }
  }

  async #waitReady(inc: Incarnation): Promise<void> {
    const deadline = Date.now() + this.#config.startTimeoutMs;
    for (;;) {
      if (!inc.alive) {
        await inc.exited; // a spawn error arrives a tick after spawn() returns
        throw this.#earlyExitError(inc);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(`${this.#describe()} was not healthy within ${this.#config.startTimeoutMs} ms${this.#logTail()}`);
      }
      if (await probeHealth(this.host, this.clientPort, Math.min(HEALTH_REQUEST_TIMEOUT_MS, remaining), this.#config.tls)) return;
      await Promise.race([sleep(Math.min(HEALTH_POLL_MS, Math.max(0, deadline - Date.now()))), inc.exited]);
    }
  }

  #earlyExitError(inc: Incarnation): Error {
    const info = inc.exitInfo;
    const how = info?.error
      ? `failed to spawn (${info.error.message})`
      : `exited (code ${info?.code ?? 'null'}, signal ${info?.signal ?? 'null'}) before becoming healthy`;
    const message = `${this.#describe(inc)} ${how}${this.#logTail()}`;
    const busyPort = portInUse(this.#log.toString(inc.logStart), this.host);
    return busyPort === undefined ? new Error(message) : new PortInUseError(message, busyPort);
  }

  #describe(inc: Incarnation | undefined = this.#current): string {
    const pid = inc && inc.pid > 0 ? `, pid ${inc.pid}` : '';
    return `etcd ${this.name} (client ${this.host}:${this.clientPort}, peer ${this.host}:${this.peerPort}${pid})`;
  }

  #logTail(): string {
    const tail = this.#log.toString().slice(-ERROR_LOG_TAIL_CHARS).trimEnd();
    return tail ? `\n--- last output of etcd ${this.name} ---\n${tail}` : ' (no output)';
  }
}

// ---------------------------------------------------------------------------
// Process lifecycle

function spawnIncarnation(c: Config, log: LogRing): Incarnation {
  const logStart = log.totalBytes;
  const child = spawn(c.binary, etcdArgs(c), {
    cwd: c.dataDir,
    env: etcdEnv(),
    detached: false,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const inc: Incarnation = {
    child,
    pid: child.pid ?? -1,
    alive: child.pid !== undefined,
    exited: Promise.resolve(),
    exitInfo: undefined,
    stopping: undefined,
    logStart,
  };
  inc.exited = new Promise<void>((resolve) => {
    const finish = (info: NonNullable<Incarnation['exitInfo']>) => {
      if (inc.exitInfo) return;
      inc.exitInfo = info;
      inc.alive = false;
      registry.delete(child);
      resolve();
    };
    child.once('exit', (code, signal) => finish({ code, signal }));
    child.on('error', (error) => {
      // Spawn failures never emit 'exit'; later errors (e.g. kill failures) are not fatal.
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) finish({ code: null, signal: null, error });
    });
  });
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on('data', (chunk: Buffer) => log.push(chunk));
    stream?.on('error', () => undefined);
    (stream as Socket | null)?.unref?.();
  }
  child.unref();
  if (inc.alive) track(child);
  return inc;
}

function terminate(inc: Incarnation, timeoutMs: number): Promise<void> {
  sendSignal(inc, 'SIGCONT');
  sendSignal(inc, 'SIGTERM');
  const timer = setTimeout(() => sendSignal(inc, 'SIGKILL'), timeoutMs);
  // The child is unref'd: keep Node alive until its exit has been seen. (The kill
  // timer alone does not: once it has fired, nothing waits for the exit, and a
  // process with nothing else to do ended before it, in the middle of a stop.)
  const keepAlive = setInterval(() => undefined, 1_000);
  return inc.exited.finally(() => {
    clearTimeout(timer);
    clearInterval(keepAlive);
  });
}

async function killNow(inc: Incarnation): Promise<void> {
  if (!inc.alive) return;
  sendSignal(inc, 'SIGKILL');
  const keepAlive = setInterval(() => undefined, 1_000);
  try {
    await inc.exited;
  } finally {
    clearInterval(keepAlive);
  }
}

function sendSignal(inc: Incarnation, sig: NodeJS.Signals): void {
  if (!inc.alive) return;
  try {
    process.kill(inc.pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** GET /health; true only for {"health":"true"}. Never throws. */
function probeHealth(host: string, port: number, timeoutMs: number, tls: EtcdTls | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(ok);
    };
    const options = { host, port, path: '/health', agent: false as const, headers: { connection: 'close' } };
    const onResponse = (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => done(res.statusCode === 200 && isHealthyBody(body)));
      res.on('error', () => done(false));
    };
    const req = tls
      ? httpsGet(
          {
            ...options,
            ca: readFileSync(tls.ca),
            ...(tls.probeCert && tls.probeKey ? { cert: readFileSync(tls.probeCert), key: readFileSync(tls.probeKey) } : {}),
          },
          onResponse,
        )
      : httpGet(options, onResponse);
    const timer = setTimeout(() => {
      req.destroy();
      done(false);
    }, timeoutMs);
    req.on('error', () => done(false));
  });
}

function isHealthyBody(body: string): boolean {
  try {
    const health = (JSON.parse(body) as { health?: unknown }).health;
    return health === 'true' || health === true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// Leak safety: SIGKILL every live child when this process goes away.

const registry = new Set<ChildProcess>();
let hooksInstalled = false;
const FATAL_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function track(child: ChildProcess): void {
  registry.add(child);
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAllSync);
  for (const sig of FATAL_SIGNALS) process.on(sig, onFatalSignal);
}

function killAllSync(): void {
  for (const child of registry) {
    if (child.pid === undefined) continue;
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  registry.clear();
}

/** When nobody else handles the signal, kill the children and die of it as usual. */
function onFatalSignal(sig: NodeJS.Signals): void {
  if (process.listenerCount(sig) > 1) return; // someone else handles it (and will exit → 'exit' hook)
  killAllSync();
  process.off(sig, onFatalSignal);
  process.kill(process.pid, sig);
}

// ---------------------------------------------------------------------------
// Bounded output buffer

class LogRing {
  #chunks: Buffer[] = [];
  #size = 0;
  /** Bytes ever pushed; lets an incarnation find where its own output starts. */
  totalBytes = 0;

  constructor(private readonly capacity: number) {}

  push(chunk: Buffer): void {
    const piece = chunk.length > this.capacity ? chunk.subarray(chunk.length - this.capacity) : chunk;
    this.#chunks.push(piece);
    this.#size += piece.length;
    this.totalBytes += chunk.length;
    while (this.#chunks.length > 1 && this.#size - this.#chunks[0]!.length >= this.capacity) {
      this.#size -= this.#chunks.shift()!.length;
    }
  }

  /** Output since byte `from` (of all bytes ever pushed), bounded by capacity. */
  toString(from = 0): string {
    const all = Buffer.concat(this.#chunks);
    const firstHeld = this.totalBytes - all.length;
    const start = Math.max(0, from - firstHeld, all.length - this.capacity);
    return all.subarray(start).toString('utf8');
  }
}

