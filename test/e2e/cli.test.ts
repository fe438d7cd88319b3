// The product as a user runs it: `metaetcd` (bin/metaetcd.js, the compiled CLI)
// as a child process, over separately started etcds and as `metaetcd sandbox`,
// driven with etcdctl.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { defaultScratchRoot, freePort } from '../../src/sandbox/etcd-process.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { etcdctl, type EtcdctlResult } from '../harness/etcdctl.js';
import { buildIfStale, healthOf } from '../harness/faults.js';
import { clientFor } from '../harness/proxy.js';

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'metaetcd.js');

let set: EtcdSet;
/** Every metaetcd child this file started (stopped in after() if still running). */
const children: Child[] = [];
/** etcd pids started by sandboxes (killed in after() if still running). */
const sandboxEtcdPids = new Set<number>();
const scratchDirs: string[] = [];

before(async () => {
  buildIfStale();
  set = await startEtcdSet({ name: 'cli' });
});

after(async () => {
  for (const c of children) if (c.running) await c.stop('SIGTERM', 10_000).catch(() => c.kill());
  for (const pid of sandboxEtcdPids) if (isEtcd(pid)) process.kill(pid, 'SIGKILL');
  for (const d of scratchDirs) rmSync(d, { recursive: true, force: true });
  await set?.stop();
});

// ---------------------------------------------------------------------------
// Helpers

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

class Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  stdout = '';
  stderr = '';
  exit: Exit | undefined;
  readonly exited: Promise<Exit>;

  constructor(args: string[]) {
    this.proc = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.proc.pid!;
    this.proc.stdout!.setEncoding('utf8').on('data', (s: string) => (this.stdout += s));
    this.proc.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    this.exited = new Promise((res) =>
      this.proc.on('close', (code, signal) => {
        this.exit = { code, signal };
        res(this.exit);
      }),
    );
    children.push(this);
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  describe(): string {
    return `metaetcd pid ${this.pid} exit ${JSON.stringify(this.exit)}\nstdout: ${this.stdout}\nstderr: ${this.stderr}`;
  }

  /** Waits for exit without signalling, up to timeoutMs. */
  async wait(timeoutMs: number): Promise<Exit> {
    const r = await Promise.race([this.exited, sleep(timeoutMs).then(() => undefined)]);
    if (!r) throw new Error(`did not exit within ${timeoutMs} ms: ${this.describe()}`);
    return r;
  }

  /** Sends `sig` and waits for the exit; SIGKILLs and throws when it takes longer than timeoutMs. */
  async stop(sig: NodeJS.Signals, timeoutMs: number): Promise<Exit> {
    if (!this.running) return this.exit!;
    process.kill(this.pid, sig);
    const r = await Promise.race([this.exited, sleep(timeoutMs).then(() => undefined)]);
    if (r) return r;
    this.kill();
    throw new Error(`did not exit within ${timeoutMs} ms of ${sig}: ${this.describe()}`);
  }

  kill(): void {
    if (this.running) process.kill(this.pid, 'SIGKILL');
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

async function waitUntil(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number, child?: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (child && !child.running) throw new Error(`exited while waiting for ${what}: ${child.describe()}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${child ? `: ${child.describe()}` : ''}`);
    await sleep(50);
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.setTimeout(1000);
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
    s.once('timeout', () => (s.destroy(), res(false)));
  });
}

function canBind(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
}

/** Starts metaetcd and waits until etcdctl can talk to it. */
async function startMetaetcd(args: string[], port: number): Promise<Child> {
  const c = new Child(args);
  await waitUntil(`port ${port}`, () => canConnect(port), 30_000, c);
  await waitUntil('endpoint health', async () => (await etcdctl(`127.0.0.1:${port}`, ['endpoint', 'health'])).code === 0, 30_000, c);
  return c;
}

