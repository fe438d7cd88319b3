// The mover's commands (bin/metaetcd.js as an operator runs them) against real
// etcd with NO proxy running during the moves (a proxy only writes the data
// first; proxies do not honour moves yet): members list's json, dry-run plans,
// a move (T gets P's keys with their envelopes, versions and lease index entries,
// S loses them, layouts and the coordinator at the next generation), resuming a
// move killed (-9) after its copy and after its flip, a rollback, and the
// catch-up of S's history (in-process, writing S directly).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CLOCK_KEY, decodeCoordinatorRecord } from '../../src/clock/coordinator-record.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import type { KeyValue } from '../../src/proto/gen/kv.js';
import { HOLD_ENV } from '../../src/repartition/move.js';
import { catchUp } from '../../src/repartition/catch-up.js';
import { decodeEnvelope } from '../../src/store/envelope.js';
import { copyPartitions, TargetVersions } from '../../src/repartition/copy.js';
import type { MembersList } from '../../src/repartition/members-list.js';
import { PartitionFilter } from '../../src/repartition/member-io.js';
import { decodeMoveState } from '../../src/repartition/move-state.js';
import { partitionOf } from '../../src/shard/hash.js';
import { decodeLayout, type Layout } from '../../src/shard/layout.js';
import { encodeEnvelope } from '../../src/store/envelope.js';
import { InternalKey, LEASE_INDEX_PREFIX, toMemberKey } from '../../src/store/keyspace.js';
import { prefixEnd } from '../../src/util/bytes.js';
import { killedWhileHolding, metaetcd, ok, type Run } from '../harness/cli.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { buildIfStale, healthOf, Status, waitUntil } from '../harness/faults.js';
import { freePort } from '../../src/sandbox/etcd-process.js';
import { PROXIES_END, PROXIES_PREFIX } from '../../src/app/heartbeat.js';
import { clientFor, keysAsSeen, startTestProxy } from '../harness/proxy.js';
import { WatchRecorder } from '../lease/lease-helpers.js';

const BOUND = { timeout: 120_000 };
const DATA = { key: Buffer.from('d'), rangeEnd: Buffer.from('e') };
const PARTITIONS = 1024;
const flags = () => ['--coordinator', set.coordinator.clientUrl, '--members', set.members.map((m) => m.clientUrl).join(',')];
/** `metaetcd <args>` with this file's cluster flags. */
const mover = (args: string[]): Promise<Run> => metaetcd([...args, ...flags()]);

let set: EtcdSet;
let members: EtcdClient[];
let coordinator: EtcdClient;
let lease: bigint;
/** What a client saw of every key before any move (through the proxy that wrote them). */
let clientView: unknown[];

/** Runs a move with the test hook holding after `phase`, killed there. */
const moveKilledAfter = (phase: string, args: string[]) => killedWhileHolding([...args, ...flags()], HOLD_ENV, phase);

async function layouts(): Promise<Layout[]> {
  return Promise.all(members.map(async (m) => decodeLayout((await m.range({ key: InternalKey.layout })).kvs[0]!.value)));
}

async function coordinatorGeneration(): Promise<number> {
  const kv = (await coordinator.range({ key: CLOCK_KEY })).kvs[0]!;
  return decodeCoordinatorRecord(kv.value, members.length).layoutGeneration ?? 1;
}

async function moveState(member: number) {
  const kv = (await members[member]!.range({ key: InternalKey.move })).kvs[0];
  return kv ? decodeMoveState(kv.value) : undefined;
}

/** A member's data keys and lease index entries of partitions P. */
async function carried(member: number, partitions: number[]): Promise<{ data: KeyValue[]; index: string[] }> {
  const set_ = new Set(partitions);
  const data = (await members[member]!.range(DATA)).kvs.filter((kv) => set_.has(partitionOf(kv.key.subarray(1), PARTITIONS)));
  const index = (await members[member]!.range({ key: LEASE_INDEX_PREFIX, rangeEnd: prefixEnd(LEASE_INDEX_PREFIX) })).kvs
    .map((kv) => kv.key.toString('latin1'))
    .filter((k) => set_.has(partitionOf(Buffer.from(k.slice(LEASE_INDEX_PREFIX.length + 17), 'latin1'), PARTITIONS)));
  return { data, index };
}

