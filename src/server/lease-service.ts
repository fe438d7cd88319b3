// The Lease service over the lease manager. LeaseKeepAlive keeps, per client
// stream, one upstream keep-alive stream per home member (opened on first use)
// and routes each request by lease ID; every upstream answer (the remaining
// TTL, or 0 for a lease that no longer exists, as etcd answers) goes back to the
// client with our header. If an upstream stream fails, the client stream ends
// with Unavailable and the client opens a new one (clientv3 does so by itself).

import { status as Status, type ClientDuplexStream, type handleBidiStreamingCall } from '@grpc/grpc-js';
import type { Clock } from '../clock/clock.js';
import type { LeaseManager } from '../lease/lease-manager.js';
import type { EtcdClient } from '../members/etcd-client.js';
import type { LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseServer } from '../proto/gen/rpc.js';
import type { HeaderFactory } from '../proto/header.js';
import { unary, type HandlerDeps } from './unary.js';

export interface LeaseServiceDeps extends HandlerDeps {
  leases: LeaseManager;
  members: EtcdClient[];
  clock: Clock;
  header: HeaderFactory;
}

export function createLeaseService(d: LeaseServiceDeps): LeaseServer {
  const revision = async () => (d.clock.latest() ?? (await d.clock.now())).revision;

  const leaseKeepAlive: handleBidiStreamingCall<LeaseKeepAliveRequest, LeaseKeepAliveResponse> = (call) => {
    d.metrics.requestCount.inc({ method: 'LeaseKeepAlive' });
    d.metrics.leaseKeepAliveStreams.inc();
    const upstreams = new Map<number, ClientDuplexStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse>>();
    // Replies go back in request order, as etcd answers one stream: each upstream
    // stream answers its own requests in order, so a reply fills the oldest
    // unanswered request sent to the same member.
    const pending: { member: number; reply?: LeaseKeepAliveResponse }[] = [];
    let closed = false;
    const close = (err?: { code: Status; details: string }) => {
      if (closed) return;
      closed = true;
      d.metrics.leaseKeepAliveStreams.dec();
      for (const u of upstreams.values()) u.cancel();
      upstreams.clear();
      if (err) call.emit('error', Object.assign(new Error(err.details), err));
      else call.end();
    };
    const flush = () => {
      while (pending.length > 0 && pending[0]!.reply) {
        const resp = pending.shift()!.reply!;
        if (!closed) call.write({ header: d.header.make(d.clock.latest()?.revision ?? 0), ID: resp.ID, TTL: resp.TTL });
      }
    };
    const upstream = (member: number) => {
      let u = upstreams.get(member);
      if (u) return u;
      u = d.members[member]!.leaseKeepAlive();
      upstreams.set(member, u);
      u.on('data', (resp: LeaseKeepAliveResponse) => {
        d.leases.observeTtl(resp.ID, resp.TTL);
        const slot = pending.find((p) => p.member === member && !p.reply);
        if (slot) slot.reply = resp;
        flush();
      });
      u.on('error', (err: Error & { code?: number }) => {
        if (closed || err.code === Status.CANCELLED) return;
        close({ code: Status.UNAVAILABLE, details: `metaetcd: keep-alive stream to member ${member} failed: ${err.message}` });
      });
      u.on('end', () => {
        if (!closed) close({ code: Status.UNAVAILABLE, details: `metaetcd: keep-alive stream to member ${member} ended` });
      });
      return u;
    };
    call.on('data', (req: LeaseKeepAliveRequest) => {
      if (closed) return;
      const member = d.leases.homeOf(req.ID);
      pending.push({ member });
      upstream(member).write(req);
    });
    call.on('end', () => close());
    call.on('error', () => close());
    call.on('cancelled', () => close());
  };

  return {
    leaseGrant: unary('LeaseGrant', d, async (req) => {
      const g = await d.leases.grant(req.TTL, req.ID);
      return { header: d.header.make(await revision()), ID: g.id, TTL: g.ttl, error: '' };
    }),
    leaseRevoke: unary('LeaseRevoke', d, async (req) => {
      // Like etcd, the header names the revision of the deletions, unless revisions
      // have moved on since (headers never go backwards), or there were none.
      const deletedAt = await d.leases.revoke(req.ID);
      const current = d.clock.latest()?.revision ?? (await d.clock.now()).revision;
      return { header: d.header.make(Math.max(deletedAt ?? 0, current)) };
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
