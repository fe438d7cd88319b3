// The load generator's gRPC client: a few independent HTTP/2 connections to one
// endpoint (the proxy or a plain etcd), as kube-apiserver opens one etcd client
// per resource. Unary calls carry a deadline; nothing is retried, so every error
// the target returns is seen and counted by the caller.

import { credentials, Metadata, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import {
  KVClient,
  RangeRequest,
  TxnRequest,
  WatchClient,
  type DeepPartial,
  type RangeResponse,
  type TxnResponse,
  type WatchRequest,
  type WatchResponse,
} from '../src/proto/gen/rpc.js';

const CHANNEL_OPTIONS = {
  // A private subchannel pool per client: otherwise grpc-js shares one TCP
  // connection among all clients of the same address.
  'grpc.use_local_subchannel_pool': 1,
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': -1,
  'grpc.keepalive_time_ms': 30_000,
};

/** One connection: KV and Watch stubs over one channel. */
export class BenchConnection {
  readonly kv: KVClient;
  readonly watchClient: WatchClient;

  constructor(readonly address: string) {
    this.kv = new KVClient(address, credentials.createInsecure(), CHANNEL_OPTIONS);
    // Sharing the KV stub's channel keeps KV and Watch on one connection.
    this.watchClient = new WatchClient(address, credentials.createInsecure(), { ...CHANNEL_OPTIONS, channelOverride: this.kv.getChannel() });
  }

  range(req: DeepPartial<RangeRequest>, timeoutMs: number): Promise<RangeResponse> {
    const msg = RangeRequest.fromPartial(req);
    return new Promise((resolve, reject) => {
      this.kv.range(msg, new Metadata(), { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res: RangeResponse) =>
        err ? reject(err) : resolve(res),
      );
    });
  }

  txn(req: DeepPartial<TxnRequest>, timeoutMs: number): Promise<TxnResponse> {
    const msg = TxnRequest.fromPartial(req);
    return new Promise((resolve, reject) => {
      this.kv.txn(msg, new Metadata(), { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res: TxnResponse) =>
        err ? reject(err) : resolve(res),
      );
    });
  }

  watch(): ClientDuplexStream<WatchRequest, WatchResponse> {
    return this.watchClient.watch();
  }

  close(): void {
    this.watchClient.close();
    this.kv.close();
  }
}

/** `count` connections to `address` ("host:port"), used round-robin. */
export class ConnectionPool {
  readonly connections: BenchConnection[];

  constructor(address: string, count: number) {
    this.connections = Array.from({ length: Math.max(1, count) }, () => new BenchConnection(address));
  }

  get(i: number): BenchConnection {
    return this.connections[i % this.connections.length]!;
  }

  close(): void {
    for (const c of this.connections) c.close();
  }
}

/** "http://127.0.0.1:2379" → "127.0.0.1:2379". */
export function addressOf(url: string): string {
  return url.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
}

/** The first byte string after every key that starts with `prefix` (etcd's prefix range end). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export function grpcCode(err: unknown): string {
  const e = err as Partial<ServiceError> | undefined;
  return typeof e?.code === 'number' ? `grpc ${e.code}: ${e.details ?? e.message ?? ''}` : String(err instanceof Error ? err.message : err);
}
