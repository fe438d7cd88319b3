// Real etcd processes (not a unit test: it starts etcd): start, health, etcdctl, restart with data surviving,
// SIGSTOP/SIGCONT, stop (pid gone), port-retry, and the etcd-set harness.

import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { defaultScratchRoot, EtcdProcess, freePort } from '../../src/sandbox/etcd-process.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { etcdctl } from '../harness/etcdctl.js';

const TEST_TIMEOUT = 60_000;

type Cleanup = (fn: () => unknown) => void;

/** A scratch directory and a cleanup stack that runs last-in first-out (so etcd stops before its directory goes). */
function setup(t: { after(fn: () => unknown): void }): { dir: string; defer: Cleanup } {
  const dir = mkdtempSync(join(defaultScratchRoot(), 'metaetcd-unit-'));
  const stack: (() => unknown)[] = [() => rmSync(dir, { recursive: true, force: true })];
  t.after(async () => {
    for (const fn of stack.reverse()) await fn();
  });
  return { dir, defer: (fn) => stack.push(fn) };
}

/** GET a URL; resolves { status, body } or rejects on error/timeout. */
function httpText(url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpGet(url, { agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

function processState(pid: number): string | undefined {
  try {
    // /proc/PID/stat: "pid (comm) S ..." — the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/** Signal delivery is asynchronous: poll /proc until the state shows up. */
async function waitForState(pid: number, state: string, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (processState(pid) !== state) {
    if (Date.now() > deadline) assert.fail(`pid ${pid} is in state ${processState(pid)}, expected ${state}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function assertPidGone(pid: number): void {
  assert.throws(() => process.kill(pid, 0), (err: NodeJS.ErrnoException) => err.code === 'ESRCH');
}

test('freePort and defaultScratchRoot', async () => {
  const ports = await Promise.all(Array.from({ length: 8 }, () => freePort()));
  assert.equal(new Set(ports).size, ports.length, 'freePort hands out distinct ports');
  for (const p of ports) assert.ok(p > 0 && p < 65536);
  const root = defaultScratchRoot();
  assert.ok(existsSync(root));
  const chosen = process.env.METAETCD_SCRATCH_ROOT;
  if (chosen) assert.equal(root, chosen, 'the runner\'s per-process scratch root wins');
  else if (existsSync('/dev/shm')) assert.equal(root, '/dev/shm');
});

test('one etcd: health, etcdctl, restart, SIGSTOP/SIGCONT, stop, wipe', { timeout: TEST_TIMEOUT }, async (t) => {
  const { dir, defer } = setup(t);
  const etcd = await EtcdProcess.start({ name: 'unit-one', dataDir: join(dir, 'data') });
  defer(() => etcd.stop());

  assert.ok(etcd.running);
  assert.ok(etcd.pid > 0);
  assert.notEqual(etcd.clientPort, etcd.peerPort);
  assert.equal(etcd.clientUrl, `http://127.0.0.1:${etcd.clientPort}`);
  assert.doesNotThrow(() => process.kill(etcd.pid, 0));

  const health = await httpText(`${etcd.clientUrl}/health`, 2_000);
  assert.equal(health.status, 200);
  assert.equal((JSON.parse(health.body) as { health: string }).health, 'true');

  // etcdctl put/get, and txn -i through stdin
  const put = await etcdctl(etcd.clientUrl, ['put', 'greeting', 'hello']);
  assert.equal(put.code, 0, put.stderr);
  assert.equal(put.stdout.trim(), 'OK');
  const txn = await etcdctl(etcd.clientUrl, ['txn', '-i'], {
    input: 'value("greeting") = "hello"\n\nput other world\n\nput other nope\n\n',
  });
  assert.equal(txn.code, 0, txn.stderr);
  assert.match(txn.stdout, /^SUCCESS$/m);
  const got = await etcdctl(etcd.clientUrl, ['get', '--prefix', '']);
  assert.deepEqual(got.stdout.trim().split('\n'), ['greeting', 'hello', 'other', 'world']);

  // restart: same ports, new pid, data survives
  const { clientPort, peerPort, pid: firstPid } = { clientPort: etcd.clientPort, peerPort: etcd.peerPort, pid: etcd.pid };
  await etcd.restart();
  assert.ok(etcd.running);
  assert.notEqual(etcd.pid, firstPid);
  assertPidGone(firstPid);
  assert.equal(etcd.clientPort, clientPort);
  assert.equal(etcd.peerPort, peerPort);
  const after = await etcdctl(etcd.clientUrl, ['get', 'greeting', '--print-value-only']);
  assert.equal(after.stdout.trim(), 'hello');

  // SIGSTOP: the process is stopped and does not answer; SIGCONT: it does again
  etcd.signal('SIGSTOP');
  await waitForState(etcd.pid, 'T');
  await assert.rejects(httpText(`${etcd.clientUrl}/health`, 300), /timed out/);
  etcd.signal('SIGCONT');
  assert.equal((await httpText(`${etcd.clientUrl}/health`, 5_000)).status, 200);

  // stop() of a SIGSTOPped etcd still terminates it (SIGCONT first, then SIGTERM)
  etcd.signal('SIGSTOP');
  await waitForState(etcd.pid, 'T');
  const pid = etcd.pid;
  const t0 = Date.now();
  await etcd.stop();
  assert.ok(Date.now() - t0 < 4_000, 'graceful stop, not the SIGKILL fallback');
  assert.equal(etcd.running, false);
  assertPidGone(pid);
  await etcd.stop(); // idempotent
  assert.throws(() => etcd.signal('SIGTERM'), /not running/);
  assert.ok(etcd.logs().length >= 0);

  await etcd.wipe();
  assert.equal(existsSync(etcd.dataDir), false);
});

test('a failing etcd rejects with its name and log tail and leaves no process', { timeout: TEST_TIMEOUT }, async (t) => {
  const { dir } = setup(t);
  await assert.rejects(
    EtcdProcess.start({ name: 'unit-bad', dataDir: join(dir, 'bad'), extraArgs: ['--no-such-flag'] }),
    (err: Error) => {
      assert.match(err.message, /etcd unit-bad \(client 127\.0\.0\.1:\d+, peer 127\.0\.0\.1:\d+, pid \d+\) exited \(code \d+/);
      assert.match(err.message, /no-such-flag/);
      return true;
    },
  );
  await assert.rejects(EtcdProcess.start({ name: 'unit-nobin', dataDir: join(dir, 'nobin'), binary: join(dir, 'missing-etcd') }), /failed to spawn/);
  assert.equal(existsSync(join(dir, 'nobin')), false, 'a data dir start() created is removed on failure');

  // Too short a start timeout: rejects and kills the etcd it spawned.
  let slowPid = 0;
  await assert.rejects(EtcdProcess.start({ name: 'unit-slow', dataDir: join(dir, 'slow'), startTimeoutMs: 1 }), (err: Error) => {
    assert.match(err.message, /etcd unit-slow .* was not healthy within 1 ms/);
    slowPid = Number(/pid (\d+)/.exec(err.message)?.[1]);
    return true;
  });
  assert.ok(slowPid > 0);
  assertPidGone(slowPid);
});

test('a fixed port that is taken fails fast; a chosen one is retried', { timeout: TEST_TIMEOUT }, async (t) => {
  const { dir, defer } = setup(t);

  // Fixed client port already bound by someone else: no retry, clear error.
  // (The blocker drops connections, or close() would wait for the health probes' sockets.)
  const blocker: Server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  defer(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
  const busy = (blocker.address() as { port: number }).port;
  await assert.rejects(
    EtcdProcess.start({ name: 'unit-busy', dataDir: join(dir, 'busy'), clientPort: busy }),
    new RegExp(`127\\.0\\.0\\.1:${busy}: bind: address already in use`),
  );

  // Chosen ports: a wrapper fails once as if its peer port were taken; start() picks new ports.
  const wrapper = join(dir, 'flaky-etcd.sh');
  const marker = join(dir, 'first-peer');
  writeFileSync(
    wrapper,
    [
      '#!/bin/sh',
      `if [ ! -e '${marker}' ]; then`,
      '  for a in "$@"; do case "$a" in --listen-peer-urls=*) hp="${a#--listen-peer-urls=http://}";; esac; done',
      `  echo "$hp" > '${marker}'`,
      '  echo "{\\"level\\":\\"fatal\\",\\"msg\\":\\"discovery failed\\",\\"error\\":\\"listen tcp $hp: bind: address already in use\\"}" >&2',
      '  exit 1',
      'fi',
      'exec etcd "$@"',
      '',
    ].join('\n'),
  );
  chmodSync(wrapper, 0o755);
  const etcd = await EtcdProcess.start({ name: 'unit-retry', dataDir: join(dir, 'retry'), binary: wrapper });
  defer(() => etcd.stop());
  const firstPeer = readFileSync(marker, 'utf8').trim();
  assert.notEqual(`127.0.0.1:${etcd.peerPort}`, firstPeer);
  assert.match(etcd.logs(), /address already in use/);
  assert.equal((await httpText(`${etcd.clientUrl}/health`, 2_000)).status, 200);
});

test('etcdctl harness times out and kills the child', { timeout: TEST_TIMEOUT }, async () => {
  // Nothing listens on this port; a long dial timeout keeps etcdctl busy past our timeout.
  const port = await freePort();
  await assert.rejects(
    etcdctl(`http://127.0.0.1:${port}`, ['get', 'x', '--dial-timeout=30s', '--command-timeout=30s'], { timeoutMs: 500 }),
    /etcdctl --endpoints .* get x .*timed out after 500 ms/,
  );
});

test('startEtcdSet: coordinator + 2 members + oracle, stop() cleans up', { timeout: TEST_TIMEOUT }, async (t) => {
  let set: EtcdSet | undefined = await startEtcdSet({ members: 2, oracle: true, name: 'unit' });
  t.after(() => set?.stop());

  assert.equal(set.members.length, 2);
  assert.ok(set.oracle);
  const all = [set.coordinator, ...set.members, set.oracle];
  const clientPorts = new Set(all.map((p) => p.clientPort));
  assert.equal(clientPorts.size, 4);
  assert.equal(new Set([...clientPorts, ...all.map((p) => p.peerPort)]).size, 8);
  assert.ok(set.root.startsWith(join(defaultScratchRoot(), 'metaetcd-test-unit-')));
  assert.ok(existsSync(set.root));
  const health = await Promise.all(all.map((p) => httpText(`${p.clientUrl}/health`, 2_000)));
  for (const h of health) assert.equal(h.status, 200);

  const pids = all.map((p) => p.pid);
  await set.stop();
  const root = set.root;
  set = undefined;
  for (const pid of pids) assertPidGone(pid);
  for (const p of all) assert.equal(p.running, false);
  assert.equal(existsSync(root), false);
});
