// Changes older than the hub's in-memory window, read back from the members'
// own histories: for each member, a temporary watch over its whole keyspace
// from the member revision after the start, grouped by member revision into
// meta revisions (each group carries its clock record), filtered to the client's
// range and merged across members in meta-revision order. Reading proceeds in
// bounded chunks so memory stays bounded however long the history is.

import type { ClientDuplexStream } from '@grpc/grpc-js';
import { Event_EventType, type Event } from '../proto/gen/kv.js';
import { WatchRequest, type WatchResponse } from '../proto/gen/rpc.js';
import type { EtcdClient } from '../members/etcd-client.js';
import type { MemberSet } from '../members/member.js';
import { Errors } from '../errors/etcd-error.js';
import { decodeClockRecord, ClockKind } from '../store/clock-record.js';
import { InternalKey, isDataKey, toClientKey } from '../store/keyspace.js';
import { inRange } from '../util/bytes.js';
import { mergeParts, toClientEvents, type RevisionBatch } from './events.js';
import { splitByMetaRevision } from '../members/batch-split.js';

const ALL = Buffer.from([0]);

/** The member clusters whose history is read. */
export type HistoryDeps = MemberSet;

interface Cursor {
  member: number;
  /** Next member revision to read. */
  next: number;
  /** Last member revision that belongs to the requested history. */
  end: number;
  batches: PartBatch[];
}

/** A member's part of a revision, with the op index of each event when it is part of a cross-member transaction. */
interface PartBatch extends RevisionBatch {
  ranks?: number[] | undefined;
}

/** Reads the changes with meta revisions in [from, to] on keys in [key, rangeEnd), in order. */
export class HistoryReader {
  private cursors: Cursor[] | undefined;

  constructor(
    private readonly deps: HistoryDeps,
    private readonly key: Buffer,
    private readonly rangeEnd: Buffer,
    private readonly from: number,
    private readonly to: number,
    private readonly chunkEvents = 4096,
  ) {}

  /** The next run of batches in revision order, or undefined when the history is exhausted. */
  async next(): Promise<RevisionBatch[] | undefined> {
    this.cursors ??= await this.open();
    for (;;) {
      const live = this.cursors.filter((c) => c.batches.length > 0 || c.next <= c.end);
      if (live.length === 0) return undefined;
      await Promise.all(live.filter((c) => c.batches.length === 0 && c.next <= c.end).map((c) => this.fill(c)));
      // Everything up to the smallest "last read" revision of unfinished members is final.
      let bound = Infinity;
      for (const c of this.cursors) {
        if (c.next <= c.end) bound = Math.min(bound, c.batches.length > 0 ? c.batches[c.batches.length - 1]!.revision : -Infinity);
      }
      const out: RevisionBatch[] = [];
      for (const c of this.cursors) {
        while (c.batches.length > 0 && c.batches[0]!.revision <= bound) out.push(c.batches.shift()!);
      }
      if (out.length > 0) return joinParts(out.sort((a, b) => a.revision - b.revision));
    }
  }

  private async open(): Promise<Cursor[]> {
    return Promise.all(
      this.deps.map(async ({ timeline: t, index: member }) => {
        // After the member revision holding `from - 1` — or from it, when it is a batch that also
        // carries revisions from `from` on (fill() skips what is below `from`).
        const before = this.from <= 1 ? undefined : await t.locate(this.from - 1);
        const start = before === undefined ? 1 : before.memberRevision + (before.insideBatch ? 0 : 1);
        const end = await t.memberRevisionAt(this.to);
        return { member, next: start, end, batches: [] };
      }),
    );
  }

  /** Reads member revisions from c.next on, up to c.end or about chunkEvents events. */
  private async fill(c: Cursor): Promise<void> {
    const { client, timeline } = this.deps.get(c.member);
    // The watch below stops at the first revision past `end`; make sure one exists.
    await timeline.passRevision(c.end);
    const groups = await readMemberRevisions(client, c.member, c.next, c.end, this.chunkEvents);
    for (const g of groups) {
      c.next = g.memberRevision + 1;
      if (!g.record || g.marked) continue;
      for (const part of splitByMetaRevision(g.record, g.events)) {
        const revision = part.record.revision;
        if (part.record.kind !== ClockKind.Write || revision < this.from || revision > this.to) continue;
        const keep = part.events.map((e) => inRange(toClientKey(e.kv!.key), this.key, this.rangeEnd));
        const matching = part.events.filter((_, i) => keep[i]);
        if (matching.length === 0) continue;
        const { events, bytes } = toClientEvents(matching, revision);
        const ranks = part.record.ranks?.filter((_, i) => keep[i]);
        c.batches.push({ revision, events, bytes, ranks });
      }
    }
    if (groups.length === 0) c.next = c.end + 1;
  }
}

interface Group {
  memberRevision: number;
  record: ReturnType<typeof decodeClockRecord> | undefined;
  /** Carries a partition move's marker: copies or clean-up, never client changes. */
  marked: boolean;
  events: Event[];
}

/** Member revisions [from, end] (stopping early after ~maxEvents events), grouped by revision. */
function readMemberRevisions(client: EtcdClient, member: number, from: number, end: number, maxEvents: number): Promise<Group[]> {
  return new Promise<Group[]>((resolve, reject) => {
    const groups: Group[] = [];
    let events = 0;
    let done = false;
    const stream: ClientDuplexStream<WatchRequest, WatchResponse> = client.watch();
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      stream.cancel();
      if (err) reject(err);
      else resolve(groups);
    };
    stream.on('data', (resp: WatchResponse) => {
      if (resp.compactRevision > 0n) return finish(Errors.compacted());
      for (const ev of resp.events) {
        const rev = Number(ev.kv!.modRevision);
        if (rev > end || (events >= maxEvents && rev !== groups[groups.length - 1]?.memberRevision)) return finish();
        let g = groups[groups.length - 1];
        if (!g || g.memberRevision !== rev) {
          g = { memberRevision: rev, record: undefined, marked: false, events: [] };
          groups.push(g);
        }
        const key = ev.kv!.key;
        if (isDataKey(key)) {
          g.events.push(ev);
          events++;
        } else if (ev.type === Event_EventType.PUT && key.equals(InternalKey.clock)) {
          g.record = decodeClockRecord(ev.kv!.value);
        } else if (ev.type === Event_EventType.PUT && key.equals(InternalKey.moveMarker)) {
          g.marked = true;
        }
      }
    });
    stream.on('error', (err: Error) => finish(client.classify(err)));
    stream.on('end', () => finish(new Error(`member ${member} ended a history watch early`)));
    stream.write(
      WatchRequest.fromPartial({
        requestUnion: { $case: 'createRequest', value: { key: ALL, rangeEnd: ALL, startRevision: BigInt(from), prevKv: true } },
      }),
    );
  });
}

/** Joins the parts of one revision on several members (a cross-member transaction) into one batch, in op order. */
function joinParts(sorted: PartBatch[]): RevisionBatch[] {
  const out: RevisionBatch[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i + 1;
    while (j < sorted.length && sorted[j]!.revision === sorted[i]!.revision) j++;
    const group = sorted.slice(i, j);
    const { revision } = group[0]!;
    if (group.length === 1) out.push({ revision, events: group[0]!.events, bytes: group[0]!.bytes });
    else out.push({ revision, events: mergeParts(group), bytes: group.reduce((n, b) => n + b.bytes, 0) });
    i = j;
  }
  return out;
}
