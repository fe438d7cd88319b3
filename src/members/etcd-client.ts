// A gRPC client for one etcd cluster — the coordinator or one member — over the
// endpoints of that cluster. Unary calls go over node:http2 (h2-unary.ts), get a
// deadline and, when they are safe to repeat, fail over to the cluster's next
// endpoint on Unavailable; streams use grpc-js. The proxy talks to upstream
// clusters only through this class.

import { credentials, status as Status, type ChannelCredentials, type ClientDuplexStream } from '@grpc/grpc-js';
import {
  AlarmRequest,
  ClusterService,
  KVService,
  LeaseService,
  MaintenanceService,
  AlarmResponse,
  CompactionRequest,
  CompactionResponse,
  DeleteRangeRequest,
  DeleteRangeResponse,
  MemberListRequest,
  MemberListResponse,
  PutRequest,
  PutResponse,
  DefragmentRequest,
  DefragmentResponse,
  LeaseClient,
  LeaseGrantRequest,
  LeaseGrantResponse,
  type LeaseKeepAliveRequest,
  type LeaseKeepAliveResponse,
  LeaseLeasesRequest,
  LeaseLeasesResponse,
  LeaseRevokeRequest,
  LeaseRevokeResponse,
  LeaseTimeToLiveRequest,
  LeaseTimeToLiveResponse,
  RangeRequest,
  RangeResponse,
  StatusRequest,
  StatusResponse,
  TxnRequest,
  TxnResponse,
  WatchClient,
  type DeepPartial,
  type WatchRequest,
  type WatchResponse,
} from '../proto/gen/rpc.js';
import { upstreamError } from './upstream-error.js';
import { isServiceError, type EtcdError } from '../errors/etcd-error.js';
import type { Endpoint } from './endpoints.js';
import { H2UnaryChannel } from './h2-unary.js';
import { reloadingChannelCredentials } from '../tls/grpc-credentials.js';
import { isTlsSource, type TlsSource } from '../tls/reloading-files.js';

export interface ClientTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface EtcdClientOptions {
  /** Name for messages and metrics, e.g. "coordinator" or "member 2". */
  name: string;
  endpoints: Endpoint[];
  /** Static material, or a source whose newest material new connections use (certificate files that may change). */
  tls?: ClientTls | TlsSource;
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** Default deadline of unary calls. */
  requestTimeoutMs?: number;
  /**
   * Fail with the gRPC status exactly as received instead of a classified
   * EtcdError: for tests and tools that use this class as any etcd client would,
   * to compare statuses on the wire.
   */
  rawErrors?: boolean;
}

export interface CallOptions {
  timeoutMs?: number;
  /** Said after the cluster's name in errors, e.g. "needed to rebuild the clock". */
  context?: string;
}

interface Stubs {
  endpoint: Endpoint;
  /** Unary calls. */
  unary: H2UnaryChannel;
  /** Streams. */
  watch: WatchClient;
  lease: LeaseClient;
}

/** A unary method: its path and message codecs (encoding straight to bytes, without the service definition's extra copy). */
interface Method<Req, Res> {
  path: string;
  req: { encode(m: Req): { finish(): Uint8Array } };
  res: { decode(b: Uint8Array): Res };
}

const method = <Req, Res>(def: { path: string }, req: Method<Req, Res>['req'], res: Method<Req, Res>['res']): Method<Req, Res> => ({
  path: def.path,
  req,
  res,
});

const M = {
  range: method(KVService.range, RangeRequest, RangeResponse),
  txn: method(KVService.txn, TxnRequest, TxnResponse),
  put: method(KVService.put, PutRequest, PutResponse),
  deleteRange: method(KVService.deleteRange, DeleteRangeRequest, DeleteRangeResponse),
  compact: method(KVService.compact, CompactionRequest, CompactionResponse),
  memberList: method(ClusterService.memberList, MemberListRequest, MemberListResponse),
  status: method(MaintenanceService.status, StatusRequest, StatusResponse),
  alarm: method(MaintenanceService.alarm, AlarmRequest, AlarmResponse),
  defragment: method(MaintenanceService.defragment, DefragmentRequest, DefragmentResponse),
  leaseGrant: method(LeaseService.leaseGrant, LeaseGrantRequest, LeaseGrantResponse),
  leaseRevoke: method(LeaseService.leaseRevoke, LeaseRevokeRequest, LeaseRevokeResponse),
  leaseTimeToLive: method(LeaseService.leaseTimeToLive, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse),
  leaseLeases: method(LeaseService.leaseLeases, LeaseLeasesRequest, LeaseLeasesResponse),
};

