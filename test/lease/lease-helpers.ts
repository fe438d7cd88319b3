// Helpers shared by the lease tests: bounded waits, error capture, keys placed
// on chosen members, lease IDs with a chosen home member, a raw watch recorder
// and a keep-alive stream wrapper over our typed gRPC client.

import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { Event_EventType, type Event } from '../../src/proto/gen/kv.js';
import {
  type LeaseKeepAliveRequest,
  type LeaseKeepAliveResponse,
  WatchRequest,
  type WatchResponse,
} from '../../src/proto/gen/rpc.js';
import type { Router } from '../../src/shard/layout.js';
import { prefixEnd } from '../../src/util/bytes.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every `everyMs` until it returns true; throws naming `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${String((lastErr as Error).message ?? lastErr)})` : ''}`);
    }
    await sleep(everyMs);
  }
}

export interface CallOutcome {
  ok: boolean;
  code?: number;
  details?: string;
}

/** Resolves to {ok:true} or the gRPC status code and message of the failure. */
export async function outcome(p: Promise<unknown>): Promise<CallOutcome> {
  try {
    await p;
    return { ok: true };
  } catch (err) {
    const e = err as { code?: number; details?: string; message?: string };
    return { ok: false, code: e.code, details: e.details ?? e.message };
  }
}

/** `n` distinct keys `${prefix}<i>` held by member `member`. */
export function keysOnMember(router: Router, prefix: string, member: number, n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; out.length < n; i++) {
    if (i > 100_000) throw new Error('keysOnMember: could not find keys');
    const k = Buffer.from(`${prefix}${i}`);
    if (router.memberOf(k) === member) out.push(k);
  }
  return out;
}

/** `perMember` keys on every member, sorted by key. */
export function keysOnEveryMember(router: Router, prefix: string, perMember: number): Buffer[] {
  const out: Buffer[] = [];
  for (let m = 0; m < router.memberCount; m++) out.push(...keysOnMember(router, prefix, m, perMember));
  return out.sort(Buffer.compare);
}

/** The member holding lease `id` (the lease manager hashes its 8 big-endian bytes like a key). */
export function homeOfLease(router: Router, id: bigint): number {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, id));
  return router.memberOf(b);
}

/** A client-chosen lease ID (from `start` upward) whose home is `member` (or is not, with `not`). */
export function leaseIdWithHome(router: Router, member: number, start: bigint, not = false): bigint {
  for (let id = start; id < start + 100_000n; id++) {
    if ((homeOfLease(router, id) === member) !== not) return id;
  }
  throw new Error('leaseIdWithHome: none found');
}

export interface SeenEvent {
  type: 'PUT' | 'DELETE';
  key: string;
  modRevision: bigint;
  /** header.revision of the response that carried it. */
  responseRevision: bigint;
  /** Index of the response that carried it. */
  response: number;
  prevKv?: { value: string; lease: bigint; modRevision: bigint };
  lease: bigint;
}

/** One raw Watch stream with one watch; records every event and response. */
export class WatchRecorder {
  readonly events: SeenEvent[] = [];
  readonly responses: WatchResponse[] = [];
  error: Error | undefined;
  private stream: ClientDuplexStream<WatchRequest, WatchResponse>;
  private created: Promise<void>;

  constructor(client: EtcdClient, opts: { key: Buffer; rangeEnd?: Buffer; prefix?: boolean; startRevision?: bigint; prevKv?: boolean }) {
    this.stream = client.watch();
    const rangeEnd = opts.rangeEnd ?? (opts.prefix ? prefixEnd(opts.key) : Buffer.alloc(0));
    this.created = new Promise((resolve, reject) => {
      this.stream.on('data', (r: WatchResponse) => {
        this.responses.push(r);
        if (r.created) resolve();
        const idx = this.responses.length - 1;
        for (const ev of r.events) this.events.push(toSeen(ev, r.header?.revision ?? 0n, idx));
      });
      this.stream.on('error', (err: Error & { code?: number }) => {
        if (err.code !== 1) this.error = err; // 1 = CANCELLED by close()
        reject(err);
      });
    });
    this.created.catch(() => undefined);
    this.stream.write(
      WatchRequest.fromPartial({
        requestUnion: {
          $case: 'createRequest',
          value: { key: opts.key, rangeEnd, startRevision: opts.startRevision ?? 0n, prevKv: opts.prevKv ?? false },
        },
      }),
    );
  }

