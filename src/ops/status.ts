// What `metaetcd status` gathers, straight from the clusters (no proxy needed):
// for every member cluster its etcd status, alarms and the records the proxy
// keeps in it (identity, layout, clock record, compaction mark — the same read
// as bootstrap's, members/bootstrap.ts), and the coordinator's status and clock
// record, and the proxies announced there (app/heartbeat.ts). Every call is bounded by the command timeout; a cluster that fails to
// answer is reported unhealthy with the error, and the rest is still gathered.

import { parseAnnouncements, PROXIES_END, PROXIES_PREFIX, type ProxyAnnouncement } from '../app/heartbeat.js';
import { CLOCK_KEY, decodeCoordinatorRecord, type CoordinatorRecord } from '../clock/coordinator-record.js';
import { messageOf } from '../errors/etcd-error.js';
import { readMemberState, type MemberState } from '../members/bootstrap.js';
import type { Endpoint } from '../members/endpoints.js';
import { EtcdClient, type ClientTls } from '../members/etcd-client.js';
import { AlarmRequest_AlarmAction, AlarmType, type StatusResponse } from '../proto/gen/rpc.js';
import { withTimeout } from '../util/timeout.js';

export interface StatusOptions {
  coordinator: Endpoint[];
  /** The member clusters in --members order. */
  members: Endpoint[][];
  tls: ClientTls;
  /** Bound on each call to a cluster. */
  timeoutMs: number;
}

/** What etcd itself says about a cluster (through whichever endpoint answered). */
export interface EtcdStatus {
  /** The answering member's ID, as etcdctl prints it (hex). */
  memberId: string;
  /** The leader's ID (hex). */
  leader: string;
  version: string;
  dbSize: number;
  /** The cluster's own revision. */
  revision: number;
}

export interface ClusterStatus {
  endpoints: string[];
  healthy: boolean;
  /** Why the cluster is unhealthy (absent when healthy). */
  error?: string;
  etcd?: EtcdStatus;
}

export interface MemberStatus extends ClusterStatus {
  /** Position in --members. */
  index: number;
  /** The member slot recorded in the cluster (m/identity); absent if none or unreadable. */
  slot?: number;
  /** The meta cluster the cluster belongs to (m/identity). */
  clusterId?: string;
  /** Partitions the recorded layout assigns to the slot, of `partitionsTotal`. */
  partitions?: number;
  partitionsTotal?: number;
  /** Client keys held (a count-only range over the data keyspace). */
  keys?: number;
  /** Keys in the whole keyspace, metaetcd's bookkeeping included. */
  totalKeys?: number;
  /** Meta revision of the member's latest write (its clock record). */
  metaRevision?: number;
  alarms?: string[];
}

export interface CoordinatorStatus extends ClusterStatus {
  /** The meta cluster's clock (null: none yet, the proxies rebuild it on start). */
  clock?: Pick<CoordinatorRecord, 'revision' | 'ceiling' | 'last'> | null;
}

export interface MetaStatus {
  healthy: boolean;
  clusterId?: string;
  /** The largest meta revision any member has recorded a write at. */
  metaRevision?: number;
  /** The meta revision last compacted at (0: never); absent if no member answered. */
  compactedRevision?: number;
  /** The proxy processes announced in the coordinator (absent when it could not be read). */
  proxies?: ProxyAnnouncement[];
  members: MemberStatus[];
  coordinator: CoordinatorStatus;
}

interface MemberFacts {
  status: MemberStatus;
  /** m/compacted as stored, when read. */
  compactedStored: number | undefined;
  /** The member count of the recorded layout, when read. */
  layoutMembers: number | undefined;
}

export async function gatherStatus(o: StatusOptions): Promise<MetaStatus> {
  const opts = { tls: o.tls, requestTimeoutMs: o.timeoutMs };
  const coordinator = new EtcdClient({ name: 'coordinator', endpoints: o.coordinator, ...opts });
  const members = o.members.map((endpoints, i) => new EtcdClient({ name: `member ${i}`, endpoints, ...opts }));
  try {
    const gathering = Promise.all(members.map((c, i) => memberFacts(c, i, o.timeoutMs)));
    // The coordinator's clock record has one entry per member of the layout; it is read meanwhile.
    const memberCount = gathering.then((facts) => facts.find((f) => f.layoutMembers !== undefined)?.layoutMembers ?? members.length);
    const [facts, { status: coord, proxies }] = await Promise.all([gathering, coordinatorStatus(coordinator, memberCount, o.timeoutMs)]);
    const answered = facts.filter((f) => f.compactedStored !== undefined);
    const clusterId = mostCommon(answered.flatMap((f) => (f.status.clusterId ? [f.status.clusterId] : [])));
    for (const { status: m } of facts) {
      if (clusterId && m.clusterId && m.clusterId !== clusterId) unhealthy(m, `belongs to meta cluster ${m.clusterId}, not ${clusterId}`);
    }
    markDuplicateSlots(facts.map((f) => f.status));
    const statuses = facts.map((f) => f.status);
    const revisions = statuses.flatMap((m) => (m.metaRevision !== undefined ? [m.metaRevision] : []));
    return {
      healthy: coord.healthy && statuses.every((m) => m.healthy),
      ...(clusterId ? { clusterId } : {}),
      ...(revisions.length > 0 ? { metaRevision: Math.max(...revisions) } : {}),
      ...(answered.length > 0 ? { compactedRevision: Math.max(0, ...answered.map((f) => f.compactedStored! - 1)) } : {}),
      ...(proxies ? { proxies } : {}),
      members: statuses,
      coordinator: coord,
    };
  } finally {
    for (const c of [coordinator, ...members]) c.close();
  }
}

