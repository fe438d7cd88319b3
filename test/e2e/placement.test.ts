// `metaetcd placement add PREFIX --to N` and `placement remove PREFIX`
// (bin/metaetcd.js as an operator runs them) against real etcd, no proxy running
// during a change: keys under pl/ev/ spread over 3 members are pinned to member
// 2 (refusals, a dry run that changes nothing, a run killed (-9) after its copy
// and resumed); then a proxy started afterwards serves every key as before,
// routes new writes under the prefix to member 2, accepts a multi-key
// transaction under the rule (atomically) and refuses one reaching another
// member; a watch from the oldest served revision shows no copy or clean-up;
// a lease's keys under the rule are listed and deleted by a revoke; a
// nested rule wins by longest prefix; a partition move leaves pinned keys where
// they are; removing the rules (one removal killed after its flip and resumed)
// moves the keys back to their partitions' owners.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CLOCK_KEY, decodeCoordinatorRecord } from '../../src/clock/coordinator-record.js';
import { cmp, op, txn } from '../../src/proto/build.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { MembersList } from '../../src/repartition/members-list.js';
import { PLACEMENT_HOLD_ENV } from '../../src/repartition/placement.js';
import { partitionOf } from '../../src/shard/hash.js';
import { decodeLayout, Router, type Layout } from '../../src/shard/layout.js';
import { encodePrefix } from '../../src/shard/placement.js';
import { InternalKey, LEASE_INDEX_PREFIX, parseLeaseIndexKey, toMemberRange } from '../../src/store/keyspace.js';
import { prefixEnd } from '../../src/util/bytes.js';
import { killedWhileHolding, metaetcd, ok, type Run } from '../harness/cli.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { buildIfStale } from '../harness/faults.js';
import { clientFor, keysAsSeen, startTestProxy } from '../harness/proxy.js';
import { WatchRecorder } from '../lease/lease-helpers.js';

const BOUND = { timeout: 120_000 };
const EV = 'pl/ev/';
const SUB = 'pl/ev/sub/';
const flags = () => ['--coordinator', set.coordinator.clientUrl, '--members', set.members.map((m) => m.clientUrl).join(',')];
const cmd = (args: string[]): Promise<Run> => metaetcd([...args, ...flags()]);
const killedAfter = (step: string, args: string[]) => killedWhileHolding([...args, ...flags()], PLACEMENT_HOLD_ENV, step);
const b = (s: string) => Buffer.from(s);
const put = (key: string, value: string) => op.put(b(key), b(value));

let set: EtcdSet;
let members: EtcdClient[];
let coordinator: EtcdClient;
let lease: bigint;
/** Every key under pl/ as a client saw it before any change (then after the proxy's own writes). */
let clientView: unknown[];
const leaseKeys = Array.from({ length: 10 }, (_, i) => `${EV}lease/${i}`);

async function layouts(): Promise<Layout[]> {
  return Promise.all(members.map(async (m) => decodeLayout((await m.range({ key: InternalKey.layout })).kvs[0]!.value)));
}

async function coordinatorGeneration(): Promise<number> {
  const kv = (await coordinator.range({ key: CLOCK_KEY })).kvs[0]!;
  return decodeCoordinatorRecord(kv.value, members.length).layoutGeneration ?? 1;
}

/** Client keys under `prefix` a member holds (data keys), sorted. */
async function held(member: number, prefix: string): Promise<string[]> {
  const r = await members[member]!.range({ ...toMemberRange(b(prefix), prefixEnd(b(prefix))), keysOnly: true });
  return r.kvs.map((kv) => kv.key.subarray(1).toString());
}

/** Client keys under `prefix` with a lease index entry in a member. */
async function indexed(member: number, prefix: string): Promise<string[]> {
  const r = await members[member]!.range({ key: LEASE_INDEX_PREFIX, rangeEnd: prefixEnd(LEASE_INDEX_PREFIX), keysOnly: true });
  return r.kvs.map((kv) => parseLeaseIndexKey(kv.key)!.clientKey.toString()).filter((k) => k.startsWith(prefix));
}

const allUnder = async (prefix: string) => (await Promise.all([0, 1, 2].map((m) => held(m, prefix)))).flat().sort();

