// The composition root of one proxy process, in start order (and stopped in
// reverse, see app/stack.ts): clients and bootstrap (app/members.ts); the clock,
// the KV context and the lease manager (app/kv-core.ts); the watch hub fed by one stream per
// member; the gRPC services (app/serve.ts); the announcement in the coordinator
// (app/heartbeat.ts); the metrics, /health and /readyz endpoints.

import { advertisedUrls, type ProxyConfig } from './config.js';
import { createHealthCheck, type HealthReport } from './health.js';
import type { KvContext } from './kv/context.js';
import type { LeaseManager } from './lease/lease-manager.js';
import type { Logger } from './log.js';
import type { MemberSet } from './members/member.js';
import { MemberStream } from './members/member-stream.js';
import { startMetricsServer } from './metrics-server.js';
import { Metrics } from './metrics.js';
import type { Router } from './shard/layout.js';
import { WatchHub } from './watch/hub.js';
import { AuthStore } from './auth/store.js';
import { ServingGate } from './app/serving-gate.js';
import { Heartbeat } from './app/heartbeat.js';
import { buildKvCore } from './app/kv-core.js';
import { connectClusters } from './app/members.js';
import { serve } from './app/serve.js';
import { StopStack } from './app/stack.js';

export { REPORTED_ETCD_VERSION } from './app/serve.js';

/** How long each part of a /health or /readyz check may take. */
const HEALTH_TIMEOUT_MS = 2000;
/** Recently written keys whose metadata the write path remembers (to skip reading before writing). */
const KEY_CACHE_ENTRIES = 200_000;

export interface ProxyHandle {
  /** The port the gRPC server listens on. */
  port: number;
  metricsPort: number | undefined;
  clusterId: string;
  /** The meta cluster's layout (which member holds which key). */
  router: Router;
  /** The check behind /health (coordinator and every member reachable, no alarm raised) and /readyz (also every watch stream up). */
  health(): Promise<HealthReport>;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Keep serving (with a warning) when the metrics port cannot be bound — the sandbox's choice. */
  metricsOptional?: boolean;
}

export async function startProxy(
  config: ProxyConfig,
  log: Logger,
  metrics = new Metrics({ processMetrics: true }),
  options: StartOptions = {},
): Promise<ProxyHandle> {
  const stack = new StopStack(log);
  try {
    const clusters = await connectClusters(config, log, metrics, stack);
    const { coordinator, members, boot } = clusters;
    const { router, compaction, clock, leases } = buildKvCore(config, clusters, log, metrics, KEY_CACHE_ENTRIES);
    stack.defer('lease manager', () => leases.stop());
    const kv = leases.context;

    const hub = new WatchHub({
      timelines: members.map((m) => m.timeline),
      clock,
      log,
      metrics,
      watchTimeoutMs: config.watchTimeoutMs,
      fenceAfterMs: config.fenceAfterMs,
      bufferEvents: config.watchBufferLen,
      bufferBytes: config.watchBufferBytes,
    });
    stack.defer('watch hub', () => hub.stop());
    const auth = new AuthStore({ client: members.get(0).client, log: log.child({ component: 'auth' }) });
    const gate = new ServingGate();
    await startMemberStreams(members, kv, hub, leases, auth, gate, log, metrics, stack);
    await auth.load();
    await clock.now(); // rebuilds the clock now if the coordinator has none
    await hub.start(config.watchTimeoutMs);
    leases.start();

    const port = await serve({ config, log, metrics, clusterId: boot.layout.clusterId, coordinator, members, kv, leases, clock, compaction, hub, auth, gate }, stack);
    const heartbeat = new Heartbeat({ coordinator, urls: advertisedUrls(config, port), log });
    heartbeat.start();
    stack.defer('heartbeat', () => heartbeat.stop());
    const health = createHealthCheck({
      clock,
      members: members.clients,
      streams: members.map((m) => m.timeline.link),
      timeoutMs: HEALTH_TIMEOUT_MS,
      stopped: () => gate.closedBecause,
    });
    const metricsPort = await serveMetrics(config, log, metrics, health, options, stack);
    log.info({ listen: config.listenAddr, port, members: members.size, clusterId: boot.layout.clusterId }, 'ready to serve');
    return {
      port,
      metricsPort,
      clusterId: boot.layout.clusterId,
      router,
      health,
      stop: () => stack.stop().then(() => log.info('stopped')),
    };
  } catch (err) {
    await stack.stop();
    throw err;
  }
}

/** One watch stream per member, feeding the key cache, the hub and the lease manager; resolves once all are established. */
async function startMemberStreams(
  members: MemberSet,
  kv: KvContext,
  hub: WatchHub,
  leases: LeaseManager,
  auth: AuthStore,
  gate: ServingGate,
  log: Logger,
  metrics: Metrics,
  stack: StopStack,
): Promise<void> {
  const streams = members.map(
    (m) =>
      new MemberStream({
        member: m.index,
        client: m.client,
        timeline: m.timeline,
        log,
        metrics,
        onCompacted: (stored) => kv.compaction.raiseStored(stored),
        onBatch: (parts) => {
          for (const b of parts) kv.keyCache.observe(b.memberRevision, b.events);
          hub.push(parts);
        },
        onLeaseGone: (id) => leases.onLeaseGone(id),
        onMoveState: () => {
          const why =
            `metaetcd: a partition move or placement change started on the member clusters while this proxy was serving (m/move/state in member ${m.index}); ` +
            'this proxy serves nothing more: restart it once the change has finished';
          if (gate.closedBecause === undefined) log.error({ member: m.index }, why);
          gate.close(why);
        },
        onAuth: m.index === 0 ? (value, rev) => auth.observe(value, rev) : undefined,
        onReset: () => {
          hub.reset();
          // The stream may have skipped changes of the auth record: read it again.
          if (m.index === 0) auth.load().catch((err: unknown) => log.warn({ err: String(err) }, 'cannot reload the auth record'));
        },
      }),
  );
  stack.defer('member streams', () => streams.forEach((s) => s.stop()));
  await Promise.all(streams.map((s) => s.start()));
}

/** /metrics, /health and /readyz on the side port (none when --metrics-port is 0); returns the port. */
async function serveMetrics(
  config: ProxyConfig,
  log: Logger,
  metrics: Metrics,
  health: () => Promise<HealthReport>,
  options: StartOptions,
  stack: StopStack,
): Promise<number | undefined> {
  if (config.metricsPort <= 0) return undefined;
  try {
    const scrape = { body: () => metrics.registry.metrics(), contentType: metrics.registry.contentType };
    const ms = await startMetricsServer({ scrape, host: config.metricsAddr, port: config.metricsPort, health });
    stack.defer('metrics server', () => new Promise<void>((r) => ms.server.close(() => r())));
    return ms.port;
  } catch (err) {
    if (!options.metricsOptional) throw new Error(`cannot serve metrics on ${config.metricsAddr}:${config.metricsPort}: ${String(err)}`);
    log.warn({ port: config.metricsPort, err: String(err) }, 'metrics are not served: the metrics port is taken (use --metrics-port)');
    return undefined;
  }
}