async function memberFacts(client: EtcdClient, index: number, timeoutMs: number): Promise<MemberFacts> {
  const status: MemberStatus = { index, endpoints: urls(client), healthy: true };
  const [etcd, state, alarms] = await Promise.allSettled([
    bounded(client.status(), timeoutMs, 'status'),
    bounded(readMemberState(client), timeoutMs, 'records'),
    bounded(client.alarm({ action: AlarmRequest_AlarmAction.GET, memberID: 0n, alarm: AlarmType.NONE }), timeoutMs, 'alarm list'),
  ]);
  // A cluster that does not answer its status is unreachable: that error alone says so (the others repeat it).
  const reachable = etcd.status === 'fulfilled';
  if (reachable) status.etcd = etcdStatus(etcd.value);
  else unhealthy(status, messageOf(etcd.reason));
  let compactedStored: number | undefined;
  let layoutMembers: number | undefined;
  if (state.status === 'fulfilled') {
    Object.assign(status, recorded(state.value));
    compactedStored = state.value.compacted;
    layoutMembers = state.value.layout?.members;
    if (!state.value.identity) unhealthy(status, 'no metaetcd identity recorded (never joined a meta cluster)');
  } else if (reachable) unhealthy(status, messageOf(state.reason));
  if (alarms.status === 'fulfilled') {
    status.alarms = alarms.value.alarms.filter((a) => a.alarm !== AlarmType.NONE).map((a) => AlarmType[a.alarm] ?? String(a.alarm));
    for (const a of status.alarms) unhealthy(status, `alarm ${a} raised`);
  } else if (reachable) unhealthy(status, messageOf(alarms.reason));
  return { status, compactedStored, layoutMembers };
}

function recorded(s: MemberState): Partial<MemberStatus> {
  const out: Partial<MemberStatus> = { keys: s.dataKeys, totalKeys: s.keyCount };
  if (s.clockRevision !== undefined) out.metaRevision = s.clockRevision;
  if (s.identity) {
    out.slot = s.identity.index;
    out.clusterId = s.identity.clusterId;
    if (s.layout) {
      const slot = s.identity.index;
      out.partitions = s.layout.assignment.filter((m) => m === slot).length;
      out.partitionsTotal = s.layout.partitions;
    }
  }
  return out;
}

async function coordinatorStatus(
  client: EtcdClient,
  members: Promise<number>,
  timeoutMs: number,
): Promise<{ status: CoordinatorStatus; proxies: ProxyAnnouncement[] | undefined }> {
  const status: CoordinatorStatus = { endpoints: urls(client), healthy: true };
  const [etcd, clock, announced] = await Promise.allSettled([
    bounded(client.status(), timeoutMs, 'status'),
    bounded(client.range({ key: CLOCK_KEY }), timeoutMs, 'clock read'),
    bounded(client.range({ key: PROXIES_PREFIX, rangeEnd: PROXIES_END }), timeoutMs, 'proxy list'),
  ]);
  const reachable = etcd.status === 'fulfilled';
  if (reachable) status.etcd = etcdStatus(etcd.value);
  else unhealthy(status, messageOf(etcd.reason));
  if (clock.status === 'fulfilled') {
    const kv = clock.value.kvs[0];
    try {
      const r = kv ? decodeCoordinatorRecord(kv.value, await members) : undefined;
      status.clock = r ? { revision: r.revision, ceiling: r.ceiling, last: r.last } : null;
    } catch (err) {
      unhealthy(status, messageOf(err));
    }
  } else if (reachable) unhealthy(status, messageOf(clock.reason));
  if (announced.status === 'rejected' && reachable) unhealthy(status, messageOf(announced.reason));
  const proxies = announced.status === 'fulfilled' ? parseAnnouncements(announced.value.kvs.map((kv) => kv.value)) : undefined;
  return { status, proxies };
}

function etcdStatus(r: StatusResponse): EtcdStatus {
  return {
    memberId: (r.header?.memberId ?? 0n).toString(16),
    leader: r.leader.toString(16),
    version: r.version,
    dbSize: Number(r.dbSize),
    revision: Number(r.header?.revision ?? 0n),
  };
}

/** Two clusters recording the same slot: both are reported (the proxy refuses to start over them). */
function markDuplicateSlots(members: MemberStatus[]): void {
  for (const m of members) {
    const other = members.find((x) => x !== m && x.slot !== undefined && x.slot === m.slot && x.clusterId === m.clusterId);
    if (other) unhealthy(m, `member slot ${m.slot} is also claimed by --members entry ${other.index}`);
  }
}

function unhealthy(s: ClusterStatus, reason: string): void {
  s.healthy = false;
  s.error = s.error ? `${s.error}; ${reason}` : reason;
}

/** The call's own deadline bounds it; this also bounds connecting and anything else around it. */
function bounded<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return withTimeout(p, timeoutMs + 1000, what);
}

function mostCommon(values: string[]): string | undefined {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best: string | undefined;
  for (const [v, n] of counts) if (best === undefined || n > counts.get(best)!) best = v;
  return best;
}

function urls(client: EtcdClient): string[] {
  return client.endpoints.map((e) => e.url);
}
