// Test harness: a metaetcd proxy started in-process over an EtcdSet, and gRPC
// clients (our own typed client) for it and for the oracle.

import { startProxy, type ProxyHandle } from '../../src/app.js';
import { defaultProxyConfig, type ProxyConfig } from '../../src/config.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { parseEndpoint } from '../../src/members/endpoints.js';
import { EtcdClient } from '../../src/members/etcd-client.js';
import { Metrics } from '../../src/metrics.js';
import { prefixEnd } from '../../src/util/bytes.js';
import type { EtcdSet } from './etcd-set.js';

export interface TestProxy {
  handle: ProxyHandle;
  /** host:port, as etcdctl --endpoints takes it. */
  endpoint: string;
  url: string;
  metrics: Metrics;
  stop(): Promise<void>;
}

/** Starts a proxy over the set's coordinator and members on a free loopback port. */
export async function startTestProxy(set: EtcdSet, overrides: Partial<ProxyConfig> = {}): Promise<TestProxy> {
  const config: ProxyConfig = {
    ...defaultProxyConfig(),
    listenAddr: '127.0.0.1:0',
    coordinator: set.coordinator.clientUrl,
    members: set.members.map((m) => m.clientUrl).join(','),
    metricsPort: 0,
    ...overrides,
  };
  const level = process.env.METAETCD_TEST_LOG;
  const log = level ? createLogger(level) : silentLogger();
  const metrics = new Metrics();
  const handle = await startProxy(config, log, metrics);
  const endpoint = `127.0.0.1:${handle.port}`;
  return { handle, endpoint, url: `http://${endpoint}`, metrics, stop: () => handle.stop() };
}

/** A client of one endpoint URL (the proxy or a plain etcd). Close it when done. */
export function clientFor(url: string, name = url, timeoutMs = 10_000): EtcdClient {
  return new EtcdClient({ name, endpoints: [parseEndpoint(url)], requestTimeoutMs: timeoutMs, rawErrors: true });
}

/** Every key under `prefix` as a client reads it: key, value, create and mod revision, version, lease. */
export async function keysAsSeen(c: EtcdClient, prefix: string): Promise<unknown[]> {
  const key = Buffer.from(prefix);
  const r = await c.range({ key, rangeEnd: prefixEnd(key) });
  return r.kvs.map((kv) => [kv.key.toString(), kv.value.toString(), kv.createRevision, kv.modRevision, kv.version, kv.lease]);
}