export class EtcdClient {
  name: string;
  private readonly stubs: Stubs[];
  private current = 0;
  private readonly timeoutMs: number;
  private readonly rawErrors: boolean;

  constructor(opts: EtcdClientOptions) {
    if (opts.endpoints.length === 0) throw new Error(`${opts.name}: no endpoints`);
    this.name = opts.name;
    this.timeoutMs = opts.requestTimeoutMs ?? 5000;
    this.rawErrors = opts.rawErrors ?? false;
    const channelOptions = {
      // etcd refuses pings more often than every 5 s, and any ping on a connection
      // without calls (GOAWAY too_many_pings), so never ping an idle connection.
      'grpc.keepalive_time_ms': Math.max(opts.keepaliveTimeMs ?? 10_000, 6000),
      'grpc.keepalive_timeout_ms': opts.keepaliveTimeoutMs ?? 20000,
      'grpc.keepalive_permit_without_calls': 0,
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
      // Reconnect quickly after a member or coordinator restart (grpc's default backoff grows to 120 s).
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    };
    const tls = opts.tls;
    // One credentials object for every endpoint of a reloading source (grpc-js compares credentials to share connections).
    const reloading = isTlsSource(tls) && opts.endpoints.some((e) => e.secure) ? reloadingChannelCredentials(tls) : undefined;
    this.stubs = opts.endpoints.map((endpoint) => {
      const creds = !endpoint.secure ? credentials.createInsecure() : (reloading ?? channelCredentials(endpoint, tls as ClientTls | undefined));
      return {
        endpoint,
        unary: new H2UnaryChannel({
          address: endpoint.address,
          secure: endpoint.secure,
          ...(tls ? { tls: isTlsSource(tls) ? () => tls.current() : tls } : {}),
          keepaliveTimeMs: channelOptions['grpc.keepalive_time_ms'],
          keepaliveTimeoutMs: channelOptions['grpc.keepalive_timeout_ms'],
        }),
        watch: new WatchClient(endpoint.address, creds, channelOptions),
        lease: new LeaseClient(endpoint.address, creds, channelOptions),
      };
    });
  }

  get endpoints(): Endpoint[] {
    return this.stubs.map((s) => s.endpoint);
  }

  range(req: DeepPartial<RangeRequest>, o?: CallOptions): Promise<RangeResponse> {
    return this.unary(true, o, M.range, RangeRequest.fromPartial(req));
  }

  /**
   * A transaction. Read-only transactions may be repeated on another endpoint; writes may not.
   * The request is complete (built with proto/build.ts), so it is encoded as it is: copying
   * it field by field first (fromPartial) was a tenth of a write's CPU.
   */
  txn(req: TxnRequest, o?: CallOptions & { readOnly?: boolean }): Promise<TxnResponse> {
    return this.unary(o?.readOnly ?? false, o, M.txn, req);
  }

  /** A transaction from a partial request (tests and tools): missing fields take etcd's defaults. */
  txnPartial(req: DeepPartial<TxnRequest>, o?: CallOptions & { readOnly?: boolean }): Promise<TxnResponse> {
    return this.txn(TxnRequest.fromPartial(req), o);
  }

  put(req: DeepPartial<PutRequest>, o?: CallOptions): Promise<PutResponse> {
    return this.unary(false, o, M.put, PutRequest.fromPartial(req));
  }

  deleteRange(req: DeepPartial<DeleteRangeRequest>, o?: CallOptions): Promise<DeleteRangeResponse> {
    return this.unary(false, o, M.deleteRange, DeleteRangeRequest.fromPartial(req));
  }

