// A replica of kube-apiserver's watch cache for one resource (cacher + reflector +
// etcd3 watcher), as the contract describes it (§4): list (pages of 10 000,
// pinned to the first page's revision), then one Watch RPC carrying
// `hasleader: true` with a prefix watch from RV+1, prev_kv and progress_notify.
//
//   - events: ADDED iff PUT with create_revision == mod_revision; any other PUT and
//     every DELETE needs prev_kv, else "etcd event received with PrevKv=nil";
//   - progress notifications (no events, not created/canceled, compact 0, header
//     ≠ 0) set the cache RV to header.revision;
//   - consistent reads (§4.6): target = GetCurrentResourceVersion, then a
//     RequestProgress every 100 ms on the watch stream until the cache RV ≥ target,
//     for at most 3 s (after which the apiserver falls back to etcd);
//   - the stream ending with Unavailable/Internal, a cancel without
//     compact_revision, or the client cancelling: resume silently from RV+1 (on the
//     next endpoint, as clientv3's balancer would);
//   - created then canceled with compact_revision (410): relist.
//
// Everything the apiserver would choke on, or that breaks the cache's view, is
// recorded as an anomaly; the tests require none.

import { status as Status, type ClientDuplexStream } from '@grpc/grpc-js';
import { Event_EventType, type Event } from '../../src/proto/gen/kv.js';
import { WatchRequest, type WatchResponse } from '../../src/proto/gen/rpc.js';
import { KubeStore, prefixEnd, sleep, type StoredObject } from './storage-client.js';

export interface CacheStats {
  events: number;
  progress: number;
  /** Streams resumed from RV+1 after the server ended them (Unavailable, Internal, canceled). */
  reconnects: number;
  /** Streams the client cancelled itself and resumed. */
  clientCancels: number;
  /** Relists after a compacted watch (or a fatal watch error). */
  relists: number;
  consistentReads: number;
  /** Consistent reads that did not complete within the 3 s budget (the apiserver would fall back to etcd). */
  fallbacks: number;
  consistentReadMs: number[];
  /** Watch-cache lag samples: time from a write's acknowledgement to the event in the cache (filled by callers through noteWrite). */
  lagMs: number[];
}

export const isProgressNotify = (r: WatchResponse): boolean =>
  r.events.length === 0 && !r.created && !r.canceled && r.compactRevision === 0n && (r.header?.revision ?? 0n) !== 0n;

export class ResourceCache {
  readonly state = new Map<string, StoredObject>();
  /** The cache's resourceVersion. */
  rv = 0n;
  readonly anomalies: string[] = [];
  readonly stats: CacheStats = { events: 0, progress: 0, reconnects: 0, clientCancels: 0, relists: 0, consistentReads: 0, fallbacks: 0, consistentReadMs: [], lagMs: [] };
  /** Status codes and messages the watch streams ended with. */
  readonly endings: string[] = [];

  private stream: ClientDuplexStream<WatchRequest, WatchResponse> | undefined;
  private generation = 0;
  private endpointIndex = 0;
  private watching = false;
  private stopped = false;
  private selfCancel = false;
  private relisting: Promise<void> | undefined;
  private readonly waiters = new Set<() => void>();
  private readonly pendingWrites = new Map<bigint, number>();
  private readonly rvHistory: bigint[] = [];

  constructor(
    readonly store: KubeStore,
    readonly opts: { pageLimit?: number; label?: string; budgetMs?: number } = {},
  ) {}

  get label(): string {
    return this.opts.label ?? this.store.resourcePrefix;
  }

  get prefix(): string {
    return this.store.resourcePrefix;
  }

  /** The watch RPC is open and its watch created. */
  get live(): boolean {
    return this.watching;
  }

  async start(): Promise<void> {
    await this.relist();
  }

  stop(): void {
    this.stopped = true;
    this.generation++;
    this.watching = false;
    this.stream?.cancel();
    this.stream = undefined;
    this.wake();
  }

