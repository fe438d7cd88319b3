// `metaetcd members add` (bin/metaetcd.js as an operator runs it) against real
// etcd, with no proxy running during the add: a 2-member meta cluster with data
// (versions, a lease, a compaction) grows by a fresh etcd. Covered: refusing a
// cluster with foreign keys, an add killed (-9) after the new member's
// initialisation finished by the next run, a rerun being a no-op, a proxy with
// the old --members refusing and naming the missing cluster, rebalance giving
// the new member a third of the partitions, and a proxy with the new list
// serving every key as before, writing to all three members, watching, and
// revoking the lease.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CLOCK_KEY, decodeCoordinatorRecord } from '../../src/clock/coordinator-record.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { MembersList } from '../../src/repartition/members-list.js';
import { EtcdProcess } from '../../src/sandbox/etcd-process.js';
import { memberEtcdSettings } from '../../src/sandbox/member-settings.js';
import { decodeLayout, type Layout } from '../../src/shard/layout.js';
import { InternalKey, toMemberKey } from '../../src/store/keyspace.js';
import { decodeU64BE, prefixEnd } from '../../src/util/bytes.js';
import { BIN, metaetcd, ok, ROOT, type Run } from '../harness/cli.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { buildIfStale } from '../harness/faults.js';
import { clientFor, startTestProxy } from '../harness/proxy.js';
import { WatchRecorder } from '../lease/lease-helpers.js';

const BOUND = { timeout: 60_000 };
const PREFIX = Buffer.from('ad/');

let set: EtcdSet;
/** The cluster to add, and one holding a key of its own (refused). */
let fresh: EtcdProcess;
let foreign: EtcdProcess;
let clients: EtcdClient[] = [];
let lease: bigint;
/** What a client saw of every key before the add (through the proxy that wrote them). */
let clientView: unknown[];

const oldList = () => set.members.map((m) => m.clientUrl).join(',');
const newList = () => [fresh.clientUrl, ...set.members.map((m) => m.clientUrl)].join(','); // any order will do
const mover = (args: string[], members = oldList()): Promise<Run> => metaetcd([...args, '--coordinator', set.coordinator.clientUrl, '--members', members]);
/** Member clients by slot: the set's two, then the added one. */
const slots = (): EtcdClient[] => clients.slice(0, 3);

async function layoutOf(c: EtcdClient): Promise<Layout> {
  return decodeLayout((await c.range({ key: InternalKey.layout })).kvs[0]!.value);
}

async function clockRecord(members: number) {
  const coordinator = clients[3]!;
  return decodeCoordinatorRecord((await coordinator.range({ key: CLOCK_KEY })).kvs[0]!.value, members);
}

async function viewOf(c: EtcdClient, prefix = PREFIX): Promise<unknown[]> {
  const r = await c.range({ key: prefix, rangeEnd: prefixEnd(prefix) });
  return r.kvs.map((kv) => [kv.key.toString(), kv.value.toString(), kv.createRevision, kv.modRevision, kv.version, kv.lease]);
}

/** Client keys under `prefix` stored in one member. */
async function storedUnder(member: EtcdClient, prefix: Buffer): Promise<number> {
  return Number((await member.range({ key: toMemberKey(prefix), rangeEnd: toMemberKey(prefixEnd(prefix)), countOnly: true })).count);
}

/** `members add` with the test hook holding after `step`, killed (-9, by pid) once it holds there. */
async function addKilledAfter(step: string, url: string): Promise<void> {
  const args = ['members', 'add', url, '--coordinator', set.coordinator.clientUrl, '--members', oldList()];
  const p = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, METAETCD_TEST_ADD_HOLD: step } });
  let stderr = '';
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`no "holding after ${step}" within 30 s:\n${stderr}`)), 30_000);
    p.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
      if (stderr.includes(`holding after ${step}`)) clearTimeout(timer), res();
    });
    p.on('exit', (code) => rej(new Error(`members add exited (${code}) before holding after ${step}:\n${stderr}`)));
  });
  const exited = new Promise((r) => p.once('exit', r));
  process.kill(p.pid!, 'SIGKILL');
  await exited;
}

