// `metaetcd members remove N` (bin/metaetcd.js as an operator runs it) against
// real etcd, no proxy running during it: refused for a slot that is not the last
// and for a member still holding partitions; after `members drain 2`, a dry run
// changes nothing; a removal killed (-9) after fencing an outstanding revision of
// member 2 and again after writing the layouts is finished by later runs (with and without the
// removed cluster in --members); then the layouts, the coordinator and the
// removed cluster are checked, a proxy over the old list refuses, and a proxy
// over the two remaining members serves every key, lease and revoke as before.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CLOCK_KEY, decodeCoordinatorRecord } from '../../src/clock/coordinator-record.js';
import { leaseHome } from '../../src/lease/lease-manager.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { MembersList } from '../../src/repartition/members-list.js';
import { REMOVE_HOLD_ENV } from '../../src/repartition/remove.js';
import { decodeLayout, Router, type Layout } from '../../src/shard/layout.js';
import { decodeClockRecord } from '../../src/store/clock-record.js';
import { InternalKey, LEASE_RECORD_PREFIX } from '../../src/store/keyspace.js';
import { decodeU64BE, prefixEnd } from '../../src/util/bytes.js';
import { killedWhileHolding, metaetcd, ok, type Run } from '../harness/cli.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { buildIfStale } from '../harness/faults.js';
import { clientFor, keysAsSeen, startTestProxy } from '../harness/proxy.js';
import { WatchRecorder } from '../lease/lease-helpers.js';

const BOUND = { timeout: 60_000 };
const PREFIX = Buffer.from('rm/');
const ALL = { key: Buffer.from([0]), rangeEnd: Buffer.from([0]) };
const urls = (n: number) => set.members.slice(0, n).map((m) => m.clientUrl).join(',');
const flags = (n = 3) => ['--coordinator', set.coordinator.clientUrl, '--members', urls(n)];
/** `metaetcd <args>` over the first `n` member clusters. */
const mover = (args: string[], n = 3): Promise<Run> => metaetcd([...args, ...flags(n)]);

let set: EtcdSet;
let members: EtcdClient[];
let coordinator: EtcdClient;
/** Lease IDs and whether each was homed on member 2. */
let leases: { id: bigint; onTwo: boolean; keys: string[] }[];
let clientView: unknown[];
let generationBefore: number;

async function layoutOf(m: EtcdClient): Promise<Layout | undefined> {
  const kv = (await m.range({ key: InternalKey.layout })).kvs[0];
  return kv ? decodeLayout(kv.value) : undefined;
}

const clockValue = async () => (await coordinator.range({ key: CLOCK_KEY })).kvs[0]!.value;
const keyCount = async (m: EtcdClient) => Number((await m.range({ ...ALL, countOnly: true })).count);

/** Runs the removal with the hook holding after `step`, killed there. */
const removeKilledAfter = (step: string) => killedWhileHolding(['members', 'remove', '2', ...flags()], REMOVE_HOLD_ENV, step);

before(async () => {
  buildIfStale();
  set = await startEtcdSet({ name: 'remove', members: 3 });
  const proxy = await startTestProxy(set);
  const c = clientFor(proxy.url);
  try {
    const key = (i: number) => Buffer.from(`rm/${String(i).padStart(4, '0')}`);
    for (let i = 0; i < 300; i += 30) await Promise.all(Array.from({ length: 30 }, (_, j) => c.put({ key: key(i + j), value: Buffer.from(`v${i + j}`) })));
    for (let i = 0; i < 300; i += 7) await c.put({ key: key(i), value: Buffer.from(`v${i}-2`) });
    // Four leases with chosen IDs, two homed on member 2 (the homes a proxy computes, from the layout).
    const first = clientFor(set.members[0]!.clientUrl);
    const router = new Router((await layoutOf(first).finally(() => first.close()))!);
    const ids = Array.from({ length: 200 }, (_, i) => BigInt(1000 + i));
    const chosen = [...ids.filter((id) => leaseHome(router, id) === 2).slice(0, 2), ...ids.filter((id) => leaseHome(router, id) !== 2).slice(0, 2)];
    leases = chosen.map((id) => ({ id, onTwo: leaseHome(router, id) === 2, keys: Array.from({ length: 10 }, (_, j) => `rm/lease/${id}/${j}`) }));
    for (const l of leases) {
      assert.equal((await c.leaseGrant({ ID: l.id, TTL: 60n })).ID, l.id);
      for (const k of l.keys) await c.put({ key: Buffer.from(k), value: Buffer.from(k), lease: l.id });
    }
    clientView = await keysAsSeen(c, 'rm/');
  } finally {
    c.close();
    await proxy.stop();
  }
  members = set.members.map((m, i) => clientFor(m.clientUrl, `member ${i}`));
  coordinator = clientFor(set.coordinator.clientUrl, 'coordinator');
});

