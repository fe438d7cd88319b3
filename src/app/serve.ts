// The composition root's client-facing part: the gRPC server with the KV, Watch,
// Lease, Maintenance and Cluster services over the domain.

import type { Clock } from '../clock/clock.js';
import { advertisedUrls, isLoopbackHost, listenHost, type ProxyConfig } from '../config.js';
import type { CompactionState, KvContext } from '../kv/context.js';
import { KeepAliveMux } from '../lease/keepalive.js';
import type { LeaseManager } from '../lease/lease-manager.js';
import type { Logger } from '../log.js';
import type { EtcdClient } from '../members/etcd-client.js';
import type { MemberSet } from '../members/member.js';
import type { Metrics } from '../metrics.js';
import { HeaderFactory } from '../proto/header.js';
import { AuthService, ClusterService, LeaseService, MaintenanceService, WatchService as WatchServiceDef } from '../proto/gen/rpc.js';
import { createClusterService } from '../server/cluster-service.js';
import { bind, createGrpcServer, serverCredentials, type ProxyServer } from '../server/grpc-server.js';
import { createKvService, KV_SERVICE_DEFINITION } from '../server/kv-service.js';
import { createLeaseService } from '../server/lease-service.js';
import { createMaintenanceService } from '../server/maintenance-service.js';
import { createWatchService } from '../server/watch-service.js';
import { WatchFanout } from '../watch/fanout.js';
import type { WatchHub } from '../watch/hub.js';
import { reloadingTlsFiles } from '../tls/logged.js';
import type { StopStack } from './stack.js';
import { AuthGuard } from '../auth/guard.js';
import type { ServingGate } from './serving-gate.js';
import type { AuthStore } from '../auth/store.js';
import { createAuthService } from '../server/auth-service.js';

/**
 * The etcd version Status reports. kube-apiserver 1.31+ uses RequestProgress (and
 * serves consistent lists from its watch cache) only for etcd >= 3.5.13, whose
 * progress responses promise that every event up to their revision has been
 * delivered on the stream — which src/watch/session.ts guarantees.
 */
export const REPORTED_ETCD_VERSION = '3.5.13';

/** How long running calls may finish when the server stops, before they are cut. */
const SHUTDOWN_GRACE_MS = 5000;

export interface ServeDeps {
  config: ProxyConfig;
  log: Logger;
  metrics: Metrics;
  clusterId: string;
  coordinator: EtcdClient;
  members: MemberSet;
  kv: KvContext;
  leases: LeaseManager;
  clock: Clock;
  compaction: CompactionState;
  hub: WatchHub;
  auth: AuthStore;
  gate: ServingGate;
}

/** Binds the gRPC server, registers the services, and returns the port it listens on. */
export async function serve(d: ServeDeps, stack: StopStack): Promise<number> {
  const { config } = d;
  const grpcOpts = {
    maxRequestBytes: config.maxRequestBytes,
    keepaliveIntervalMs: config.grpcServerKeepaliveIntervalMs,
    keepaliveTimeoutMs: config.grpcServerKeepaliveTimeoutMs,
    maxIdleMs: config.grpcServerKeepaliveMaxIdleMs,
    serverCert: config.serverCert,
    serverCertKey: config.serverCertKey,
    caCert: config.caCert,
    tls: config.serverCert && config.serverCertKey
      ? reloadingTlsFiles({ cert: config.serverCert, key: config.serverCertKey, ca: config.caCert }, d.log.child({ component: 'server-tls' }))
      : undefined,
    impl: config.grpcServer,
  };
  const server = createGrpcServer(grpcOpts);
  let port: number;
  try {
    port = await bind(server, config.listenAddr, serverCredentials(grpcOpts));
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  stack.defer('gRPC server', () => shutdownGrpc(server, SHUTDOWN_GRACE_MS));

  const urls = advertisedUrls(config, port);
  const header = new HeaderFactory(d.clusterId, urls);
  const deps = { metrics: d.metrics, log: d.log.child({ component: 'server' }), gate: d.gate };
  const clients = d.members.clients;
  const auth = new AuthGuard(d.auth);
  server.addService(KV_SERVICE_DEFINITION, createKvService({ ...deps, kv: d.kv, header, auth, leases: d.leases }));
  server.addService(AuthService, createAuthService({ ...deps, guard: auth, clock: d.clock, header }));
  server.addService(
    MaintenanceService,
    createMaintenanceService({ ...deps, members: clients, coordinator: d.coordinator, clock: d.clock, header, version: () => REPORTED_ETCD_VERSION, auth }),
  );
  const keepAlive = new KeepAliveMux({ members: d.members, homeOf: (id) => d.leases.homeOf(id), observe: (r) => d.leases.observeTtl(r.ID, r.TTL) });
  stack.defer('lease keep-alive streams', () => keepAlive.stop());
  server.addService(LeaseService, createLeaseService({ ...deps, leases: d.leases, keepAlive, clock: d.clock, header, auth }));
  server.addService(ClusterService, createClusterService({ ...deps, header, name: 'metaetcd', clientUrls: urls }));
  const fanout = new WatchFanout({
    hub: d.hub,
    clock: d.clock,
    compaction: d.compaction,
    header,
    history: d.members,
    metrics: d.metrics,
    log: d.log.child({ component: 'watch' }),
    maxRequestBytes: config.maxRequestBytes,
    progressIntervalMs: config.progressNotifyIntervalMs,
    requestTimeoutMs: config.requestTimeoutMs,
    maxStreamBytes: Math.max(16 * 1024 * 1024, 4 * config.maxRequestBytes),
    watchRefusal: (call, key, rangeEnd) => auth.watchRefusal(call, key, rangeEnd),
  });
  // Registered after the server: client watch streams end first, so the server's drain does not wait for them.
  stack.defer('watch streams', () => fanout.stop());
  server.addService(WatchServiceDef, createWatchService(fanout, d.metrics));

  if (!config.serverCert && !isLoopbackHost(listenHost(config.listenAddr))) {
    d.log.warn({ listenAddr: config.listenAddr }, 'serving plaintext beyond loopback: anyone who can reach this address can read and write every key');
  }
  return port;
}

/** Stops accepting calls, lets running ones finish for up to `graceMs`, then cuts the rest. */
function shutdownGrpc(server: ProxyServer, graceMs: number): Promise<void> {
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
