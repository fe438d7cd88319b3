// Connecting the mover's commands to a meta cluster: the coordinator and the
// member clusters ordered by the slot each records (m/identity), exactly as the
// proxy recognises them (members/bootstrap.ts), but never initialising anything:
// the mover works only on an existing meta cluster.

import { CLOCK_KEY, decodeCoordinatorRecord, encodeCoordinatorRecord, type CoordinatorRecord } from '../clock/coordinator-record.js';
import { parseAnnouncements, PROXIES_END, PROXIES_PREFIX } from '../app/heartbeat.js';
import { memberCountError, newestLayout as newestKnownLayout, readMemberState, type MemberState } from '../members/bootstrap.js';
import { parseCluster, parseClusters } from '../members/endpoints.js';
import { EtcdClient, type ClientTls } from '../members/etcd-client.js';
import { cmp, op, txn } from '../proto/build.js';
import type { Layout } from '../shard/layout.js';

export interface MetaCluster {
  coordinator: EtcdClient;
  /** Member clients ordered by slot. */
  members: EtcdClient[];
  states: MemberState[];
  close(): void;
}

export interface ConnectOptions {
  coordinator: string;
  members: string;
  tls: ClientTls;
  requestTimeoutMs: number;
  /**
   * `members remove N`: slot N may still be listed although the newest layout no
   * longer counts it (a removal stopped after writing the new layouts; remove.ts).
   */
  removing?: number;
  /**
   * `members add`: how many slots the newest layout may have beyond the listed
   * clusters (an add stopped after writing the grown layouts: the clusters being
   * added, not in --members, hold the slots after the listed ones; members-add.ts).
   * Only one of `removing` and `joining` is given; without either, the clusters
   * listed must be exactly the layout's members.
   */
  joining?: number;
}

export async function connectMetaCluster(o: ConnectOptions): Promise<MetaCluster> {
  const opts = { tls: o.tls, requestTimeoutMs: o.requestTimeoutMs };
  const coordinator = new EtcdClient({ name: 'coordinator', endpoints: parseCluster(o.coordinator), ...opts });
  const candidates = parseClusters(o.members).map((endpoints, i) => new EtcdClient({ name: `--members entry ${i}`, endpoints, ...opts }));
  const close = () => [coordinator, ...candidates].forEach((c) => c.close());
  try {
    const states = await Promise.all(candidates.map(readMemberState));
    const ordered = orderMembers(states, o);
    return { coordinator, members: ordered.map((s) => s.client), states: ordered, close };
  } catch (err) {
    close();
    throw err;
  }
}

/**
 * The listed clusters in slot order. They must hold slots 0..n-1 and n must be
 * the newest layout's member count, except while a removal (`o.removing`, the
 * slot just past the layout) or an add (`o.joining`, up to that many slots past
 * the listed ones) is being finished.
 */
function orderMembers(states: MemberState[], o: Pick<ConnectOptions, 'removing' | 'joining'>): MemberState[] {
  const out: MemberState[] = [];
  const clusterId = states.find((s) => s.identity)?.identity?.clusterId;
  for (const s of states) {
    const where = `${s.client.name} (${s.client.endpoints.map((e) => e.url).join(';')})`;
    if (!s.identity || !s.layout) {
      const removed = o.removing === undefined ? '' : ` (if it is member ${o.removing}'s cluster, its removal has finished: leave it out of --members)`;
      throw new Error(`${where} is not part of a meta cluster (no identity or layout); start a proxy over it first${removed}`);
    }
    if (s.identity.clusterId !== clusterId) throw new Error(`${where} belongs to meta cluster ${s.identity.clusterId}, not ${clusterId}`);
    if (out[s.identity.index]) throw new Error(`${where} and ${out[s.identity.index]!.client.name} both claim member slot ${s.identity.index}`);
    out[s.identity.index] = s;
    s.client.name = `member ${s.identity.index}`;
  }
  const layout = newestLayout(states);
  // out has no holes: the listed clusters are slots 0..states.length-1.
  const dense = out.length === states.length;
  // A listed slot just past the newest layout is one whose removal has not finished (remove.ts).
  if (dense && o.removing !== undefined && o.removing === layout.members && states.length === layout.members + 1) return out;
  // Slots past the listed ones belong to clusters being added (members-add.ts).
  if (dense && layout.members >= states.length && layout.members <= states.length + (o.joining ?? 0)) return out;
  throw memberCountError(layout, states);
}

