// One client Watch stream: many watches, created and canceled by the client,
// fed from the hub (live) or from the buffer and the members' history (catching
// up), with etcd's responses: `created` before any event, `canceled` on cancel,
// created-then-canceled with compact_revision below the compacted revision,
// periodic progress on idle watches that asked for it, and WatchProgressRequest
// answered with watch_id -1 only once every watch on the stream has delivered
// every change up to the reported revision (the guarantee etcd gives from 3.5.13
// and kube-apiserver's consistent reads rely on).
// Ref: etcd api/v3rpc/watch.go (recvLoop, sendLoop, sendFragments).

import { status as Status, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Clock } from '../clock/clock.js';
import type { CompactionState } from '../kv/context.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { Event_EventType, type Event as EventT } from '../proto/gen/kv.js';
import { WatchResponse, type WatchCreateRequest, type WatchRequest } from '../proto/gen/rpc.js';
import { isKind, messageOf, statusOf } from '../errors/etcd-error.js';
import { toServiceStatus } from '../errors/grpc-status.js';
import { GRPC_OVERHEAD_BYTES } from '../limits.js';
import type { HeaderFactory } from '../proto/header.js';
import { isFromKey } from '../util/bytes.js';
import { HistoryReader, type HistoryDeps } from './history.js';
import type { WatchHub } from './hub.js';
import { estimate, fragments } from './fragments.js';
import { Outbox } from './outbox.js';
import type { WatcherRegistry } from './registry.js';
import { Watcher, type WatchSink } from './watcher.js';

export interface SessionDeps {
  hub: WatchHub;
  registry: WatcherRegistry;
  clock: Clock;
  compaction: CompactionState;
  header: HeaderFactory;
  history: HistoryDeps;
  metrics: Metrics;
  log: Logger;
  maxRequestBytes: number;
  progressIntervalMs: number;
  requestTimeoutMs: number;
  maxStreamBytes: number;
  /** Why the stream's caller may not watch a range (auth), or undefined when it may (absent: anyone may). */
  watchRefusal?: ((call: ServerDuplexStream<WatchRequest, WatchResponse>, key: Buffer, rangeEnd: Buffer) => string | undefined) | undefined;
}

const WATCH_RANGE_EMPTY = 'mvcc: watcher range is empty';
const WATCH_DUPLICATE_ID = 'mvcc: duplicate watch ID provided on the WatchStream';
/** etcd groups the events of up to this many revisions in one reply while a watch catches up. */
const CATCH_UP_REVISIONS_PER_REPLY = 1000;

export class WatchSession implements WatchSink {
  private readonly watchers = new Map<bigint, Watcher>();
  private nextAutoId = 0n;
  private readonly outbox: Outbox<WatchRequest, WatchResponse>;
  /** Requests are handled one at a time, in order (creates need async steps). */
  private chain: Promise<void> = Promise.resolve();
  private lastHeaderRev = 0;
  private progressTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** A progress request waits for a watch that is catching up. */
  private progressPending = false;

  constructor(
    private readonly call: ServerDuplexStream<WatchRequest, WatchResponse>,
    private readonly d: SessionDeps,
    private readonly onClose: (s: WatchSession) => void,
  ) {
    this.outbox = new Outbox(call, d.maxStreamBytes, () => {
      d.metrics.staleWatchCount.inc();
      d.log.warn({ pendingBytes: d.maxStreamBytes }, 'cutting off a watch stream that does not read its events');
      this.end({ code: Status.UNAVAILABLE, details: 'metaetcd: watch stream fell too far behind; resume from the last received revision' });
    });
    call.on('data', (req: WatchRequest) => {
      this.chain = this.chain.then(() => this.handle(req)).catch((err: unknown) => this.fail(err));
    });
    // A client that half-closes still receives events until it cancels (as etcd does).
    call.on('error', () => this.end());
    call.on('cancelled', () => this.end());
    this.progressTimer = setInterval(() => this.progressTick(), d.progressIntervalMs);
    this.progressTimer.unref();
  }

  get size(): number {
    return this.watchers.size;
  }

  // --- requests --------------------------------------------------------------

  private async handle(req: WatchRequest): Promise<void> {
    if (this.closed) return;
    const u = req.requestUnion;
    switch (u?.$case) {
      case 'createRequest':
        return this.create(u.value);
      case 'cancelRequest':
        return this.cancel(u.value.watchId);
      case 'progressRequest':
        return this.progress();
      default:
        // etcd ignores an empty request rather than ending the stream.
        return;
    }
  }