  /** Cancels the current Watch RPC from the client side (clientv3 shutting down the stream); the cache resumes from RV+1. */
  cancelStream(): void {
    if (!this.stream) return;
    this.selfCancel = true;
    this.stream.cancel();
  }

  /** Stops watching without resuming (to let writes and a compaction pass it by); resume() continues from RV+1. */
  pause(): void {
    this.generation++;
    this.watching = false;
    this.stream?.cancel();
    this.stream = undefined;
  }

  resume(): void {
    this.openWatch(this.rv + 1n);
  }

  /** Records that a write acknowledged now at `rev` should reach this cache (for lag measurements). */
  noteWrite(rev: bigint): void {
    if (rev > this.rv) this.pendingWrites.set(rev, performance.now());
    else this.stats.lagMs.push(0);
  }

  snapshot(): { rv: bigint; items: StoredObject[] } {
    return { rv: this.rv, items: [...this.state.values()].sort((a, b) => Buffer.compare(Buffer.from(a.key, 'latin1'), Buffer.from(b.key, 'latin1'))) };
  }

  async waitForRv(target: bigint, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.rv < target) {
      const left = deadline - Date.now();
      if (left <= 0 || this.stopped) return false;
      await new Promise<void>((resolve) => {
        const w = (): void => {
          clearTimeout(t);
          this.waiters.delete(w);
          resolve();
        };
        const t = setTimeout(w, Math.min(left, 50));
        this.waiters.add(w);
      });
    }
    return true;
  }

  /**
   * A consistent read from the cache (§4.6): target = GetCurrentResourceVersion,
   * then RequestProgress every 100 ms until RV ≥ target, within the 3 s budget.
   */
  async consistentRead(): Promise<{ ok: boolean; ms: number; target: bigint; waited: boolean; snapshot?: { rv: bigint; items: StoredObject[] } }> {
    const t0 = performance.now();
    const target = await this.store.getCurrentResourceVersion();
    const budget = this.opts.budgetMs ?? 3000;
    let ok = this.rv >= target;
    const waited = !ok;
    if (!ok) {
      const timer = setInterval(() => this.requestProgress(), 100);
      try {
        ok = await this.waitForRv(target, budget - (performance.now() - t0));
      } finally {
        clearInterval(timer);
      }
    }
    const ms = performance.now() - t0;
    this.stats.consistentReads++;
    this.stats.consistentReadMs.push(ms);
    if (!ok) {
      this.stats.fallbacks++;
      return { ok, ms, target, waited };
    }
    return { ok, ms, target, waited, snapshot: this.snapshot() };
  }

  /** WatchRequest{progress_request} on the watch stream (nothing when no stream is open). */
  requestProgress(): void {
    if (!this.stream || !this.watching) return;
    this.stream.write(WatchRequest.fromPartial({ requestUnion: { $case: 'progressRequest', value: {} } }));
  }

  // --- list and watch ----------------------------------------------------------

  private relist(): Promise<void> {
    this.relisting ??= (async () => {
      this.generation++;
      this.watching = false;
      this.stream?.cancel();
      this.stream = undefined;
      for (let attempt = 0; ; attempt++) {
        try {
          // The cacher's first list: a consistent first page, then continue tokens (pinned to its revision).
          const items = new Map<string, StoredObject>();
          let token: string | undefined;
          let rv = 0n;
          do {
            const page = await this.store.getList({ limit: this.opts.pageLimit ?? 10_000, ...(token ? { continueToken: token } : {}) });
            for (const o of page.items) items.set(o.key, o);
            if (rv === 0n) rv = page.rv;
            token = page.continueToken;
          } while (token);
          if (rv < this.rv) this.anomaly(`relist returned resourceVersion ${rv}, below the cache's ${this.rv}`);
          this.state.clear();
          for (const [k, v] of items) this.state.set(k, v);
          this.setRv(rv, 'list');
          break;
        } catch (e) {
          if (this.stopped || attempt >= 20) throw e;
          await sleep(200);
        }
      }
      if (!this.stopped) this.openWatch(this.rv + 1n);
    })().finally(() => (this.relisting = undefined));
    return this.relisting;
  }

  private openWatch(startRevision: bigint): void {
    if (this.stopped) return;
    const gen = ++this.generation;
    this.watching = false;
    const { stream, url } = this.store.conn.watchStream({ hasLeader: true, endpointIndex: this.endpointIndex });
    this.stream = stream;
    let createdSeen = false;
    let watchId: bigint | undefined;
    stream.on('data', (r: WatchResponse) => {
      if (gen !== this.generation) return;
      if (r.created) {
        if (createdSeen) this.anomaly(`second created response on one stream: ${JSON.stringify({ id: r.watchId })}`);
        createdSeen = true;
        watchId = r.watchId;
        if (r.canceled) {
          // A create refused with a reason (FailedPrecondition at the apiserver).
          this.anomaly(`watch create refused on ${url}: ${r.cancelReason}`);
          void this.relistLater();
          return;
        }
        if (r.compactRevision !== 0n) {
          void this.relistLater();
          return;
        }
        this.watching = true;
        this.wake();
        return;
      }
      if (!createdSeen) {
        this.anomaly(`response before the created response: events=${r.events.length}`);
        return;
      }
      if (r.watchId !== watchId && r.watchId !== -1n) {
        this.anomaly(`response for unknown watch id ${r.watchId} (watching ${watchId})`);
        return;
      }
      if (r.compactRevision !== 0n) {
        // 410: the reflector ends and the cacher relists.
        void this.relistLater();
        return;
      }
      if (r.canceled) {
        // canceled without compact_revision: the channel closes; the reflector re-watches from its RV.
        this.endings.push(`canceled by server: ${r.cancelReason}`);
        this.stats.reconnects++;
        this.restart(gen, false);
        return;
      }
      if (isProgressNotify(r)) {
        this.stats.progress++;
        const h = r.header!.revision;
        if (h < this.rv) this.anomaly(`progress notification at ${h} below the cache's resourceVersion ${this.rv} (revision went back)`);
        else this.setRv(h, 'progress');
        return;
      }
      if (r.events.length > 0) {
        const h = r.header?.revision ?? 0n;
        const maxRev = r.events.reduce((m, e) => (e.kv!.modRevision > m ? e.kv!.modRevision : m), 0n);
        if (h < maxRev) this.anomaly(`response header ${h} below its events' revision ${maxRev}`);
        for (const e of r.events) {
          if (!this.apply(e)) {
            // parseEvent failed: the watch ends with an error, the reflector retries from its RV.
            this.restart(gen, false);
            return;
          }
        }
      }
    });
    stream.on('error', () => undefined);
    stream.on('status', (st: { code: number; details: string }) => {
      if (gen !== this.generation || this.stopped) return;
      this.endings.push(`${Status[st.code] ?? st.code}: ${st.details}`);
      if (this.selfCancel) {
        this.selfCancel = false;
        this.stats.clientCancels++;
        this.restart(gen, false);
        return;
      }
      if (st.code === Status.UNAVAILABLE && st.details !== 'etcdserver: no leader') {
        // clientv3 re-creates the watch at nextRev by itself: nothing reaches the apiserver.
        this.stats.reconnects++;
        this.restart(gen, true);
        return;
      }
      if (st.code === Status.INTERNAL || st.code === Status.OK) {
        this.stats.reconnects++;
        this.restart(gen, false);
        return;
      }
      // A halt error: the apiserver sees a watch error; the reflector re-watches from its RV (we count it as an anomaly).
      this.anomaly(`watch stream ended with a halt error ${Status[st.code] ?? st.code}: ${st.details}`);
      this.restart(gen, true);
    });
    stream.write(
      WatchRequest.fromPartial({
        requestUnion: {
          $case: 'createRequest',
          value: { key: Buffer.from(this.prefix), rangeEnd: prefixEnd(this.prefix), startRevision, prevKv: true, progressNotify: true },
        },
      }),
    );
  }

  private restart(gen: number, nextEndpoint: boolean): void {
    if (gen !== this.generation || this.stopped) return;
    this.generation++;
    this.watching = false;
    const old = this.stream;
    this.stream = undefined;
    old?.cancel();
    if (nextEndpoint) this.endpointIndex++;
    // clientv3 retries right away; a short pause avoids a hot loop against a proxy that is going away.
    setTimeout(() => {
      if (!this.stopped && !this.stream) this.openWatch(this.rv + 1n);
    }, 20);
  }

  private async relistLater(): Promise<void> {
    this.stats.relists++;
    try {
      await this.relist();
    } catch (e) {
      this.anomaly(`relist failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** parseEvent + the cache's store update; false when the apiserver would fail the watch. */
  private apply(e: Event): boolean {
    const kv = e.kv!;
    const key = kv.key.toString('latin1');
    const rev = kv.modRevision;
    this.stats.events++;
    if (rev <= this.rv) {
      this.anomaly(`event ${key}@${rev} at or below the cache's resourceVersion ${this.rv} (revision went back or duplicate)`);
      return true;
    }
    const existing = this.state.get(key);
    if (e.type === Event_EventType.PUT) {
      const isCreate = kv.createRevision === kv.modRevision;
      if (!isCreate && !e.prevKv) {
        this.anomaly(`etcd event received with PrevKv=nil (key=${JSON.stringify(key)}, modRevision=${rev}, type=PUT)`);
        return false;
      }
      if (isCreate && existing) this.anomaly(`ADDED (create_revision == mod_revision ${rev}) for ${key}, which the cache holds at ${existing.rv}`);
      if (!isCreate && !existing) this.anomaly(`MODIFIED ${key}@${rev} (create_revision ${kv.createRevision}) for a key the cache does not hold`);
      if (!isCreate && existing && e.prevKv && (!e.prevKv.value.equals(existing.value) || e.prevKv.modRevision !== existing.rv)) {
        this.anomaly(`MODIFIED ${key}@${rev}: prev_kv (mod ${e.prevKv.modRevision}) differs from the cached object (rv ${existing.rv})`);
      }
      if (isCreate && e.prevKv) this.anomaly(`ADDED ${key}@${rev} carries a prev_kv`);
      this.state.set(key, { key, value: kv.value, rv: rev });
    } else {
      if (!e.prevKv) {
        this.anomaly(`etcd event received with PrevKv=nil (key=${JSON.stringify(key)}, modRevision=${rev}, type=DELETE)`);
        return false;
      }
      if (!existing) this.anomaly(`DELETED ${key}@${rev} for a key the cache does not hold`);
      else if (!e.prevKv.value.equals(existing.value) || e.prevKv.modRevision !== existing.rv) {
        this.anomaly(`DELETED ${key}@${rev}: prev_kv (mod ${e.prevKv.modRevision}) differs from the cached object (rv ${existing.rv})`);
      }
      this.state.delete(key);
    }
    this.setRv(rev, 'event');
    return true;
  }

  private setRv(rv: bigint, _why: string): void {
    if (rv < this.rv) this.anomaly(`resourceVersion went back from ${this.rv} to ${rv}`);
    this.rv = rv;
    this.rvHistory.push(rv);
    if (this.pendingWrites.size > 0) {
      const now = performance.now();
      for (const [w, t] of this.pendingWrites) {
        if (w <= rv) {
          this.stats.lagMs.push(now - t);
          this.pendingWrites.delete(w);
        }
      }
    }
    this.wake();
  }

  private anomaly(what: string): void {
    if (this.anomalies.length < 200) this.anomalies.push(`${this.label}: ${what}`);
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}