/** What a client sees of a member key: the envelope's revisions and lease, the value and the reported version. */
const seen = (kv: KeyValue) => {
  const e = decodeEnvelope(kv.value);
  return { key: kv.key.toString('latin1'), mod: e.modRevision, create: e.createRevision, lease: e.lease.toString(), value: e.value.toString('latin1'), version: Number(kv.version) + e.versionBase };
};

/** Partitions held by `member` that have keys, `n` of them. */
async function populated(member: number, n: number): Promise<number[]> {
  const layout = (await layouts())[member]!;
  const ps = new Set((await members[member]!.range(DATA)).kvs.map((kv) => partitionOf(kv.key.subarray(1), PARTITIONS)));
  return [...ps].filter((p) => layout.assignment[p] === member).sort((a, b) => a - b).slice(0, n);
}

/** Asserts that a move of P from S to T completed: T holds what S held, S holds nothing of P. */
async function assertMoved(P: number[], S: number, T: number, before: { data: KeyValue[]; index: string[] }, generation: number): Promise<void> {
  const after_ = await carried(T, P);
  assert.deepEqual(after_.data.map(seen), before.data.map(seen), 'T holds P as S did (envelopes, values, versions)');
  assert.deepEqual(after_.index, before.index, "P's lease index entries were copied");
  const left = await carried(S, P);
  assert.equal(left.data.length + left.index.length, 0, "S's copies were removed");
  for (const l of await layouts()) {
    assert.equal(l.generation, generation);
    assert.equal(l.frozen, undefined);
    for (const p of P) assert.equal(l.assignment[p], T);
    const entry = l.moves!.find((e) => e.generation === generation)!;
    assert.deepEqual([entry.from, entry.to, entry.partitions], [S, T, P]);
    assert.ok(entry.at > 0 && entry.doneAt >= entry.at - 1, JSON.stringify(entry));
  }
  assert.equal(await coordinatorGeneration(), generation);
  assert.equal(await moveState(T), undefined, 'the move state was removed');
}