  private async create(request: WatchCreateRequest): Promise<void> {
    // etcd watches the key "\0" when the key is empty.
    const creq = request.key.length === 0 ? { ...request, key: Buffer.from([0]) } : request;
    // A watch the caller may not read is refused before anything else, the stream staying open (as etcd does).
    const refusal = this.d.watchRefusal?.(this.call, creq.key, creq.rangeEnd);
    if (refusal !== undefined) return this.refuseCreate(refusal);
    let id = creq.watchId;
    if (id !== 0n && this.watchers.has(id)) return this.refuseCreate(WATCH_DUPLICATE_ID);
    const rangeEnd = creq.rangeEnd;
    if (rangeEnd.length > 0 && !isFromKey(rangeEnd) && Buffer.compare(creq.key, rangeEnd) >= 0) {
      return this.refuseCreate(WATCH_RANGE_EMPTY);
    }
    if (id === 0n) {
      while (this.watchers.has(this.nextAutoId)) this.nextAutoId++;
      id = this.nextAutoId++;
    }

    let start = Number(creq.startRevision);
    let headerRev: number;
    // 0 means "now"; so, in effect, does a negative start that is not below the
    // compacted revision (etcd finds no history for it and only streams new events).
    if (start === 0 || (start < 0 && start >= this.d.compaction.revision)) {
      // "Now": the clock's current revision, once every change up to it has been released.
      const snap = await this.d.clock.now();
      await this.d.hub.catchUp(snap, Date.now() + this.d.requestTimeoutMs);
      headerRev = snap.revision;
      start = snap.revision + 1;
    } else {
      headerRev = this.d.hub.frontier;
    }
    const w = new Watcher(id, creq, start, this);
    this.watchers.set(id, w);
    this.d.registry.add(w);
    this.d.metrics.activeWatchCount.inc();
    this.send({ ...blank(), header: this.header(headerRev), watchId: id, created: true });

    if (start < this.d.compaction.revision) {
      this.compactedCancel(w);
      return;
    }
    this.position(w);
  }

  /**
   * etcd's reply to a watch that needs compacted history: canceled with
   * compact_revision, header revision 0, no reason. Like etcd, the ID stays
   * registered on the stream until the client cancels it.
   */
  private compactedCancel(w: Watcher): void {
    this.send({
      ...blank(),
      header: this.d.header.make(0),
      watchId: w.id,
      canceled: true,
      compactRevision: BigInt(this.d.compaction.revision),
    });
    this.detach(w);
  }

  private refuseCreate(reason: string): void {
    this.send({ ...blank(), header: this.header(this.d.hub.frontier), watchId: -1n, created: true, canceled: true, cancelReason: reason });
  }

  private cancel(id: bigint): void {
    const w = this.watchers.get(id);
    if (!w) return; // etcd sends nothing for an unknown id
    this.drop(w);
    this.watchers.delete(id);
    this.send({ ...blank(), header: this.header(this.d.hub.frontier), watchId: id, canceled: true });
  }

  private async progress(): Promise<void> {
    const snap = await this.d.clock.now();
    await this.d.hub.catchUp(snap, Date.now() + this.d.requestTimeoutMs);
    this.progressPending = true;
    this.answerProgress();
  }

  /**
   * Answers a pending progress request once every watch on the stream is live
   * (their events up to the frontier are then already queued ahead of it), as
   * etcd 3.5.13+ does; a watch still catching up defers the answer.
   */
  private answerProgress(): void {
    if (!this.progressPending || this.closed) return;
    for (const w of this.watchers.values()) if (!w.synced && !w.canceled) return;
    this.progressPending = false;
    this.send({ ...blank(), header: this.header(this.d.hub.frontier), watchId: -1n });
  }

  // --- positioning and catching up -----------------------------------------

  /** Brings a new watcher from its start revision to the live stream. */
  private position(w: Watcher): void {
    const hub = this.d.hub;
    if (w.nextRev > hub.frontier) {
      w.synced = true;
      this.answerProgress();
      return;
    }
    if (w.nextRev > hub.bufferStart) {
      this.replay(w, hub.since(w.nextRev));
      w.nextRev = hub.frontier + 1;
      w.synced = true;
      this.answerProgress();
      return;
    }
    void this.catchUpFromHistory(w);
  }

  private async catchUpFromHistory(w: Watcher): Promise<void> {
    try {
      while (!w.canceled && !this.closed && w.nextRev <= this.d.hub.bufferStart) {
        const to = this.d.hub.bufferStart;
        this.d.log.debug({ watchId: String(w.id), from: w.nextRev, to }, 'watch catching up from member history');
        const reader = new HistoryReader(this.d.history, w.key, w.rangeEnd, w.nextRev, to);
        for (let chunk = await reader.next(); chunk && !w.canceled; chunk = await reader.next()) {
          this.replay(w, chunk);
          await this.outbox.whenDrained();
        }
        w.nextRev = Math.max(w.nextRev, to + 1);
      }
      if (!w.canceled && !this.closed) this.position(w);
      this.d.log.debug({ watchId: String(w.id), nextRev: w.nextRev, synced: w.synced }, 'watch caught up from member history');
    } catch (err) {
      if (w.canceled || this.closed) return;
      if (isKind(err, 'compacted')) {
        this.compactedCancel(w);
        return;
      }
      this.fail(err);
    }
  }

