// Real clients against the proxy's Watch: etcdctl (3.4) watch scenarios,
// compared with the same scenario against a plain etcd, and the `etcd3` npm
// client's watcher, including its resume after the proxy's stream is cut.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, test } from 'node:test';
import { Etcd3, type IKeyValue, type Watcher } from 'etcd3';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { b, ModelHistory, ModelWriter, prefixEnd, RevMap, rng, sleep, within, type RevPair } from '../harness/watch-checker.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';

let set: EtcdSet;
let proxy: TestProxy; // proxy A (restarted on the same port by the etcd3 test)
let proxyB: TestProxy;
let oc: EtcdClient;
let pc: EtcdClient;
const map = new RevMap();
const procs: EtcdctlWatch[] = [];
const etcd3s: Etcd3[] = [];

before(async () => {
  set = await startEtcdSet({ oracle: true, name: 'watch-clients' });
  proxy = await startTestProxy(set);
  proxyB = await startTestProxy(set);
  oc = clientFor(set.oracle!.clientUrl, 'oracle');
  pc = clientFor(proxyB.url, 'proxy B');
  // Start both stores past their fresh revision (see the differential test "fresh store").
  await put('warm-up', '1');
});
after(async () => {
  for (const p of procs) await p.stop();
  for (const c of etcd3s) c.close();
  oc?.close();
  pc?.close();
  await proxy?.stop();
  await proxyB?.stop();
  await set?.stop();
});

async function put(key: string, value: string): Promise<RevPair> {
  const [o, p] = await Promise.all([oc.put({ key: b(key), value: b(value) }), pc.put({ key: b(key), value: b(value) })]);
  const pair = { o: o.header!.revision, p: p.header!.revision };
  map.add(pair);
  return pair;
}

async function del(key: string, prefix = false): Promise<RevPair> {
  const req = { key: b(key), ...(prefix ? { rangeEnd: prefixEnd(key) } : {}) };
  const [o, p] = await Promise.all([oc.deleteRange(req), pc.deleteRange(req)]);
  assert.equal(p.deleted, o.deleted);
  const pair = { o: o.header!.revision, p: p.header!.revision };
  map.add(pair);
  return pair;
}