before(async () => {
  buildIfStale();
  set = await startEtcdSet({ name: 'mover', members: 3 });
  const proxy = await startTestProxy(set);
  const c = clientFor(proxy.url);
  try {
    lease = (await c.leaseGrant({ ID: 0n, TTL: 3600n })).ID;
    const key = (i: number) => Buffer.from(`mv/${String(i).padStart(4, '0')}`);
    for (let i = 0; i < 600; i += 20) await Promise.all(Array.from({ length: 20 }, (_, j) => c.put({ key: key(i + j), value: Buffer.from(`v${i + j}`) })));
    for (let i = 0; i < 600; i += 3) await c.put({ key: key(i), value: Buffer.from(`v${i}-2`) });
    for (let i = 0; i < 600; i += 11) await c.deleteRange({ key: key(i) });
    for (let i = 0; i < 60; i++) await c.put({ key: Buffer.from(`mv/lease/${i}`), value: Buffer.from(`l${i}`), lease });
    clientView = await keysAsSeen(c, 'mv/');
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

test('members list -w json: every member with endpoints, partitions, keys and db size; generation 1, no moves', BOUND, async () => {
  const l = JSON.parse(ok(await mover(['members', 'list', '-w', 'json']), 'members list').stdout) as MembersList;
  assert.equal(l.generation, 1);
  assert.deepEqual(l.moves, []);
  assert.deepEqual(l.frozen, []);
  assert.equal(l.move, undefined);
  assert.deepEqual(l.members.map((m) => [m.index, m.endpoints, m.partitions]), set.members.map((m, i) => [i, [m.clientUrl], i === 0 ? 342 : 341]));
  assert.equal(l.members.reduce((n, m) => n + m.keys, 0), 600 - 55 + 60);
  assert.ok(l.members.every((m) => m.dbSize > 0));
  const table = ok(await mover(['members', 'list']), 'members list').stdout;
  assert.match(table, /^MEMBER\s+ENDPOINTS\s+PARTITIONS\s+KEYS\s+DB SIZE/);
});

test('dry runs print the plan and change nothing', BOUND, async () => {
  assert.equal(ok(await mover(['rebalance', '--dry-run']), 'rebalance').stdout, 'nothing to move\n');
  assert.equal(
    ok(await mover(['members', 'drain', '2', '--dry-run']), 'drain').stdout,
    'move 170 partitions from member 2 to member 0\nmove 171 partitions from member 2 to member 1\n',
  );
  assert.equal(ok(await mover(['partitions', 'move', '0-5', '--to', '1', '--dry-run']), 'move').stdout, 'move 2 partitions from member 0 to member 1\nmove 2 partitions from member 2 to member 1\n');
  assert.ok((await layouts()).every((l) => l.generation === 1));
});

test('partitions move with no proxy running: T gets P (envelopes, versions, lease index), S loses it, generation 2 everywhere', BOUND, async () => {
  const P = await populated(0, 6);
  const before_ = await carried(0, P);
  assert.ok(before_.data.length > 0 && before_.data.some((kv) => Number(kv.version) > 1));
  const r = ok(await mover(['partitions', 'move', P.join(','), '--to', '2']), 'move');
  assert.match(r.stdout, new RegExp(`^moved 6 partitions from member 0 to member 2: ${before_.data.length + before_.index.length} keys copied, \\d+ catch-up rounds, frozen \\d+ ms\\n$`));
  await assertMoved(P, 0, 2, before_, 2);
  const l = JSON.parse(ok(await mover(['members', 'list', '-w', 'json']), 'members list').stdout) as MembersList;
  assert.equal(l.generation, 2);
  assert.equal(l.moves.length, 1);
  assert.deepEqual(l.members.map((m) => m.partitions), [336, 341, 347]);
});

test('a move killed after its copy is restarted and finished by the next run', BOUND, async () => {
  const P = await populated(1, 4);
  const before_ = await carried(1, P);
  await moveKilledAfter('copy', ['partitions', 'move', ...P.map(String), '--to', '0']);
  assert.equal((await moveState(0))?.phase, 'copy');
  assert.ok((await carried(0, P)).data.length > 0, 'the killed run had copied keys');
  ok(await mover(['partitions', 'move', ...P.map(String), '--to', '0']), 'resumed move');
  await assertMoved(P, 1, 0, before_, 3);
});

test('a move killed after its flip is finished (source copies removed, doneAt) by the next run', BOUND, async () => {
  const P = await populated(2, 3);
  const before_ = await carried(2, P);
  await moveKilledAfter('flipped', ['partitions', 'move', ...P.map(String), '--to', '1']);
  assert.equal((await moveState(1))?.phase, 'flipped');
  assert.ok((await layouts()).every((l) => l.generation === 4));
  assert.equal(await coordinatorGeneration(), 4);
  assert.ok((await carried(2, P)).data.length > 0, 'S still holds its frozen copies');
  assert.match(ok(await mover(['rebalance', '--dry-run']), 'dry run').stdout, /interrupted move would be finished first/);
  ok(await mover(['partitions', 'move', ...P.map(String), '--to', '1']), 'finishing run');
  await assertMoved(P, 2, 1, before_, 4);
});

test('--rollback undoes a move killed while frozen: T loses its copies, S is unfrozen, the generation stays', BOUND, async () => {
  const P = await populated(0, 3);
  const before_ = await carried(0, P);
  await moveKilledAfter('frozen', ['partitions', 'move', ...P.map(String), '--to', '1']);
  assert.deepEqual((await layouts())[0]!.frozen, P);
  assert.match(ok(await mover(['partitions', 'move', '--rollback']), 'rollback').stdout, /^rolled back move [0-9a-f]+ \(move 3 partitions from member 0 to member 1\)\n$/);
  const ls = await layouts();
  assert.ok(ls.every((l) => l.generation === 4 && l.frozen === undefined));
  assert.equal((await carried(1, P)).data.length, 0);
  assert.deepEqual((await carried(0, P)).data.map(seen), before_.data.map(seen));
  assert.equal(await moveState(1), undefined);
  assert.equal(ok(await mover(['partitions', 'move', '--rollback']), 'rollback again').stdout, 'no move is running\n');
});

test('rebalance evens the partitions out', BOUND, async () => {
  ok(await mover(['rebalance']), 'rebalance');
  const l = JSON.parse(ok(await mover(['members', 'list', '-w', 'json']), 'members list').stdout) as MembersList;
  assert.deepEqual(l.members.map((m) => m.partitions).sort(), [341, 341, 342]);
  assert.equal(l.members.reduce((n, m) => n + m.keys, 0), 600 - 55 + 60, 'every key is held once');
});

test('members drain moves every partition and key off the member, evenly onto the others', BOUND, async () => {
  const r = ok(await mover(['members', 'drain', '2']), 'drain');
  assert.match(r.stdout, /^moved \d+ partitions from member 2 to member 0: .*\nmoved \d+ partitions from member 2 to member 1: /);
  const l = JSON.parse(ok(await mover(['members', 'list', '-w', 'json']), 'members list').stdout) as MembersList;
  assert.deepEqual(l.members.map((m) => m.partitions), [512, 512, 0]);
  assert.equal(l.members[2]!.keys, 0);
  assert.equal(l.members.reduce((n, m) => n + m.keys, 0), 600 - 55 + 60, 'every key is held once');
  assert.equal(l.move, undefined);
});

test('after the moves a proxy serves every key as before; revisions before the last move read as compacted; a moved lease still deletes its keys once', BOUND, async () => {
  const proxy = await startTestProxy(set);
  const c = clientFor(proxy.url);
  const w = new WatchRecorder(c, { key: Buffer.from('mv/'), prefix: true, prevKv: true });
  try {
    assert.deepEqual(await keysAsSeen(c, 'mv/'), clientView, 'keys, values, create/mod revisions, versions and leases as before the moves');
    const layout = (await layouts())[0]!;
    const lastDone = Math.max(...layout.moves!.map((m) => m.doneAt));
    await assert.rejects(c.range({ key: Buffer.from('mv/'), rangeEnd: prefixEnd(Buffer.from('mv/')), revision: BigInt(lastDone - 1) }), /required revision has been compacted/);
    await w.ready();
    // A moved key keeps counting versions and keeps its create revision.
    const movedKey = (await c.range({ key: Buffer.from('mv/'), rangeEnd: prefixEnd(Buffer.from('mv/')) })).kvs.find(
      (kv) => layout.moves!.some((m) => m.partitions.includes(partitionOf(kv.key, PARTITIONS))) && kv.version > 1n,
    )!;
    assert.ok(movedKey, 'a moved key with several versions');
    await c.put({ key: movedKey.key, value: Buffer.from('after the move') });
    const now = (await c.range({ key: movedKey.key })).kvs[0]!;
    assert.deepEqual([now.version, now.createRevision], [movedKey.version + 1n, movedKey.createRevision]);
    // While a proxy serves, moves are refused and change nothing.
    const layoutsBefore = await layouts();
    const refused = await mover(['rebalance']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /proxies are serving this meta cluster.*stop them/);
    assert.deepEqual(await layouts(), layoutsBefore, 'the refused command changed no layout');
    // The lease's keys (spread over moved and unmoved partitions) are deleted once each.
    await c.leaseRevoke({ ID: lease });
    const leaseKeys = Array.from({ length: 60 }, (_, i) => `mv/lease/${i}`);
    await w.waitForEvents('a DELETE of every lease key', () => w.deletesOf(leaseKeys).length >= 60, 20_000);
    assert.deepEqual(w.deletesOf(leaseKeys).map((e) => e.key).sort(), [...leaseKeys].sort(), 'exactly one DELETE per key');
    assert.equal((await c.range({ key: Buffer.from('mv/lease/'), rangeEnd: prefixEnd(Buffer.from('mv/lease/')), countOnly: true })).count, 0n);
  } finally {
    w.close();
    c.close();
    await proxy.stop();
  }
});

test('a proxy does not start while a move is in progress, and says how to finish it', BOUND, async () => {
  const P = await populated(0, 2);
  await moveKilledAfter('copy', ['partitions', 'move', P.join(','), '--to', '1']);
  await assert.rejects(startTestProxy(set), /a partition move is in progress .*run the same `metaetcd partitions move` again.*--rollback/);
  ok(await mover(['partitions', 'move', '--rollback']), 'rollback');
  const proxy = await startTestProxy(set);
  await proxy.stop();
});

test('a proxy still serving when a move begins (the mover did not see its announcement) stops serving and says why', BOUND, async () => {
  const proxy = await startTestProxy(set, { metricsPort: await freePort() });
  const c = clientFor(proxy.url);
  try {
    await c.put({ key: Buffer.from('gate/k'), value: Buffer.from('v') });
    // The race: the mover looks for proxies before this one's announcement is there.
    await waitUntil('the proxy announced itself', async () => (await coordinator.range({ key: PROXIES_PREFIX, rangeEnd: PROXIES_END, countOnly: true })).count > 0n, 10_000);
    await coordinator.deleteRange({ key: PROXIES_PREFIX, rangeEnd: PROXIES_END });
    const P = await populated(0, 2);
    await moveKilledAfter('copy', ['partitions', 'move', P.join(','), '--to', '1']);
    const why = /a partition move or placement change started on the member clusters while this proxy was serving \(m\/move\/state in member 1\).*restart it once the change has finished/;
    await waitUntil('the proxy refuses calls', () => c.range({ key: Buffer.from('gate/k') }).then(() => false, (err: unknown) => why.test(String(err))), 10_000);
    await assert.rejects(c.put({ key: Buffer.from('gate/k'), value: Buffer.from('w') }), (err: { code?: number }) => err.code === Status.UNAVAILABLE && why.test(String(err)));
    const health = await healthOf(proxy.handle.metricsPort);
    assert.equal(health.status, 503);
    assert.match(health.body.reason, /^serving: metaetcd: a partition move or placement change started/);
  } finally {
    c.close();
    await proxy.stop();
  }
  ok(await mover(['partitions', 'move', '--rollback']), 'rollback');
  const again = await startTestProxy(set);
  const c2 = clientFor(again.url);
  assert.equal((await c2.range({ key: Buffer.from('gate/k') })).kvs[0]?.value.toString(), 'v');
  c2.close();
  await again.stop();
});

test('catch-up replays S history onto T: puts (versions continue), deletes, new keys, lease index entries', BOUND, async () => {
  const layout = (await layouts())[0]!;
  const S = 0;
  const T = 1;
  // Client keys of one partition of S, written straight into S as a proxy would (format 1 envelopes).
  const p = layout.assignment.findIndex((m) => m === S);
  const keys = Array.from({ length: 5000 }, (_, i) => Buffer.from(`cu/${i}`)).filter((k) => partitionOf(k, PARTITIONS) === p).slice(0, 4);
  assert.equal(keys.length, 4);
  const env = (rev: number, value: string, l = 0n) => encodeEnvelope({ modRevision: rev, createRevision: rev, lease: l, versionBase: 0, value: Buffer.from(value) });
  const [k0, k1, k2, k3] = keys.map(toMemberKey) as [Buffer, Buffer, Buffer, Buffer];
  await members[S]!.put({ key: k0, value: env(1_000_000, 'a') });
  await members[S]!.put({ key: k0, value: env(1_000_001, 'a2') });
  await members[S]!.put({ key: k1, value: env(1_000_002, 'b') });
  const filter = new PartitionFilter([p], PARTITIONS);
  const versions = new TargetVersions();
  const base = { source: members[S]!, target: members[T]!, filter, moveId: 'test', versions };
  const copied = await copyPartitions({ ...base, onProgress: () => undefined });
  await members[S]!.put({ key: k0, value: env(1_000_003, 'a3') }); // version 3 on S, 2 on T
  await members[S]!.deleteRange({ key: k1 });
  await members[S]!.put({ key: k1, value: env(1_000_004, 'b-again') }); // re-created: version 1
  await members[S]!.put({ key: k2, value: env(1_000_005, 'c', lease) });
  await members[S]!.put({ key: Buffer.concat([LEASE_INDEX_PREFIX, Buffer.from(`${BigInt.asUintN(64, lease).toString(16).padStart(16, '0')}/`), keys[2]!]), value: Buffer.alloc(0) });
  await members[S]!.put({ key: k3, value: env(1_000_006, 'd') });
  await members[S]!.deleteRange({ key: k3 });
  const to = Number((await members[S]!.range({ key: InternalKey.identity })).header!.revision);
  const r = await catchUp({ ...base, from: copied.at, to });
  assert.ok(r.applied >= 7, `applied ${r.applied}`);
  const before_ = await carried(S, [p]);
  const after_ = await carried(T, [p]);
  assert.deepEqual(after_.data.map(seen), before_.data.map(seen));
  assert.deepEqual(after_.index, before_.index);
  const version = (k: Buffer) => seen(after_.data.find((kv) => kv.key.equals(k))!).version;
  assert.deepEqual([version(k0), version(k1), version(k2)], [3, 1, 1]);
  assert.equal(after_.data.find((kv) => kv.key.equals(k3)), undefined);
  const marker = (await members[T]!.range({ key: InternalKey.moveMarker })).kvs[0]!;
  assert.equal(marker.value.toString(), 'test');
});