before(async () => {
  buildIfStale();
  set = await startEtcdSet({ name: 'placement', members: 3 });
  const proxy = await startTestProxy(set);
  const c = clientFor(proxy.url);
  try {
    const key = (p: string, i: number) => b(`${p}${String(i).padStart(4, '0')}`);
    for (let i = 0; i < 90; i += 30) await Promise.all(Array.from({ length: 30 }, (_, j) => c.put({ key: key(EV, i + j), value: b(`v${i + j}`) })));
    for (let i = 0; i < 90; i += 4) await c.put({ key: key(EV, i), value: b(`v${i}-2`) });
    for (let i = 0; i < 90; i += 9) await c.deleteRange({ key: key(EV, i) });
    for (let i = 0; i < 12; i++) await c.put({ key: key(SUB, i), value: b(`s${i}`) });
    for (let i = 0; i < 30; i++) await c.put({ key: key('pl/other/', i), value: b(`o${i}`) });
    lease = (await c.leaseGrant({ ID: 0n, TTL: 3600n })).ID;
    for (const k of leaseKeys) await c.put({ key: b(k), value: b(k), lease });
    clientView = await keysAsSeen(c, 'pl/');
  } finally {
    c.close();
    await proxy.stop();
  }
  members = set.members.map((m, i) => clientFor(m.clientUrl, `member ${i}`));
  coordinator = clientFor(set.coordinator.clientUrl, 'coordinator');
  // The keys really are spread: every member holds some under the prefix.
  for (const m of [0, 1, 2]) assert.ok((await held(m, EV)).length > 0, `member ${m} holds keys under ${EV}`);
});

after(async () => {
  for (const c of [...(members ?? []), coordinator]) c?.close();
  await set?.stop();
});

test('placement add refuses an unknown member, an empty prefix, a missing --to, an unknown rule to remove, and a running proxy', BOUND, async () => {
  const before_ = await layouts();
  const refused = async (args: string[], msg: RegExp) => {
    const r = await cmd(args);
    assert.notEqual(r.code, 0, `${args.join(' ')}: ${r.stdout}`);
    assert.match(r.stderr, msg);
  };
  await refused(['placement', 'add', EV, '--to', '3'], /member 3 is not a member \(the meta cluster has members 0\.\.2\)/);
  await refused(['placement', 'add', '', '--to', '1'], /needs a non-empty PREFIX/);
  await refused(['placement', 'add', EV], /placement add needs --to N/);
  await refused(['placement', 'remove', EV], /no placement rule for pl\/ev\/ \(rules: none\)/);
  const proxy = await startTestProxy(set);
  try {
    await refused(['placement', 'add', EV, '--to', '2'], /proxies are serving this meta cluster.*stop them/);
  } finally {
    await proxy.stop();
  }
  assert.deepEqual(await layouts(), before_, 'nothing changed');
});

test('a dry run prints the plan and changes nothing', BOUND, async () => {
  const before_ = await layouts();
  const keys = await Promise.all([0, 1, 2].map((m) => held(m, EV)));
  const r = ok(await cmd(['placement', 'add', EV, '--to', '2', '--dry-run']), 'dry run');
  const n = keys[0]!.length + keys[1]!.length;
  assert.equal(
    r.stdout,
    `pin ${EV} to member 2 (layout generation 1 -> 2):\n` +
      `  move ${n} keys (${keys[0]!.length} from member 0 to member 2, ${keys[1]!.length} from member 1 to member 2)\n` +
      '  write layout generation 2 to every member; revisions before the change will read as compacted\n',
  );
  assert.deepEqual(await layouts(), before_);
  assert.deepEqual(await Promise.all([0, 1, 2].map((m) => held(m, EV))), keys);
});