after(async () => {
  for (const c of [...(members ?? []), coordinator]) c?.close();
  await set?.stop();
});

test('members remove refuses a slot that is not the last, and a member that still holds partitions', BOUND, async () => {
  const notLast = await mover(['members', 'remove', '1']);
  assert.notEqual(notLast.code, 0);
  assert.match(notLast.stderr, /only the last member slot \(2\) can be removed yet.*members drain 2/);
  const undrained = await mover(['members', 'remove', '2']);
  assert.notEqual(undrained.code, 0);
  assert.match(undrained.stderr, /member 2 holds \d+ partitions .*run `metaetcd members drain 2` first/);
  assert.ok((await Promise.all(members.map(layoutOf))).every((l) => l!.generation === 1 && l!.members === 3));
});

test('after members drain 2, a dry run prints the plan and changes nothing', BOUND, async () => {
  ok(await mover(['members', 'drain', '2']), 'drain');
  const layouts = await Promise.all(members.map(layoutOf));
  generationBefore = layouts[0]!.generation;
  const clock = await clockValue();
  const count = await keyCount(members[2]!);
  const r = ok(await mover(['members', 'remove', '2', '--dry-run']), 'dry run');
  assert.match(r.stdout, new RegExp(`^remove member 2 \\(layout generation ${generationBefore} -> ${generationBefore + 1}, 3 -> 2 members\\):\\n  re-home 2 leases from member 2 `));
  assert.deepEqual(await Promise.all(members.map(layoutOf)), layouts);
  assert.deepEqual(await clockValue(), clock);
  assert.equal(await keyCount(members[2]!), count);
});