function ok(r: EtcdctlResult, what: string): string {
  assert.equal(r.code, 0, `${what}: code ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

function isEtcd(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!.endsWith('etcd');
  } catch {
    return false;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie is dead too.
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

function childPids(pid: number): number[] {
  const r = spawnSync('ps', ['--ppid', String(pid), '-o', 'pid='], { encoding: 'utf8', timeout: 5000 });
  return r.stdout
    .split('\n')
    .map((s) => Number(s.trim()))
    .filter((n) => Number.isInteger(n) && n > 0);
}

async function memberKeys(url: string): Promise<string[]> {
  const c = clientFor(url);
  try {
    const r = await c.range({ key: Buffer.from('d'), rangeEnd: Buffer.from('e'), keysOnly: true });
    return r.kvs.map((kv) => kv.key.toString().slice(1));
  } finally {
    c.close();
  }
}

function proxyArgs(listenPort: number, metricsPort: number, members?: string): string[] {
  return [
    '--coordinator',
    set.coordinator.clientUrl,
    '--members',
    members ?? set.members.map((m) => m.clientUrl).join(','),
    '--listen-addr',
    `127.0.0.1:${listenPort}`,
    '--metrics-port',
    String(metricsPort),
  ];
}

// ---------------------------------------------------------------------------
// (a) metaetcd --coordinator ... --members ...

test('metaetcd over separately started etcds: etcdctl, key placement, /metrics, /health, SIGTERM', async () => {
  const port = await freePort();
  const metricsPort = await freePort();
  const proxy = await startMetaetcd(proxyArgs(port, metricsPort), port);
  const ep = `127.0.0.1:${port}`;

  assert.equal(ok(await etcdctl(ep, ['put', 'hello', 'world']), 'put'), 'OK\n');
  assert.equal(ok(await etcdctl(ep, ['get', 'hello']), 'get'), 'hello\nworld\n');

  const keys = Array.from({ length: 60 }, (_, i) => `cli/k${String(i).padStart(2, '0')}`);
  for (const k of keys) ok(await etcdctl(ep, ['put', k, `v-${k}`]), `put ${k}`);
  const listed = ok(await etcdctl(ep, ['get', 'cli/', '--prefix', '--keys-only']), 'get --prefix');
  assert.deepEqual(listed.split('\n').filter((l) => l !== ''), keys);

  // Each key is stored (as "d"+key) in exactly one member, and every member holds some.
  const perMember = await Promise.all(set.members.map((m) => memberKeys(m.clientUrl)));
  for (const k of [...keys, 'hello']) {
    const holders = perMember.flatMap((ks, i) => (ks.includes(k) ? [i] : []));
    assert.equal(holders.length, 1, `${k} is in members ${JSON.stringify(holders)}`);
  }
  for (const [i, ks] of perMember.entries()) assert.ok(ks.filter((k) => k.startsWith('cli/')).length > 0, `member ${i} holds no key`);
  assert.equal(perMember.flat().length, keys.length + 1, 'no stray client keys in members');

  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200);
  const body = await res.text();
  const puts = /^metaetcd_request_count\{[^}]*method="[^"]*[Pp]ut[^"]*"[^}]*\} (\d+)/m.exec(body);
  assert.match(body, /^# TYPE metaetcd_request_count /m);
  assert.ok(puts && Number(puts[1]) >= 61, `metaetcd_request_count for puts: ${body.split('\n').filter((l) => l.startsWith('metaetcd_request_count')).join('\n')}`);
  // /health on the same port, as etcd serves it on its metrics URLs.
  const health = await healthOf(metricsPort);
  assert.equal(health.status, 200);
  assert.deepEqual(health.body, { health: 'true', reason: '' });

  const exit = await proxy.stop('SIGTERM', 15_000);
  assert.deepEqual(exit, { code: 0, signal: null }, proxy.describe());
  assert.ok(await canBind(port), 'gRPC port released');
  assert.ok(await canBind(metricsPort), 'metrics port released');
});

test('Go-style flags are accepted (-listen-addr=..., --watch-timeout 5s, -v info)', async () => {
  const port = await freePort();
  const proxy = await startMetaetcd(
    [
      `-coordinator=${set.coordinator.clientUrl}`,
      '-members',
      set.members.map((m) => m.clientUrl).join(','),
      `-listen-addr=127.0.0.1:${port}`,
      '--watch-timeout',
      '5s',
      '--metrics-port=0',
      '-v',
      'info',
      '--watch-buffer-len=500',
    ],
    port,
  );
  const ep = `127.0.0.1:${port}`;
  assert.equal(ok(await etcdctl(ep, ['get', 'hello', '--print-value-only']), 'get'), 'world\n');
  assert.equal(ok(await etcdctl(ep, ['put', 'go-style', 'yes']), 'put'), 'OK\n');
  const exit = await proxy.stop('SIGTERM', 15_000);
  assert.deepEqual(exit, { code: 0, signal: null }, proxy.describe());
});

test('an unknown flag fails with a clear message and a non-zero exit', async () => {
  const c = new Child([...proxyArgs(await freePort(), 0), '--no-such-flag', 'x']);
  const exit = await c.wait(15_000);
  assert.notEqual(exit.code, 0, c.describe());
  assert.match(c.stderr, /flag provided but not defined: -no-such-flag/);
  assert.ok(c.stderr.length < 2000, `a message, not a stack dump: ${c.stderr}`);

  const missing = new Child(['--members', set.members[0]!.clientUrl]);
  const exit2 = await missing.wait(15_000);
  assert.notEqual(exit2.code, 0, missing.describe());
  assert.match(missing.stderr, /--coordinator is required/);

  const bad = new Child([...proxyArgs(await freePort(), 0), '--watch-timeout', 'soon']);
  const exit3 = await bad.wait(15_000);
  assert.notEqual(exit3.code, 0, bad.describe());
  assert.match(bad.stderr, /invalid value "soon" for flag -watch-timeout/);
});

test('a member given as two endpoints of one cluster ("url1;url2") works, in any --members order', async () => {
  const [m0, m1, m2] = set.members as [EtcdSet['members'][0], EtcdSet['members'][0], EtcdSet['members'][0]];
  // Same etcd twice: by IP and by name. Members listed in reverse order: identity decides the slots.
  const twice = `http://localhost:${m1.clientPort};http://127.0.0.1:${m1.clientPort}`;
  const port = await freePort();
  const proxy = await startMetaetcd(proxyArgs(port, 0, [m2.clientUrl, twice, m0.clientUrl].join(',')), port);
  const ep = `127.0.0.1:${port}`;
  assert.equal(ok(await etcdctl(ep, ['get', 'cli/k07', '--print-value-only']), 'get'), 'v-cli/k07\n');
  assert.equal(ok(await etcdctl(ep, ['get', 'cli/', '--prefix', '--keys-only']), 'list').split('\n').filter(Boolean).length, 60);
  for (let i = 0; i < 20; i++) ok(await etcdctl(ep, ['put', `two/k${i}`, 'v']), 'put');
  // New keys still land in exactly one member each, the members the first proxy's layout says.
  const perMember = await Promise.all(set.members.map((m) => memberKeys(m.clientUrl)));
  for (let i = 0; i < 20; i++) {
    assert.equal(perMember.filter((ks) => ks.includes(`two/k${i}`)).length, 1, `two/k${i}`);
  }
  assert.ok(perMember.every((ks) => ks.some((k) => k.startsWith('two/'))), 'spread over every member');
  const exit = await proxy.stop('SIGTERM', 15_000);
  assert.deepEqual(exit, { code: 0, signal: null }, proxy.describe());

  // A member cluster listed twice as two members is refused, clearly; nothing is broken by trying.
  const dup = new Child(proxyArgs(await freePort(), 0, [m0.clientUrl, m0.clientUrl, m1.clientUrl].join(',')));
  const dupExit = await dup.wait(30_000);
  assert.notEqual(dupExit.code, 0, dup.describe());
  assert.match(dup.stderr, /both claim member slot|duplicat/i, dup.describe());
  assert.ok(dup.stderr.length < 4000, dup.describe());
});