test('placement add killed after its copy: proxies and partition moves refuse, members list shows it, the next run finishes it', BOUND, async () => {
  const everything = await allUnder(EV);
  await killedAfter('copy', ['placement', 'add', EV, '--to', '2']);
  assert.equal((await layouts())[0]!.generation, 1, 'not flipped');
  assert.deepEqual((await held(2, EV)).sort(), everything, 'member 2 holds the copies');
  await assert.rejects(startTestProxy(set), /a placement change is in progress .*run `metaetcd placement add` or `placement remove` again/);
  const rebalance = await cmd(['rebalance']);
  assert.notEqual(rebalance.code, 0);
  assert.match(rebalance.stderr, /a placement change is in progress/);
  const table = ok(await cmd(['members', 'list']), 'members list').stdout;
  assert.match(table, /running placement change [0-9a-f]{16}: pin pl\/ev\/ to member 2, phase copy/);
  const r = ok(await cmd(['placement', 'add', EV, '--to', '2']), 'resume');
  assert.match(r.stdout, /^pinned pl\/ev\/ to member 2: \d+ keys moved .*; layout generation 2 \(resumed\)\n$/);
  assert.equal((await members[0]!.range({ key: InternalKey.move })).kvs.length, 0, 'the state was removed');
  assert.match(ok(await cmd(['placement', 'add', EV, '--to', '2']), 'again').stdout, /^nothing to do: pl\/ev\/ is already pinned to member 2\n$/);
});

test('after placement add: every key and lease index entry under the prefix is on member 2, layouts and coordinator at generation 2, members list shows the rule', BOUND, async () => {
  const all = await allUnder(EV);
  assert.deepEqual((await held(2, EV)).sort(), all);
  assert.deepEqual([await held(0, EV), await held(1, EV)], [[], []]);
  assert.deepEqual((await indexed(2, EV)).sort(), [...leaseKeys].sort());
  assert.deepEqual([await indexed(0, EV), await indexed(1, EV)], [[], []]);
  for (const l of await layouts()) {
    assert.equal(l.generation, 2);
    assert.deepEqual(l.rules, [{ prefix: encodePrefix(b(EV)), member: 2 }]);
    const entry = l.placementChanges!.find((e) => e.generation === 2)!;
    assert.ok(entry.doneAt > 0 && entry.member === 2, JSON.stringify(entry));
  }
  assert.equal(await coordinatorGeneration(), 2);
  const l = JSON.parse(ok(await cmd(['members', 'list', '-w', 'json']), 'members list').stdout) as MembersList;
  assert.ok(Array.isArray(l.members) && l.members.length === 3);
  assert.deepEqual(l.rules, [{ prefix: EV, prefixBase64: encodePrefix(b(EV)), member: 2, keys: all.length }]);
  assert.equal(l.placement, undefined);
  const table = ok(await cmd(['members', 'list']), 'members list').stdout;
  assert.match(table, new RegExp(`\\nPREFIX\\s+MEMBER\\s+KEYS\\n${EV}\\s+2\\s+${all.length}\\n`));
  // The member a rule pins to cannot be removed until the rule goes.
  const remove = await cmd(['members', 'remove', '2']);
  assert.notEqual(remove.code, 0);
  assert.match(remove.stderr, /placement rules pin pl\/ev\/ to member 2: run `metaetcd placement remove PREFIX`/);
});