before(async () => {
  buildIfStale();
  set = await startEtcdSet({ name: 'add', members: 2 });
  const settings = memberEtcdSettings(1.5 * 1024 * 1024, 128);
  const start = (name: string) => EtcdProcess.start({ name, dataDir: join(set.root, name), ...settings });
  fresh = await start('new-member');
  foreign = await start('foreign');
  clients = [...set.members, fresh, set.coordinator, foreign].map((m) => clientFor(m.clientUrl));
  await clients[4]!.put({ key: Buffer.from('not/metaetcd'), value: Buffer.from('x') });
  const proxy = await startTestProxy(set);
  const c = clientFor(proxy.url);
  try {
    lease = (await c.leaseGrant({ ID: 0n, TTL: 3600n })).ID;
    const key = (i: number) => Buffer.from(`ad/${String(i).padStart(3, '0')}`);
    for (let i = 0; i < 300; i += 30) await Promise.all(Array.from({ length: 30 }, (_, j) => c.put({ key: key(i + j), value: Buffer.from(`v${i + j}`) })));
    for (let i = 0; i < 300; i += 4) await c.put({ key: key(i), value: Buffer.from(`v${i}-2`) });
    for (let i = 0; i < 300; i += 13) await c.deleteRange({ key: key(i) });
    await Promise.all(Array.from({ length: 30 }, (_, i) => c.put({ key: Buffer.from(`ad/lease/${i}`), value: Buffer.from(`l${i}`), lease })));
    const head = (await c.range({ key: key(1) })).header!.revision;
    await c.compact({ revision: head - 50n, physical: true });
    clientView = await viewOf(c);
  } finally {
    c.close();
    await proxy.stop();
  }
});

after(async () => {
  for (const c of clients) c.close();
  await Promise.all([fresh?.stop(), foreign?.stop()]);
  await set?.stop();
});

test('a cluster holding keys of its own is refused, naming it, and nothing changes', BOUND, async () => {
  const r = await mover(['members', 'add', foreign.clientUrl]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`${foreign.clientUrl} holds 1 keys but no metaetcd identity; refusing`));
  assert.deepEqual((await Promise.all(slots().slice(0, 2).map(layoutOf))).map((l) => [l.generation, l.members]), [[1, 2], [1, 2]]);
});

test('--dry-run says what would be done and changes nothing', BOUND, async () => {
  const r = ok(await mover(['members', 'add', fresh.clientUrl, '--dry-run']), 'dry run');
  assert.equal(r.stdout, `would add ${fresh.clientUrl} as member 2: layout generation 2, 3 members, no partitions until rebalance\n`);
  assert.equal(Number((await clients[2]!.range({ key: Buffer.from([0]), rangeEnd: Buffer.from([0]), countOnly: true })).count), 0);
});

test('an add killed after initialising the new member is finished by the next run', BOUND, async () => {
  await addKilledAfter('initialised', fresh.clientUrl);
  const [m0, m1, added] = slots();
  assert.equal((await layoutOf(added!)).generation, 2, 'the new member holds the grown layout');
  assert.equal((await layoutOf(m0!)).generation, 1, 'the existing members do not yet');
  assert.equal((await clockRecord(2)).last.length, 2);
  const r = ok(await mover(['members', 'add', fresh.clientUrl]), 'finishing run');
  assert.match(r.stdout, new RegExp(`^added ${fresh.clientUrl} as member 2 \\(layout generation 2\\); restart the proxies`));

  const identity = JSON.parse((await added!.range({ key: InternalKey.identity })).kvs[0]!.value.toString()) as { clusterId: string; index: number };
  const layouts = await Promise.all([m0!, m1!, added!].map(layoutOf));
  assert.equal(identity.clusterId, layouts[0]!.clusterId);
  assert.equal(identity.index, 2);
  for (const l of layouts) {
    assert.deepEqual([l.format, l.generation, l.members], [2, 2, 3]);
    assert.deepEqual(l.endpoints, [...set.members.map((m) => m.clientUrl), fresh.clientUrl]);
    assert.ok(l.assignment.every((m) => m < 2), 'the new member holds no partition yet');
    assert.deepEqual(l.leaseAssignment, l.assignment);
  }
  const clock = await clockRecord(3);
  assert.equal(clock.layoutGeneration, 2);
  assert.equal(clock.last[2], 0);
  assert.equal(clock.first?.[2] ?? 0, 0);
  const compacted = await Promise.all([m0!, m1!, added!].map(async (m) => decodeU64BE((await m.range({ key: InternalKey.compacted })).kvs[0]!.value)));
  assert.ok(compacted[2]! > 0 && compacted[2] === Math.max(compacted[0]!, compacted[1]!), `compaction floors ${compacted.join(',')}`);
});

