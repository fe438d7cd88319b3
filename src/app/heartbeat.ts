// Each proxy process announces itself in the coordinator, for `metaetcd status`:
// one key under metaetcd/proxies/ attached to a coordinator lease that the
// process keeps alive, so the key goes away when the process stops (the lease
// is revoked) or within the lease's TTL when it dies or loses the coordinator.
// The announcement is best effort: a failure is logged at debug and retried on
// the next beat, and never affects serving.

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import type { EtcdClient } from '../members/etcd-client.js';
import type { LeaseKeepAliveRequest, LeaseKeepAliveResponse } from '../proto/gen/rpc.js';
import { messageOf } from '../errors/etcd-error.js';
import { prefixEnd } from '../util/bytes.js';

export const PROXIES_PREFIX = Buffer.from('metaetcd/proxies/');
export const PROXIES_END = prefixEnd(PROXIES_PREFIX);

/** What a proxy process says about itself (the key's value, JSON). */
export interface ProxyAnnouncement {
  urls: string[];
  host: string;
  pid: number;
  /** ISO time the process started serving. */
  since: string;
}

export interface HeartbeatOptions {
  coordinator: EtcdClient;
  urls: string[];
  log: Logger;
  /** How often the lease is kept alive (and a lost announcement retried). */
  intervalMs?: number;
  ttlSeconds?: number;
}

const DEFAULTS = { intervalMs: 5000, ttlSeconds: 15 };

export class Heartbeat {
  private readonly key = Buffer.concat([PROXIES_PREFIX, Buffer.from(randomBytes(8).toString('hex'))]);
  private readonly value: Buffer;
  private readonly log: Logger;
  private lease: bigint | undefined;
  private stream: ClientDuplexStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private beating = false;
  private stopped = false;

  constructor(private readonly o: HeartbeatOptions) {
    const a: ProxyAnnouncement = { urls: o.urls, host: hostname(), pid: process.pid, since: new Date().toISOString() };
    this.value = Buffer.from(JSON.stringify(a));
    this.log = o.log.child({ component: 'heartbeat' });
  }

  start(): void {
    void this.beat();
    this.timer = setInterval(() => void this.beat(), this.o.intervalMs ?? DEFAULTS.intervalMs);
    this.timer.unref();
  }

  /** Stops beating and withdraws the announcement (bounded: a coordinator that does not answer lets the lease expire). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.stream?.cancel();
    const lease = this.lease;
    this.lease = undefined;
    if (lease !== undefined) await this.o.coordinator.leaseRevoke({ ID: lease }, { timeoutMs: 1000 }).catch(() => undefined);
  }

  private async beat(): Promise<void> {
    if (this.beating) return;
    this.beating = true;
    try {
      if (this.lease === undefined) await this.announce();
      else this.keepAlive(this.lease);
    } catch (err) {
      this.log.debug({ err: messageOf(err) }, 'could not announce this proxy in the coordinator; retrying');
    } finally {
      this.beating = false;
    }
  }

  private async announce(): Promise<void> {
    const ttl = this.o.ttlSeconds ?? DEFAULTS.ttlSeconds;
    const grant = await this.o.coordinator.leaseGrant({ TTL: BigInt(ttl), ID: 0n });
    await this.o.coordinator.put({ key: this.key, value: this.value, lease: grant.ID });
    // Stopped meanwhile: withdraw at once rather than leave the key for its TTL.
    if (this.stopped) await this.o.coordinator.leaseRevoke({ ID: grant.ID });
    else this.lease = grant.ID;
  }

  private keepAlive(lease: bigint): void {
    if (!this.stream) {
      const stream = this.o.coordinator.leaseKeepAlive();
      // TTL 0: the lease is gone (expired while the coordinator was away, or a new coordinator): announce again.
      stream.on('data', (r: LeaseKeepAliveResponse) => {
        if (r.TTL <= 0n && r.ID === this.lease) this.lease = undefined;
      });
      const lost = () => {
        if (this.stream === stream) this.stream = undefined;
      };
      stream.on('error', lost);
      stream.on('end', lost);
      this.stream = stream;
    }
    this.stream.write({ ID: lease });
  }
}

/** The proxies announced in the coordinator (an entry that does not parse is skipped). */
export function parseAnnouncements(values: Buffer[]): ProxyAnnouncement[] {
  return values.flatMap((v) => {
    try {
      const a = JSON.parse(v.toString('utf8')) as Partial<ProxyAnnouncement>;
      return Array.isArray(a.urls) && typeof a.host === 'string' && typeof a.pid === 'number' && typeof a.since === 'string' ? [a as ProxyAnnouncement] : [];
    } catch {
      return [];
    }
  });
}