test('a proxy started afterwards: keys as before, old revisions compacted, writes under the rule on member 2, transactions inside it and across members atomic, a lease revoke deletes the pinned keys', BOUND, async () => {
  const proxy = await startTestProxy(set);
  const c = clientFor(proxy.url);
  const w = new WatchRecorder(c, { key: b(EV), prefix: true, prevKv: true });
  try {
    assert.deepEqual(await keysAsSeen(c, 'pl/'), clientView, 'values, create/mod revisions, versions and leases as before');
    const doneAt = (await layouts())[0]!.placementChanges![0]!.doneAt;
    await assert.rejects(c.range({ key: b(EV), rangeEnd: prefixEnd(b(EV)), revision: BigInt(doneAt - 1) }), /required revision has been compacted/);
    await w.ready();
    // A watch from the oldest revision served reads the members' history: it must never show the copies or clean-up.
    const fromFloor = await new WatchRecorder(c, { key: b(EV), prefix: true, prevKv: true, startRevision: BigInt(doneAt) }).ready();
    // A new key under the prefix lands on member 2, whatever its partition.
    const router = new Router((await layouts())[0]!);
    const hashedElsewhere = Array.from({ length: 200 }, (_, i) => `${EV}new/${i}`).find((k) => router.layout.assignment[partitionOf(b(k), 1024)] !== 2)!;
    await c.put({ key: b(hashedElsewhere), value: b('new') });
    assert.deepEqual(await held(2, hashedElsewhere), [hashedElsewhere]);
    // A multi-key transaction under the rule: applied at one revision, all or nothing.
    const t = await c.txn(txn([], [put(`${EV}txn/a`, 'a'), put(`${EV}txn/b`, 'b'), op.deleteRange(b(`${EV}0001`), b(`${EV}0004`))]));
    assert.ok(t.succeeded);
    const rev = t.header!.revision;
    const got = await c.range({ key: b(`${EV}txn/`), rangeEnd: prefixEnd(b(`${EV}txn/`)) });
    assert.deepEqual(got.kvs.map((kv) => [kv.key.toString(), kv.modRevision]), [[`${EV}txn/a`, rev], [`${EV}txn/b`, rev]]);
    assert.equal((await c.range({ key: b(`${EV}0001`), rangeEnd: b(`${EV}0004`), countOnly: true })).count, 0n);
    const dels = w.events.filter((e) => e.type === 'DELETE' && e.modRevision === rev);
    assert.ok(dels.length > 0 && dels.every((e) => e.key >= `${EV}0001` && e.key < `${EV}0004`));
    // A failed compare applies nothing of either branch's writes.
    const failed = await c.txn(txn([cmp.valueEqual(b(`${EV}txn/a`), b('not a'))], [put(`${EV}txn/a`, 'x'), put(`${EV}txn/c`, 'x')]));
    assert.equal(failed.succeeded, false);
    assert.equal((await c.range({ key: b(`${EV}txn/`), rangeEnd: prefixEnd(b(`${EV}txn/`)), countOnly: true })).count, 2n);
    // Across the rule and a key held by another member (issue 15): applied atomically, at one revision.
    const outside = Array.from({ length: 30 }, (_, i) => `pl/other/${String(i).padStart(4, '0')}`).find((k) => router.memberOf(b(k)) !== 2)!;
    const across = await c.txn(txn([], [put(`${EV}txn/d`, 'd'), put(outside, 'd')]));
    assert.ok(across.succeeded);
    const acrossKvs = [...(await c.range({ key: b(`${EV}txn/d`) })).kvs, ...(await c.range({ key: b(outside) })).kvs];
    assert.deepEqual(acrossKvs.map((kv) => [kv.key.toString(), kv.value.toString(), kv.modRevision]), [[`${EV}txn/d`, 'd', across.header!.revision], [outside, 'd', across.header!.revision]]);
    await c.deleteRange({ key: b(`${EV}txn/d`) });
    await c.deleteRange({ key: b(outside) });
    // The lease's keys moved with the rule: TimeToLive lists them, a revoke deletes each once.
    const ttl = await c.leaseTimeToLive({ ID: lease, keys: true });
    assert.deepEqual(ttl.keys.map((k) => k.toString()).sort(), [...leaseKeys].sort());
    await c.leaseRevoke({ ID: lease });
    await w.waitForEvents('a DELETE of every lease key', () => w.deletesOf(leaseKeys).length >= leaseKeys.length, 20_000);
    assert.deepEqual(w.deletesOf(leaseKeys).map((e) => e.key).sort(), [...leaseKeys].sort(), 'exactly one DELETE per key');
    assert.deepEqual(await indexed(2, EV).then((k) => k.filter((x) => x.startsWith(`${EV}lease/`))), [], 'index entries gone with the keys');
    clientView = await keysAsSeen(c, 'pl/');
    const seen = (e: { type: string; key: string; modRevision: bigint }) => `${e.type} ${e.key} ${e.modRevision}`;
    await fromFloor.waitForEvents('the same events from the floor', (evs) => evs.length >= w.events.length, 10_000);
    assert.deepEqual(fromFloor.events.map(seen), w.events.map(seen), 'from the floor: exactly the events since, no copies or clean-up');
    fromFloor.close();
  } finally {
    w.close();
    c.close();
    await proxy.stop();
  }
});

