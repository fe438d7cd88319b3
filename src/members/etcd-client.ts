// A gRPC client for one etcd cluster — the coordinator or one member — over the
// endpoints of that cluster. Unary calls get a deadline and, when they are safe
// to repeat, fail over to the cluster's next endpoint on Unavailable. The proxy
// talks to upstream clusters only through this class.

import {
  credentials,
  Metadata,
  status as Status,
  type CallOptions as GrpcCallOptions,
  type ChannelCredentials,
  type ClientDuplexStream,
  type ServiceError,
} from '@grpc/grpc-js';
import {
  AlarmRequest,
  type AlarmResponse,
  ClusterClient,
  CompactionRequest,
  type CompactionResponse,
  DeleteRangeRequest,
  type DeleteRangeResponse,
  MemberListRequest,
  type MemberListResponse,
  PutRequest,
  type PutResponse,
  DefragmentRequest,
  type DefragmentResponse,
  KVClient,
  LeaseClient,
  LeaseGrantRequest,
  type LeaseGrantResponse,
  type LeaseKeepAliveRequest,
  type LeaseKeepAliveResponse,
  LeaseLeasesRequest,
  type LeaseLeasesResponse,
  LeaseRevokeRequest,
  type LeaseRevokeResponse,
  LeaseTimeToLiveRequest,
  type LeaseTimeToLiveResponse,
  MaintenanceClient,
  RangeRequest,
  type RangeResponse,
  StatusRequest,
  type StatusResponse,
  TxnRequest,
  type TxnResponse,
  WatchClient,
  type DeepPartial,
  type WatchRequest,
  type WatchResponse,
} from '../proto/gen/rpc.js';
import { isServiceError } from '../server/errors.js';
import type { Endpoint } from './endpoints.js';

export interface ClientTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface EtcdClientOptions {
  /** Name for messages and metrics, e.g. "coordinator" or "member 2". */
  name: string;
  endpoints: Endpoint[];
  tls?: ClientTls;
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** Default deadline of unary calls. */
  requestTimeoutMs?: number;
}

export interface CallOptions {
  timeoutMs?: number;
}

interface Stubs {
  endpoint: Endpoint;
  kv: KVClient;
  watch: WatchClient;
  lease: LeaseClient;
  maintenance: MaintenanceClient;
  cluster: ClusterClient;
}

type Unary<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: GrpcCallOptions,
  cb: (err: ServiceError | null, res: Res) => void,
) => unknown;

export class EtcdClient {
  name: string;
  private readonly stubs: Stubs[];
  private current = 0;
  private readonly timeoutMs: number;

  constructor(opts: EtcdClientOptions) {
    if (opts.endpoints.length === 0) throw new Error(`${opts.name}: no endpoints`);
    this.name = opts.name;
    this.timeoutMs = opts.requestTimeoutMs ?? 5000;
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
    this.stubs = opts.endpoints.map((endpoint) => {
      const creds = channelCredentials(endpoint, opts.tls);
      return {
        endpoint,
        kv: new KVClient(endpoint.address, creds, channelOptions),
        watch: new WatchClient(endpoint.address, creds, channelOptions),
        lease: new LeaseClient(endpoint.address, creds, channelOptions),
        maintenance: new MaintenanceClient(endpoint.address, creds, channelOptions),
        cluster: new ClusterClient(endpoint.address, creds, channelOptions),
      };
    });
  }

  get endpoints(): Endpoint[] {
    return this.stubs.map((s) => s.endpoint);
  }

  range(req: DeepPartial<RangeRequest>, o?: CallOptions): Promise<RangeResponse> {
    const msg = RangeRequest.fromPartial(req);
    return this.unary(true, o, (s) => s.kv.range.bind(s.kv) as Unary<RangeRequest, RangeResponse>, msg);
  }

  /** A transaction. Read-only transactions may be repeated on another endpoint; writes may not. */
  txn(req: DeepPartial<TxnRequest>, o?: CallOptions & { readOnly?: boolean }): Promise<TxnResponse> {
    const msg = TxnRequest.fromPartial(req);
    return this.unary(o?.readOnly ?? false, o, (s) => s.kv.txn.bind(s.kv) as Unary<TxnRequest, TxnResponse>, msg);
  }

  put(req: DeepPartial<PutRequest>, o?: CallOptions): Promise<PutResponse> {
    const msg = PutRequest.fromPartial(req);
    return this.unary(false, o, (s) => s.kv.put.bind(s.kv) as Unary<PutRequest, PutResponse>, msg);
  }

  deleteRange(req: DeepPartial<DeleteRangeRequest>, o?: CallOptions): Promise<DeleteRangeResponse> {
    const msg = DeleteRangeRequest.fromPartial(req);
    return this.unary(false, o, (s) => s.kv.deleteRange.bind(s.kv) as Unary<DeleteRangeRequest, DeleteRangeResponse>, msg);
  }