  /** Sends past revisions to a catching-up watcher, up to 1000 revisions per reply, headed with the current revision. */
  private replay(w: Watcher, batches: { revision: number; events: EventT[] }[]): void {
    let events: EventT[] = [];
    let revisions = 0;
    const flush = () => {
      if (events.length > 0) this.sendEvents(w, this.d.hub.frontier, events);
      events = [];
      revisions = 0;
    };
    const compacted = this.d.compaction.revision;
    for (const b of batches) {
      if (b.revision < w.nextRev) continue;
      // At the compacted revision itself etcd has lost what came before: no prev_kv, no deletes.
      const mine = w.select(b.revision === compacted ? atCompactedRevision(b.events) : b.events);
      w.nextRev = b.revision + 1;
      if (mine.length === 0) continue;
      events.push(...mine);
      if (++revisions >= CATCH_UP_REVISIONS_PER_REPLY) flush();
    }
    flush();
  }

  // --- live delivery (called by the service for every released revision) ----

  deliver(w: Watcher, revision: number, events: EventT[]): void {
    if (!w.synced || w.canceled || revision < w.nextRev) return;
    w.nextRev = revision + 1;
    const mine = w.select(events, true);
    if (mine.length > 0) this.sendEvents(w, revision, mine);
  }

  /** A change older than `w`'s position arrived late, or continuity was lost: the watch cannot go on. */
  invalidate(w: Watcher, reason: string): void {
    if (w.canceled) return;
    this.send({
      ...blank(),
      header: this.header(this.d.hub.frontier),
      watchId: w.id,
      canceled: true,
      compactRevision: BigInt(Math.max(1, this.d.compaction.revision)),
      cancelReason: reason,
    });
    this.drop(w);
  }

  /** Ends the stream with Unavailable (clients resume elsewhere or after a restart). */
  shutdown(): void {
    this.end({ code: Status.UNAVAILABLE, details: 'metaetcd: proxy is shutting down' });
  }

  allWatchers(): Iterable<Watcher> {
    return this.watchers.values();
  }

  private sendEvents(w: Watcher, revision: number, events: EventT[]): void {
    w.sentSinceTick = true;
    const resp: WatchResponse = { ...blank(), header: this.header(revision), watchId: w.id, events };
    if (!w.fragment) {
      this.send(resp, estimate(events));
      return;
    }
    for (const part of fragments(resp, this.d.maxRequestBytes + GRPC_OVERHEAD_BYTES)) this.send(part, estimate(part.events));
  }

  // --- progress ---------------------------------------------------------------

  private progressTick(): void {
    if (this.closed) return;
    const rev = this.d.hub.frontier;
    for (const w of this.watchers.values()) {
      if (w.progressNotify && w.synced && !w.canceled && !w.sentSinceTick) {
        this.send({ ...blank(), header: this.header(rev), watchId: w.id });
      }
      w.sentSinceTick = false;
    }
  }

  // --- plumbing ----------------------------------------------------------------

  /** Response headers never go backwards on a stream. */
  private header(rev: number) {
    this.lastHeaderRev = Math.max(this.lastHeaderRev, rev);
    return this.d.header.make(this.lastHeaderRev);
  }

  private send(resp: WatchResponse, bytes = 128): void {
    if (this.closed) return;
    this.outbox.send(resp, bytes);
  }

  /** Stops delivering to `w`, leaving its ID registered on the stream. */
  private detach(w: Watcher): void {
    if (w.canceled) return;
    w.canceled = true;
    this.d.registry.remove(w);
    this.d.metrics.activeWatchCount.dec();
    this.answerProgress();
  }

  /** Stops delivering to `w` and frees its ID. */
  private drop(w: Watcher): void {
    this.detach(w);
    this.watchers.delete(w.id);
  }

  private fail(err: unknown): void {
    if (this.closed) return;
    this.d.log.warn({ err: messageOf(err), code: statusOf(err) }, 'ending a watch stream after an error');
    this.end(toServiceStatus(err));
  }

  private end(status?: { code?: Status; details?: string }): void {
    if (this.closed) return;
    this.closed = true;
    if (this.progressTimer) clearInterval(this.progressTimer);
    for (const w of [...this.watchers.values()]) this.drop(w);
    this.outbox.close();
    if (status) {
      this.call.emit('error', Object.assign(new Error(status.details ?? 'watch stream ended'), status));
    } else {
      this.call.end();
    }
    this.onClose(this);
  }
}

function atCompactedRevision(events: EventT[]): EventT[] {
  return events.filter((e) => e.type !== Event_EventType.DELETE).map((e) => ({ type: e.type, kv: e.kv, prevKv: undefined }));
}

/** A WatchResponse with every field at its default (the generated base, no copying). */
function blank(): WatchResponse {
  return WatchResponse.create();
}