// ---------------------------------------------------------------------------
// (b) metaetcd sandbox

async function startSandbox(args: string[], port: number): Promise<{ child: Child; etcdPids: number[] }> {
  const child = new Child(['sandbox', '--listen-addr', `127.0.0.1:${port}`, ...args]);
  await waitUntil('the sandbox banner', () => /Press Ctrl-C to stop/.test(child.stdout), 60_000, child);
  const etcdPids = childPids(child.pid).filter(isEtcd);
  for (const p of etcdPids) sandboxEtcdPids.add(p);
  // Removed in after() too, should a failed test leave the sandbox's own temp dir behind.
  const dataDir = /data in (\S+?)\)/.exec(child.stdout)?.[1];
  if (dataDir?.startsWith(defaultScratchRoot())) scratchDirs.push(dataDir);
  return { child, etcdPids };
}

test('metaetcd sandbox: prints how to connect, serves etcdctl, SIGTERM stops everything and removes its temp dir', async () => {
  const port = await freePort();
  const { child, etcdPids } = await startSandbox(['--metrics-port', '0'], port);
  const ep = `127.0.0.1:${port}`;
  assert.match(child.stdout, new RegExp(`serving on ${ep.replace(/\./g, '\\.')}`));
  assert.ok(child.stdout.includes(`etcdctl --endpoints ${ep} put foo bar`), child.stdout);
  const dataDir = /data in (\S+?)\)/.exec(child.stdout)?.[1];
  assert.ok(dataDir && existsSync(dataDir), `data dir in banner: ${child.stdout}`);
  assert.equal(etcdPids.length, 4, `coordinator + 3 members: ${JSON.stringify(childPids(child.pid))}`);

  assert.equal(ok(await etcdctl(ep, ['put', 'foo', 'bar']), 'put'), 'OK\n');
  assert.equal(ok(await etcdctl(ep, ['get', 'foo']), 'get'), 'foo\nbar\n');
  for (let i = 0; i < 10; i++) ok(await etcdctl(ep, ['put', `sb/${i}`, String(i)]), 'put');
  assert.equal(ok(await etcdctl(ep, ['del', 'sb/', '--prefix']), 'del'), '10\n');
  const txn = ok(await etcdctl(ep, ['txn', '-i'], { input: 'value("foo") = "bar"\n\nput foo baz\n\nput foo nope\n\n' }), 'txn');
  assert.match(txn, /SUCCESS\n\nOK\n/);
  assert.equal(ok(await etcdctl(ep, ['get', 'foo', '--print-value-only']), 'get'), 'baz\n');
  const rev = JSON.parse(ok(await etcdctl(ep, ['get', 'foo', '-w', 'json']), 'get json')) as { header: { revision: number } };
  assert.equal(ok(await etcdctl(ep, ['compaction', String(rev.header.revision)]), 'compaction').trim(), `compacted revision ${rev.header.revision}`);
  const st = JSON.parse(ok(await etcdctl(ep, ['endpoint', 'status', '-w', 'json']), 'status')) as { Status: { version: string; dbSize: number } }[];
  assert.equal(st.length, 1);
  assert.ok(st[0]!.Status.version && st[0]!.Status.dbSize > 0);
  const ml = ok(await etcdctl(ep, ['member', 'list']), 'member list');
  assert.equal(ml.trim().split('\n').length, 1);
  assert.ok(ml.includes(`http://${ep}`), ml);

  const exit = await child.stop('SIGTERM', 20_000);
  assert.deepEqual(exit, { code: 0, signal: null }, child.describe());
  await waitUntil('sandbox etcds gone', () => etcdPids.every((p) => !alive(p)), 5000);
  assert.ok(!existsSync(dataDir), `temp dir ${dataDir} removed`);
  assert.ok(await canBind(port), 'port released');
});

