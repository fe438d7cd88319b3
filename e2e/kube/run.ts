// Kubernetes end to end (`npm run e2e:kube`, opt-in, not part of `npm test`).
//
// For each target — (a) one plain etcd, (b) metaetcd (coordinator + 3 member
// etcds + the proxy as its own process) — starts a real kube-apiserver and
// kube-controller-manager (built by e2e/kube/build.sh) against it and runs the
// same kubectl workload: namespaces, ConfigMaps, paged lists, a CRD with custom
// resources, updates seen by a kubectl watch, Events, Lease renewals, namespace
// deletion by the controller manager, an apiserver restart. Then it compares
// the two targets (objects, storage errors in the apiserver logs, timings) and,
// on metaetcd, SIGKILLs a member etcd during ConfigMap creation and checks no
// acknowledged write was lost. Exits 1 when any check fails.
//
// Settings (environment):
//   KUBE_BIN_DIR            where kube-apiserver, kube-controller-manager, kubectl are (default e2e/kube/bin)
//   E2E_KUBE_TARGETS        comma list of etcd,metaetcd (default both)
//   E2E_KUBE_CONFIGMAPS     ConfigMaps created (default 2000)
//   E2E_KUBE_CRS            custom resources (default 100)
//   E2E_KUBE_UPDATES        ConfigMaps labelled while watched (default 300; 100 more get a data patch)
//   E2E_KUBE_KILL           0 skips the member-kill phase (default 1)
//   E2E_KUBE_PROXY_WORKERS  metaetcd --workers (default 1)
//   E2E_KUBE_KEEP           1 keeps the scratch directory (logs) after the run
//   E2E_KUBE_CONCURRENT     1 runs the targets at the same time (each then sees the same machine load)

import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultScratchRoot, EtcdProcess, freePort } from '../../src/sandbox/etcd-process.js';
import { memberEtcdSettings } from '../../src/sandbox/member-settings.js';
import { defaultProxyConfig } from '../../src/config.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '../..');
const BIN = resolve(process.env.KUBE_BIN_DIR ?? join(HERE, 'bin'));
const TARGETS = (process.env.E2E_KUBE_TARGETS ?? 'etcd,metaetcd').split(',').map((s) => s.trim()).filter(Boolean);
const N_CM = intEnv('E2E_KUBE_CONFIGMAPS', 2000);
const N_CR = intEnv('E2E_KUBE_CRS', 100);
const N_UPD = intEnv('E2E_KUBE_UPDATES', 300);
const N_PATCH = 100;
const N_DEL_CM = 200;
const N_KILL_CM = 1000;
const KILL = process.env.E2E_KUBE_KILL !== '0';
const PROXY_WORKERS = intEnv('E2E_KUBE_PROXY_WORKERS', 1);
const KEEP = process.env.E2E_KUBE_KEEP === '1';
const CONCURRENT = process.env.E2E_KUBE_CONCURRENT === '1';
const PARALLEL = 4;
const TOKEN = randomBytes(16).toString('hex');
const STORAGE_ERROR = /etcdserver|rpc error|watch chan error|Unimplemented|code = /;

function intEnv(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer`);
  return n;
}

// ---------------------------------------------------------------------------
// Output, checks, timings

const t0 = Date.now();
function log(msg: string): void {
  process.stdout.write(`[e2e:kube +${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
}
const failures: string[] = [];
function check(ok: boolean, what: string): boolean {
  if (ok) log(`ok   ${what}`);
  else {
    log(`FAIL ${what}`);
    failures.push(what);
  }
  return ok;
}
const timings = new Map<string, Map<string, number>>(); // step -> target -> seconds
async function step<T>(target: string, name: string, fn: () => Promise<T>): Promise<T> {
  log(`[${target}] ${name} ...`);
  const start = process.hrtime.bigint();
  try {
    return await fn();
  } finally {
    const s = Number(process.hrtime.bigint() - start) / 1e9;
    if (!timings.has(name)) timings.set(name, new Map());
    timings.get(name)!.set(target, s);
    log(`[${target}] ${name}: ${s.toFixed(2)}s`);
  }
}
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Processes: every child is tracked by pid and killed on exit, failure or Ctrl-C

const children = new Set<ChildProcess>();
const etcds = new Set<EtcdProcess>();
let scratch: string | undefined;

interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  logFile: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive: boolean;
}

function startProc(name: string, cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): Proc {
  const fd = openSync(logFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env, cwd: REPO });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`could not start ${name} (${cmd})`);
  children.add(child);
  const p: Proc = {
    name,
    child,
    pid: child.pid,
    logFile,
    alive: true,
    exited: new Promise((res) =>
      child.once('exit', (code, signal) => {
        p.alive = false;
        children.delete(child);
        res({ code, signal });
      }),
    ),
  };
  log(`started ${name} pid ${p.pid}`);
  return p;
}

async function stopProc(p: Proc, timeoutMs = 15_000): Promise<void> {
  if (!p.alive) return;
  try {
    process.kill(p.pid, 'SIGTERM');
  } catch {
    return;
  }
  const done = await Promise.race([p.exited.then(() => true), sleep(timeoutMs).then(() => false)]);
  if (!done && p.alive) {
    log(`${p.name} pid ${p.pid} did not exit after SIGTERM; SIGKILL`);
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
    await p.exited;
  }
}

