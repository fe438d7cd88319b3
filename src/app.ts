// Wires one proxy process: clients of the coordinator and member clusters,
// bootstrap, the clock, one watch stream and revision timeline per member, the
// KV/Watch/Lease/Maintenance/Cluster services, the gRPC server and the metrics
// endpoint; and stops all of it in order.

import { readFileSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import type { Server } from '@grpc/grpc-js';
import { Clock } from './clock/clock.js';
import { advertisedUrls, isLoopbackHost, listenHost, type ProxyConfig } from './config.js';
import { createHealthCheck, type HealthReport } from './health.js';
import { CompactionState, type KvContext } from './kv/context.js';
import { LeaseManager } from './lease/lease-manager.js';
import { KeyCache } from './kv/key-cache.js';
import { MemberSequencer } from './kv/member-sequencer.js';
import type { Logger } from './log.js';
import { bootstrap } from './members/bootstrap.js';
import { parseCluster, parseClusters } from './members/endpoints.js';
import { EtcdClient, type ClientTls } from './members/etcd-client.js';
import { MemberStream } from './members/member-stream.js';
import { startMetricsServer } from './metrics-server.js';
import { Metrics } from './metrics.js';
import { ClusterService, KVService, LeaseService, MaintenanceService, WatchService as WatchServiceDef } from './proto/gen/rpc.js';
import { MemberTimeline } from './revision/member-timeline.js';
import { createClusterService } from './server/cluster-service.js';
import { bind, createGrpcServer, serverCredentials } from './server/grpc-server.js';
import { HeaderFactory } from './proto/header.js';
import { withRequestSizes } from './server/request-size.js';
import { createKvService } from './server/kv-service.js';
import { createLeaseService } from './server/lease-service.js';
import { createMaintenanceService } from './server/maintenance-service.js';
import { WatchService } from './server/watch-service.js';
import { WatchHub } from './watch/hub.js';
import { Router } from './shard/layout.js';

/**
 * The etcd version Status reports. kube-apiserver 1.31+ uses RequestProgress (and
 * serves consistent lists from its watch cache) only for etcd >= 3.5.13, whose
 * progress responses promise that every event up to their revision has been
 * delivered on the stream — which src/watch/session.ts guarantees.
 */
export const REPORTED_ETCD_VERSION = '3.5.13';

/** How long each part of a /health check may take. */
const HEALTH_TIMEOUT_MS = 2000;

export interface ProxyHandle {
  /** The port the gRPC server listens on. */
  port: number;
  metricsPort: number | undefined;
  clusterId: string;
  /** The meta cluster's layout (which member holds which key). */
  router: Router;
  /** The check behind /health: coordinator and every member reachable, no alarm raised. */
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
  const tls = loadClientTls(config);
  const clientOpts = {
    tls,
    keepaliveTimeMs: config.grpcClientKeepaliveIntervalMs,
    keepaliveTimeoutMs: config.grpcClientKeepaliveTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
  };
  const coordinator = new EtcdClient({ name: 'coordinator', endpoints: parseCluster(config.coordinator), ...clientOpts });
  const candidates = parseClusters(config.members).map((endpoints, i) => new EtcdClient({ name: `member ${i}`, endpoints, ...clientOpts }));
  const closeClients = () => [coordinator, ...candidates].forEach((c) => c.close());

  const streams: MemberStream[] = [];
  const stoppers: (() => void)[] = [];
  let server: Server | undefined;
  let metricsServer: HttpServer | undefined;
  try {
    const boot = await bootstrap({ coordinator, candidates, log });
    const members = boot.members.map((client, i) => {
      // Names follow member slots, not flag order.
      client.name = `member ${i}`;
      return client;
    });
    const router = new Router(boot.layout);
    const compaction = new CompactionState();
    compaction.raiseStored(boot.compacted);
    const timelines = members.map(
      (client, member) => new MemberTimeline({ member, client, log, metrics, fenceAfterMs: config.fenceAfterMs }),
    );
    const clock = new Clock({
      coordinator,
      members,
      log,
      metrics,
      floor: () => Math.max(...timelines.map((t) => t.watermark)),
      watermark: (m) => timelines[m]!.watermark,
    });
    const leases = new LeaseManager({ router, members, clock, log, metrics });
    const keyCache = new KeyCache(200_000);
    stoppers.push(() => leases.stop());
    const hub = new WatchHub({
      timelines,
      clock,
      log,
      metrics,
      watchTimeoutMs: config.watchTimeoutMs,
      fenceAfterMs: config.fenceAfterMs,
      bufferEvents: config.watchBufferLen,
      bufferBytes: config.watchBufferBytes,
    });
    stoppers.push(() => hub.stop());
    for (const [member, client] of members.entries()) {
      streams.push(
        new MemberStream({
          member,
          client,
          timeline: timelines[member]!,
          log,
          metrics,
          onCompacted: (stored) => compaction.raiseStored(stored),
          onBatch: (b) => {
            keyCache.observe(b.memberRevision, b.events);
            hub.push(b);
          },
          onLeaseGone: (id) => leases.onLeaseGone(id),
          onReset: () => hub.reset(),
        }),
      );
    }
    await Promise.all(streams.map((s) => s.start()));
    await clock.now(); // rebuilds the clock now if the coordinator has none
    await hub.start(config.watchTimeoutMs);

    const kv: KvContext = {
      router,
      members,
      timelines,
      sequencers: members.map(() => new MemberSequencer(Infinity)),
      keyCache,
      clock,
      compaction,
      leases,
      limits: { maxRequestBytes: config.maxRequestBytes, maxTxnOps: config.maxTxnOps, requestTimeoutMs: config.requestTimeoutMs },
      metrics,
      log: log.child({ component: 'kv' }),
    };
    leases.attach(kv);
    leases.start();

    const grpcOpts = {
      maxRequestBytes: config.maxRequestBytes,
      keepaliveIntervalMs: config.grpcServerKeepaliveIntervalMs,
      keepaliveTimeoutMs: config.grpcServerKeepaliveTimeoutMs,
      maxIdleMs: config.grpcServerKeepaliveMaxIdleMs,
      serverCert: config.serverCert,
      serverCertKey: config.serverCertKey,
      caCert: config.caCert,
    };
    server = createGrpcServer(grpcOpts);
    const port = await bind(server, config.listenAddr, serverCredentials(grpcOpts));
    const urls = advertisedUrls(config, port);
    const header = new HeaderFactory(boot.layout.clusterId, urls);
    const deps = { metrics, log: log.child({ component: 'server' }) };
    server.addService(withRequestSizes(KVService), createKvService({ ...deps, kv, header }));
    server.addService(
      MaintenanceService,
      createMaintenanceService({ ...deps, members, coordinator, clock, header, version: () => REPORTED_ETCD_VERSION }),
    );
    server.addService(LeaseService, createLeaseService({ ...deps, leases, members, clock, header }));
    server.addService(ClusterService, createClusterService({ ...deps, header, name: 'metaetcd', clientUrls: urls }));
    const watchService = new WatchService({
      hub,
      clock,
      compaction,
      header,
      history: { members, timelines },
      metrics,
      log: log.child({ component: 'watch' }),
      maxRequestBytes: config.maxRequestBytes,
      progressIntervalMs: config.progressNotifyIntervalMs,
      requestTimeoutMs: config.requestTimeoutMs,
      maxStreamBytes: Math.max(16 * 1024 * 1024, 4 * config.maxRequestBytes),
    });
    stoppers.push(() => watchService.stop());
    server.addService(WatchServiceDef, watchService.server());

    if (!config.serverCert && !isLoopbackHost(listenHost(config.listenAddr))) {
      log.warn({ listenAddr: config.listenAddr }, 'serving plaintext beyond loopback: anyone who can reach this address can read and write every key');
    }
    let metricsPort: number | undefined;
    const health = createHealthCheck({ clock, members, timeoutMs: HEALTH_TIMEOUT_MS });
    if (config.metricsPort > 0) {
      try {
        const scrape = { body: () => metrics.registry.metrics(), contentType: metrics.registry.contentType };
        const ms = await startMetricsServer({ scrape, host: config.metricsAddr, port: config.metricsPort, health });
        metricsServer = ms.server;
        metricsPort = ms.port;
      } catch (err) {
        if (!options.metricsOptional) throw new Error(`cannot serve metrics on ${config.metricsAddr}:${config.metricsPort}: ${String(err)}`);
        log.warn({ port: config.metricsPort, err: String(err) }, 'metrics are not served: the metrics port is taken (use --metrics-port)');
      }
    }
    log.info({ listen: config.listenAddr, port, members: members.length, clusterId: boot.layout.clusterId }, 'ready to serve');

    const srv = server;
    let stopping: Promise<void> | undefined;
    return {
      port,
      metricsPort,
      clusterId: boot.layout.clusterId,
      router,
      health,
      stop: () => {
        stopping ??= (async () => {
          for (const stop of stoppers) stop();
          await shutdownGrpc(srv, 5000);
          for (const s of streams) s.stop();
          await new Promise<void>((r) => (metricsServer ? metricsServer.close(() => r()) : r()));
          closeClients();
          log.info('stopped');
        })();
        return stopping;
      },
    };
  } catch (err) {
    for (const s of streams) s.stop();
    for (const stop of stoppers) stop();
    server?.forceShutdown();
    metricsServer?.close();
    closeClients();
    throw err;
  }
}

function loadClientTls(c: ProxyConfig): ClientTls {
  const tls: ClientTls = {};
  if (c.caCert) tls.ca = readFileSync(c.caCert);
  if (c.clientCert) tls.cert = readFileSync(c.clientCert);
  if (c.clientCertKey) tls.key = readFileSync(c.clientCertKey);
  return tls;
}

/** Stops accepting calls, lets running ones finish for up to `graceMs`, then cuts the rest. */
function shutdownGrpc(server: Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