test('metaetcd sandbox --data-dir: keys and revisions survive a restart; new writes get higher revisions', async () => {
  const dir = mkdtempSync(join(defaultScratchRoot(), 'metaetcd-cli-test-'));
  scratchDirs.push(dir);
  const dataDir = join(dir, 'sandbox');
  const port = await freePort();
  const ep = `127.0.0.1:${port}`;

  const first = await startSandbox(['--data-dir', dataDir, '--metrics-port', '0'], port);
  for (let i = 0; i < 12; i++) ok(await etcdctl(ep, ['put', `dd/${i % 8}`, `v${i}`]), 'put');
  ok(await etcdctl(ep, ['del', 'dd/7']), 'del');
  const before = JSON.parse(ok(await etcdctl(ep, ['get', 'dd/', '--prefix', '-w', 'json']), 'get')) as {
    header: { revision: number };
    kvs: { key: string; value: string; create_revision: number; mod_revision: number; version: number }[];
  };
  assert.equal(before.kvs.length, 7);
  const highest = Math.max(before.header.revision, ...before.kvs.map((kv) => kv.mod_revision));
  const exit = await first.child.stop('SIGTERM', 20_000);
  assert.deepEqual(exit, { code: 0, signal: null }, first.child.describe());
  await waitUntil('first sandbox etcds gone', () => first.etcdPids.every((p) => !alive(p)), 5000);
  assert.ok(existsSync(dataDir), 'a --data-dir is kept');

  const second = await startSandbox(['--data-dir', dataDir, '--metrics-port', '0'], port);
  const afterDoc = JSON.parse(ok(await etcdctl(ep, ['get', 'dd/', '--prefix', '-w', 'json']), 'get')) as typeof before;
  assert.deepEqual(afterDoc.kvs, before.kvs);
  assert.ok(afterDoc.header.revision >= highest);
  // The history survived too: a past revision reads as it did.
  const past = before.kvs[0]!.create_revision;
  const pastRead = ok(await etcdctl(ep, ['get', 'dd/', '--prefix', `--rev=${past}`, '--keys-only']), 'get --rev');
  assert.ok(pastRead.includes('dd/0'), pastRead);
  const put = JSON.parse(ok(await etcdctl(ep, ['put', 'dd/new', 'x', '-w', 'json']), 'put')) as { header: { revision: number } };
  assert.ok(put.header.revision > highest, `new write revision ${put.header.revision} > ${highest}`);
  assert.ok(put.header.revision > afterDoc.header.revision);
  const exit2 = await second.child.stop('SIGTERM', 20_000);
  assert.deepEqual(exit2, { code: 0, signal: null }, second.child.describe());
  await waitUntil('second sandbox etcds gone', () => second.etcdPids.every((p) => !alive(p)), 5000);
});
