// Client watches fed by the hub: one WatchSession per client stream, all
// registered in one WatcherRegistry. Each revision the hub releases is matched
// once against the registry and handed to the watchers' sessions; late
// revisions and lost continuity cut off the watches they concern (with
// compact_revision set, so clients relist instead of silently missing a change).

import type { ServerDuplexStream } from '@grpc/grpc-js';
import type { Event } from '../proto/gen/kv.js';
import type { WatchRequest, WatchResponse } from '../proto/gen/rpc.js';
import type { RevisionBatch } from './events.js';
import type { HubListener } from './hub.js';
import { WatcherRegistry } from './registry.js';
import { WatchSession, type SessionDeps } from './session.js';
import type { Watcher } from './watcher.js';

export class WatchFanout implements HubListener {
  readonly registry = new WatcherRegistry();
  private readonly sessions = new Set<WatchSession>();
  private readonly deps: SessionDeps;
  private readonly unsubscribe: () => void;

  constructor(deps: Omit<SessionDeps, 'registry'>) {
    this.deps = { ...deps, registry: this.registry };
    this.unsubscribe = deps.hub.subscribe(this);
  }

  get streams(): number {
    return this.sessions.size;
  }

  /** Serves one client Watch stream until it ends. */
  open(call: ServerDuplexStream<WatchRequest, WatchResponse>): void {
    const session = new WatchSession(call, this.deps, (s) => this.sessions.delete(s));
    this.sessions.add(session);
  }

  onRevision(b: RevisionBatch): void {
    this.registry.forEachMatch(b, (w: Watcher, events: Event[]) => w.sink.deliver(w, b.revision, events));
  }

  onLate(b: RevisionBatch): void {
    const hit: Watcher[] = [];
    this.registry.forEachMatch(b, (w) => {
      if (w.nextRev > b.revision) hit.push(w);
    });
    for (const w of hit) w.sink.invalidate(w, 'metaetcd: a change older than this watch position arrived late; relist and watch again');
  }

  onReset(): void {
    for (const s of this.sessions) {
      for (const w of [...s.allWatchers()]) s.invalidate(w, 'metaetcd: the proxy lost track of a member cluster; relist and watch again');
    }
  }

  /** Ends every client stream (with Unavailable) and detaches from the hub. */
  stop(): void {
    for (const s of [...this.sessions]) s.shutdown();
    this.unsubscribe();
  }
}
