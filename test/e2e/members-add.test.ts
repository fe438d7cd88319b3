// `metaetcd members add` (bin/metaetcd.js as an operator runs it) against real
// etcd, with no proxy running during the add: a 2-member meta cluster with data
// (versions, a lease, a compaction) grows by a fresh etcd. Covered: refusing a
// cluster with foreign keys, an add killed (-9) after the new member's
// initialisation finished by the next run, a rerun being a no-op, a proxy with
// the old --members refusing and naming the missing cluster, rebalance giving
// the new member a third of the partitions, and a proxy with the new list
// serving every key as before, writing to all three members, watching, and
// revoking the lease. Then two clusters added in one command (slots 3 and 4),
// an add killed after writing the grown layouts finished by a rerun (slot 5)
// with a proxy over all six serving every key as before, and the coordinator
// wiped: a proxy over the six rebuilds the clock above every revision seen, at
// the members' layout generation, with every key intact.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CLOCK_KEY, decodeCoordinatorRecord } from '../../src/clock/coordinator-record.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { ADD_HOLD_ENV } from '../../src/repartition/members-add.js';
import type { MembersList } from '../../src/repartition/members-list.js';
import { EtcdProcess } from '../../src/sandbox/etcd-process.js';
import { memberEtcdSettings } from '../../src/sandbox/member-settings.js';
import { decodeLayout, type Layout } from '../../src/shard/layout.js';
import { InternalKey, toMemberKey } from '../../src/store/keyspace.js';
import { decodeU64BE, prefixEnd } from '../../src/util/bytes.js';
import { killedWhileHolding, metaetcd, ok, type Run } from '../harness/cli.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { buildIfStale, loseAndReplace } from '../harness/faults.js';
import { clientFor, keysAsSeen, startTestProxy } from '../harness/proxy.js';
import { WatchRecorder } from '../lease/lease-helpers.js';

const BOUND = { timeout: 60_000 };
const PREFIX = Buffer.from('ad/');

let set: EtcdSet;
/** The cluster to add, and one holding a key of its own (refused). */
let fresh: EtcdProcess;
let foreign: EtcdProcess;
/** Three more fresh clusters: slots 3 and 4 (one command), then 5 (killed, resumed). */
let more: EtcdProcess[] = [];
let clients: EtcdClient[] = [];
let lease: bigint;
/** What a client saw of every key before the add (through the proxy that wrote them). */
let clientView: unknown[];
/** What a client saw under ad/ and new/ after the three-member proxy's writes, and the highest revision it saw. */
let laterView: { ad: unknown[]; fresh: unknown[] };
let highestSeen = 0n;

const oldList = () => set.members.map((m) => m.clientUrl).join(',');
const newList = () => [fresh.clientUrl, ...set.members.map((m) => m.clientUrl)].join(','); // any order will do
const mover = (args: string[], members = oldList()): Promise<Run> => metaetcd([...args, '--coordinator', set.coordinator.clientUrl, '--members', members]);
/** Member clients by slot: the set's two, then the added one. */
const slots = (): EtcdClient[] => clients.slice(0, 3);
/** Every slot's cluster URL, in slot order (the set's two, the first added, then `more`). */
const slotUrls = () => [...set.members.map((m) => m.clientUrl), fresh.clientUrl, ...more.map((m) => m.clientUrl)];
/** --members for slots 0..n-1, listed in reverse (any order will do). */
const listOf = (n: number) => slotUrls().slice(0, n).reverse().join(',');

async function layoutOf(c: EtcdClient): Promise<Layout> {
  return decodeLayout((await c.range({ key: InternalKey.layout })).kvs[0]!.value);
}

/** The coordinator's clock record (`members`: the entries its arrays must have; absent: any). */
async function clockRecord(members?: number) {
  const coordinator = clients[3]!;
  return decodeCoordinatorRecord((await coordinator.range({ key: CLOCK_KEY })).kvs[0]!.value, members);
}

