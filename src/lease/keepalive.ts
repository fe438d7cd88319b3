// LeaseKeepAlive across member clusters. Each lease lives in one home member, so
// a client's keep-alive for lease L goes to L's home. Every client stream of
// this proxy shares one upstream keep-alive stream per member (opened on first
// use, again after it fails): a client's first keep-alive then goes out on a
// stream that is already open, as on etcd, instead of waiting for a new one.
//
// etcd answers the requests of one keep-alive stream in order, so the replies
// of an upstream stream are matched to the oldest request sent on it; and each
// client stream gets its replies back in its own request order, whatever member
// answered first. An upstream stream that fails ends the client streams still
// waiting on it with Unavailable (clients such as clientv3 then open a new one);
// the others carry on.

import { status as Status, type ClientDuplexStream } from '@grpc/grpc-js';
import type { MemberSet } from '../members/member.js';
import type { LeaseKeepAliveRequest, LeaseKeepAliveResponse } from '../proto/gen/rpc.js';

/** One client keep-alive stream, as the multiplexer sees it. */
export interface KeepAliveClient {
  /** A reply for this client (in its request order). */
  reply(resp: LeaseKeepAliveResponse): void;
  /** The upstream this client waits on failed: end the client stream with this status. */
  fail(status: { code: Status; details: string }): void;
}

interface Waiting {
  client: ClientState;
  slot: { reply?: LeaseKeepAliveResponse };
}

interface ClientState {
  sink: KeepAliveClient;
  /** This client's requests not yet answered, in request order. */
  pending: { reply?: LeaseKeepAliveResponse }[];
  closed: boolean;
}

export interface KeepAliveOptions {
  members: MemberSet;
  /** The member holding lease `id`. */
  homeOf(id: bigint): number;
  /** Every reply, for the lease manager's view of which leases are alive. */
  observe(resp: LeaseKeepAliveResponse): void;
}

export class KeepAliveMux {
  private readonly upstreams = new Map<number, { stream: ClientDuplexStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse>; waiting: Waiting[] }>();

  constructor(private readonly o: KeepAliveOptions) {}

  /** A new client stream; returns how to send its requests and how to say it ended. */
  open(sink: KeepAliveClient): { send(req: LeaseKeepAliveRequest): void; close(): void } {
    const client: ClientState = { sink, pending: [], closed: false };
    return {
      send: (req) => {
        if (client.closed) return;
        const slot: { reply?: LeaseKeepAliveResponse } = {};
        client.pending.push(slot);
        const up = this.upstream(this.o.homeOf(req.ID));
        up.waiting.push({ client, slot });
        up.stream.write(req);
      },
      close: () => {
        client.closed = true;
      },
    };
  }

  /** Ends every upstream stream. */
  stop(): void {
    for (const u of this.upstreams.values()) u.stream.cancel();
    this.upstreams.clear();
  }

  private upstream(member: number) {
    const existing = this.upstreams.get(member);
    if (existing) return existing;
    const stream = this.o.members.get(member).client.leaseKeepAlive();
    const up = { stream, waiting: [] as Waiting[] };
    this.upstreams.set(member, up);
    stream.on('data', (resp: LeaseKeepAliveResponse) => {
      this.o.observe(resp);
      const w = up.waiting.shift();
      if (!w) return;
      w.slot.reply = resp;
      flush(w.client);
    });
    const failed = (details: string) => {
      if (this.upstreams.get(member) === up) this.upstreams.delete(member);
      const waiting = up.waiting.splice(0);
      for (const w of waiting) {
        if (w.client.closed) continue;
        w.client.closed = true;
        w.client.sink.fail({ code: Status.UNAVAILABLE, details });
      }
    };
    stream.on('error', (err: Error & { code?: number }) => {
      if (err.code === Status.CANCELLED && !this.upstreams.has(member)) return; // stopped
      failed(`metaetcd: keep-alive stream to member ${member} failed: ${err.message}`);
    });
    stream.on('end', () => failed(`metaetcd: keep-alive stream to member ${member} ended`));
    return up;
  }
}

/** Sends a client's answered requests, oldest first, up to the first unanswered one. */
function flush(client: ClientState): void {
  while (client.pending.length > 0 && client.pending[0]!.reply) {
    const resp = client.pending.shift()!.reply!;
    if (!client.closed) client.sink.reply(resp);
  }
}