test('a rerun of the same add is a no-op; the added cluster in --members is refused', BOUND, async () => {
  const again = ok(await mover(['members', 'add', fresh.clientUrl]), 'rerun');
  assert.match(again.stdout, new RegExp(`^already added ${fresh.clientUrl} as member 2`));
  assert.equal((await layoutOf(slots()[0]!)).generation, 2);
  const listed = await mover(['members', 'add', fresh.clientUrl], newList());
  assert.equal(listed.code, 1);
  assert.match(listed.stderr, new RegExp(`${fresh.clientUrl} is already listed in --members`));
});

test('a proxy or a mover command with the old --members refuses, naming the missing cluster', BOUND, async () => {
  const want = new RegExp(`has 3 members but --members lists 2: member 2 \\(${fresh.clientUrl}\\) is missing; add it to --members`);
  await assert.rejects(startTestProxy(set), want);
  const r = await mover(['members', 'list']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, want);
});

test('rebalance moves a third of the partitions to the new member; members list shows it', BOUND, async () => {
  ok(await mover(['rebalance'], newList()), 'rebalance');
  const l = JSON.parse(ok(await mover(['members', 'list', '-w', 'json'], newList()), 'members list').stdout) as MembersList;
  assert.deepEqual(l.members.map((m) => [m.index, m.endpoints]), [...set.members.map((m) => m.clientUrl), fresh.clientUrl].map((u, i) => [i, [u]]));
  assert.deepEqual(l.members.map((m) => m.partitions), [342, 341, 341]);
  assert.ok(l.members[2]!.keys > 0, 'keys moved to the new member');
  assert.equal(l.move, undefined);
});

test('a proxy with the new --members serves every key as before, writes to all three members, watches, and revokes the lease', BOUND, async () => {
  const proxy = await startTestProxy(set, { members: newList() });
  const c = clientFor(proxy.url);
  const w = new WatchRecorder(c, { key: Buffer.from('new/'), prefix: true });
  const leased = new WatchRecorder(c, { key: Buffer.from('ad/lease/'), prefix: true });
  try {
    assert.deepEqual(await viewOf(c), clientView, 'keys, values, create/mod revisions, versions and leases as before the add');
    await Promise.all([w.ready(), leased.ready()]);
    const keys = Array.from({ length: 60 }, (_, i) => `new/${i}`);
    await Promise.all(keys.map((k) => c.put({ key: Buffer.from(k), value: Buffer.from('fresh') })));
    for (const m of slots()) assert.ok((await storedUnder(m, Buffer.from('new/'))) > 0, `${m.name} holds some of the new keys`);
    await w.waitForEvents('a PUT of every new key', (evs) => evs.filter((e) => e.type === 'PUT').length >= 60, 20_000);
    assert.deepEqual(w.events.map((e) => e.key).sort(), [...keys].sort(), 'one PUT per new key');
    const revs = w.events.map((e) => e.modRevision);
    assert.deepEqual(revs, [...revs].sort((a, b) => (a < b ? -1 : 1)), 'in revision order');

    await c.leaseRevoke({ ID: lease });
    const leaseKeys = Array.from({ length: 30 }, (_, i) => `ad/lease/${i}`);
    await leased.waitForEvents('a DELETE of every lease key', () => leased.deletesOf(leaseKeys).length >= 30, 20_000);
    assert.equal((await c.range({ key: Buffer.from('ad/lease/'), rangeEnd: prefixEnd(Buffer.from('ad/lease/')), countOnly: true })).count, 0n);
  } finally {
    w.close();
    leased.close();
    c.close();
    await proxy.stop();
  }
});