  memberList(o?: CallOptions): Promise<MemberListResponse> {
    return this.unary(true, o, M.memberList, MemberListRequest.fromPartial({}));
  }

  compact(req: DeepPartial<CompactionRequest>, o?: CallOptions): Promise<CompactionResponse> {
    return this.unary(true, o, M.compact, CompactionRequest.fromPartial(req));
  }

  status(o?: CallOptions): Promise<StatusResponse> {
    return this.unary(true, o, M.status, StatusRequest.fromPartial({}));
  }

  alarm(req: DeepPartial<AlarmRequest>, o?: CallOptions): Promise<AlarmResponse> {
    return this.unary(true, o, M.alarm, AlarmRequest.fromPartial(req));
  }

  defragment(o?: CallOptions): Promise<DefragmentResponse> {
    return this.unary(true, o, M.defragment, DefragmentRequest.fromPartial({}));
  }

  leaseGrant(req: DeepPartial<LeaseGrantRequest>, o?: CallOptions): Promise<LeaseGrantResponse> {
    return this.unary(false, o, M.leaseGrant, LeaseGrantRequest.fromPartial(req));
  }

  leaseRevoke(req: DeepPartial<LeaseRevokeRequest>, o?: CallOptions): Promise<LeaseRevokeResponse> {
    return this.unary(true, o, M.leaseRevoke, LeaseRevokeRequest.fromPartial(req));
  }

  leaseTimeToLive(req: DeepPartial<LeaseTimeToLiveRequest>, o?: CallOptions): Promise<LeaseTimeToLiveResponse> {
    return this.unary(true, o, M.leaseTimeToLive, LeaseTimeToLiveRequest.fromPartial(req));
  }

  leaseLeases(o?: CallOptions): Promise<LeaseLeasesResponse> {
    return this.unary(true, o, M.leaseLeases, LeaseLeasesRequest.fromPartial({}));
  }

  /** Opens a Watch stream on the current endpoint (the caller resumes on errors). */
  watch(): ClientDuplexStream<WatchRequest, WatchResponse> {
    return this.currentStubs().watch.watch();
  }

  leaseKeepAlive(): ClientDuplexStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse> {
    return this.currentStubs().lease.leaseKeepAlive();
  }

  /** An upstream failure (of a call or a stream of this client) as the typed error the rest of the proxy handles. */
  classify(err: unknown, context?: string): EtcdError {
    return upstreamError(err, context ? `${this.name} (${context})` : this.name);
  }

  /** Marks the current endpoint as failed so the next stream or call uses another one. */
  rotate(): void {
    this.current = (this.current + 1) % this.stubs.length;
  }

  close(): void {
    for (const s of this.stubs) {
      s.unary.close();
      s.watch.close();
      s.lease.close();
    }
  }

  private currentStubs(): Stubs {
    return this.stubs[this.current]!;
  }

  private async unary<Req, Res>(repeatable: boolean, o: CallOptions | undefined, method: Method<Req, Res>, req: Req): Promise<Res> {
    const attempts = repeatable ? this.stubs.length : 1;
    const body = method.req.encode(req).finish();
    let lastErr: unknown;
    for (let i = 0; i < attempts; i++) {
      const stubs = this.currentStubs();
      try {
        return method.res.decode(await stubs.unary.call(method.path, body, o?.timeoutMs ?? this.timeoutMs));
      } catch (err) {
        lastErr = err;
        if (!isServiceError(err) || err.code !== Status.UNAVAILABLE) break;
        if (this.stubs.length > 1) this.rotate();
      }
    }
    throw this.rawErrors ? lastErr : this.classify(lastErr, o?.context);
  }
}


function channelCredentials(endpoint: Endpoint, tls: ClientTls | undefined): ChannelCredentials {
  if (!endpoint.secure) return credentials.createInsecure();
  return credentials.createSsl(tls?.ca ?? null, tls?.key ?? null, tls?.cert ?? null);
}
