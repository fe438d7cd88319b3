// Joining the member clusters into one meta cluster, and recognising them on
// every later start. Each member stores its identity (meta cluster id + member
// index) and the layout; the proxy orders its member clients by identity, not by
// the order of --members, and refuses to start when a member is foreign, empty
// where data is expected, or duplicated.
//
// First start (no member has a layout): the proxies agree on one layout through a
// create-if-absent key in the coordinator, then each member is initialised with
// a create-if-absent transaction. Later starts need only the members.

import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.js';
import { asRange, cmp, op, txn } from '../proto/build.js';

import { decodeLayout, encodeLayout, newLayout, type Layout } from '../shard/layout.js';
import { ClockKind, decodeClockRecord, encodeClockRecord } from '../store/clock-record.js';
import { InternalKey, toMemberRange } from '../store/keyspace.js';
import { decodeU64BE, EMPTY, encodeU64BE } from '../util/bytes.js';
import type { EtcdClient } from './etcd-client.js';

const BOOTSTRAP_KEY = Buffer.from('metaetcd/bootstrap');
const ALL = { key: Buffer.from([0]), rangeEnd: Buffer.from([0]) };
/** Every client key's member key. */
const DATA = toMemberRange(EMPTY, ALL.rangeEnd);

export interface Identity {
  clusterId: string;
  index: number;
}

/** What a member cluster records about itself (also read by `metaetcd status`). */
export interface MemberState {
  client: EtcdClient;
  identity: Identity | undefined;
  layout: Layout | undefined;
  /** The meta revision of the member's latest write (its clock record). */
  clockRevision: number | undefined;
  /** The value stored in m/compacted (the compacted revision plus one; 0 = never). */
  compacted: number;
  /** Keys in the whole keyspace, bookkeeping included. */
  keyCount: number;
  /** Client keys. */
  dataKeys: number;
  /** The partition move in progress with this member as its target (m/move/state, raw JSON), if any. */
  moveInProgress: string | undefined;
}

export interface BootstrapResult {
  layout: Layout;
  /** Member clients ordered by member index. */
  members: EtcdClient[];
  /** The largest value stored in the members' m/compacted (the compacted revision plus one; 0 = never). */
  compacted: number;
}