export function newestLayout(states: MemberState[]): Layout {
  const best = newestKnownLayout(states);
  if (!best) throw new Error('no member holds a layout');
  return best;
}

/** Re-reads every member's records (layouts change during a move). */
export async function refreshStates(c: MetaCluster): Promise<MemberState[]> {
  c.states = await Promise.all(c.members.map(readMemberState));
  return c.states;
}

/** The coordinator's clock record (with `members` entries per array) and its mod revision (undefined: no clock yet). */
export async function readClock(c: MetaCluster, members = c.members.length): Promise<{ record: CoordinatorRecord; mod: number } | undefined> {
  const resp = await c.coordinator.range({ key: CLOCK_KEY }, { context: 'reading the clock' });
  const kv = resp.kvs[0];
  if (!kv) return undefined;
  return { record: decodeCoordinatorRecord(kv.value, members), mod: Number(kv.modRevision) };
}

/**
 * The clock's current revision, as a proxy's clock.now() would read it. Without
 * a coordinator record a proxy rebuilds the clock from the members' highest
 * revision or ceiling, so that is the reading then.
 */
export async function clockNow(c: MetaCluster): Promise<number> {
  const clock = await readClock(c);
  if (clock) return clock.record.revision;
  const states = await refreshStates(c);
  return Math.max(0, ...states.map((s) => s.clockRevision ?? 0));
}

/** CAS the coordinator record's layoutGeneration up to `generation`, preserving every other field. */
export async function bumpLayoutGeneration(c: MetaCluster, generation: number): Promise<void> {
  await updateClock(c, 'bumping the layout generation', c.members.length, (r) =>
    (r.layoutGeneration ?? 1) >= generation ? undefined : { ...r, layoutGeneration: generation },
  );
}

/**
 * Rewrites the coordinator's clock record by compare-and-swap, again from the new
 * record while proxies tick meanwhile. The record is read with `members` entries
 * per array (undefined: any count, as long as its arrays agree: `members add`
 * and `members remove` change the count). `change` returns undefined when nothing
 * needs writing; without a record there is nothing to change (the next clock
 * rebuild takes everything from the members). The one clock-record CAS of the
 * mover's commands; returns whether it wrote.
 */
export async function updateClock(
  c: MetaCluster,
  what: string,
  members: number | undefined,
  change: (r: CoordinatorRecord) => CoordinatorRecord | undefined,
): Promise<boolean> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const kv = (await c.coordinator.range({ key: CLOCK_KEY }, { context: what })).kvs[0];
    const next = kv && change(decodeCoordinatorRecord(kv.value, members));
    if (!kv || !next) return false;
    const resp = await c.coordinator.txn(txn([cmp.modEqual(CLOCK_KEY, Number(kv.modRevision))], [op.put(CLOCK_KEY, encodeCoordinatorRecord(next))]), { context: what });
    if (resp.succeeded) return true;
    // A proxy ticked meanwhile: read again and retry.
  }
  throw new Error(`${what} in the coordinator failed: the clock record kept changing`);
}

/**
 * Refuses to go on while a proxy announces itself in the coordinator (app/heartbeat.ts).
 * Proxies do not yet follow a move while it runs (docs/design.md, "Repartitioning"), so
 * moves are made with every proxy stopped; a proxy that died is forgotten within its
 * announcement's TTL (15 s).
 */
export async function assertNoProxyServing(coordinator: EtcdClient): Promise<void> {
  const resp = await coordinator.range({ key: PROXIES_PREFIX, rangeEnd: PROXIES_END }, { context: 'listing the proxies' });
  if (resp.kvs.length === 0) return;
  const proxies = parseAnnouncements(resp.kvs.map((kv) => kv.value));
  const who = proxies.map((p) => `${p.urls.join(',')} (host ${p.host}, pid ${p.pid})`).join('; ');
  throw new Error(
    `${resp.kvs.length} proxies are serving this meta cluster${who ? `: ${who}` : ''}; partitions are moved with every proxy stopped ` +
      '(proxies do not follow a move while it runs yet): stop them and run the command again',
  );
}