  memberList(o?: CallOptions): Promise<MemberListResponse> {
    return this.unary(true, o, (s) => s.cluster.memberList.bind(s.cluster) as Unary<MemberListRequest, MemberListResponse>, MemberListRequest.fromPartial({}));
  }

  compact(req: DeepPartial<CompactionRequest>, o?: CallOptions): Promise<CompactionResponse> {
    const msg = CompactionRequest.fromPartial(req);
    return this.unary(true, o, (s) => s.kv.compact.bind(s.kv) as Unary<CompactionRequest, CompactionResponse>, msg);
  }

  status(o?: CallOptions): Promise<StatusResponse> {
    return this.unary(true, o, (s) => s.maintenance.status.bind(s.maintenance) as Unary<StatusRequest, StatusResponse>, StatusRequest.fromPartial({}));
  }

  alarm(req: DeepPartial<AlarmRequest>, o?: CallOptions): Promise<AlarmResponse> {
    const msg = AlarmRequest.fromPartial(req);
    return this.unary(true, o, (s) => s.maintenance.alarm.bind(s.maintenance) as Unary<AlarmRequest, AlarmResponse>, msg);
  }

  defragment(o?: CallOptions): Promise<DefragmentResponse> {
    return this.unary(true, o, (s) => s.maintenance.defragment.bind(s.maintenance) as Unary<DefragmentRequest, DefragmentResponse>, DefragmentRequest.fromPartial({}));
  }

  leaseGrant(req: DeepPartial<LeaseGrantRequest>, o?: CallOptions): Promise<LeaseGrantResponse> {
    const msg = LeaseGrantRequest.fromPartial(req);
    return this.unary(false, o, (s) => s.lease.leaseGrant.bind(s.lease) as Unary<LeaseGrantRequest, LeaseGrantResponse>, msg);
  }

  leaseRevoke(req: DeepPartial<LeaseRevokeRequest>, o?: CallOptions): Promise<LeaseRevokeResponse> {
    const msg = LeaseRevokeRequest.fromPartial(req);
    return this.unary(true, o, (s) => s.lease.leaseRevoke.bind(s.lease) as Unary<LeaseRevokeRequest, LeaseRevokeResponse>, msg);
  }

  leaseTimeToLive(req: DeepPartial<LeaseTimeToLiveRequest>, o?: CallOptions): Promise<LeaseTimeToLiveResponse> {
    const msg = LeaseTimeToLiveRequest.fromPartial(req);
    return this.unary(true, o, (s) => s.lease.leaseTimeToLive.bind(s.lease) as Unary<LeaseTimeToLiveRequest, LeaseTimeToLiveResponse>, msg);
  }

  leaseLeases(o?: CallOptions): Promise<LeaseLeasesResponse> {
    return this.unary(true, o, (s) => s.lease.leaseLeases.bind(s.lease) as Unary<LeaseLeasesRequest, LeaseLeasesResponse>, LeaseLeasesRequest.fromPartial({}));
  }

  /** Opens a Watch stream on the current endpoint (the caller resumes on errors). */
  watch(): ClientDuplexStream<WatchRequest, WatchResponse> {
    return this.currentStubs().watch.watch();
  }

  leaseKeepAlive(): ClientDuplexStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse> {
    return this.currentStubs().lease.leaseKeepAlive();
  }

  /** Marks the current endpoint as failed so the next stream or call uses another one. */
  rotate(): void {
    this.current = (this.current + 1) % this.stubs.length;
  }

  close(): void {
    for (const s of this.stubs) {
      s.kv.close();
      s.watch.close();
      s.lease.close();
      s.maintenance.close();
      s.cluster.close();
    }
  }

  private currentStubs(): Stubs {
    return this.stubs[this.current]!;
  }

  private async unary<Req, Res>(
    repeatable: boolean,
    o: CallOptions | undefined,
    pick: (s: Stubs) => Unary<Req, Res>,
    req: Req,
  ): Promise<Res> {
    const attempts = repeatable ? this.stubs.length : 1;
    let lastErr: unknown;
    for (let i = 0; i < attempts; i++) {
      const stubs = this.currentStubs();
      try {
        return await callUnary(pick(stubs), req, o?.timeoutMs ?? this.timeoutMs);
      } catch (err) {
        lastErr = err;
        if (!isServiceError(err) || err.code !== Status.UNAVAILABLE) throw err;
        if (this.stubs.length > 1) this.rotate();
      }
    }
    throw lastErr;
  }
}

function callUnary<Req, Res>(fn: Unary<Req, Res>, req: Req, timeoutMs: number): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    fn(req, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) reject(err);
      else resolve(res);
    });
  });
}

function channelCredentials(endpoint: Endpoint, tls: ClientTls | undefined): ChannelCredentials {
  if (!endpoint.secure) return credentials.createInsecure();
  return credentials.createSsl(tls?.ca ?? null, tls?.key ?? null, tls?.cert ?? null);
}