  /** Resolves once the watch is created (bounded). */
  async ready(timeoutMs = 10_000): Promise<this> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.created,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`watch not created within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    return this;
  }

  async waitForEvents(what: string, check: (events: SeenEvent[]) => boolean, timeoutMs: number): Promise<void> {
    await waitFor(
      what,
      () => {
        if (this.error) throw this.error;
        return check(this.events);
      },
      timeoutMs,
      50,
    );
  }

  deletesOf(keys: Iterable<string>): SeenEvent[] {
    const want = new Set(keys);
    return this.events.filter((e) => e.type === 'DELETE' && want.has(e.key));
  }

  close(): void {
    this.stream.cancel();
  }
}

function toSeen(ev: Event, responseRevision: bigint, response: number): SeenEvent {
  const kv = ev.kv!;
  const seen: SeenEvent = {
    type: ev.type === Event_EventType.DELETE ? 'DELETE' : 'PUT',
    key: kv.key.toString(),
    modRevision: kv.modRevision,
    responseRevision,
    response,
    lease: kv.lease,
  };
  if (ev.prevKv) seen.prevKv = { value: ev.prevKv.value.toString(), lease: ev.prevKv.lease, modRevision: ev.prevKv.modRevision };
  return seen;
}

/** A LeaseKeepAlive stream: `ask(id)` sends one request and resolves with the next reply. */
export class KeepAliveStream {
  readonly replies: LeaseKeepAliveResponse[] = [];
  error: Error | undefined;
  private readonly stream: ClientDuplexStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse>;
  /** Per lease ID, the callers waiting for a reply, oldest first (replies are matched by ID, as clientv3 does). */
  private readonly waiters = new Map<bigint, ((r: LeaseKeepAliveResponse) => void)[]>();

  constructor(client: EtcdClient) {
    this.stream = client.leaseKeepAlive();
    this.stream.on('data', (r: LeaseKeepAliveResponse) => {
      this.replies.push(r);
      this.waiters.get(r.ID)?.shift()?.(r);
    });
    this.stream.on('error', (err: Error & { code?: number }) => {
      if (err.code !== 1) this.error = err;
    });
  }

  /** Sends a keep-alive for `id` and resolves with its reply (bounded). */
  ask(id: bigint, timeoutMs = 10_000): Promise<LeaseKeepAliveResponse> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no keep-alive reply for ${id} within ${timeoutMs} ms${this.error ? `: ${this.error.message}` : ''}`)), timeoutMs);
      const list = this.waiters.get(id) ?? [];
      this.waiters.set(id, list);
      list.push((r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.stream.write({ ID: id });
    });
  }

  /** Sends without waiting (replies still land in `replies`). */
  send(id: bigint): void {
    this.stream.write({ ID: id });
  }

  close(): void {
    this.stream.cancel();
  }
}

/** Current values of keys under `prefix` (linearizable range), as key → lease. */
export async function leasesUnder(client: EtcdClient, prefix: string): Promise<Map<string, bigint>> {
  const key = Buffer.from(prefix);
  const r = await client.range({ key, rangeEnd: prefixEnd(key) });
  return new Map(r.kvs.map((kv) => [kv.key.toString(), kv.lease]));
}

export async function countUnder(client: EtcdClient, prefix: string): Promise<number> {
  const key = Buffer.from(prefix);
  const r = await client.range({ key, rangeEnd: prefixEnd(key), countOnly: true });
  return Number(r.count);
}
