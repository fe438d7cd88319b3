// The Lease service over the lease manager; LeaseKeepAlive streams are served
// by the keep-alive multiplexer (lease/keepalive.ts), each reply with our header.

import { status as Status, type handleBidiStreamingCall } from '@grpc/grpc-js';
import type { Clock } from '../clock/clock.js';
import type { LeaseManager } from '../lease/lease-manager.js';
import type { KeepAliveMux } from '../lease/keepalive.js';
import type { LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseServer } from '../proto/gen/rpc.js';
import type { HeaderFactory } from '../proto/header.js';
import { unary, type HandlerDeps } from './unary.js';
import type { AuthGuard } from '../auth/guard.js';

export interface LeaseServiceDeps extends HandlerDeps {
  leases: LeaseManager;
  keepAlive: KeepAliveMux;
  clock: Clock;
  header: HeaderFactory;
  auth?: AuthGuard | undefined;
}

export function createLeaseService(d: LeaseServiceDeps): LeaseServer {
  const revision = async () => (d.clock.latest() ?? (await d.clock.now())).revision;

  const leaseKeepAlive: handleBidiStreamingCall<LeaseKeepAliveRequest, LeaseKeepAliveResponse> = (call) => {
    d.metrics.requestCount.inc({ method: 'LeaseKeepAlive' });
    d.metrics.leaseKeepAliveStreams.inc();
    let ended = false;
    const end = (err?: { code: Status; details: string }) => {
      if (ended) return;
      ended = true;
      d.metrics.leaseKeepAliveStreams.dec();
      client.close();
      if (err) call.emit('error', Object.assign(new Error(err.details), err));
      else call.end();
    };
    const client = d.keepAlive.open({
      reply: (resp) => call.write({ header: d.header.make(d.clock.latest()?.revision ?? 0), ID: resp.ID, TTL: resp.TTL }),
      fail: (status) => end(status),
    });
    call.on('data', (req: LeaseKeepAliveRequest) => client.send(req));
    call.on('end', () => end());
    call.on('error', () => end());
    call.on('cancelled', () => end());
  };

  return {
    leaseGrant: unary('LeaseGrant', d, async (req) => {
      const g = await d.leases.grant(req.TTL, req.ID);
      return { header: d.header.make(await revision()), ID: g.id, TTL: g.ttl, error: '' };
    }),
    leaseRevoke: unary('LeaseRevoke', d, async (req, call) => {
      if (d.auth?.enabled) {
        // etcd's checkLeasePuts: the caller must be allowed to write every key attached to the lease.
        const keys = await d.leases.timeToLive(req.ID, true).then(
          (t) => t.keys,
          () => [] as Buffer[],
        );
        d.auth.checkWriteKeys(call, keys);
      }
      // Like etcd, the header names the revision of the deletions (taken after the call
      // began, so no lower than anything the client saw before), or the current one when
      // there were none. Not the newest revision since: another proxy deleting the same
      // keys at the same moment may have used one up, writing nothing.
      const deletedAt = await d.leases.revoke(req.ID);
      return { header: d.header.make(deletedAt ?? d.clock.latest()?.revision ?? (await d.clock.now()).revision) };
    }),
    leaseTimeToLive: unary('LeaseTimeToLive', d, async (req) => {
      const t = await d.leases.timeToLive(req.ID, req.keys);
      return { header: d.header.make(await revision()), ID: req.ID, TTL: t.ttl, grantedTTL: t.grantedTtl, keys: t.keys };
    }),
    leaseLeases: unary('LeaseLeases', d, async () => {
      const ids = await d.leases.leases();
      return { header: d.header.make(await revision()), leases: ids.map((ID) => ({ ID })) };
    }),
    leaseKeepAlive,
  };
}