export async function bootstrap(o: { coordinator: EtcdClient; candidates: EtcdClient[]; log: Logger }): Promise<BootstrapResult> {
  const log = o.log.child({ component: 'bootstrap' });
  let states = await Promise.all(o.candidates.map(readMemberState));
  let layout = newestLayout(states);

  if (!layout) {
    layout = await agreeOnLayout(o.coordinator, o.candidates.length);
    log.info({ clusterId: layout.clusterId, members: layout.members }, 'initialising a new meta cluster');
  }
  if (layout.members !== o.candidates.length) throw memberCountError(layout, states);

  const missing = states.filter((s) => !s.identity);
  if (missing.length > 0) {
    const pristine = states.every((s) => !s.identity || (s.clockRevision ?? 0) === 0);
    for (const s of missing) {
      if (s.keyCount > 0) {
        throw new Error(`${s.client.name} (${urls(s.client)}) holds keys but no metaetcd identity; refusing to use a cluster with foreign data`);
      }
      if (!pristine) {
        throw new Error(
          `${s.client.name} (${urls(s.client)}) is empty but the meta cluster ${layout.clusterId} already holds data; ` +
            'refusing to start (was this member cluster wiped or replaced?)',
        );
      }
    }
    const taken = new Set(states.flatMap((s) => (s.identity ? [s.identity.index] : [])));
    const free = Array.from({ length: layout.members }, (_, i) => i).filter((i) => !taken.has(i));
    // Prefer the member's position in --members when that slot is free.
    for (const s of missing) {
      const position = o.candidates.indexOf(s.client);
      const index = free.includes(position) ? position : free[0]!;
      free.splice(free.indexOf(index), 1);
      await initialiseMember(s.client, { clusterId: layout.clusterId, index }, layout);
    }
    states = await Promise.all(o.candidates.map(readMemberState));
  }

  const members: EtcdClient[] = new Array<EtcdClient>(layout.members);
  for (const s of states) {
    const id = s.identity;
    if (!id) throw new Error(`${s.client.name} (${urls(s.client)}) has no identity after initialisation`);
    if (id.clusterId !== layout.clusterId) {
      throw new Error(`${s.client.name} (${urls(s.client)}) belongs to meta cluster ${id.clusterId}, not ${layout.clusterId}`);
    }
    if (members[id.index]) {
      throw new Error(`${s.client.name} (${urls(s.client)}) and ${members[id.index]!.name} both claim member slot ${id.index}`);
    }
    members[id.index] = s.client;
  }
  // Proxies do not yet follow a partition move while it runs (docs/design.md, "Repartitioning"): moves
  // are made with every proxy stopped, and a proxy does not start in the middle of one.
  const moving = states.find((s) => s.moveInProgress !== undefined);
  if (moving?.moveInProgress?.includes('"kind":"placement"')) {
    throw new Error(
      `a placement change is in progress (${moving.client.name}: ${moving.moveInProgress}); proxies cannot serve during it: ` +
        'finish it (run `metaetcd placement add` or `placement remove` again), then start the proxy',
    );
  }
  if (moving) {
    throw new Error(
      `a partition move is in progress (target ${moving.client.name}: ${moving.moveInProgress}); proxies cannot serve during a move yet: ` +
        'finish it (run the same `metaetcd partitions move` again) or roll it back (`--rollback`), then start the proxy',
    );
  }
  const compacted = Math.max(...states.map((s) => s.compacted), movedFloor(layout));
  log.info({ clusterId: layout.clusterId, order: members.map((m) => m.name) }, 'member clusters recognised');
  return { layout, members, compacted };
}

/**
 * Revisions before the end of the last partition move are served as compacted
 * (the stored form: revision + 1): a proxy routes by the current assignment
 * only, so below that point a moved key's history would be looked for on the
 * wrong member, and a range could meet the source's copies before they were
 * removed. From `doneAt` on, every member's state is exact.
 */
function movedFloor(layout: Layout): number {
  // Placement rule changes (repartition/placement.ts) move keys too: the same floor.
  const done = [...(layout.moves ?? []), ...(layout.placementChanges ?? [])].map((m) => m.doneAt);
  return done.length > 0 ? Math.max(...done) + 1 : 0;
}

/**
 * Why the clusters listed (`states`, one per --members entry) do not match the
 * layout's member count: a listed slot past the layout (a removal not finished),
 * a cluster too many (to add one, `members add`), or the slots nobody listed
 * (named with their endpoints when the layout records them). Shared by the proxy
 * and the mover commands.
 */
export function memberCountError(layout: Layout, states: MemberState[]): Error {
  const head = `the meta cluster ${layout.clusterId} has ${layout.members} members but --members lists ${states.length}`;
  const ours = states.flatMap((s) => (s.identity?.clusterId === layout.clusterId ? [s.identity.index] : []));
  const leaving = ours.filter((i) => i >= layout.members).sort((a, b) => a - b);
  if (leaving.length > 0) {
    const n = leaving[0]!;
    return new Error(`${head}; member ${n} is being removed: finish it with \`metaetcd members remove ${n}\`, then leave its cluster out of --members`);
  }
  if (states.length > layout.members) {
    return new Error(
      `${head}; to add a member cluster, stop the proxies and run \`metaetcd members add\` (docs/operations.md, "Adding a member"); ` +
        "a removed member's cluster is left out",
    );
  }
  const listed = new Set(ours);
  const missing = Array.from({ length: layout.members }, (_, i) => i).filter((i) => !listed.has(i));
  const named = missing.map((i) => `member ${i}${layout.endpoints ? ` (${layout.endpoints[i]})` : ''}`);
  return new Error(`${head}: ${named.join(', ')} ${named.length === 1 ? 'is' : 'are'} missing; add ${named.length === 1 ? 'it' : 'them'} to --members`);
}