/** Client keys under `prefix` stored in one member. */
async function storedUnder(member: EtcdClient, prefix: Buffer): Promise<number> {
  return Number((await member.range({ key: toMemberKey(prefix), rangeEnd: toMemberKey(prefixEnd(prefix)), countOnly: true })).count);
}

/** `members add URL` over the old list with the test hook holding after `step`, killed (-9, by pid) there. */
const addKilledAfter = (step: string, url: string, members = oldList()) =>
  killedWhileHolding(['members', 'add', url, '--coordinator', set.coordinator.clientUrl, '--members', members], ADD_HOLD_ENV, step);

before(async () => {
  buildIfStale();
  set = await startEtcdSet({ name: 'add', members: 2 });
  const settings = memberEtcdSettings(1.5 * 1024 * 1024, 128);
  const start = (name: string) => EtcdProcess.start({ name, dataDir: join(set.root, name), ...settings });
  const results = await Promise.allSettled(['new-member', 'foreign', 'more-3', 'more-4', 'more-5'].map(start));
  const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(started.map((p) => p.stop()));
    throw failed.reason;
  }
  [fresh, foreign] = [started[0]!, started[1]!];
  more = started.slice(2);
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
    clientView = await keysAsSeen(c, 'ad/');
  } finally {
    c.close();
    await proxy.stop();
  }
});

after(async () => {
  for (const c of clients) c.close();
  await Promise.all([fresh?.stop(), foreign?.stop(), ...more.map((m) => m.stop())]);
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
    assert.deepEqual(await keysAsSeen(c, 'ad/'), clientView, 'keys, values, create/mod revisions, versions and leases as before the add');
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
    laterView = { ad: await keysAsSeen(c, 'ad/'), fresh: await keysAsSeen(c, 'new/') };
    highestSeen = (await c.range({ key: Buffer.from('new/0') })).header!.revision;
  } finally {
    w.close();
    leased.close();
    c.close();
    await proxy.stop();
  }
});

test('two clusters added in one command take slots 3 and 4, one generation each', BOUND, async () => {
  const before = (await layoutOf(clients[0]!)).generation;
  const [c3, c4] = more.map((m) => m.clientUrl);
  const r = ok(await mover(['members', 'add', c3!, c4!], listOf(3)), 'add of two');
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 2, r.stdout);
  assert.match(lines[0]!, new RegExp(`^added ${c3} as member 3 \\(layout generation ${before + 1}\\)`));
  assert.match(lines[1]!, new RegExp(`^added ${c4} as member 4 \\(layout generation ${before + 2}\\)`));
  const members = [...slots(), ...more.slice(0, 2).map((m) => clientFor(m.clientUrl))];
  try {
    for (const [i, m] of members.entries()) {
      const l = await layoutOf(m);
      assert.deepEqual([l.generation, l.members], [before + 2, 5], `slot ${i}'s layout`);
      assert.deepEqual(l.endpoints, slotUrls().slice(0, 5));
      assert.equal(l.assignment.filter((p) => p >= 3).length, 0, 'the new members hold no partition yet');
    }
    for (const i of [3, 4]) {
      const identity = JSON.parse((await members[i]!.range({ key: InternalKey.identity })).kvs[0]!.value.toString()) as { index: number };
      assert.equal(identity.index, i);
    }
  } finally {
    for (const m of members.slice(3)) m.close();
  }
  const clock = await clockRecord(5);
  assert.equal(clock.layoutGeneration, before + 2);
  assert.deepEqual(clock.last.slice(3), [0, 0]);
  const l = JSON.parse(ok(await mover(['members', 'list', '-w', 'json'], listOf(5)), 'members list').stdout) as MembersList;
  assert.deepEqual(l.members.map((m) => [m.index, m.partitions]), [[0, 342], [1, 341], [2, 341], [3, 0], [4, 0]]);
});

