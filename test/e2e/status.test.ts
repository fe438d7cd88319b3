// `metaetcd status` (bin/metaetcd.js, the compiled CLI) over real etcds after
// writes through a proxy, and the proxy's /readyz, both with every cluster up
// and with one member etcd killed; the coordinator lost and replaced; /readyz
// and the proxies' announcements with --workers.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { MetaStatus } from '../../src/ops/status.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { buildIfStale, ChildProxy, killHard, ROOT, waitUntil } from '../harness/faults.js';
import { clientFor } from '../harness/proxy.js';

const BIN = join(ROOT, 'bin', 'metaetcd.js');
const KEYS = 30;

let set: EtcdSet;
let proxy: ChildProxy;

before(async () => {
  buildIfStale();
  set = await startEtcdSet({ name: 'status' });
  proxy = await ChildProxy.start(set);
  const c = clientFor(proxy.url);
  try {
    for (let i = 0; i < KEYS; i++) await c.put({ key: Buffer.from(`status/key-${i}`), value: Buffer.from(`v${i}`) });
  } finally {
    c.close();
  }
  // The proxy announces itself in the coordinator in the background.
  await waitUntil('the proxy announced', async () => parse(await status('-w', 'json')).proxies?.length === 1, 20_000, 200);
});

after(async () => {
  await proxy?.stop();
  await set?.stop();
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function status(...flags: string[]): Promise<Run> {
  const args = [BIN, 'status', '--coordinator', set.coordinator.clientUrl, '--members', set.members.map((m) => m.clientUrl).join(','), ...flags];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: ROOT, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

function parse(r: Run): MetaStatus {
  try {
    return JSON.parse(r.stdout) as MetaStatus;
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
}

async function readyz(query = ''): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${proxy.metricsPort}/readyz${query}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.text() };
}

test('status -w json over a healthy meta cluster: every member, its slot, partitions and keys; the coordinator clock; exit 0', async () => {
  const r = await status('-w', 'json');
  const s = parse(r);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(s.healthy, true);
  assert.equal(s.members.length, 3);
  assert.deepEqual(
    s.members.map((m) => [m.index, m.healthy, m.endpoints]),
    set.members.map((m, i) => [i, true, [m.clientUrl]]),
  );
  assert.equal(s.members.reduce((n, m) => n + m.keys!, 0), KEYS, 'the members hold every key written, once');
  assert.deepEqual(s.members.map((m) => m.slot).sort(), [0, 1, 2]);
  assert.equal(s.members.reduce((n, m) => n + m.partitions!, 0), s.members[0]!.partitionsTotal);
  for (const m of s.members) {
    assert.equal(m.clusterId, s.clusterId);
    assert.ok(m.etcd && m.etcd.version !== '' && m.etcd.leader !== '0' && m.etcd.dbSize > 0, JSON.stringify(m));
    assert.deepEqual(m.alarms, []);
  }
  assert.ok(s.metaRevision !== undefined && s.metaRevision >= KEYS, `meta revision ${s.metaRevision}`);
  assert.equal(s.metaRevision, Math.max(...s.members.map((m) => m.metaRevision!)));
  assert.equal(s.compactedRevision, 0);
  assert.deepEqual(s.proxies?.map((p) => [p.urls, p.pid]), [[[proxy.url], proxy.pid]], 'the proxy announces itself in the coordinator');
  assert.equal(s.coordinator.healthy, true);
  assert.ok(s.coordinator.clock, 'the coordinator holds the clock');
  assert.ok(s.coordinator.clock.revision >= s.metaRevision, `clock ${s.coordinator.clock.revision} >= meta revision ${s.metaRevision}`);
});

test('status (table) lists each member and the coordinator', async () => {
  const r = await status();
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /: healthy\n/);
  for (const m of set.members) assert.ok(r.stdout.includes(m.clientUrl), `${m.clientUrl} in\n${r.stdout}`);
  assert.ok(r.stdout.includes(set.coordinator.clientUrl));
  assert.match(r.stdout, new RegExp(`proxies: 1\n  ${proxy.url} \\(host .*, pid ${proxy.pid}, since `));
  assert.match(r.stdout, /\| INDEX \| ENDPOINTS/);
});

test('/readyz on a healthy proxy: 200 ok; ?verbose lists every check', async () => {
  assert.deepEqual(await readyz(), { status: 200, body: 'ok' });
  const v = await readyz('?verbose');
  assert.equal(v.status, 200);
  for (const name of ['coordinator', 'member-0', 'member-1', 'member-2', 'watch-member-0', 'watch-member-1', 'watch-member-2']) {
    assert.ok(v.body.includes(`[+]${name} ok\n`), `${name} in\n${v.body}`);
  }
  assert.match(v.body, /readyz check passed\n$/);
});

test('one member etcd down: status exits 1 and reports that member unhealthy, the rest healthy; /readyz 503 with the reason', async () => {
  await killHard(set.members[1]!);
  try {
    const r = await status('-w', 'json', '--command-timeout', '2s');
    const s = parse(r);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.equal(s.healthy, false);
    assert.deepEqual(s.members.map((m) => m.healthy), [true, false, true]);
    assert.ok(s.members[1]!.error, 'the down member has an error');
    assert.equal(s.members[1]!.keys, undefined);
    assert.equal(s.coordinator.healthy, true);

    const table = await status('--command-timeout', '2s');
    assert.equal(table.code, 1);
    assert.match(table.stdout, /UNHEALTHY/);
    assert.ok(table.stdout.includes(`member 1 (${set.members[1]!.clientUrl}): `), table.stdout);

    let last = { status: 0, body: '' };
    await waitUntil('/readyz 503', async () => (last = await readyz('?verbose')).status === 503, 20_000, 200);
    assert.match(last.body, /\[-\]member-1 failed: \S/);
    assert.match(last.body, /\[\+\]member-0 ok\n/);
    assert.match(last.body, /readyz check failed\n$/);
    const plain = await readyz();
    assert.equal(plain.status, 503);
    assert.match(plain.body, /\[-\]member-1 failed/, 'without ?verbose a failure still says which check failed');
  } finally {
    await set.members[1]!.restart();
  }
  await waitUntil('/readyz 200 after the member is back', async () => (await readyz()).status === 200, 30_000, 200);
  assert.equal((await status()).code, 0);
});

test('coordinator down: status exits 1, proxies unknown; replaced by an empty etcd: the proxy announces itself again', async () => {
  await killHard(set.coordinator);
  try {
    const r = await status('-w', 'json', '--command-timeout', '2s');
    const s = parse(r);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.equal(s.coordinator.healthy, false);
    assert.ok(s.coordinator.error);
    assert.equal(s.proxies, undefined);
    assert.deepEqual(s.members.map((m) => m.healthy), [true, true, true]);
    assert.match((await status('--command-timeout', '2s')).stdout, /proxies: unknown\n/);
  } finally {
    await set.coordinator.wipe();
    await set.coordinator.restart();
  }
  // The proxy's lease is gone with the coordinator's data: it grants a new one and announces itself again.
  await waitUntil('the proxy announced again', async () => parse(await status('-w', 'json')).proxies?.length === 1, 30_000, 200);
  const before = parse(await status('-w', 'json'));
  // The clock record is rebuilt when first needed; until then the coordinator is healthy without one.
  assert.equal(before.healthy, true, JSON.stringify(before.coordinator));
  const c = clientFor(proxy.url);
  try {
    await c.put({ key: Buffer.from('status/after-coordinator-loss'), value: Buffer.from('v') });
  } finally {
    c.close();
  }
  const r = await status('-w', 'json');
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const s = parse(r);
  assert.ok(s.coordinator.clock && s.coordinator.clock.revision >= s.metaRevision!, JSON.stringify(s.coordinator));
});

test('--workers 2: /readyz answered by a worker; each worker announces itself, and withdraws on stop', async () => {
  const workers = await ChildProxy.start(set, { flags: ['--workers', '2'] });
  try {
    let v = { status: 0, body: '' };
    await waitUntil('/readyz 200 from the workers', async () => {
      const res = await fetch(`http://127.0.0.1:${workers.metricsPort}/readyz?verbose`, { signal: AbortSignal.timeout(10_000) }).catch(() => undefined);
      v = res ? { status: res.status, body: await res.text() } : v;
      return v.status === 200;
    }, 20_000, 200);
    assert.match(v.body, /\[\+\]watch-member-2 ok\n/);
    await waitUntil('both workers announced', async () => (parse(await status('-w', 'json')).proxies ?? []).length === 3, 20_000, 200);
    const s = parse(await status('-w', 'json'));
    const pids = new Set(workers.childPids());
    assert.equal(s.proxies!.filter((p) => pids.has(p.pid) && p.urls[0] === workers.url).length, 2, JSON.stringify(s.proxies));
  } finally {
    await workers.stop();
  }
  assert.deepEqual(parse(await status('-w', 'json')).proxies?.map((p) => p.pid), [proxy.pid], 'a stopped proxy withdraws its announcement');
});