test('a nested rule wins by longest prefix; a partition move leaves pinned keys on their rule members', BOUND, async () => {
  const sub = await allUnder(SUB);
  assert.equal(sub.length, 12);
  const r = ok(await cmd(['placement', 'add', SUB, '--to', '0']), 'nested add');
  assert.match(r.stdout, /^pinned pl\/ev\/sub\/ to member 0: 12 keys moved \(12 from member 2 to member 0\); layout generation 3\n$/);
  assert.deepEqual((await held(0, SUB)).sort(), sub);
  assert.deepEqual(await held(2, SUB), []);
  const outsideSub = (await allUnder(EV)).filter((k) => !k.startsWith(SUB));
  assert.deepEqual((await held(2, EV)).sort(), outsideSub, 'the rest of pl/ev/ stays on member 2');
  // Move off member 2 the partition of a key pinned there that member 2 also owns by hash: the pinned key stays.
  const l = (await layouts())[0]!;
  const pinned = outsideSub.find((k) => l.assignment[partitionOf(b(k), 1024)] === 2)!;
  const p = partitionOf(b(pinned), 1024);
  ok(await cmd(['partitions', 'move', String(p), '--to', '0']), 'partition move');
  assert.deepEqual(await held(2, pinned), [pinned], 'the pinned key was not carried by the move');
  assert.equal((await layouts())[0]!.assignment[p], 0);
  const listed = JSON.parse(ok(await cmd(['members', 'list', '-w', 'json']), 'members list').stdout) as MembersList;
  assert.deepEqual(listed.rules.map((x) => [x.prefix, x.member]), [[EV, 2], [SUB, 0]]);
});

test('placement remove killed after its flip is finished by the next run; the keys go back to their partitions\' owners; a proxy serves them as before', BOUND, async () => {
  const generation = (await layouts())[0]!.generation;
  await killedAfter('flipped', ['placement', 'remove', EV]);
  for (const l of await layouts()) assert.deepEqual([l.generation, l.rules?.length], [generation + 1, 1]);
  const r = ok(await cmd(['placement', 'remove', EV]), 'resume');
  assert.match(r.stdout, /^unpinned pl\/ev\/: \d+ keys moved .*\(resumed\)\n/);
  const l = (await layouts())[0]!;
  const router = new Router(l);
  assert.deepEqual(l.rules, [{ prefix: encodePrefix(b(SUB)), member: 0 }], 'the nested rule stays');
  for (const m of [0, 1, 2]) {
    for (const k of await held(m, EV)) assert.equal(m, k.startsWith(SUB) ? 0 : router.layout.assignment[partitionOf(b(k), 1024)], k);
  }
  // Re-pinning a rule to another member moves its keys there.
  const repin = ok(await cmd(['placement', 'add', SUB, '--to', '1']), 're-pin');
  assert.match(repin.stdout, /^pinned pl\/ev\/sub\/ to member 1: 12 keys moved \(12 from member 0 to member 1\); layout generation \d+\n$/);
  assert.deepEqual([(await held(0, SUB)).length, (await held(1, SUB)).length], [0, 12]);
  // The nested rule goes too; a dry run first changes nothing.
  const dry = ok(await cmd(['placement', 'remove', SUB, '--dry-run']), 'dry run');
  assert.match(dry.stdout, /^unpin pl\/ev\/sub\/ \(layout generation \d+ -> \d+\):\n {2}move \d+ keys/);
  assert.deepEqual((await held(1, SUB)).length, 12);
  ok(await cmd(['placement', 'remove', SUB]), 'remove the nested rule');
  const plain = new Router((await layouts())[0]!);
  assert.equal(plain.layout.rules, undefined);
  for (const m of [0, 1, 2]) for (const k of await held(m, 'pl/')) assert.equal(plain.layout.assignment[partitionOf(b(k), 1024)], m, k);
  const proxy = await startTestProxy(set);
  const c = clientFor(proxy.url);
  try {
    assert.deepEqual(await keysAsSeen(c, 'pl/'), clientView, 'every key as the proxy left it before the removals');
  } finally {
    c.close();
    await proxy.stop();
  }
});