test('an add killed after writing the grown layouts is finished by a rerun; a proxy over all six serves every key as before', BOUND, async () => {
  const before = (await layoutOf(clients[0]!)).generation;
  const url = more[2]!.clientUrl;
  await addKilledAfter('layouts', url, listOf(5));
  for (const m of slots()) assert.deepEqual([(await layoutOf(m)).generation, (await layoutOf(m)).members], [before + 1, 6], `${m.name} holds the grown layout`);
  const stale = await clockRecord();
  assert.deepEqual([stale.last.length, stale.layoutGeneration], [5, before], 'the coordinator is not extended yet');
  const refused = await mover(['members', 'list'], listOf(5));
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, new RegExp(`has 6 members but --members lists 5: member 5 \\(${url}\\) is missing`));

  const r = ok(await mover(['members', 'add', url], listOf(5)), 'finishing run');
  assert.match(r.stdout, new RegExp(`^added ${url} as member 5 \\(layout generation ${before + 1}\\)`));
  const clock = await clockRecord(6);
  assert.deepEqual([clock.layoutGeneration, clock.last[5]], [before + 1, 0]);
  assert.match(ok(await mover(['members', 'add', url], listOf(5)), 'rerun').stdout, /^already added/);

  const proxy = await startTestProxy(set, { members: listOf(6) });
  const c = clientFor(proxy.url);
  try {
    assert.deepEqual(await keysAsSeen(c, 'ad/'), laterView.ad, 'ad/ as before the two adds');
    assert.deepEqual(await keysAsSeen(c, 'new/'), laterView.fresh, 'new/ as before the two adds');
    const put = await c.put({ key: Buffer.from('six/0'), value: Buffer.from('x') });
    assert.ok(put.header!.revision > highestSeen, `${put.header!.revision} > ${highestSeen}`);
    highestSeen = put.header!.revision;
    laterView.fresh = await keysAsSeen(c, 'new/');
  } finally {
    c.close();
    await proxy.stop();
  }
});

test('after the coordinator is wiped, a proxy over all six rebuilds the clock above every revision seen, at the layout generation', BOUND, async () => {
  const generation = (await layoutOf(clients[0]!)).generation;
  assert.ok(generation > 1);
  await loseAndReplace(set.coordinator);
  clients[3]!.close();
  clients[3] = clientFor(set.coordinator.clientUrl);
  assert.equal((await clients[3].range({ key: CLOCK_KEY })).kvs.length, 0, 'the coordinator is empty');

  const proxy = await startTestProxy(set, { members: listOf(6) });
  const c = clientFor(proxy.url);
  try {
    assert.deepEqual(await keysAsSeen(c, 'ad/'), laterView.ad, 'ad/ intact');
    assert.deepEqual(await keysAsSeen(c, 'new/'), laterView.fresh, 'new/ intact');
    assert.equal((await c.range({ key: Buffer.from('six/0') })).kvs[0]?.value.toString(), 'x');
    let previous = highestSeen;
    for (let i = 0; i < 20; i++) {
      const put = await c.put({ key: Buffer.from(`rebuilt/${i}`), value: Buffer.from(String(i)) });
      assert.ok(put.header!.revision > previous, `put ${i}: revision ${put.header!.revision} after ${previous}`);
      previous = put.header!.revision;
    }
    const read = await c.range({ key: Buffer.from('rebuilt/'), rangeEnd: prefixEnd(Buffer.from('rebuilt/')) });
    assert.equal(read.kvs.length, 20);
    assert.ok(read.header!.revision >= previous);
    const clock = await clockRecord(6);
    assert.equal(clock.layoutGeneration, generation, 'the rebuilt record carries the members\' layout generation');
    assert.ok(clock.revision >= previous);
  } finally {
    c.close();
    await proxy.stop();
  }
  // The mover's commands read the rebuilt record at the right generation: a rerun of the add changes nothing.
  assert.match(ok(await mover(['members', 'add', more[2]!.clientUrl], listOf(5)), 'rerun after the rebuild').stdout, /^already added/);
});