function killAllSync(): void {
  for (const c of children) {
    try {
      if (c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  children.clear();
}

async function cleanup(): Promise<void> {
  killAllSync();
  await Promise.allSettled([...etcds].map((e) => e.stop()));
  etcds.clear();
  if (scratch && !KEEP) rmSync(scratch, { recursive: true, force: true });
  else if (scratch) log(`kept ${scratch}`);
}

process.on('exit', () => {
  killAllSync();
  if (scratch && !KEEP) rmSync(scratch, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    log(`${sig}: stopping everything`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------
// kubectl

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

class Kube {
  constructor(
    readonly target: string,
    readonly kubeconfig: string,
    readonly home: string,
  ) {}

  env(): NodeJS.ProcessEnv {
    return { ...process.env, KUBECONFIG: this.kubeconfig, HOME: this.home, KUBECACHEDIR: join(this.home, 'cache') };
  }

  run(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<Run> {
    return new Promise((res, rej) => {
      const child = spawn(join(BIN, 'kubectl'), args, { env: this.env(), stdio: ['pipe', 'pipe', 'pipe'] });
      children.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const timer = setTimeout(() => {
        stderr += `\n(e2e: killed after ${opts.timeoutMs ?? 300_000}ms)`;
        if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      }, opts.timeoutMs ?? 300_000);
      child.once('error', (e) => {
        clearTimeout(timer);
        children.delete(child);
        rej(e);
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        children.delete(child);
        res({ code, stdout, stderr });
      });
      child.stdin!.end(opts.input ?? '');
    });
  }

  /** kubectl that must succeed. */
  async ok(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    const r = await this.run(args, opts);
    if (r.code !== 0) throw new Error(`[${this.target}] kubectl ${args.join(' ').slice(0, 200)} exited ${r.code}: ${r.stderr.trim().slice(0, 2000)}`);
    return r.stdout;
  }

  async json(args: string[]): Promise<any> {
    return JSON.parse(await this.ok([...args, '-o', 'json']));
  }

  /** A background `kubectl get -w --output-watch-events -o json`; parses the event stream. */
  watch(args: string[]): Watcher {
    return new Watcher(spawn(join(BIN, 'kubectl'), ['get', ...args, '-w', '--output-watch-events', '-o', 'json'], { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] }));
  }
}

interface WatchEvent {
  type: string;
  object: any;
}

class Watcher {
  events: WatchEvent[] = [];
  stderr = '';
  exited = false;
  #buf = '';
  #depth = 0;
  #inString = false;
  #escape = false;
  #start = -1;

  constructor(readonly child: ChildProcess) {
    children.add(child);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => this.#feed(d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    child.once('exit', () => {
      this.exited = true;
      children.delete(child);
    });
  }

  /** Splits concatenated pretty-printed JSON objects. */
  #feed(d: string): void {
    const base = this.#buf.length;
    this.#buf += d;
    for (let i = base; i < this.#buf.length; i++) {
      const c = this.#buf[i];
      if (this.#inString) {
        if (this.#escape) this.#escape = false;
        else if (c === '\\') this.#escape = true;
        else if (c === '"') this.#inString = false;
        continue;
      }
      if (c === '"') this.#inString = true;
      else if (c === '{') {
        if (this.#depth++ === 0) this.#start = i;
      } else if (c === '}') {
        if (--this.#depth === 0) {
          this.events.push(JSON.parse(this.#buf.slice(this.#start, i + 1)) as WatchEvent);
          this.#buf = this.#buf.slice(i + 1);
          i = -1;
        }
      }
    }
    if (this.#depth === 0) this.#buf = '';
  }

  async waitFor(pred: (evs: WatchEvent[]) => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (pred(this.events)) return true;
      if (this.exited) return pred(this.events);
      await sleep(200);
    }
    return pred(this.events);
  }

  async stop(): Promise<void> {
    if (this.exited || this.child.pid === undefined) return;
    const gone = new Promise((r) => this.child.once('exit', r));
    process.kill(this.child.pid, 'SIGTERM');
    await Promise.race([gone, sleep(5000)]);
    if (!this.exited) process.kill(this.child.pid, 'SIGKILL');
  }
}

// ---------------------------------------------------------------------------
// Kubernetes control plane

interface ControlPlane {
  target: string;
  dir: string;
  etcdUrl: string;
  port: number;
  apiserverArgs: string[];
  apiserver: Proc;
  apiserverLogs: string[];
  kcm: Proc | undefined;
  kube: Kube;
}

function httpsGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: 'GET', rejectUnauthorized: false, headers: { Authorization: `Bearer ${TOKEN}` }, timeout: 5000 },
      (r) => {
        let body = '';
        r.setEncoding('utf8').on('data', (d: string) => (body += d));
        r.on('end', () => res({ status: r.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', rej);
    req.end();
  });
}

/** kube-apiserver's etcd_request_duration_seconds, as mean ms per operation (all, and per operation label). */
const storageLatency = new Map<string, Map<string, { meanMs: number; count: number }>>(); // operation -> target -> mean

async function recordStorageLatency(cp: ControlPlane): Promise<void> {
  const r = await httpsGet(cp.port, '/metrics');
  if (r.status !== 200) throw new Error(`[${cp.target}] GET /metrics: HTTP ${r.status}`);
  const sums = new Map<string, { sum: number; count: number }>();
  const add = (op: string, field: 'sum' | 'count', v: number) => {
    const e = sums.get(op) ?? { sum: 0, count: 0 };
    e[field] += v;
    sums.set(op, e);
  };
  for (const line of r.body.split('\n')) {
    const m = /^etcd_request_duration_seconds_(sum|count)\{([^}]*)\} ([0-9.e+-]+)$/.exec(line);
    if (!m) continue;
    const op = /operation="([^"]*)"/.exec(m[2]!)?.[1] ?? '?';
    const field = m[1] as 'sum' | 'count';
    add('all', field, Number(m[3]));
    add(op, field, Number(m[3]));
  }
  for (const [op, e] of sums) {
    if (e.count === 0) continue;
    const byTarget = storageLatency.get(op) ?? new Map();
    byTarget.set(cp.target, { meanMs: (e.sum / e.count) * 1000, count: e.count });
    storageLatency.set(op, byTarget);
  }
}

async function waitReady(cp: ControlPlane, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (!cp.apiserver.alive) throw new Error(`[${cp.target}] kube-apiserver exited during start; log ${cp.apiserver.logFile}:\n${tail(cp.apiserver.logFile)}`);
    try {
      const r = await httpsGet(cp.port, '/readyz');
      if (r.status === 200) return;
      last = `${r.status} ${r.body.slice(0, 500)}`;
    } catch (e) {
      last = String(e);
    }
    await sleep(500);
  }
  throw new Error(`[${cp.target}] kube-apiserver not ready after ${timeoutMs}ms: ${last}\n${tail(cp.apiserver.logFile)}`);
}

function tail(file: string, chars = 3000): string {
  try {
    const s = readFileSync(file, 'utf8');
    return s.slice(-chars);
  } catch {
    return '';
  }
}

async function startControlPlane(target: string, dir: string, etcdUrl: string): Promise<ControlPlane> {
  mkdirSync(join(dir, 'certs'), { recursive: true });
  mkdirSync(join(dir, 'home'), { recursive: true });
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  writeFileSync(join(dir, 'sa.key'), privateKey, { mode: 0o600 });
  writeFileSync(join(dir, 'sa.pub'), publicKey);
  writeFileSync(join(dir, 'tokens.csv'), `${TOKEN},admin,admin-uid,system:masters\n`, { mode: 0o600 });
  const port = await freePort();
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: e2e',
      '  cluster:',
      `    server: https://127.0.0.1:${port}`,
      '    insecure-skip-tls-verify: true',
      'users:',
      '- name: admin',
      '  user:',
      `    token: ${TOKEN}`,
      'contexts:',
      '- name: e2e',
      '  context: {cluster: e2e, user: admin}',
      'current-context: e2e',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const apiserverArgs = [
    `--etcd-servers=${etcdUrl}`,
    '--bind-address=127.0.0.1',
    `--secure-port=${port}`,
    '--advertise-address=127.0.0.1',
    `--cert-dir=${join(dir, 'certs')}`,
    `--token-auth-file=${join(dir, 'tokens.csv')}`,
    '--authorization-mode=RBAC',
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    `--service-account-key-file=${join(dir, 'sa.pub')}`,
    `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
    '--service-cluster-ip-range=10.0.0.0/24',
    // The compactor runs during the workload too.
    '--etcd-compaction-interval=1m',
    '--profiling=false',
  ];
  const cp: ControlPlane = {
    target,
    dir,
    etcdUrl,
    port,
    apiserverArgs,
    apiserver: undefined as unknown as Proc,
    apiserverLogs: [],
    kcm: undefined,
    kube: new Kube(target, kubeconfig, join(dir, 'home')),
  };
  await startApiserver(cp);
  return cp;
}

async function startApiserver(cp: ControlPlane): Promise<void> {
  const logFile = join(cp.dir, `kube-apiserver-${cp.apiserverLogs.length + 1}.log`);
  cp.apiserverLogs.push(logFile);
  cp.apiserver = startProc(`${cp.target} kube-apiserver`, join(BIN, 'kube-apiserver'), cp.apiserverArgs, logFile);
  await waitReady(cp);
}

async function startKcm(cp: ControlPlane): Promise<void> {
  const port = await freePort();
  cp.kcm = startProc(
    `${cp.target} kube-controller-manager`,
    join(BIN, 'kube-controller-manager'),
    [
      `--kubeconfig=${cp.kube.kubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
      '--controllers=namespace,garbagecollector,serviceaccount,clusterrole-aggregation',
      '--use-service-account-credentials=false',
      `--service-account-private-key-file=${join(cp.dir, 'sa.key')}`,
      '--leader-elect=true',
    ],
    join(cp.dir, 'kube-controller-manager.log'),
  );
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (!cp.kcm.alive) throw new Error(`[${cp.target}] kube-controller-manager exited:\n${tail(cp.kcm.logFile)}`);
    const r = await cp.kube.run(['get', 'lease', 'kube-controller-manager', '-n', 'kube-system', '-o', 'jsonpath={.spec.holderIdentity}']);
    if (r.code === 0 && r.stdout.trim() !== '') return;
    await sleep(1000);
  }
  throw new Error(`[${cp.target}] kube-controller-manager did not take its leader lease:\n${tail(cp.kcm.logFile)}`);
}

async function stopControlPlane(cp: ControlPlane): Promise<void> {
  if (cp.kcm) await stopProc(cp.kcm);
  await stopProc(cp.apiserver);
}

// ---------------------------------------------------------------------------
// Storage targets

interface Storage {
  url: string;
  stop(): Promise<void>;
  members: EtcdProcess[];
  proxy: Proc | undefined;
}

async function startPlainEtcd(dir: string): Promise<Storage> {
  const e = await EtcdProcess.start({ name: 'plain', dataDir: join(dir, 'etcd') });
  etcds.add(e);
  log(`plain etcd pid ${e.pid} on ${e.clientUrl}`);
  return {
    url: e.clientUrl,
    members: [],
    proxy: undefined,
    stop: async () => {
      await e.stop();
      etcds.delete(e);
    },
  };
}

async function startMetaetcd(dir: string): Promise<Storage> {
  const d = defaultProxyConfig();
  const settings = memberEtcdSettings(d.maxRequestBytes, d.maxTxnOps);
  const started = await Promise.all(
    ['coordinator', 'member-0', 'member-1', 'member-2'].map((name) => EtcdProcess.start({ name, dataDir: join(dir, name), ...settings })),
  );
  for (const e of started) {
    etcds.add(e);
    log(`${e.name} pid ${e.pid} on ${e.clientUrl}`);
  }
  const [coordinator, ...members] = started as [EtcdProcess, ...EtcdProcess[]];
  const port = await freePort();
  const proxy = startProc(
    'metaetcd proxy',
    process.execPath,
    [
      '--import',
      'tsx',
      join(HERE, 'metaetcd-proxy.ts'),
      '--coordinator',
      coordinator.clientUrl,
      '--members',
      members.map((m) => m.clientUrl).join(','),
      '--listen-addr',
      `127.0.0.1:${port}`,
      '--metrics-port',
      '0',
      '--workers',
      String(PROXY_WORKERS),
      '--v',
      'warn',
    ],
    join(dir, 'metaetcd.log'),
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (!proxy.alive) throw new Error(`metaetcd proxy exited:\n${tail(proxy.logFile)}`);
    const r = await new Promise<number | null>((res) => {
      const c = spawn('etcdctl', ['--endpoints', `127.0.0.1:${port}`, '--command-timeout=2s', 'endpoint', 'health'], {
        env: { ...process.env, ETCDCTL_API: '3' },
        stdio: 'ignore',
      });
      c.once('close', res);
    });
    if (r === 0) break;
    if (Date.now() > deadline) throw new Error(`metaetcd proxy not healthy after 60s:\n${tail(proxy.logFile)}`);
    await sleep(300);
  }
  log(`metaetcd proxy serving on ${url}`);
  return {
    url,
    members,
    proxy,
    stop: async () => {
      await stopProc(proxy);
      await Promise.allSettled(started.map((e) => e.stop()));
      for (const e of started) etcds.delete(e);
    },
  };
}

// ---------------------------------------------------------------------------
// Workload

const cmName = (i: number) => `cm-${String(i).padStart(5, '0')}`;
const payload = (i: number) => `value-${i}-` + 'x'.repeat(200);

function configMapDocs(ns: string, from: number, to: number, prefix = 'cm'): string {
  const docs: string[] = [];
  for (let i = from; i < to; i++) {
    const name = prefix === 'cm' ? cmName(i) : `${prefix}-${String(i).padStart(5, '0')}`;
    docs.push(
      [
        'apiVersion: v1',
        'kind: ConfigMap',
        'metadata:',
        `  name: ${name}`,
        `  namespace: ${ns}`,
        '  labels: {e2e: "yes"}',
        'data:',
        `  index: "${i}"`,
        `  payload: "${payload(i)}"`,
      ].join('\n'),
    );
  }
  return docs.join('\n---\n') + '\n';
}

/** Runs `kubectl create -f -` over chunks, PARALLEL at a time; returns the names kubectl reported created. */
async function createChunks(kube: Kube, chunks: string[], tolerateErrors = false): Promise<{ created: Set<string>; errors: string[] }> {
  const created = new Set<string>();
  const errors: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < chunks.length) {
      const input = chunks[next++]!;
      const r = await kube.run(['create', '-f', '-', '-o', 'name'], { input, timeoutMs: 600_000 });
      for (const line of r.stdout.split('\n')) if (line.trim()) created.add(line.trim().replace(/^.*\//, ''));
      if (r.code !== 0) {
        errors.push(...r.stderr.split('\n').filter((l) => l.trim()));
        if (!tolerateErrors) throw new Error(`[${kube.target}] kubectl create failed: ${r.stderr.slice(0, 2000)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  return { created, errors };
}

function chunked(n: number, size: number, make: (from: number, to: number) => string): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i += size) out.push(make(i, Math.min(n, i + size)));
  return out;
}

const CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.metaetcd.io
spec:
  group: e2e.metaetcd.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              color: {type: string}
`;

function widgetDocs(ns: string, from: number, to: number): string {
  const docs: string[] = [];
  for (let i = from; i < to; i++) {
    docs.push(`apiVersion: e2e.metaetcd.io/v1\nkind: Widget\nmetadata:\n  name: w-${String(i).padStart(4, '0')}\n  namespace: ${ns}\nspec:\n  size: ${i}\n  color: ${['red', 'green', 'blue'][i % 3]}`);
  }
  return docs.join('\n---\n') + '\n';
}

interface Dump {
  namespaces: string[];
  configmaps: { name: string; labels: any; data: any }[];
  widgets: { name: string; labels: any; spec: any }[];
  delNamespaceConfigmaps: number;
}

function cleanLabels(l: any): any {
  return l ?? {};
}

async function dump(kube: Kube): Promise<Dump> {
  const ns = await kube.json(['get', 'ns']);
  const cms = await kube.json(['get', 'cm', '-n', 'e2e-a', '--chunk-size=500']);
  const ws = await kube.json(['get', 'widgets', '-n', 'e2e-b', '--chunk-size=50']);
  const del = await kube.run(['get', 'cm', '-n', 'e2e-del', '-o', 'name']);
  return {
    namespaces: ns.items.map((n: any) => n.metadata.name).filter((n: string) => n.startsWith('e2e-') || n.startsWith('kube-') || n === 'default').sort(),
    configmaps: cms.items
      // The sentinel's value counts the attempts syncWatch needed (a timing, not data): it is left out of the comparison.
      .map((c: any) => ({ name: c.metadata.name, labels: cleanLabels(c.metadata.labels), data: c.metadata.name === 'sentinel' ? {} : (c.data ?? {}) }))
      .sort((a: any, b: any) => a.name.localeCompare(b.name)),
    widgets: ws.items
      .map((w: any) => ({ name: w.metadata.name, labels: cleanLabels(w.metadata.labels), spec: w.spec }))
      .sort((a: any, b: any) => a.name.localeCompare(b.name)),
    delNamespaceConfigmaps: del.stdout.split('\n').filter((l) => l.trim()).length,
  };
}

async function leaseRenewTime(kube: Kube): Promise<string> {
  return (await kube.ok(['get', 'lease', 'kube-controller-manager', '-n', 'kube-system', '-o', 'jsonpath={.spec.renewTime}'])).trim();
}

/** Patches a sentinel ConfigMap until the watcher reports it (the watch is established). */
async function syncWatch(kube: Kube, w: Watcher, ns: string, tag: string): Promise<boolean> {
  for (let i = 0; i < 60; i++) {
    const value = `${tag}-${i}`;
    await kube.ok(['patch', 'cm', 'sentinel', '-n', ns, '--type=merge', '-p', JSON.stringify({ data: { sync: value } })]);
    if (await w.waitFor((evs) => evs.some((e) => e.object?.metadata?.name === 'sentinel' && e.object?.data?.sync === value), 1000)) return true;
    if (w.exited) return false;
  }
  return false;
}

async function workload(target: string, cp: ControlPlane): Promise<Dump> {
  const k = cp.kube;
  const T = target;
  await step(T, 'controller-manager start (leader lease)', () => startKcm(cp));
  const lease0 = await leaseRenewTime(k);

  await step(T, 'namespaces', async () => {
    const docs = ['e2e-a', 'e2e-b', 'e2e-del'].map((n) => `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${n}`).join('\n---\n');
    await k.ok(['create', '-f', '-'], { input: docs });
    const names = (await k.ok(['get', 'ns', '-o', 'name'])).split('\n');
    check(['e2e-a', 'e2e-b', 'e2e-del'].every((n) => names.includes(`namespace/${n}`)), `[${T}] namespaces created`);
  });

  await step(T, `create ${N_CM} configmaps`, async () => {
    const { created } = await createChunks(k, chunked(N_CM, 250, (a, b) => configMapDocs('e2e-a', a, b)));
    check(created.size === N_CM, `[${T}] kubectl reported ${created.size}/${N_CM} configmaps created`);
  });
  await step(T, `create ${N_DEL_CM} configmaps (namespace to delete)`, async () => {
    const { created } = await createChunks(k, chunked(N_DEL_CM, 50, (a, b) => configMapDocs('e2e-del', a, b)));
    check(created.size === N_DEL_CM, `[${T}] ${created.size}/${N_DEL_CM} configmaps created in e2e-del`);
  });

  await step(T, 'paged list (--chunk-size=500)', async () => {
    const r = await k.run(['get', 'cm', '-n', 'e2e-a', '--chunk-size=500', '-o', 'name', '-v=6']);
    const names = r.stdout.split('\n').filter((l) => l.startsWith('configmap/cm-'));
    // -v=6 logs each request's URL; count the distinct pages asked for.
    const pages = new Set(r.stderr.split('\n').flatMap((l) => l.match(/https:\/\/[^\s"]+\/configmaps\?[^\s"]*limit=500[^\s"]*/g) ?? [])).size;
    check(r.code === 0 && names.length === N_CM, `[${T}] paged list returned ${names.length}/${N_CM} configmaps`);
    check(pages === Math.ceil(N_CM / 500), `[${T}] paged list took ${pages} pages of 500 (expected ${Math.ceil(N_CM / 500)})`);
    const all = await k.ok(['get', 'cm', '-A', '--chunk-size=500', '-o', 'name']);
    const total = all.split('\n').filter((l) => l.startsWith('configmap/cm-')).length;
    check(total === N_CM + N_DEL_CM, `[${T}] list over all namespaces: ${total}/${N_CM + N_DEL_CM}`);
  });

  await step(T, `CRD + ${N_CR} custom resources`, async () => {
    await k.ok(['apply', '-f', '-'], { input: CRD });
    await k.ok(['wait', '--for=condition=Established', 'crd/widgets.e2e.metaetcd.io', '--timeout=60s']);
    // Discovery may lag the Established condition by a moment.
    for (let i = 0; ; i++) {
      const r = await k.run(['get', 'widgets', '-n', 'e2e-b']);
      if (r.code === 0) break;
      if (i > 30) throw new Error(`[${T}] widgets never became listable: ${r.stderr}`);
      await sleep(1000);
    }
    const { created } = await createChunks(k, chunked(N_CR, 25, (a, b) => widgetDocs('e2e-b', a, b)));
    check(created.size === N_CR, `[${T}] ${created.size}/${N_CR} widgets created`);
    const listed = (await k.ok(['get', 'widgets', '-n', 'e2e-b', '--chunk-size=30', '-o', 'name'])).split('\n').filter((l) => l.trim()).length;
    check(listed === N_CR, `[${T}] widgets listed in pages of 30: ${listed}/${N_CR}`);
  });

  await k.ok(['create', 'cm', 'sentinel', '-n', 'e2e-a', '--from-literal=sync=0']);
  const watcher = k.watch(['cm', '-n', 'e2e-a', '--watch-only']);
  await step(T, `watched updates (${N_UPD} labels, ${N_PATCH} data patches, ${N_CR} CR labels)`, async () => {
    if (!check(await syncWatch(k, watcher, 'e2e-a', 'before'), `[${T}] kubectl watch established`)) return;
    const labelled = Array.from({ length: N_UPD }, (_, i) => cmName(i));
    const patched = Array.from({ length: N_PATCH }, (_, i) => cmName(N_UPD + i));
    for (let i = 0; i < labelled.length; i += 100) await k.ok(['label', 'cm', '-n', 'e2e-a', ...labelled.slice(i, i + 100), 'e2eupdated=1']);
    let next = 0;
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < patched.length) {
          const n = patched[next++]!;
          await k.ok(['patch', 'cm', n, '-n', 'e2e-a', '--type=merge', '-p', '{"data":{"rev":"2"}}']);
        }
      }),
    );
    await k.ok(['label', 'widgets', '--all', '-n', 'e2e-b', 'e2eupdated=1']);
    const want = new Set([...labelled, ...patched]);
    const seen = () => {
      const s = new Set<string>();
      for (const e of watcher.events) {
        if (e.type !== 'MODIFIED') continue;
        const o = e.object;
        if (o?.metadata?.labels?.e2eupdated === '1' || o?.data?.rev === '2') s.add(o.metadata.name);
      }
      return s;
    };
    await watcher.waitFor(() => [...want].every((n) => seen().has(n)), 60_000);
    const s = seen();
    const missing = [...want].filter((n) => !s.has(n));
    check(missing.length === 0, `[${T}] watch saw ${want.size - missing.length}/${want.size} updates${missing.length ? ` (missing e.g. ${missing.slice(0, 5).join(',')})` : ''}`);
    const unexpected = watcher.events.filter((e) => e.type !== 'MODIFIED' && e.type !== 'BOOKMARK');
    check(unexpected.length === 0, `[${T}] watch saw only MODIFIED events (${watcher.events.length} events; other: ${unexpected.map((e) => e.type).slice(0, 5).join(',')})`);
    const ordered = watcher.events.every((e, i, a) => i === 0 || Number(e.object.metadata.resourceVersion) > Number(a[i - 1]!.object.metadata.resourceVersion));
    check(ordered, `[${T}] watch events arrive in increasing resourceVersion`);
  });
  await watcher.stop();
  if (watcher.stderr.trim()) log(`[${T}] watch stderr: ${watcher.stderr.trim().slice(0, 500)}`);

  await step(T, 'events', async () => {
    const evs = await k.json(['get', 'events', '-A']);
    const reasons = new Set(evs.items.map((e: any) => e.reason));
    check(evs.items.length > 0 && reasons.has('LeaderElection'), `[${T}] ${evs.items.length} events, reasons ${[...reasons].join(',')}`);
  });

  await step(T, 'lease renewals', async () => {
    let renew = await leaseRenewTime(k);
    if (renew === lease0) {
      const deadline = Date.now() + 20_000;
      while (renew === lease0 && Date.now() < deadline) {
        await sleep(1000);
        renew = await leaseRenewTime(k);
      }
    }
    const later = await (async () => {
      const deadline = Date.now() + 20_000;
      let r = renew;
      while (r === renew && Date.now() < deadline) {
        await sleep(1000);
        r = await leaseRenewTime(k);
      }
      return r;
    })();
    check(Date.parse(renew) > Date.parse(lease0) && Date.parse(later) > Date.parse(renew), `[${T}] kube-controller-manager lease renewTime advanced ${lease0} -> ${renew} -> ${later}`);
  });

  await step(T, 'namespace deletion (namespace controller)', async () => {
    await k.ok(['delete', 'ns', 'e2e-del', '--timeout=300s'], { timeoutMs: 330_000 });
    const r = await k.run(['get', 'ns', 'e2e-del']);
    check(r.code !== 0 && /NotFound|not found/.test(r.stderr), `[${T}] namespace e2e-del is gone`);
    const left = await k.ok(['get', 'cm', '-n', 'e2e-del', '-o', 'name']);
    check(left.trim() === '', `[${T}] no configmaps left in e2e-del`);
  });

  const before = await dump(k);
  check(before.configmaps.length === N_CM + 1 && before.widgets.length === N_CR, `[${T}] before restart: ${before.configmaps.length} configmaps (incl. sentinel), ${before.widgets.length} widgets`);

  // Before the restart resets kube-apiserver's metrics: its storage latency over the whole workload.
  await recordStorageLatency(cp).catch((e) => log(`[${T}] could not read kube-apiserver's etcd_request_duration_seconds: ${e instanceof Error ? e.message : e}`));
  await step(T, 'kube-apiserver restart', async () => {
    const t = Date.now();
    await stopProc(cp.apiserver, 30_000);
    log(`[${T}] kube-apiserver pid ${cp.apiserver.pid} stopped after ${((Date.now() - t) / 1000).toFixed(1)}s`);
    await startApiserver(cp);
  });
  if (cp.kcm && !cp.kcm.alive) {
    // It exits when it cannot renew its lease for --leader-elect-renew-deadline (10s).
    log(`[${T}] kube-controller-manager exited while kube-apiserver was down (${tail(cp.kcm.logFile, 300).trim().split('\n').at(-1)}); starting it again`);
    await startKcm(cp);
  }
  await step(T, 'after restart: objects + new watch', async () => {
    const after = await dump(k);
    check(JSON.stringify(after) === JSON.stringify(before), `[${T}] all objects unchanged across the apiserver restart`);
    const w = k.watch(['cm', '-n', 'e2e-a', '--watch-only']);
    check(await syncWatch(k, w, 'e2e-a', 'after'), `[${T}] a new kubectl watch sees changes after the restart`);
    await k.ok(['label', 'cm', '-n', 'e2e-a', cmName(0), cmName(N_CM - 1), 'e2eafter=1']);
    check(
      await w.waitFor((evs) => [cmName(0), cmName(N_CM - 1)].every((n) => evs.some((e) => e.object?.metadata?.name === n && e.object?.metadata?.labels?.e2eafter === '1')), 30_000),
      `[${T}] the new watch sees label updates`,
    );
    await w.stop();
    await k.ok(['label', 'cm', '-n', 'e2e-a', cmName(0), cmName(N_CM - 1), 'e2eafter-']);
  });
  return dump(k);
}

// ---------------------------------------------------------------------------
// Member kill (metaetcd only)

async function killPhase(cp: ControlPlane, storage: Storage): Promise<void> {
  const T = 'metaetcd';
  const k = cp.kube;
  const victim = storage.members[1]!;
  await k.ok(['create', 'ns', 'e2e-kill']);
  const logFrom = statSync(cp.apiserverLogs.at(-1)!).size;
  let killedAt = 0;
  let restartedAt = 0;
  const creation = createChunks(
    k,
    chunked(N_KILL_CM, 50, (a, b) => configMapDocs('e2e-kill', a, b, 'k')),
    true,
  );
  const chaos = (async () => {
    await sleep(3000);
    log(`[${T}] SIGKILL ${victim.name} pid ${victim.pid}`);
    process.kill(victim.pid, 'SIGKILL');
    killedAt = Date.now();
    await sleep(5000);
    await victim.restart();
    restartedAt = Date.now();
    log(`[${T}] ${victim.name} restarted on ${victim.dataDir}, pid ${victim.pid}`);
  })();
  const { created, errors } = await step(T, `member kill during ${N_KILL_CM} configmap creations`, async () => {
    const [res] = await Promise.all([creation, chaos]);
    return res;
  });
  log(`[${T}] member down for ${((restartedAt - killedAt) / 1000).toFixed(1)}s; kubectl acknowledged ${created.size}/${N_KILL_CM}, ${errors.length} error lines`);
  for (const e of [...new Set(errors.map((l) => l.replace(/"k-\d+"/g, '"k-N"')))].slice(0, 10)) log(`  kubectl: ${e}`);
  const existing = new Set(
    (await k.ok(['get', 'cm', '-n', 'e2e-kill', '--chunk-size=500', '-o', 'name']))
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => l.replace(/^.*\//, '')),
  );
  const lost = [...created].filter((n) => !existing.has(n));
  check(lost.length === 0, `[${T}] no acknowledged write lost: ${created.size} acknowledged, ${existing.size} exist, ${lost.length} lost${lost.length ? ` (${lost.slice(0, 10).join(',')})` : ''}`);
  // Recovery: the ones that failed can be created now.
  const missing = Array.from({ length: N_KILL_CM }, (_, i) => i).filter((i) => !existing.has(`k-${String(i).padStart(5, '0')}`));
  if (missing.length > 0) {
    const docs = missing.map((i) => configMapDocs('e2e-kill', i, i + 1, 'k')).join('---\n');
    const r = await k.run(['create', '-f', '-', '-o', 'name'], { input: docs });
    check(r.code === 0, `[${T}] after the member restart the ${missing.length} failed creations succeed${r.code === 0 ? '' : `: ${r.stderr.slice(0, 500)}`}`);
  }
  const count = (await k.ok(['get', 'cm', '-n', 'e2e-kill', '-o', 'name'])).split('\n').filter((l) => l.trim()).length;
  check(count === N_KILL_CM, `[${T}] e2e-kill holds ${count}/${N_KILL_CM} configmaps`);
  const lines = readFileSync(cp.apiserverLogs.at(-1)!, 'utf8').slice(logFrom).split('\n').filter((l) => STORAGE_ERROR.test(l));
  log(`[${T}] kube-apiserver logged ${lines.length} storage error lines during the member kill (expected; first 5):`);
  for (const l of lines.slice(0, 5)) log(`  ${l.slice(0, 400)}`);
}

// ---------------------------------------------------------------------------
// Main

function storageErrors(cp: ControlPlane, upTo?: Map<string, number>): string[] {
  const out: string[] = [];
  for (const f of cp.apiserverLogs) {
    let s = readFileSync(f, 'utf8');
    const limit = upTo?.get(f);
    if (limit !== undefined) s = s.slice(0, limit);
    for (const l of s.split('\n')) if (STORAGE_ERROR.test(l)) out.push(`${f.replace(/.*\//, '')}: ${l}`);
  }
  return out;
}

function diffDumps(a: Dump, b: Dump): string[] {
  const out: string[] = [];
  if (JSON.stringify(a.namespaces) !== JSON.stringify(b.namespaces)) out.push(`namespaces ${a.namespaces} vs ${b.namespaces}`);
  if (a.delNamespaceConfigmaps !== b.delNamespaceConfigmaps) out.push(`e2e-del configmaps ${a.delNamespaceConfigmaps} vs ${b.delNamespaceConfigmaps}`);
  for (const key of ['configmaps', 'widgets'] as const) {
    const am = new Map(a[key].map((o) => [o.name, JSON.stringify(o)]));
    const bm = new Map(b[key].map((o) => [o.name, JSON.stringify(o)]));
    if (am.size !== bm.size) out.push(`${key}: ${am.size} vs ${bm.size}`);
    for (const [n, v] of am) if (bm.get(n) !== v) out.push(`${key} ${n}: ${v} vs ${bm.get(n) ?? '(missing)'}`);
    for (const n of bm.keys()) if (!am.has(n)) out.push(`${key} ${n}: (missing) vs present`);
  }
  return out;
}

async function main(): Promise<void> {
  if (N_CM < N_UPD + N_PATCH || N_CM < 1) throw new Error(`E2E_KUBE_CONFIGMAPS (${N_CM}) must be at least E2E_KUBE_UPDATES + ${N_PATCH} (${N_UPD + N_PATCH})`);
  for (const b of ['kube-apiserver', 'kube-controller-manager', 'kubectl']) {
    if (!existsSync(join(BIN, b))) throw new Error(`${join(BIN, b)} is missing: run e2e/kube/build.sh first (or set KUBE_BIN_DIR)`);
  }
  const version = (await new Kube('-', '/dev/null', tmpdir()).ok(['version', '--client', '-o', 'json']).catch(() => '{}')) as string;
  log(`kubectl ${JSON.parse(version || '{}').clientVersion?.gitVersion ?? '?'}; targets ${TARGETS.join(', ')}; ${N_CM} configmaps, ${N_CR} custom resources`);
  const root = mkdtempSync(join(defaultScratchRoot(), 'metaetcd-e2e-kube-'));
  scratch = root;
  log(`scratch directory ${root}`);
  const dumps = new Map<string, Dump>();
  const errors = new Map<string, string[]>();
  for (const target of TARGETS) if (target !== 'etcd' && target !== 'metaetcd') throw new Error(`unknown target ${target}`);
  const runTarget = async (target: string) => {
    const dir = join(root, target);
    mkdirSync(dir, { recursive: true });
    const storage = await step(target, 'storage start', () => (target === 'etcd' ? startPlainEtcd(dir) : startMetaetcd(dir)));
    let cp: ControlPlane | undefined;
    try {
      cp = await step(target, 'kube-apiserver start (/readyz)', () => startControlPlane(target, join(dir, 'kube'), storage.url));
      dumps.set(target, await workload(target, cp));
      const errs = storageErrors(cp);
      errors.set(target, errs);
      check(errs.length === 0, `[${target}] no storage errors in kube-apiserver logs (${errs.length} lines)`);
      for (const l of errs.slice(0, 40)) log(`  ${l.slice(0, 500)}`);
      if (target === 'metaetcd' && KILL) await killPhase(cp, storage);
      if (storage.proxy) {
        const plog = readFileSync(storage.proxy.logFile, 'utf8').split('\n').filter((l) => /"level":(50|60)/.test(l));
        log(`[${target}] metaetcd proxy logged ${plog.length} error lines${plog.length ? ' (first 5):' : ''}`);
        for (const l of plog.slice(0, 5)) log(`  ${l.slice(0, 400)}`);
      }
    } catch (e) {
      check(false, `[${target}] ${e instanceof Error ? e.message : String(e)}`);
      if (cp) for (const l of storageErrors(cp).slice(0, 40)) log(`  ${l.slice(0, 500)}`);
      if (KEEP === false) log(`(set E2E_KUBE_KEEP=1 to keep the logs in ${dir})`);
    } finally {
      if (cp) await stopControlPlane(cp);
      await storage.stop();
    }
  };
  if (CONCURRENT) await Promise.all(TARGETS.map(runTarget));
  else for (const target of TARGETS) await runTarget(target);

  if (dumps.has('etcd') && dumps.has('metaetcd')) {
    const d = diffDumps(dumps.get('etcd')!, dumps.get('metaetcd')!);
    check(d.length === 0, `same namespaces, configmaps (names, labels, data) and widgets on etcd and metaetcd${d.length ? `: ${d.length} differences` : ''}`);
    for (const l of d.slice(0, 20)) log(`  ${l}`);
  }

  const cols = TARGETS;
  const rows = [`| step | ${cols.join(' s | ')} s |${cols.length === 2 ? ' ratio |' : ''}`, `|---|${cols.map(() => '---:|').join('')}${cols.length === 2 ? '---:|' : ''}`];
  for (const [name, m] of timings) {
    const vals = cols.map((c) => m.get(c));
    const ratio = cols.length === 2 && vals[0] && vals[1] ? ` ${(vals[1] / vals[0]).toFixed(2)} |` : cols.length === 2 ? ' |' : '';
    rows.push(`| ${name} | ${vals.map((v) => (v === undefined ? '' : v.toFixed(2))).join(' | ')} |${ratio}`);
  }
  process.stdout.write('\n' + rows.join('\n') + '\n\n');
  // As kube-apiserver measures its storage: mean etcd_request_duration_seconds over the workload up to its restart.
  const lat = [`| kube-apiserver etcd_request_duration_seconds, mean ms | ${cols.join(' | ')} |${cols.length === 2 ? ' ratio |' : ''}`, `|---|${cols.map(() => '---:|').join('')}${cols.length === 2 ? '---:|' : ''}`];
  const ops = [...storageLatency.keys()].sort((a, b) => (a === 'all' ? -1 : b === 'all' ? 1 : a.localeCompare(b)));
  for (const op of ops) {
    const m = storageLatency.get(op)!;
    const vals = cols.map((c) => m.get(c));
    const ratio = cols.length === 2 && vals[0] && vals[1] ? ` ${(vals[1].meanMs / vals[0].meanMs).toFixed(2)} |` : cols.length === 2 ? ' |' : '';
    lat.push(`| ${op} | ${vals.map((v) => (v === undefined ? '' : `${v.meanMs.toFixed(2)} (${v.count})`)).join(' | ')} |${ratio}`);
  }
  if (ops.length) process.stdout.write(lat.join('\n') + '\n\n');
  if (failures.length) {
    log(`${failures.length} check(s) FAILED:`);
    for (const f of failures) log(`  - ${f}`);
  } else log('all checks passed');
}

main()
  .catch((e) => {
    failures.push(String(e));
    log(`error: ${e instanceof Error ? e.stack : e}`);
  })
  .finally(async () => {
    await cleanup();
    process.exit(failures.length ? 1 : 0);
  });