/** A long-running `etcdctl watch`, stopped by pid. */
class EtcdctlWatch {
  stdout = '';
  stderr = '';
  exited = false;
  private readonly child: ChildProcess;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly label: string,
    endpoint: string,
    args: string[],
  ) {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ETCDCTL_')) env[k] = v;
    env.ETCDCTL_API = '3';
    this.child = spawn('etcdctl', ['--endpoints', endpoint, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      this.stdout += s;
      this.wake();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      this.stderr += s;
      this.wake();
    });
    this.child.stdin!.on('error', () => undefined);
    this.child.on('close', () => {
      this.exited = true;
      this.wake();
    });
    procs.push(this);
  }

  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  async until(pred: (out: string) => boolean, what: string, timeoutMs = 8000): Promise<void> {
    if (pred(this.stdout)) return;
    await within(
      timeoutMs,
      `${this.label}: ${what}\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`,
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (pred(this.stdout)) {
            this.waiters.delete(check);
            resolve();
          } else if (this.exited) {
            this.waiters.delete(check);
            reject(new Error(`${this.label} exited: ${this.stderr}`));
          }
        };
        this.waiters.add(check);
      }),
    );
  }

  lines(): string[] {
    return this.stdout.split('\n').filter((l) => l !== '');
  }

  async stop(): Promise<void> {
    if (this.exited || this.child.pid === undefined) return;
    try {
      process.kill(this.child.pid, 'SIGTERM');
    } catch {
      return;
    }
    await within(3000, `${this.label} exit`, new Promise<void>((r) => (this.exited ? r() : this.child.once('close', () => r())))).catch(() => {
      if (!this.exited && this.child.pid !== undefined) process.kill(this.child.pid, 'SIGKILL');
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

function both(label: string, args: (side: 'o' | 'p') => string[]): { o: EtcdctlWatch; p: EtcdctlWatch } {
  return {
    o: new EtcdctlWatch(`oracle ${label}`, set.oracle!.clientUrl.replace(/^http:\/\//, ''), args('o')),
    p: new EtcdctlWatch(`proxy ${label}`, proxy.endpoint, args('p')),
  };
}

const count = (s: string, word: string) => s.split('\n').filter((l) => l === word).length;

test('etcdctl watch --prefix: the same output as etcd for puts, updates and deletes', async () => {
  const w = both('watch --prefix', () => ['watch', '--prefix', 'ec/']);
  await sleep(500); // etcdctl prints nothing when its watch is created
  await put('ec/a', '1');
  await put('ec/b', '2');
  await put('ec/a', '3');
  await del('ec/b');
  await put('ed/outside', 'x');
  await del('ec/', true);
  for (const s of [w.o, w.p]) await s.until((out) => count(out, 'PUT') === 3 && count(out, 'DELETE') === 2, 'three PUTs and two DELETEs');
  await sleep(200);
  await Promise.all([w.o.stop(), w.p.stop()]);
  assert.deepEqual(w.p.lines(), w.o.lines());
  assert.equal(w.p.stderr, '');
});

test('etcdctl watch --rev (a past revision) --prev-kv: the same output as etcd, history then live', async () => {
  await put('er/a', '1');
  const from = await put('er/a', '2');
  await put('er/b', '1');
  await del('er/a');
  const w = both('watch --rev --prev-kv', (side) => ['watch', '--prefix', '--prev-kv', `--rev=${from[side]}`, 'er/']);
  for (const s of [w.o, w.p]) await s.until((out) => count(out, 'PUT') + count(out, 'DELETE') === 3, 'the three past events');
  await put('er/b', '2');
  for (const s of [w.o, w.p]) await s.until((out) => count(out, 'PUT') + count(out, 'DELETE') === 4, 'the live event');
  await sleep(200);
  await Promise.all([w.o.stop(), w.p.stop()]);
  assert.deepEqual(w.p.lines(), w.o.lines());
});

test('etcdctl watch -i: watch commands read from stdin (single key, --prefix, --rev) and progress; the same output as etcd', async () => {
  // etcdctl 3.4's interactive mode knows "watch" and "progress" (there is no "cancel" command).
  const w = both('watch -i', () => ['watch', '-i']);
  const now = await put('ei/x', '0');
  for (const side of ['o', 'p'] as const) w[side].send(`watch --rev=${now[side] + 1n} ei/a`);
  await put('ei/a', '1');
  for (const s of [w.o, w.p]) await s.until((out) => count(out, 'PUT') === 1, 'the event of the single-key watch');
  const now2 = await put('ei/x', '1');
  for (const side of ['o', 'p'] as const) w[side].send(`watch --prefix --prev-kv --rev=${now2[side] + 1n} ei/b`);
  await put('ei/b1', '1');
  for (const s of [w.o, w.p]) await s.until((out) => count(out, 'PUT') === 2, 'the event of the prefix watch');
  await put('ei/b1', '2');
  for (const s of [w.o, w.p]) await s.until((out) => count(out, 'PUT') === 3, 'the update with its prev_kv');
  await put('ei/a', '2');
  for (const s of [w.o, w.p]) await s.until((out) => count(out, 'PUT') === 4, 'the second event of the single-key watch');
  w.o.send('progress');
  w.p.send('progress');
  await sleep(500);
  await Promise.all([w.o.stop(), w.p.stop()]);
  // Progress lines carry a revision: compare them after mapping the proxy's revision.
  const norm = (lines: string[], side: 'o' | 'p') =>
    lines.map((l) => l.replace(/^(progress notify: )(\d+)$/, (_, p: string, r: string) => `${p}${side === 'o' ? r : map.floor(BigInt(r))}`));
  assert.deepEqual(norm(w.p.lines(), 'p'), norm(w.o.lines(), 'o'));
  assert.equal(w.p.stderr, w.o.stderr);
});

interface Seen {
  type: 'put' | 'delete';
  key: string;
  value: string;
  mod: string;
  prev: string | undefined;
}

test('etcd3 npm client: prefix watcher gets put/delete with prev_kv, survives another watcher being canceled mid-stream, and resumes after the proxy cuts its stream (proxy restart) with nothing lost or duplicated', async () => {
  const port = proxy.handle.port;
  const client = new Etcd3({
    hosts: proxy.url,
    grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 500 },
  });
  etcd3s.push(client);
  const seen: Seen[] = [];
  const record = (type: 'put' | 'delete') => (kv: IKeyValue, prev?: IKeyValue) =>
    seen.push({ type, key: kv.key.toString(), value: kv.value.toString(), mod: kv.mod_revision, prev: prev?.value.toString() });
  const watcher: Watcher = await within(5000, 'etcd3 watcher created', client.watch().prefix('e3/').withPreviousKV().create());
  watcher.on('put', record('put'));
  watcher.on('delete', record('delete'));
  let disconnects = 0;
  let connects = 0;
  watcher.on('disconnected', () => disconnects++);
  watcher.on('connected', () => connects++);
  const errors: unknown[] = [];
  watcher.on('error', (e) => errors.push(e));
  const other: Watcher = await within(5000, 'second watcher created', client.watch().prefix('e3/').create());

  const model = new ModelHistory();
  const keys = Array.from({ length: 4 }, (_, i) => b(`e3/k${i}`));
  // Writes go through proxy B, so they go on while proxy A is down.
  const writer = new ModelWriter(pc, model, proxyB.handle.router, rng(11), 'e3');
  for (const k of keys) await writer.put(k);
  for (let i = 0; i < 10; i++) await writer.randomOp(keys);
  // Cancel the second watcher while events flow (etcd3 throws on responses for ids it does not know).
  const burst = (async () => {
    for (let i = 0; i < 10; i++) await writer.randomOp(keys);
  })();
  await within(5000, 'second watcher canceled', other.cancel());
  await burst;
  const expectedNow = () =>
    model.expected({ key: b('e3/'), rangeEnd: prefixEnd('e3/'), startRevision: 0, prevKv: true }).flatMap((bt) =>
      bt.events.map(
        (e): Seen => ({
          type: e.type === 0 ? 'put' : 'delete',
          key: e.kv!.key.toString(),
          value: e.kv!.value.toString(),
          mod: e.kv!.modRevision.toString(),
          prev: e.prevKv?.value.toString(),
        }),
      ),
    );
  const waitAll = async (what: string, timeoutMs: number) => {
    const want = expectedNow().length;
    const deadline = Date.now() + timeoutMs;
    while (seen.length < want) {
      assert.ok(Date.now() < deadline, `${what}: ${seen.length} of ${want} events`);
      await sleep(20);
    }
  };
  await waitAll('before the cut', 5000);

  // Cut: proxy A stops (its streams end with UNAVAILABLE); writes go on through B; A comes back on the same port.
  await proxy.stop();
  for (let i = 0; i < 15; i++) await writer.randomOp(keys);
  proxy = await startTestProxy(set, { listenAddr: `127.0.0.1:${port}` });
  for (let i = 0; i < 10; i++) await writer.randomOp(keys);
  await waitAll('after the resume', 20_000);
  await sleep(300);
  assert.ok(disconnects >= 1 && connects >= 1, `the watcher was disconnected (${disconnects}) and reconnected (${connects})`);
  assert.deepEqual(errors, []);
  assert.deepEqual(seen, expectedNow(), 'every event exactly once, in order, with prev_kv');
  await within(5000, 'watcher canceled', watcher.cancel());
});