test('a removal killed after fencing, then after the layouts, is finished by the next runs (without, then with slot 2 listed)', BOUND, async () => {
  // A proxy took a revision for a write on member 2 and died before writing it.
  const clock = decodeCoordinatorRecord(await clockValue(), 3);
  const outstanding = clock.revision + 3;
  const record = { ...clock, revision: outstanding, last: [clock.last[0], clock.last[1], outstanding] };
  await coordinator.put({ key: CLOCK_KEY, value: Buffer.from(JSON.stringify(record)) });
  await removeKilledAfter('fenced');
  assert.equal((await layoutOf(members[0]!))!.generation, generationBefore, 'no layout written yet');
  assert.equal(decodeClockRecord((await members[2]!.range({ key: InternalKey.clock })).kvs[0]!.value).revision, outstanding, 'the outstanding revision is fenced');
  for (const m of members.slice(0, 2)) {
    assert.ok(decodeU64BE((await m.range({ key: InternalKey.ceiling })).kvs[0]!.value) >= outstanding, "member 2's clock floor is carried");
  }
  await removeKilledAfter('layouts');
  for (const m of members.slice(0, 2)) assert.equal((await layoutOf(m))!.members, 2);
  assert.equal((await layoutOf(members[2]!))!.members, 3, 'the removed member keeps its layout until retired');
  // A proxy over the two that stay refuses to start until the removal is finished, and says why.
  await assert.rejects(startTestProxy(set, { members: urls(2) }), /covers 3 member\(s\), the layout in the members 2: a `metaetcd members add` or `members remove` is unfinished/);
  // Other commands refuse with a hint while the removal is unfinished.
  const list = await mover(['members', 'list']);
  assert.match(list.stderr, /has 2 members but --members lists 3; member 2 is being removed: finish it with `metaetcd members remove 2`/);
  // Without the removed cluster: the coordinator is finished, the cluster is left as it is.
  const without = ok(await mover(['members', 'remove', '2'], 2), 'resume without slot 2');
  assert.match(without.stdout, /^member 2's cluster is not in --members: .*run the command again with it listed.*\nremoved member 2 \(resumed\)/);
  assert.equal(decodeCoordinatorRecord(await clockValue(), 2).last.length, 2);
  assert.ok((await keyCount(members[2]!)) > 0);
  // With it: retired.
  ok(await mover(['members', 'remove', '2']), 'resume with slot 2');
  assert.equal(await keyCount(members[2]!), 0);
  assert.match(ok(await mover(['members', 'remove', '2'], 2), 'again').stdout, /^nothing to do/);
  const again = await mover(['members', 'remove', '2']);
  assert.match(again.stderr, /is not part of a meta cluster .*member 2's cluster, its removal has finished: leave it out of --members/);
});

test('after the removal: layouts, coordinator arrays, lease homes and the removed cluster are as they should be', BOUND, async () => {
  for (const m of members.slice(0, 2)) {
    const l = (await layoutOf(m))!;
    assert.deepEqual([l.generation, l.members], [generationBefore + 1, 2]);
    assert.ok(!l.assignment.includes(2) && !l.leaseAssignment!.includes(2));
    assert.equal(l.endpoints, undefined, 'no endpoints field: none was recorded (no member was ever added)');
  }
  const clock = decodeCoordinatorRecord(await clockValue(), 2);
  assert.equal(clock.layoutGeneration, generationBefore + 1);
  assert.ok(clock.first === undefined || clock.first.length === 2);
  assert.equal((await members[2]!.leaseLeases()).leases.length, 0, "the removed cluster's leases were revoked");
  const router = new Router((await layoutOf(members[0]!))!);
  for (const l of leases) {
    const home = members[leaseHome(router, l.id)]!;
    assert.equal((await home.range({ key: Buffer.from(`${LEASE_RECORD_PREFIX.toString()}${l.id.toString(16).padStart(16, '0')}`) })).kvs.length, 1);
    assert.equal((await home.leaseTimeToLive({ ID: l.id })).grantedTTL, 60n);
  }
  const listed = JSON.parse(ok(await mover(['members', 'list', '-w', 'json'], 2), 'members list').stdout) as MembersList;
  assert.deepEqual(listed.members.map((m) => [m.index, m.partitions]), [[0, 512], [1, 512]]);
});

test('a proxy over the old list refuses; one over the remaining two serves every key and lease as before', BOUND, async () => {
  await assert.rejects(startTestProxy(set), /has 2 members but --members lists 3/);
  const proxy = await startTestProxy(set, { members: urls(2) });
  const c = clientFor(proxy.url);
  const w = new WatchRecorder(c, { key: PREFIX, prefix: true, prevKv: true });
  try {
    assert.deepEqual(await keysAsSeen(c, 'rm/'), clientView, 'values, create/mod revisions, versions and leases as before');
    const lastDone = Math.max(...(await layoutOf(members[0]!))!.moves!.map((m) => m.doneAt));
    await assert.rejects(c.range({ key: PREFIX, rangeEnd: prefixEnd(PREFIX), revision: BigInt(lastDone - 1) }), /required revision has been compacted/);
    for (const l of leases) {
      const ttl = await c.leaseTimeToLive({ ID: l.id, keys: true });
      assert.ok(ttl.TTL > 0n && ttl.grantedTTL === 60n, `lease ${l.id}: ${ttl.TTL}/${ttl.grantedTTL}`);
      assert.deepEqual(ttl.keys.map((k) => k.toString()), [...l.keys].sort());
    }
    await w.ready();
    const revoked = leases.find((l) => l.onTwo)!;
    await c.leaseRevoke({ ID: revoked.id });
    await w.waitForEvents('a DELETE of every key of the revoked lease', () => w.deletesOf(revoked.keys).length >= revoked.keys.length, 20_000);
    assert.deepEqual(w.deletesOf(revoked.keys).map((e) => e.key).sort(), [...revoked.keys].sort(), 'exactly one DELETE per key');
    const left = (await c.range({ key: Buffer.from('rm/lease/'), rangeEnd: prefixEnd(Buffer.from('rm/lease/')), countOnly: true })).count;
    assert.equal(left, 30n, "the other leases' keys stay");
    await c.put({ key: Buffer.from('rm/new'), value: Buffer.from('after the removal') });
    assert.equal((await c.range({ key: Buffer.from('rm/new') })).kvs[0]!.value.toString(), 'after the removal');
  } finally {
    w.close();
    c.close();
    await proxy.stop();
  }
});