/** Reads a member's records in one read-only transaction; fails with the cluster's classified error. */
export async function readMemberState(client: EtcdClient): Promise<MemberState> {
  try {
    const resp = await client.txn(
      txn(
        [],
        [
          op.range(InternalKey.identity),
          op.range(InternalKey.layout),
          op.range(InternalKey.clock),
          op.range(InternalKey.compacted),
          op.range(ALL.key, { rangeEnd: ALL.rangeEnd, countOnly: true }),
          op.range(DATA.key, { rangeEnd: DATA.rangeEnd, countOnly: true }),
          op.range(InternalKey.move),
        ],
      ),
      { readOnly: true, context: urls(client) },
    );
    const identityKv = asRange(resp.responses[0]).kvs[0];
    const layoutKv = asRange(resp.responses[1]).kvs[0];
    const clockKv = asRange(resp.responses[2]).kvs[0];
    const compactedKv = asRange(resp.responses[3]).kvs[0];
    return {
      client,
      identity: identityKv ? (JSON.parse(identityKv.value.toString('utf8')) as Identity) : undefined,
      layout: layoutKv ? decodeLayout(layoutKv.value) : undefined,
      clockRevision: clockKv ? decodeClockRecord(clockKv.value).revision : undefined,
      compacted: compactedKv ? decodeU64BE(compactedKv.value) : 0,
      keyCount: Number(asRange(resp.responses[4]).count),
      dataKeys: Number(asRange(resp.responses[5]).count),
      moveInProgress: asRange(resp.responses[6]).kvs[0]?.value.toString('utf8'),
    };
  } catch (err) {
    // An answer that does not parse is as much this cluster's failure as no answer.
    throw client.classify(err, urls(client));
  }
}

/** The layout of the highest generation any member holds (undefined: none holds one). */
export function newestLayout(states: MemberState[]): Layout | undefined {
  let best: Layout | undefined;
  for (const s of states) {
    if (s.layout && (!best || s.layout.generation > best.generation)) best = s.layout;
  }
  return best;
}

async function agreeOnLayout(coordinator: EtcdClient, members: number): Promise<Layout> {
  const proposal = newLayout(randomBytes(8).toString('hex'), members);
  const resp = await coordinator.txn(
    txn([cmp.createEqual(BOOTSTRAP_KEY, 0)], [op.put(BOOTSTRAP_KEY, encodeLayout(proposal))], [op.range(BOOTSTRAP_KEY)]),
  );
  if (resp.succeeded) return proposal;
  const kv = asRange(resp.responses[0]).kvs[0];
  if (!kv) throw new Error('the coordinator lost the bootstrap proposal');
  return decodeLayout(kv.value);
}

/**
 * Makes an empty cluster the member of slot `identity.index` (create-if-absent:
 * a second call, or a racing proxy, changes nothing). `compacted` is the stored
 * m/compacted value (revision + 1; 0 = never): a member added later starts at
 * the others' compaction floor, so no proxy serves it below that.
 */
export async function initialiseMember(client: EtcdClient, identity: Identity, layout: Layout, compacted = 0): Promise<void> {
  await client.txn(
    txn(
      [cmp.createEqual(InternalKey.identity, 0), cmp.createEqual(InternalKey.clock, 0)],
      [
        op.put(InternalKey.identity, Buffer.from(JSON.stringify(identity))),
        op.put(InternalKey.layout, encodeLayout(layout)),
        op.put(InternalKey.clock, encodeClockRecord({ revision: 0, kind: ClockKind.Bootstrap, allocation: [] })),
        op.put(InternalKey.ceiling, encodeU64BE(0)),
        op.put(InternalKey.compacted, encodeU64BE(compacted)),
      ],
    ),
    { context: urls(client) },
  );
}

/** A cluster's endpoints as --members spells them ("url;url"). */
export function urls(client: EtcdClient): string {
  return client.endpoints.map((e) => e.url).join(';');
}
