// A client that sends exactly the etcd traffic kube-apiserver's storage layer
// sends (shared/docs/kubernetes-contract.md, Kubernetes 1.28–1.34), over the real
// gRPC wire. It is the test suite's stand-in for kube-apiserver:
//
//   KubeConnection  one clientv3 client = one HTTP/2 connection per endpoint
//                   (round-robin unary calls, clientv3's retry rules, metadata)
//   KubeStore       one resource's store (etcd3/store.go): Create, Get,
//                   GuaranteedUpdate, Delete, GetList (paged, continue tokens),
//                   Count, GetCurrentResourceVersion, in the ≤1.31 ("legacy") or
//                   ≥1.32 ("modern") request shapes
//   KubeLeaseManager etcd3/lease_manager.go (TTL + reuse window)
//   KubeCompactor   etcd3/compact.go on the literal key compact_rev_key
//   probeHealth     factory/etcd3.go Probe on /registry/health
//   checkProgressSupport  storage/feature/feature_support_checker.go (Status version)
//
// Every RPC is recorded in a trace (request, response or error) so that a test can
// compare, field by field, what the proxy and a plain etcd answered.

import { createHash } from 'node:crypto';
import { credentials, Metadata, status as Status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import type { KeyValue } from '../../src/proto/gen/kv.js';
import {
  type Compare,
  Compare_CompareResult,
  Compare_CompareTarget,
  CompactionRequest,
  type CompactionResponse,
  KVClient,
  LeaseClient,
  LeaseGrantRequest,
  type LeaseGrantResponse,
  MaintenanceClient,
  RangeRequest,
  type RangeResponse,
  type RequestOp,
  StatusRequest,
  type StatusResponse,
  TxnRequest,
  type TxnResponse,
  WatchClient,
  type DeepPartial,
  type WatchRequest,
  type WatchResponse,
} from '../../src/proto/gen/rpc.js';

// ---------------------------------------------------------------------------
// Constants and small helpers

export const PATH_PREFIX = '/registry';
export const COMPACT_REV_KEY = 'compact_rev_key';
export const HEALTH_KEY = `${PATH_PREFIX}/health`;

/** etcd's exact error texts, matched by clientv3 (rpctypes) to its typed errors. */
export const ETCD_ERR = {
  compacted: 'etcdserver: mvcc: required revision has been compacted',
  futureRev: 'etcdserver: mvcc: required revision is a future revision',
  tooLarge: 'etcdserver: request is too large',
  noLeader: 'etcdserver: no leader',
} as const;

/** clientv3 GetPrefixRangeEnd: increment the last byte below 0xff. */
export function prefixEnd(prefix: Buffer | string): Buffer {
  const p = Buffer.from(typeof prefix === 'string' ? Buffer.from(prefix) : prefix);
  for (let i = p.length - 1; i >= 0; i--) {
    if (p[i]! < 0xff) {
      const end = Buffer.from(p.subarray(0, i + 1));
      end[i] = p[i]! + 1;
      return end;
    }
  }
  return Buffer.from([0]);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A value as kube-apiserver stores it: protobuf envelope `k8s\0…`, or an encrypted `k8s:enc:aescbc:v1:key1:…` blob. */
export function kubeValue(kind: 'proto' | 'enc' | 'json', seed: string, size = 0): Buffer {
  const body = createHash('sha256').update(seed).digest();
  const pad = size > 0 ? Buffer.alloc(Math.max(0, size - body.length), body[0]!) : Buffer.alloc(0);
  switch (kind) {
    case 'proto':
      // "k8s\0" magic, then a runtime.Unknown-like protobuf: field 1 (TypeMeta), field 2 (raw bytes).
      return Buffer.concat([Buffer.from([0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0b, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x05]), Buffer.from('Pod\0\xff', 'latin1'), body, pad, Buffer.from([0x00, 0xff, 0x80])]);
    case 'enc':
      return Buffer.concat([Buffer.from('k8s:enc:aescbc:v1:key1:'), body, Buffer.from([0, 0, 0xfe]), pad]);
    case 'json':
      return Buffer.from(JSON.stringify({ kind: 'ConfigMap', apiVersion: 'v1', metadata: { name: seed }, data: { x: pad.toString('hex') } }));
  }
}

export interface RpcError {
  code: number;
  details: string;
}

export function isServiceError(e: unknown): e is ServiceError {
  return typeof e === 'object' && e !== null && 'code' in e && typeof (e as { code: unknown }).code === 'number';
}

function rpcError(e: unknown): RpcError {
  if (isServiceError(e)) return { code: e.code, details: e.details };
  return { code: -1, details: e instanceof Error ? e.message : String(e) };
}

// ---------------------------------------------------------------------------
// Trace

export type RpcName = 'Range' | 'Txn' | 'Compact' | 'LeaseGrant' | 'Status';

export interface TraceEntry {
  rpc: RpcName;
  endpoint: string;
  req: unknown;
  resp?: unknown;
  err?: RpcError;
}

// ---------------------------------------------------------------------------
// Connection (one clientv3 client)

export interface KubeConnectionOptions {
  name?: string;
  /** DialKeepAliveTime (kube: 30 s). */
  keepaliveTimeMs?: number;
  /** DialKeepAliveTimeout (kube: 10 s). */
  keepaliveTimeoutMs?: number;
  /** PermitWithoutStream (kube: false). */
  keepalivePermitWithoutCalls?: boolean;
  /** Deadline of one unary call (kube's contexts vary; bounded here). */
  callTimeoutMs?: number;
  /** How many times a repeatable call (Range, LeaseGrant, Status) is retried on Unavailable (clientv3: 100 × 25 ms; bounded lower here). */
  repeatRetries?: number;
  /** Metadata sent on every call (clientv3 sends client-api-version). */
  apiVersion?: string;
}

interface Stubs {
  url: string;
  kv: KVClient;
  watch: WatchClient;
  lease: LeaseClient;
  maintenance: MaintenanceClient;
}

type UnaryFn<Req, Res> = (req: Req, md: Metadata, opts: { deadline: number }, cb: (err: ServiceError | null, res: Res) => void) => unknown;

/**
 * One clientv3 client: one HTTP/2 connection per endpoint URL (its own
 * subchannel pool, so two KubeConnections never share a connection), unary
 * calls round-robin over the endpoints, repeatable calls retried on
 * Unavailable, Txn and Compact never retried.
 */
export class KubeConnection {
  readonly name: string;
  readonly trace: TraceEntry[] = [];
  tracing = true;
  private readonly stubs: Stubs[];
  private next = 0;
  private readonly o: Required<Omit<KubeConnectionOptions, 'name'>>;

  constructor(
    readonly urls: string[],
    opts: KubeConnectionOptions = {},
  ) {
    if (urls.length === 0) throw new Error('KubeConnection: no endpoints');
    this.name = opts.name ?? urls.join(',');
    this.o = {
      keepaliveTimeMs: opts.keepaliveTimeMs ?? 30_000,
      keepaliveTimeoutMs: opts.keepaliveTimeoutMs ?? 10_000,
      keepalivePermitWithoutCalls: opts.keepalivePermitWithoutCalls ?? false,
      callTimeoutMs: opts.callTimeoutMs ?? 15_000,
      repeatRetries: opts.repeatRetries ?? 100,
      apiVersion: opts.apiVersion ?? '3.5',
    };
    const channelOptions = {
      'grpc.keepalive_time_ms': this.o.keepaliveTimeMs,
      'grpc.keepalive_timeout_ms': this.o.keepaliveTimeoutMs,
      'grpc.keepalive_permit_without_calls': this.o.keepalivePermitWithoutCalls ? 1 : 0,
      // clientv3: send at most 2 MiB is enforced client-side by Go; the tests send larger requests on purpose to see the server refuse them.
      'grpc.max_send_message_length': -1,
      'grpc.max_receive_message_length': -1,
      'grpc.use_local_subchannel_pool': 1,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    };
    this.stubs = urls.map((url) => {
      const address = url.replace(/^https?:\/\//, '');
      const creds = credentials.createInsecure();
      const kv = new KVClient(address, creds, channelOptions);
      const channelOverride = kv.getChannel();
      return {
        url,
        kv,
        watch: new WatchClient(address, creds, { ...channelOptions, channelOverride }),
        lease: new LeaseClient(address, creds, { ...channelOptions, channelOverride }),
        maintenance: new MaintenanceClient(address, creds, { ...channelOptions, channelOverride }),
      };
    });
  }

  metadata(extra: Record<string, string> = {}): Metadata {
    const md = new Metadata();
    md.set('client-api-version', this.o.apiVersion);
    for (const [k, v] of Object.entries(extra)) md.set(k, v);
    return md;
  }

  range(req: DeepPartial<RangeRequest>, timeoutMs?: number): Promise<RangeResponse> {
    return this.unary('Range', true, RangeRequest.fromPartial(req), (s) => s.kv.range.bind(s.kv) as UnaryFn<RangeRequest, RangeResponse>, timeoutMs);
  }

  txn(req: DeepPartial<TxnRequest>, timeoutMs?: number): Promise<TxnResponse> {
    return this.unary('Txn', false, TxnRequest.fromPartial(req), (s) => s.kv.txn.bind(s.kv) as UnaryFn<TxnRequest, TxnResponse>, timeoutMs);
  }

  compact(revision: bigint): Promise<CompactionResponse> {
    const req = CompactionRequest.fromPartial({ revision, physical: false });
    return this.unary('Compact', false, req, (s) => s.kv.compact.bind(s.kv) as UnaryFn<CompactionRequest, CompactionResponse>);
  }

  leaseGrant(ttl: bigint): Promise<LeaseGrantResponse> {
    const req = LeaseGrantRequest.fromPartial({ TTL: ttl, ID: 0n });
    return this.unary('LeaseGrant', true, req, (s) => s.lease.leaseGrant.bind(s.lease) as UnaryFn<LeaseGrantRequest, LeaseGrantResponse>);
  }

  status(timeoutMs?: number): Promise<StatusResponse> {
    return this.unary('Status', true, StatusRequest.fromPartial({}), (s) => s.maintenance.status.bind(s.maintenance) as UnaryFn<StatusRequest, StatusResponse>, timeoutMs);
  }

  /**
   * Opens a Watch RPC on endpoint `endpointIndex` (default: the next one
   * round-robin). Storage watches carry `hasleader: true` (clientv3.WithRequireLeader).
   */
  watchStream(opts: { hasLeader?: boolean; endpointIndex?: number; extra?: Record<string, string> } = {}): { stream: ClientDuplexStream<WatchRequest, WatchResponse>; url: string } {
    const i = opts.endpointIndex ?? this.next++ % this.stubs.length;
    const s = this.stubs[i % this.stubs.length]!;
    const md = this.metadata({ ...(opts.hasLeader !== false ? { hasleader: 'true' } : {}), ...(opts.extra ?? {}) });
    return { stream: s.watch.watch(md), url: s.url };
  }

  close(): void {
    for (const s of this.stubs) {
      s.kv.close();
      s.watch.close();
      s.lease.close();
      s.maintenance.close();
    }
  }

  private async unary<Req, Res>(rpc: RpcName, repeatable: boolean, req: Req, pick: (s: Stubs) => UnaryFn<Req, Res>, timeoutMs?: number): Promise<Res> {
    let attempt = 0;
    for (;;) {
      const s = this.stubs[this.next++ % this.stubs.length]!;
      try {
        const res = await new Promise<Res>((resolve, reject) => {
          pick(s)(req, this.metadata(), { deadline: Date.now() + (timeoutMs ?? this.o.callTimeoutMs) }, (err, r) => (err ? reject(err) : resolve(r)));
        });
        if (this.tracing) this.trace.push({ rpc, endpoint: s.url, req, resp: res });
        return res;
      } catch (err) {
        const e = rpcError(err);
        const retry = repeatable && e.code === Status.UNAVAILABLE && e.details !== ETCD_ERR.noLeader && attempt++ < this.o.repeatRetries;
        if (this.tracing) this.trace.push({ rpc, endpoint: s.url, req, err: e });
        if (!retry) throw err;
        await sleep(25 * (0.9 + 0.2 * Math.random()));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Storage errors (storage.StorageError / apierrors as the apiserver reports them)

export type KubeErrorKind =
  | 'KeyExists' // 409 AlreadyExists
  | 'NotFound' // 404
  | 'Conflict' // 409 precondition / rv mismatch
  | 'Expired' // 410 (compacted)
  | 'TooLargeResourceVersion' // 504 with retry (future revision / rv > header)
  | 'RequestEntityTooLarge' // 413
  | 'Internal';

export class KubeError extends Error {
  constructor(
    readonly kind: KubeErrorKind,
    message: string,
    readonly rpc?: RpcError,
    /** The continue token a 410 on a paged list carries (rv -1). */
    readonly continueToken?: string,
  ) {
    super(`${kind}: ${message}`);
  }
}

/** endpoints/handlers/rest.go isTooLargeError, and clientv3's typed errors by message text. */
export function interpretRpcError(err: unknown): KubeError {
  const e = rpcError(err);
  if (e.details === ETCD_ERR.tooLarge || (e.code === Status.RESOURCE_EXHAUSTED && /larger than max/.test(e.details))) {
    return new KubeError('RequestEntityTooLarge', e.details, e);
  }
  if (e.details === ETCD_ERR.compacted) return new KubeError('Expired', e.details, e);
  return new KubeError('Internal', `${e.code} ${e.details}`, e);
}

// ---------------------------------------------------------------------------
// Continue tokens (storage/continue.go)

export interface ContinueToken {
  v: string;
  rv: number;
  start: string;
}

export function encodeContinue(key: string, keyPrefix: string, rv: number): string {
  const start = key.startsWith(keyPrefix) ? key.slice(keyPrefix.length) : key;
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start })).toString('base64url');
}

export function decodeContinue(token: string, keyPrefix: string): { fromKey: string; rv: number } {
  const t = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as ContinueToken;
  if (t.v !== 'meta.k8s.io/v1') throw new Error(`continue token version ${t.v}`);
  if (t.start.length === 0 || t.start.startsWith('/')) throw new Error('continue key is not valid');
  return { fromKey: keyPrefix + t.start, rv: t.rv };
}

// ---------------------------------------------------------------------------
// The store

export type KubeVersion = 'legacy' | 'modern';

export interface StoredObject {
  key: string;
  value: Buffer;
  /** resourceVersion = kv.mod_revision. */
  rv: bigint;
}

export interface ListResult {
  items: StoredObject[];
  /** The list's resourceVersion. */
  rv: bigint;
  continueToken?: string;
  remainingItemCount?: bigint;
  /** Ranges sent for this list (pages). */
  pages: number;
}

export interface ListOptions {
  /** Namespace for a namespaced list (prefix /registry/<res>/<ns>/). */
  namespace?: string;
  /** pred.Limit (0 = no paging). */
  limit?: number;
  /** resourceVersion string: "", "0" or a number. */
  resourceVersion?: string;
  /** resourceVersionMatch. */
  match?: 'Exact' | 'NotOlderThan';
  continueToken?: string;
  /** A selector: items it rejects are dropped (and the limit doubles, as the apiserver does). */
  filter?: (o: StoredObject) => boolean;
}

export interface UpdateOptions {
  /** origRev the apiserver starts from: the watch-cache copy (possibly stale), or undefined to Get first. */
  cached?: StoredObject | null;
  ignoreNotFound?: boolean;
  /** TTL in seconds (a lease from the lease manager). */
  ttl?: number;
  /** Stop after this many conflicts (the apiserver loops until success). */
  maxAttempts?: number;
}

export interface UpdateResult {
  obj: StoredObject;
  /** Txns sent (1 = first compare succeeded). */
  attempts: number;
  /** No Txn at all: the new value equals the stored one. */
  noop: boolean;
}

export class KubeStore {
  /** e.g. "/registry/pods/" */
  readonly resourcePrefix: string;

  constructor(
    readonly conn: KubeConnection,
    /** Resource prefix as storage_factory gives it: "pods", "services/specs", "apiextensions.k8s.io/customresourcedefinitions". */
    readonly resource: string,
    readonly version: KubeVersion = 'modern',
    readonly leases?: KubeLeaseManager,
  ) {
    this.resourcePrefix = `${PATH_PREFIX}/${resource}/`;
  }

  /** prepareKey: /registry/<res>/[<ns>/]<name> */
  key(name: string, namespace?: string): string {
    return namespace === undefined ? `${this.resourcePrefix}${name}` : `${this.resourcePrefix}${namespace}/${name}`;
  }

  // --- single-object reads -----------------------------------------------------

  /** The "current state" read (§2.1): ≤1.31 Range{key}; ≥1.32 Range{key, limit 1}. */
  async getRaw(key: string): Promise<RangeResponse> {
    return this.conn.range(this.version === 'modern' ? { key: Buffer.from(key), limit: 1n } : { key: Buffer.from(key) });
  }

  /** store.Get: NotFound on empty kvs; TooLargeResourceVersion when minRV > header. */
  async get(key: string, opts: { minimumResourceVersion?: bigint; ignoreNotFound?: boolean } = {}): Promise<StoredObject | null> {
    let r: RangeResponse;
    try {
      r = await this.getRaw(key);
    } catch (e) {
      throw interpretRpcError(e);
    }
    const header = mustHeader(r.header, 'Range');
    if (opts.minimumResourceVersion !== undefined && opts.minimumResourceVersion > header) {
      throw new KubeError('TooLargeResourceVersion', `Too large resource version: ${opts.minimumResourceVersion}, current: ${header}`);
    }
    const kv = r.kvs[0];
    if (!kv) {
      if (opts.ignoreNotFound) return null;
      throw new KubeError('NotFound', key);
    }
    return toObj(kv);
  }

  // --- writes ------------------------------------------------------------------

  /** store.Create (§2.5). Returns the new object with its resourceVersion from the inner (≤1.31) or outer (≥1.32) header. */
  async create(key: string, value: Buffer, opts: { ttl?: number } = {}): Promise<{ obj: StoredObject; resp: TxnResponse }> {
    const lease = opts.ttl ? await this.leaseFor(opts.ttl) : 0n;
    let resp: TxnResponse;
    try {
      resp = await this.conn.txn({
        compare: [modEquals(key, 0n)],
        success: [putOp(key, value, lease)],
        failure: [],
      });
    } catch (e) {
      throw interpretRpcError(e);
    }
    if (!resp.succeeded) throw new KubeError('KeyExists', key);
    return { obj: { key, value, rv: this.writeRevision(resp, 'put') }, resp };
  }

  /**
   * store.GuaranteedUpdate (§2.6): MOD == origRev → Put else Range{key}; on
   * failure, retry from responses[0].response_range without another Get.
   * `tryUpdate` gets the current object (null when absent) and returns the new
   * value, or null to leave it unchanged.
   */
  async guaranteedUpdate(key: string, tryUpdate: (cur: StoredObject | null) => Buffer | null, opts: UpdateOptions = {}): Promise<UpdateResult> {
    const getCurrent = async (): Promise<StoredObject | null> => {
      const o = await this.get(key, { ignoreNotFound: true });
      if (o === null && !opts.ignoreNotFound) throw new KubeError('NotFound', key);
      return o;
    };
    let cur: StoredObject | null;
    let isCurrent: boolean;
    if (opts.cached !== undefined) {
      cur = opts.cached;
      isCurrent = false;
    } else {
      cur = await getCurrent();
      isCurrent = true;
    }
    let attempts = 0;
    for (;;) {
      const next = tryUpdate(cur);
      if (next === null) {
        // An update error on possibly stale data: re-read, and give up only if the data was current.
        if (isCurrent) throw new KubeError('Conflict', `${key}: update refused`);
        const cachedRev = cur?.rv ?? 0n;
        cur = await getCurrent();
        isCurrent = true;
        if ((cur?.rv ?? 0n) === cachedRev) throw new KubeError('Conflict', `${key}: update refused`);
        continue;
      }
      if (cur !== null && next.equals(cur.value)) {
        // No Txn when nothing changes — after refreshing a cached copy from etcd.
        if (!isCurrent) {
          cur = await getCurrent();
          isCurrent = true;
          continue;
        }
        return { obj: cur, attempts, noop: true };
      }
      const origRev = cur?.rv ?? 0n;
      const lease = opts.ttl ? await this.leaseFor(opts.ttl) : 0n;
      attempts++;
      let resp: TxnResponse;
      try {
        resp = await this.conn.txn({
          compare: [modEquals(key, origRev)],
          success: [putOp(key, next, lease)],
          failure: [rangeOp(key)],
        });
      } catch (e) {
        throw interpretRpcError(e);
      }
      if (resp.succeeded) return { obj: { key, value: next, rv: this.writeRevision(resp, 'put') }, attempts, noop: false };
      // Retry from responses[0].response_range, without another Get.
      const kv = elseRange(resp).kvs[0];
      cur = kv ? toObj(kv) : null;
      if (cur === null && !opts.ignoreNotFound) throw new KubeError('NotFound', key);
      isCurrent = true;
      if (opts.maxAttempts !== undefined && attempts >= opts.maxAttempts) throw new KubeError('Conflict', `${key}: gave up after ${attempts} attempts`);
    }
  }

  /**
   * store.Delete (§2.7): MOD == origRev → DeleteRange{key} else Range{key}.
   * `precondition` may refuse the current object (a UID/RV precondition).
   */
  async delete(key: string, opts: { cached?: StoredObject | null; precondition?: (cur: StoredObject) => boolean; maxAttempts?: number } = {}): Promise<{ deleted: StoredObject; rv: bigint; attempts: number }> {
    let cur: StoredObject | null = opts.cached !== undefined ? opts.cached : await this.get(key, { ignoreNotFound: true });
    let attempts = 0;
    for (;;) {
      if (cur === null) throw new KubeError('NotFound', key);
      if (opts.precondition && !opts.precondition(cur)) throw new KubeError('Conflict', `${key}: precondition failed`);
      attempts++;
      let resp: TxnResponse;
      try {
        resp = await this.conn.txn({
          compare: [modEquals(key, cur.rv)],
          success: [{ request: { $case: 'requestDeleteRange', value: { key: Buffer.from(key), rangeEnd: Buffer.alloc(0), prevKv: false } } }],
          failure: [rangeOp(key)],
        });
      } catch (e) {
        throw interpretRpcError(e);
      }
      if (resp.succeeded) {
        const rv = this.writeRevision(resp, 'delete');
        return { deleted: { ...cur, rv }, rv, attempts };
      }
      const kv = elseRange(resp).kvs[0];
      cur = kv ? toObj(kv) : null;
      if (opts.maxAttempts !== undefined && attempts >= opts.maxAttempts) throw new KubeError('Conflict', `${key}: gave up after ${attempts} attempts`);
    }
  }

  /** ≤1.31: responses[0].response_put/response_delete_range.header.revision (must be present); ≥1.32: txn.header.revision. */
  private writeRevision(resp: TxnResponse, kind: 'put' | 'delete'): bigint {
    if (this.version === 'modern') return mustHeader(resp.header, 'Txn');
    const r = resp.responses[0]?.response;
    if (kind === 'put') {
      if (r?.$case !== 'responsePut') throw new KubeError('Internal', 'txn response has no response_put');
      return mustHeader(r.value.header, 'response_put');
    }
    if (r?.$case !== 'responseDeleteRange') throw new KubeError('Internal', 'invalid DeleteRange response: missing ResponseDeleteRange');
    return mustHeader(r.value.header, 'response_delete_range');
  }

  private async leaseFor(ttl: number): Promise<bigint> {
    if (!this.leases) throw new Error('KubeStore: a TTL needs a lease manager');
    return this.leases.getLease(ttl);
  }

  // --- lists -------------------------------------------------------------------

  /**
   * store.GetList, recursive (§2.2): pages pinned to the first page's revision,
   * next key lastKey+"\0", ≤1.31 `more` / ≥1.32 `len(kvs) < count`, the limit
   * doubling when a filter drops items, continue tokens, remainingItemCount.
   */
  async getList(opts: ListOptions = {}): Promise<ListResult> {
    const keyPrefix = opts.namespace === undefined ? this.resourcePrefix : `${this.resourcePrefix}${opts.namespace}/`;
    const rangeEnd = prefixEnd(keyPrefix);
    const limit0 = opts.limit ?? 0;
    const paging = limit0 > 0;
    const rvStr = opts.resourceVersion ?? '';
    const parsedRv = rvStr === '' ? 0n : BigInt(rvStr);
    let key = keyPrefix;
    let withRev = 0n;
    let continueRvNegative = false;
    if (opts.continueToken) {
      const c = decodeContinue(opts.continueToken, keyPrefix);
      key = c.fromKey;
      if (c.rv > 0) withRev = BigInt(c.rv);
      else if (c.rv === -1) continueRvNegative = true;
      else throw new KubeError('Internal', 'invalid continue token rv');
    } else if (parsedRv > 0n && (opts.match === 'Exact' || (opts.match === undefined && paging))) {
      withRev = parsedRv;
    }
    void continueRvNegative;
    let limit = limit0;
    const items: StoredObject[] = [];
    let returnedRV = withRev; // "R if it was non-zero"
    let hasMore = false;
    let lastKey: string | undefined;
    let lastResp: RangeResponse | undefined;
    let pages = 0;
    const maxLimit = 10_000;
    for (;;) {
      const req: DeepPartial<RangeRequest> = { key: Buffer.from(key), rangeEnd };
      if (paging) req.limit = BigInt(limit);
      if (withRev !== 0n) req.revision = withRev;
      let r: RangeResponse;
      try {
        r = await this.conn.range(req);
      } catch (e) {
        const ke = interpretRpcError(e);
        if (ke.kind === 'Expired' && paging && pages + (opts.continueToken ? 1 : 0) > 0) {
          // interpretListError: compacted while paging → 410 with a continue token at rv -1 from the current key.
          throw new KubeError('Expired', 'The provided continue parameter is too old to display a consistent list result.', ke.rpc, encodeContinue(key, keyPrefix, -1));
        }
        if (ke.rpc?.details === ETCD_ERR.futureRev && this.version === 'modern') {
          throw new KubeError('TooLargeResourceVersion', `Too large resource version: ${withRev}`, ke.rpc);
        }
        throw ke;
      }
      pages++;
      lastResp = r;
      const header = mustHeader(r.header, 'Range');
      hasMore = this.version === 'modern' ? BigInt(r.kvs.length) < r.count : r.more;
      if (r.kvs.length === 0 && hasMore) throw new KubeError('Internal', 'no results were found, but etcd indicated there were more values remaining');
      for (const kv of r.kvs) {
        if (paging && items.length >= limit0) {
          hasMore = true;
          break;
        }
        lastKey = kv.key.toString('latin1');
        const o = toObj(kv);
        if (!opts.filter || opts.filter(o)) items.push(o);
      }
      if (returnedRV === 0n) returnedRV = header;
      if (!hasMore || !paging) break;
      if (items.length >= limit0) break;
      if (limit < maxLimit) limit = Math.min(limit * 2, maxLimit);
      key = `${lastKey}\x00`;
      if (withRev === 0n) withRev = returnedRV;
    }
    // NotOlderThan / "0" / "": the latest data, then header >= RV (validateMinimumResourceVersion).
    if (parsedRv > 0n && withRev === 0n && returnedRV < parsedRv) {
      throw new KubeError('TooLargeResourceVersion', `Too large resource version: ${parsedRv}, current: ${returnedRV}`);
    }
    const out: ListResult = { items, rv: returnedRV, pages };
    if (hasMore && lastKey !== undefined) {
      out.continueToken = encodeContinue(`${lastKey}\x00`, keyPrefix, Number(returnedRV));
      if (!opts.filter && lastResp) out.remainingItemCount = lastResp.count - BigInt(limit0);
    }
    return out;
  }

  /** Non-recursive list of one key (§2.2 last bullet): ≥1.32 Range{key, limit 1, revision R}; ≤1.31 Range{key}. */
  async listOne(key: string, revision = 0n): Promise<{ items: StoredObject[]; rv: bigint }> {
    const req: DeepPartial<RangeRequest> = { key: Buffer.from(key) };
    if (this.version === 'modern') req.limit = 1n;
    if (revision !== 0n) req.revision = revision;
    let r: RangeResponse;
    try {
      r = await this.conn.range(req);
    } catch (e) {
      throw interpretRpcError(e);
    }
    return { items: r.kvs.map(toObj), rv: mustHeader(r.header, 'Range') };
  }

  /** Count (§2.4): Range{prefix, prefixEnd, count_only}. */
  async count(): Promise<bigint> {
    const r = await this.conn.range({ key: Buffer.from(this.resourcePrefix), rangeEnd: prefixEnd(this.resourcePrefix), countOnly: true });
    mustHeader(r.header, 'Range');
    return r.count;
  }

  /** GetCurrentResourceVersion (§2.3): Range{"/registry/<res>", limit 1} → header.revision, never 0. */
  async getCurrentResourceVersion(): Promise<bigint> {
    const r = await this.conn.range({ key: Buffer.from(this.resourcePrefix.slice(0, -1)), limit: 1n });
    const rev = mustHeader(r.header, 'Range');
    if (rev === 0n) throw new KubeError('Internal', 'the current resource version must be greater than 0');
    return rev;
  }
}

// ---------------------------------------------------------------------------
// Lease manager (etcd3/lease_manager.go)

export class KubeLeaseManager {
  prevLeaseId = 0n;
  prevLeaseExpiration = 0;
  attached = 0;
  grants = 0;

  constructor(
    readonly conn: KubeConnection,
    readonly reuseDurationSeconds = 60,
    readonly maxAttachedObjects = 1000,
    readonly now: () => number = Date.now,
  ) {}

  /** reuse = min(--lease-reuse-duration-seconds, int(5% of ttl)). */
  reuseSeconds(ttl: number): number {
    return Math.min(this.reuseDurationSeconds, Math.trunc(0.05 * ttl));
  }

  async getLease(ttl: number): Promise<bigint> {
    const now = this.now();
    const reuse = this.reuseSeconds(ttl);
    const valid = now + ttl * 1000 < this.prevLeaseExpiration;
    const sufficient = now + (ttl + reuse) * 1000 > this.prevLeaseExpiration;
    if (valid && sufficient && this.attached <= this.maxAttachedObjects) {
      this.attached++;
      return this.prevLeaseId;
    }
    const grantTtl = ttl + reuse;
    const r = await this.conn.leaseGrant(BigInt(grantTtl));
    this.grants++;
    this.prevLeaseId = r.ID;
    this.prevLeaseExpiration = now + grantTtl * 1000;
    this.attached = 1;
    return r.ID;
  }
}

// ---------------------------------------------------------------------------
// Compactor (etcd3/compact.go)

export interface CompactRound {
  succeeded: boolean;
  /** t after the round. */
  t: bigint;
  /** rev after the round (header.revision). */
  rev: bigint;
  /** The revision compacted this round (0 = none). */
  compacted: bigint;
  /** 1.34: the value of compact_rev_key read on a lost CAS. */
  readCompactRev?: bigint;
  resp: TxnResponse;
  compactError?: RpcError;
}

export class KubeCompactor {
  /** The apiserver's own t (starts at 0) and rev. */
  t = 0n;
  rev = 0n;
  /** 1.34 store.CompactRevision(). */
  compactRevision = 0n;

  constructor(
    readonly conn: KubeConnection,
    readonly version: '1.28' | '1.34' = '1.34',
  ) {}

  /** One round: VERSION(compact_rev_key) == t → Put(decimal(rev)) else Range; then Compact(rev, physical false) if won and rev ≠ 0. */
  async round(): Promise<CompactRound> {
    const key = Buffer.from(COMPACT_REV_KEY);
    const resp = await this.conn.txn({
      compare: [{ key, rangeEnd: Buffer.alloc(0), target: Compare_CompareTarget.VERSION, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'version', value: this.t } }],
      success: [putOp(COMPACT_REV_KEY, Buffer.from(this.rev.toString(10)), 0n)],
      failure: [rangeOp(COMPACT_REV_KEY)],
    });
    const curRev = mustHeader(resp.header, 'Txn');
    if (!resp.succeeded) {
      // kvs[0] indexed without a bounds check in the apiserver: an empty kvs would panic.
      const kv = elseRange(resp).kvs[0];
      if (!kv) throw new KubeError('Internal', 'compactor: lost the CAS but the else-branch range has no kvs (the apiserver would panic)');
      this.t = kv.version;
      this.rev = curRev;
      const out: CompactRound = { succeeded: false, t: this.t, rev: curRev, compacted: 0n, resp };
      if (this.version === '1.34') {
        out.readCompactRev = BigInt(kv.value.toString('latin1'));
        this.compactRevision = out.readCompactRev;
      }
      return out;
    }
    const prev = this.rev;
    this.t += 1n;
    this.rev = curRev;
    const out: CompactRound = { succeeded: true, t: this.t, rev: curRev, compacted: 0n, resp };
    if (prev !== 0n) {
      try {
        await this.conn.compact(prev);
        out.compacted = prev;
        this.compactRevision = prev;
      } catch (e) {
        out.compactError = rpcError(e);
      }
    }
    return out;
  }

  /** 1.34 runWatchLoop's read: Range{compact_rev_key} → kvs[0].value and header.revision. */
  async readCompactRevision(): Promise<{ value?: bigint; header: bigint }> {
    const r = await this.conn.range({ key: Buffer.from(COMPACT_REV_KEY) });
    const kv = r.kvs[0];
    return { ...(kv ? { value: BigInt(kv.value.toString('latin1')) } : {}), header: mustHeader(r.header, 'Range') };
  }
}

// ---------------------------------------------------------------------------
// Health probe and Status version check

/** factory/etcd3.go Probe: Range{/registry/health}; any response without error is healthy. */
export async function probeHealth(conn: KubeConnection, timeoutMs = 2000): Promise<{ healthy: boolean; error?: string }> {
  try {
    const r = await conn.range({ key: Buffer.from(HEALTH_KEY) }, timeoutMs);
    mustHeader(r.header, 'Range');
    return { healthy: true };
  } catch (e) {
    return { healthy: false, error: rpcError(e).details };
  }
}

/** Strict semver (major.minor.patch, optional -pre and +build), as the apiserver's version.ParseSemantic. */
export function parseSemver(v: string): [number, number, number] | undefined {
  const m = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/.exec(v);
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

function cmpVer(a: [number, number, number], b: [number, number, number]): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** RequestWatchProgress support: ≥ 3.5.13, or 3.4.31 ≤ v < 3.5.0. */
export function versionSupportsProgress(version: string): boolean {
  const v = parseSemver(version);
  if (!v) return false;
  if (cmpVer(v, [3, 5, 13]) >= 0) return true;
  return cmpVer(v, [3, 4, 31]) >= 0 && cmpVer(v, [3, 5, 0]) < 0;
}

/** feature_support_checker.go: one Status per endpoint URL (a fresh connection each time), strict semver. */
export async function checkProgressSupport(urls: string[]): Promise<{ supported: boolean; versions: string[] }> {
  const versions: string[] = [];
  for (const url of urls) {
    const c = new KubeConnection([url], { name: `status ${url}` });
    try {
      const s = await c.status(5000);
      versions.push(s.version);
    } finally {
      c.close();
    }
  }
  return { supported: versions.length > 0 && versions.every(versionSupportsProgress), versions };
}

// ---------------------------------------------------------------------------
// Request builders and response accessors

export function modEquals(key: string, rev: bigint): Compare {
  return { key: Buffer.from(key), rangeEnd: Buffer.alloc(0), target: Compare_CompareTarget.MOD, result: Compare_CompareResult.EQUAL, targetUnion: { $case: 'modRevision', value: rev } };
}

export function putOp(key: string, value: Buffer, lease: bigint): RequestOp {
  return { request: { $case: 'requestPut', value: { key: Buffer.from(key), value, lease, prevKv: false, ignoreValue: false, ignoreLease: false } } };
}

export function rangeOp(key: string): RequestOp {
  return { request: { $case: 'requestRange', value: RangeRequest.fromPartial({ key: Buffer.from(key) }) } };
}

/** responses[0].response_range of a failed txn (the apiserver requires it). */
export function elseRange(resp: TxnResponse): RangeResponse {
  const r = resp.responses[0]?.response;
  if (r?.$case !== 'responseRange') throw new KubeError('Internal', `failed txn: responses[0] is ${r?.$case ?? 'missing'}, not a response_range`);
  return r.value;
}

function mustHeader(h: { revision: bigint } | undefined, what: string): bigint {
  if (!h) throw new KubeError('Internal', `${what}: nil header (the apiserver dereferences it)`);
  return h.revision;
}

export function toObj(kv: KeyValue): StoredObject {
  return { key: kv.key.toString('latin1'), value: kv.value, rv: kv.modRevision };
}
