// Every Prometheus metric of the proxy, in one registry per process (no global
// default registry). Names keep the original metaetcd's where a metric existed
// there (metaetcd_request_count, metaetcd_clock_reconstitution,
// metaetcd_time_buffer_*, metaetcd_active_watch_count, ...), so existing
// dashboards keep working.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();

  // Requests (original names).
  readonly requestCount = new Counter({
    name: 'metaetcd_request_count',
    help: 'Number of total requests partitioned by method.',
    labelNames: ['method'] as const,
    registers: [this.registry],
  });
  readonly requestDuration = new Histogram({
    name: 'metaetcd_request_duration_seconds',
    help: 'Time to serve a client request, by method and gRPC status code.',
    labelNames: ['method', 'code'] as const,
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
    registers: [this.registry],
  });
  readonly getMemberRevDepth = new Histogram({
    name: 'metaetcd_get_member_rev_depth',
    help: 'Round trips needed to map a meta revision to a member revision beyond the in-memory index.',
    buckets: [0, 1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  });

  // Clock.
  readonly clockReconstitution = new Counter({
    name: 'metaetcd_clock_reconstitution',
    help: "Total number of times the meta cluster's clock has been reconstituted from its members.",
    registers: [this.registry],
  });
  readonly clockTicks = new Counter({
    name: 'metaetcd_clock_ticks_total',
    help: 'Meta revisions allocated by this proxy.',
    registers: [this.registry],
  });
  readonly clockRoundTrips = new Counter({
    name: 'metaetcd_clock_round_trips_total',
    help: 'Coordinator round trips, by kind (allocate, conflict, read, ceiling).',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly fences = new Counter({
    name: 'metaetcd_fences_total',
    help: 'Fences written to close meta revisions whose writes stalled, by member.',
    labelNames: ['member'] as const,
    registers: [this.registry],
  });

  // Writes.
  readonly writeAttempts = new Counter({
    name: 'metaetcd_member_write_attempts_total',
    help: 'Member write transactions sent, by outcome (ok; order: overtaken by later revisions; stale: a key changed; priority: waited for a priority write).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly crossMemberTxns = new Counter({
    name: 'metaetcd_cross_member_txns_total',
    help: 'Transactions over several member clusters, by outcome (committed; retried: an attempt lost its revision; failed: an error reached the client).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly crossMemberResolutions = new Counter({
    name: 'metaetcd_cross_member_resolutions_total',
    help: 'Unfinished cross-member transactions of another attempt or proxy resolved here, by outcome (completed, discarded).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly writeBatchSize = new Histogram({
    name: 'metaetcd_member_write_batch_size',
    help: 'Client writes per member transaction of the write batcher (1: a write that went alone or found no other ready write).',
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  });

  // Member streams and the revision index.
  readonly memberRevision = new Gauge({
    name: 'metaetcd_member_meta_revision',
    help: "Latest meta revision seen on each member's stream.",
    labelNames: ['member'] as const,
    // With --workers, the primary reports the highest worker's value: a sum of revisions means nothing.
    aggregator: 'max',
    registers: [this.registry],
  });
  readonly watchesRunning = new Gauge({
    name: 'metaetcd_watches_running',
    help: 'Member watch streams that are connected.',
    registers: [this.registry],
  });
  readonly watchesDialing = new Gauge({
    name: 'metaetcd_watches_dialing',
    help: 'Member watch streams that are (re)connecting.',
    registers: [this.registry],
  });

  // Watch service (original names).
  readonly activeWatchCount = new Gauge({
    name: 'metaetcd_active_watch_count',
    help: 'Number of active client watches.',
    registers: [this.registry],
  });
  readonly timeBufferLen = new Gauge({
    name: 'metaetcd_time_buffer_len',
    help: 'The length of the time buffer.',
    registers: [this.registry],
  });
  readonly timeBufferVisibleMax = new Gauge({
    name: 'metaetcd_time_buffer_visible_max',
    help: 'Max revision visible from the time buffer.',
    // With --workers, the primary reports the highest worker's value: a sum of revisions means nothing.
    aggregator: 'max',
    registers: [this.registry],
  });
  readonly timeBufferTimeouts = new Counter({
    name: 'metaetcd_time_buffer_timeouts_count',
    help: 'The number of buffer event gaps that were never filled.',
    registers: [this.registry],
  });
  readonly watchEventCount = new Counter({
    name: 'metaetcd_watch_event_count',
    help: 'The total watch events that have been pushed into the buffer.',
    registers: [this.registry],
  });
  readonly staleWatchCount = new Counter({
    name: 'metaetcd_stale_watch_count',
    help: 'Number of client watch streams cut off because they fell behind.',
    registers: [this.registry],
  });

  // Leases.
  readonly leasesLive = new Gauge({
    name: 'metaetcd_leases_live',
    help: 'Live leases in the meta cluster, as of the last lease sweep.',
    // With --workers, every worker counts the same leases: the primary reports the highest count, not the sum.
    aggregator: 'max',
    registers: [this.registry],
  });
  readonly leaseGrants = new Counter({
    name: 'metaetcd_lease_grants_total',
    help: 'Leases granted through this proxy.',
    registers: [this.registry],
  });
  readonly leaseExpiries = new Counter({
    name: 'metaetcd_lease_expiries_total',
    help: 'Expired or revoked leases whose attached keys this proxy deleted.',
    registers: [this.registry],
  });
  readonly leaseKeysDeleted = new Counter({
    name: 'metaetcd_lease_keys_deleted_total',
    help: 'Keys deleted because their lease expired or was revoked.',
    registers: [this.registry],
  });
  readonly leaseKeepAliveStreams = new Gauge({
    name: 'metaetcd_lease_keepalive_streams',
    help: 'Open client LeaseKeepAlive streams.',
    registers: [this.registry],
  });

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry });
  }
}
