// The composition root's first part: clients of the coordinator and of every
// member cluster, bootstrap (which member cluster holds which slot, and the
// layout), and one Member per slot with its timeline and write sequencer.

import { readFileSync } from 'node:fs';
import type { ProxyConfig } from '../config.js';
import { MemberSequencer } from '../members/member-sequencer.js';
import type { Logger } from '../log.js';
import { bootstrap, type BootstrapResult } from '../members/bootstrap.js';
import { parseCluster, parseClusters } from '../members/endpoints.js';
import { EtcdClient, type ClientTls } from '../members/etcd-client.js';
import { Member, MemberSet } from '../members/member.js';
import type { Metrics } from '../metrics.js';
import { MemberTimeline } from '../revision/member-timeline.js';
import { peersOf } from '../commit/close-revision.js';
import { reloadingTlsFiles } from '../tls/logged.js';
import type { StopStack } from './stack.js';

export interface Clusters {
  coordinator: EtcdClient;
  members: MemberSet;
  boot: BootstrapResult;
}

export async function connectClusters(config: ProxyConfig, log: Logger, metrics: Metrics, stack: StopStack): Promise<Clusters> {
  // With TLS flags, their files are looked at again (at most once a second) when new connections are made.
  const tls = config.caCert || config.clientCert
    ? reloadingTlsFiles({ ca: config.caCert, cert: config.clientCert, key: config.clientCertKey }, log.child({ component: 'client-tls' }))
    : undefined;
  if (tls) stack.defer('client TLS files', () => tls.stop());
  const clientOpts = {
    ...(tls ? { tls } : {}),
    keepaliveTimeMs: config.grpcClientKeepaliveIntervalMs,
    keepaliveTimeoutMs: config.grpcClientKeepaliveTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
  };
  const coordinator = new EtcdClient({ name: 'coordinator', endpoints: parseCluster(config.coordinator), ...clientOpts });
  const candidates = parseClusters(config.members).map((endpoints, i) => new EtcdClient({ name: `member ${i}`, endpoints, ...clientOpts }));
  stack.defer('cluster clients', () => [coordinator, ...candidates].forEach((c) => c.close()));

  const boot = await bootstrap({ coordinator, candidates, log });
  const peers = peersOf(boot.members, log.child({ component: 'cross-member' }), metrics);
  const members = new MemberSet(
    boot.members.map((client, i) => {
      // Names follow member slots, not flag order.
      client.name = `member ${i}`;
      const timeline = new MemberTimeline({ member: i, client, log, metrics, fenceAfterMs: config.fenceAfterMs, peers });
      return new Member(i, client, timeline, new MemberSequencer(Infinity), (writes) => metrics.writeBatchSize.observe(writes));
    }),
  );
  return { coordinator, members, boot };
}

/** The client certificate flags' files (also `metaetcd status`'s). */
export function loadClientTls(c: Pick<ProxyConfig, 'caCert' | 'clientCert' | 'clientCertKey'>): ClientTls {
  const tls: ClientTls = {};
  if (c.caCert) tls.ca = readFileSync(c.caCert);
  if (c.clientCert) tls.cert = readFileSync(c.clientCert);
  if (c.clientCertKey) tls.key = readFileSync(c.clientCertKey);
  return tls;
}
