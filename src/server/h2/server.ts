// A lean gRPC server on node:http2: the subset of grpc-js's Server that the
// proxy uses (addService, listen, tryShutdown, forceShutdown), with handlers
// called as grpc-js calls them (unary: handler(call, callback); streaming: a
// Duplex-like call with data/end/error/cancelled/drain events, write/end, and
// emit('error', status) ending the call with that status). Status codes and
// texts follow grpc-js where clients or tests can see them.

import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import { Metadata, type ServiceDefinition } from '@grpc/grpc-js';

const {
  HTTP2_HEADER_PATH,
  HTTP2_HEADER_CONTENT_TYPE,
  HTTP2_HEADER_STATUS,
  NGHTTP2_CANCEL,
} = http2.constants;

export interface H2ServerOptions {
  /** Largest request message (bytes, excluding the 5-byte prefix); -1 = unbounded. */
  maxReceiveMessageLength: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  /** Close connections without calls for this long; 0 = never. */
  maxIdleMs: number;
  tls?: { cert: Buffer; key: Buffer; ca?: Buffer | undefined } | undefined;
}

interface Status {
  code?: number | undefined;
  details?: string | undefined;
  message?: string | undefined;
  metadata?: Metadata | null | undefined;
}

interface Method {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestDeserialize: (b: Buffer) => unknown;
  responseSerialize: (m: any) => Buffer;
  impl: (...args: any[]) => void;
}

const OK = 0;
const CANCELLED = 1;
const UNKNOWN = 2;
const DEADLINE_EXCEEDED = 4;
const RESOURCE_EXHAUSTED = 8;
const UNIMPLEMENTED = 12;
const INTERNAL = 13;
const UNAVAILABLE = 14;

const RESPONSE_HEADERS = {
  [HTTP2_HEADER_STATUS]: 200,
  [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
  'grpc-accept-encoding': 'identity,deflate,gzip',
  'grpc-encoding': 'identity',
};
const RESPOND_OPTS = { waitForTrailers: true };
const DEADLINE_RE = /^(\d{1,8})([HMSmun])$/;
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
const WINDOW = 64 * 1024 * 1024;

/** Percent-encoding of grpc-message, as the gRPC HTTP/2 spec says (printable ASCII except '%' stays). */
export function encodeGrpcMessage(s: string): string {
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return s;
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    out += b < 0x20 || b > 0x7e || b === 0x25 ? '%' + b.toString(16).toUpperCase().padStart(2, '0') : String.fromCharCode(b);
  }
  return out;
}

function frame(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(payload.length + 5);
  out[0] = 0;
  out.writeUInt32BE(payload.length, 1);
  payload.copy(out, 5);
  return out;
}

const OK_TRAILERS: http2.OutgoingHttpHeaders = { 'grpc-status': '0', 'grpc-message': 'OK' };

function trailersOf(st: Status): http2.OutgoingHttpHeaders {
  if (st.code === OK && (st.details === 'OK' || st.details === undefined) && !st.metadata) return OK_TRAILERS;
  const code = typeof st.code === 'number' ? st.code : UNKNOWN;
  const t: http2.OutgoingHttpHeaders = { 'grpc-status': String(code) };
  const details = st.details ?? (code === OK ? 'OK' : st.message ?? '');
  t['grpc-message'] = encodeGrpcMessage(details);
  if (st.metadata && typeof (st.metadata as Metadata).toHttp2Headers === 'function') {
    const extra = (st.metadata as Metadata).toHttp2Headers();
    for (const k of Object.keys(extra)) if (!k.startsWith(':') && !k.startsWith('grpc-')) t[k] = extra[k];
  }
  return t;
}

/** Incremental decoder of length-prefixed gRPC messages; returns whole messages (prefix included). */
class Decoder {
  private buf: Buffer | null = null;
  constructor(private readonly max: number) {}
  /** Throws (with grpc-js's text) when a message is over the limit. */
  write(chunk: Buffer, out: Buffer[]): void {
    let data = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
    this.buf = null;
    let off = 0;
    while (data.length - off >= 5) {
      const len = data.readUInt32BE(off + 1);
      if (this.max !== -1 && len > this.max) throw new Error(`Received message larger than max (${len} vs ${this.max})`);
      if (data.length - off < 5 + len) break;
      out.push(off === 0 && data.length === 5 + len ? data : data.subarray(off, off + 5 + len));
      off += 5 + len;
    }
    if (off < data.length) {
      // Keep the rest (a copy only if it is a small part of a big chunk).
      this.buf = off === 0 ? data : data.subarray(off);
    }
    data = Buffer.alloc(0);
  }
  get pending(): boolean {
    return this.buf !== null;
  }
}

function decompress(msg: Buffer, encoding: string, max: number): Promise<Buffer> | Buffer {
  const body = msg.subarray(5);
  if (msg[0] !== 1 || encoding === 'identity') return body;
  if (encoding !== 'deflate' && encoding !== 'gzip') {
    return Promise.reject({ code: UNIMPLEMENTED, details: `Received message compressed with unsupported encoding "${encoding}"` });
  }
  return new Promise((resolve, reject) => {
    const z = encoding === 'deflate' ? zlib.createInflate() : zlib.createGunzip();
    const parts: Buffer[] = [];
    let total = 0;
    z.on('error', () => reject({ code: INTERNAL, details: 'Failed to decompress message' }));
    z.on('data', (c: Buffer) => {
      parts.push(c);
      total += c.length;
      if (max !== -1 && total > max) {
        z.destroy();
        reject({ code: RESOURCE_EXHAUSTED, details: `Received message that decompresses to a size larger than ${max}` });
      }
    });
    z.on('end', () => resolve(Buffer.concat(parts)));
    z.end(body);
  });
}

/** State shared by unary and streaming calls. */
class CallBase extends EventEmitter {
  cancelled = false;
  finished = false;
  protected headersSent = false;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private meta: Metadata | undefined;
  protected trailers: http2.OutgoingHttpHeaders | undefined;

  constructor(
    readonly stream: http2.ServerHttp2Stream,
    private readonly headers: http2.IncomingHttpHeaders,
    protected readonly method: Method,
    protected readonly server: H2Server,
  ) {
    super();
    this.session = stream.session;
  }
  private readonly session: http2.Http2Session | undefined;

  get metadata(): Metadata {
    if (this.meta === undefined) {
      const m = new Metadata();
      for (const [k, v] of Object.entries(this.headers)) {
        if (k.startsWith(':') || k === 'grpc-timeout' || k === 'grpc-encoding' || k === 'grpc-accept-encoding' || k === 'accept-encoding' || k === 'te' || k === 'content-type') continue;
        if (v === undefined) continue;
        for (const x of Array.isArray(v) ? v : [v]) {
          try {
            if (k.endsWith('-bin')) m.add(k, Buffer.from(x, 'base64'));
            else m.add(k, x);
          } catch {
            /* an invalid header is left out */
          }
        }
      }
      this.meta = m;
    }
    return this.meta;
  }

  getPeer(): string {
    const s = this.stream.session?.socket;
    if (!s || !s.remoteAddress) return 'unknown';
    return s.remoteAddress.includes(':') ? `[${s.remoteAddress}]:${s.remotePort}` : `${s.remoteAddress}:${s.remotePort}`;
  }

  getDeadline(): number {
    return Infinity;
  }

  sendMetadata(): void {
    this.ensureHeaders();
  }

  setDeadline(ms: number): void {
    this.deadlineTimer = setTimeout(() => {
      this.deadlineTimer = undefined;
      this.finish({ code: DEADLINE_EXCEEDED, details: 'Deadline exceeded' });
      this.markCancelled();
    }, ms);
  }

  protected ensureHeaders(): boolean {
    if (this.headersSent) return true;
    if (this.stream.destroyed || this.stream.closed) return false;
    this.headersSent = true;
    this.stream.respond(RESPONSE_HEADERS, RESPOND_OPTS);
    this.stream.once('wantTrailers', () => {
      if (this.stream.destroyed) return;
      try {
        this.stream.sendTrailers(this.trailers ?? OK_TRAILERS);
      } catch {
        /* the stream is gone */
      }
    });
    return true;
  }

  /** Ends the call with a status (once); returns false if it had ended already. */
  finish(st: Status, last?: Buffer): boolean {
    if (this.finished) return false;
    this.finished = true;
    this.clearDeadline();
    this.server.callEnded(this.session);
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return false;
    if (!this.headersSent && last === undefined) {
      // Trailers-only response.
      this.headersSent = true;
      const h: http2.OutgoingHttpHeaders = { [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto', ...trailersOf(st) };
      try {
        stream.respond(h, { endStream: true });
      } catch {
        /* gone */
      }
      return true;
    }
    this.trailers = trailersOf(st);
    this.ensureHeaders();
    try {
      if (last !== undefined) stream.end(last);
      else stream.end();
    } catch {
      /* gone */
    }
    return true;
  }

  protected clearDeadline(): void {
    if (this.deadlineTimer !== undefined) {
      clearTimeout(this.deadlineTimer);
      this.deadlineTimer = undefined;
    }
  }

  markCancelled(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    if (!this.finished) {
      this.finished = true;
      this.clearDeadline();
      this.server.callEnded(this.session);
    }
    this.emit('cancelled', 'cancelled');
  }
}

class UnaryCall extends CallBase {
  request: unknown = undefined;
}

class StreamCall extends CallBase {
  private halfClosed = false;
  private inflight = 0;
  private pendingEnd = false;

  constructor(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, method: Method, server: H2Server) {
    super(stream, headers, method, server);
    stream.on('drain', () => this.emit('drain'));
  }

  /** A request message (in order). */
  pushMessage(msg: unknown): void {
    if (this.finished) return;
    super.emit('data', msg);
  }

  holdMessage(): void {
    this.inflight++;
  }

  releaseMessage(): void {
    this.inflight--;
    if (this.inflight === 0 && this.pendingEnd) this.pushEnd();
  }

  pushEnd(): void {
    if (this.inflight > 0) {
      this.pendingEnd = true;
      return;
    }
    if (this.halfClosed) return;
    this.halfClosed = true;
    if (!this.finished) super.emit('end');
  }

  write(msg: unknown, cb?: (err?: Error | null) => void): boolean {
    if (this.finished || this.cancelled) return false;
    let buf: Buffer;
    try {
      buf = frame(this.method.responseSerialize(msg));
    } catch {
      this.finish({ code: INTERNAL, details: 'Error serializing response' });
      return false;
    }
    if (!this.ensureHeaders()) return false;
    return this.stream.write(buf, cb);
  }

  end(msg?: unknown): void {
    if (msg !== undefined) this.write(msg);
    this.finish({ code: OK, details: 'OK' });
  }

  /** The grpc-js idiom: emitting 'error' with a status ends the call with it. */
  override emit(event: string | symbol, ...args: any[]): boolean {
    if (event === 'error') {
      const st = (args[0] ?? {}) as Status;
      this.finish({ code: st.code ?? UNKNOWN, details: st.details ?? st.message, metadata: st.metadata });
      return super.emit('error', ...args);
    }
    return super.emit(event, ...args);
  }

  destroy(err?: Status): void {
    if (err) this.finish({ code: err.code ?? INTERNAL, details: err.details ?? err.message, metadata: err.metadata });
    else this.finish({ code: OK, details: 'OK' });
  }

  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.on(event, listener);
  }
}

interface SessionState {
  calls: number;
  idleTimer: NodeJS.Timeout | undefined;
  pingTimer: NodeJS.Timeout | undefined;
}

export class H2Server {
  private readonly methods = new Map<string, Method>();
  private server: http2.Http2Server | http2.Http2SecureServer | undefined;
  private readonly sessions = new Map<http2.Http2Session, SessionState>();
  private shuttingDown = false;
  private shutdownCb: (() => void) | undefined;
  private readonly maxMsg: number;

  constructor(private readonly o: H2ServerOptions) {
    this.maxMsg = o.maxReceiveMessageLength;
  }

  addService(def: ServiceDefinition, impl: Record<string, unknown>): void {
    for (const [name, m] of Object.entries(def)) {
      let fn = impl[name] ?? (m.originalName ? impl[m.originalName] : undefined);
      if (typeof fn !== 'function') fn = undefined;
      if (fn === undefined) continue; // grpc-js answers UNIMPLEMENTED for methods without handler: so do we.
      this.methods.set(m.path, {
        path: m.path,
        requestStream: m.requestStream,
        responseStream: m.responseStream,
        requestDeserialize: m.requestDeserialize as (b: Buffer) => unknown,
        responseSerialize: m.responseSerialize as (m: any) => Buffer,
        impl: (fn as (...a: any[]) => void).bind(impl),
      });
    }
  }

  /** Listens on host:port (port 0: a free port) and returns the port. */
  listen(address: string): Promise<number> {
    const { host, port } = splitAddress(address);
    const settings: http2.Settings = {
      maxConcurrentStreams: 2 ** 31 - 1,
      initialWindowSize: 2 ** 31 - 1 > WINDOW ? WINDOW : WINDOW,
      maxHeaderListSize: 16 * 1024 * 1024,
    };
    const common = {
      settings,
      maxSessionMemory: 1024,
      maxSendHeaderBlockLength: 1024 * 1024,
      // Our own keepalive and idle handling; no socket timeouts.
    };
    let srv: http2.Http2Server | http2.Http2SecureServer;
    if (this.o.tls) {
      srv = http2.createSecureServer({
        ...common,
        cert: this.o.tls.cert,
        key: this.o.tls.key,
        ...(this.o.tls.ca ? { ca: this.o.tls.ca, requestCert: true, rejectUnauthorized: true } : {}),
        ALPNProtocols: ['h2'],
        allowHTTP1: false,
      });
    } else {
      srv = http2.createServer(common);
    }
    this.server = srv;
    // Replies to many concurrent calls share a connection: send each at once (no Nagle).
    srv.on('connection', (socket: Socket) => socket.setNoDelay(true));
    srv.on('session', (s: http2.Http2Session) => this.onSession(s));
    srv.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => this.onStream(stream, headers));
    srv.on('sessionError', () => {});
    srv.on('tlsClientError', () => {});
    return new Promise((resolve, reject) => {
      const onErr = (err: Error) => reject(new Error(`cannot listen on ${address}: ${err.message}`));
      srv.once('error', onErr);
      srv.listen(port, host, () => {
        srv.off('error', onErr);
        srv.on('error', () => {});
        resolve((srv.address() as AddressInfo).port);
      });
    });
  }

  private onSession(s: http2.Http2Session): void {
    const st: SessionState = { calls: 0, idleTimer: undefined, pingTimer: undefined };
    this.sessions.set(s, st);
    s.on('error', () => {});
    try {
      s.setLocalWindowSize(WINDOW);
    } catch {
      /* closed already */
    }
    s.once('close', () => {
      if (st.idleTimer) clearTimeout(st.idleTimer);
      if (st.pingTimer) clearTimeout(st.pingTimer);
      this.sessions.delete(s);
      this.maybeShutdownDone();
    });
    if (this.shuttingDown) {
      s.close();
      return;
    }
    this.armIdle(s, st);
    if (this.o.keepaliveIntervalMs > 0) this.armPing(s, st);
  }

  private armPing(s: http2.Http2Session, st: SessionState): void {
    st.pingTimer = setTimeout(() => {
      st.pingTimer = undefined;
      if (s.destroyed || s.closed) return;
      let answered = false;
      const dead = setTimeout(() => {
        if (!answered && !s.destroyed) s.destroy();
      }, this.o.keepaliveTimeoutMs);
      dead.unref();
      try {
        s.ping((err) => {
          answered = true;
          clearTimeout(dead);
          if (err) {
            if (!s.destroyed) s.destroy();
            return;
          }
          this.armPing(s, st);
        });
      } catch {
        clearTimeout(dead);
        if (!s.destroyed) s.destroy();
      }
    }, this.o.keepaliveIntervalMs);
    st.pingTimer.unref();
  }

  private armIdle(s: http2.Http2Session, st: SessionState): void {
    if (this.o.maxIdleMs <= 0 || st.calls > 0) return;
    if (st.idleTimer) clearTimeout(st.idleTimer);
    st.idleTimer = setTimeout(() => {
      st.idleTimer = undefined;
      if (st.calls === 0 && !s.closed && !s.destroyed) {
        s.goaway();
        s.close();
      }
    }, this.o.maxIdleMs);
    st.idleTimer.unref();
  }

  /** @internal */
  callEnded(s: http2.Http2Session | undefined): void {
    if (!s) return;
    const st = this.sessions.get(s);
    if (!st) return;
    st.calls--;
    if (st.calls === 0) this.armIdle(s, st);
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => {});
    const ct = headers[HTTP2_HEADER_CONTENT_TYPE];
    if (typeof ct !== 'string' || !ct.startsWith('application/grpc')) {
      stream.respond({ [HTTP2_HEADER_STATUS]: 415 }, { endStream: true });
      return;
    }
    const path = headers[HTTP2_HEADER_PATH] as string;
    const method = this.methods.get(path);
    if (method === undefined) {
      stream.respond(
        { [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto', 'grpc-status': String(UNIMPLEMENTED), 'grpc-message': encodeGrpcMessage(`The server does not implement the method ${path}`) },
        { endStream: true },
      );
      stream.resume();
      return;
    }
    const session = stream.session;
    if (session) {
      const st = this.sessions.get(session);
      if (st) {
        st.calls++;
        if (st.idleTimer) {
          clearTimeout(st.idleTimer);
          st.idleTimer = undefined;
        }
      }
    }
    const enc = headers['grpc-encoding'];
    const encoding = typeof enc === 'string' ? enc : 'identity';
    const call = method.requestStream ? new StreamCall(stream, headers, method, this) : new UnaryCall(stream, headers, method, this);
    stream.once('close', () => {
      if (!call.finished) call.markCancelled();
    });
    const timeout = headers['grpc-timeout'];
    if (typeof timeout === 'string') {
      const m = DEADLINE_RE.exec(timeout);
      if (m === null) {
        process.nextTick(() => call.finish({ code: INTERNAL, details: `Invalid grpc-timeout value "${timeout}"` }));
        return;
      }
      call.setDeadline((+m[1]! * UNIT_MS[m[2]!]!) | 0);
    }
    if (method.requestStream) this.runStreaming(call as StreamCall, stream, method, encoding);
    else this.runUnaryLike(call as UnaryCall, stream, method, encoding);
  }

  private deserialize(call: CallBase, method: Method, body: Buffer): { ok: true; msg: unknown } | { ok: false } {
    try {
      return { ok: true, msg: method.requestDeserialize(body) };
    } catch {
      call.finish({ code: INTERNAL, details: 'Error deserializing request' });
      return { ok: false };
    }
  }

  /** Unary and server-streaming: one request message, then the handler. */
  private runUnaryLike(call: UnaryCall, stream: http2.ServerHttp2Stream, method: Method, encoding: string): void {
    let first: Buffer | undefined;
    let chunks: Buffer[] | undefined;
    let size = 0;
    stream.on('data', (c: Buffer) => {
      if (call.finished) return;
      if (first === undefined) first = c;
      else {
        if (chunks === undefined) chunks = [first];
        chunks.push(c);
      }
      size += c.length;
      if (size >= 5) {
        const head = first.length >= 5 ? first : Buffer.concat(chunks!);
        const len = head.readUInt32BE(1);
        if (this.maxMsg !== -1 && len > this.maxMsg) {
          call.finish({ code: RESOURCE_EXHAUSTED, details: `Received message larger than max (${len} vs ${this.maxMsg})` });
          return;
        }
        if (size > 5 + len) {
          const kind = 'server streaming';
          call.finish({ code: UNIMPLEMENTED, details: `Received a second request message for ${kind} method ${method.path}` });
        }
      }
    });
    stream.on('end', () => {
      if (call.finished) return;
      const msg = chunks === undefined ? first : Buffer.concat(chunks, size);
      if (msg === undefined || msg.length < 5) {
        const kind = 'server streaming';
        call.finish({ code: UNIMPLEMENTED, details: `Received no request message for ${kind} method ${method.path}` });
        return;
      }
      const body = decompress(msg, encoding, this.maxMsg);
      if (Buffer.isBuffer(body)) this.startUnary(call, method, body);
      else
        (body as Promise<Buffer>).then(
          (b: Buffer) => this.startUnary(call, method, b),
          (st: Status) => call.finish(st),
        );
    });
  }

  private startUnary(call: UnaryCall, method: Method, body: Buffer): void {
    if (call.finished) return;
    const r = this.deserialize(call, method, body);
    if (!r.ok) return;
    call.request = r.msg;
    if (method.responseStream) {
      // Server streaming: a write-only call object.
      const sc = Object.assign(call, {
        write: StreamCall.prototype.write,
        end: StreamCall.prototype.end,
        destroy: StreamCall.prototype.destroy,
        emit: StreamCall.prototype.emit,
      });
      call.stream.on('drain', () => EventEmitter.prototype.emit.call(call, 'drain'));
      try {
        method.impl(sc);
      } catch {
        call.finish({ code: UNKNOWN, details: 'Unknown error' });
      }
      return;
    }
    try {
      method.impl(call, (err: Status | null, res?: unknown) => this.reply(call, method, err, res));
    } catch (e) {
      call.finish({ code: UNKNOWN, details: e instanceof Error ? e.message : 'Unknown error' });
    }
  }

  private reply(call: UnaryCall, method: Method, err: Status | null | undefined, res: unknown): void {
    if (call.finished) return;
    if (err) {
      call.finish({ code: err.code ?? UNKNOWN, details: err.details ?? err.message, metadata: err.metadata });
      return;
    }
    let buf: Buffer;
    try {
      buf = frame(method.responseSerialize(res));
    } catch {
      call.finish({ code: INTERNAL, details: 'Error serializing response' });
      return;
    }
    call.finish({ code: OK, details: 'OK' }, buf);
  }

  private runStreaming(call: StreamCall, stream: http2.ServerHttp2Stream, method: Method, encoding: string): void {
    const decoder = new Decoder(this.maxMsg);
    const msgs: Buffer[] = [];
    try {
      method.impl(call);
    } catch {
      call.finish({ code: UNKNOWN, details: 'Unknown error' });
      return;
    }
    stream.on('data', (c: Buffer) => {
      if (call.finished) return;
      msgs.length = 0;
      try {
        decoder.write(c, msgs);
      } catch (e) {
        call.finish({ code: RESOURCE_EXHAUSTED, details: (e as Error).message });
        return;
      }
      for (const m of msgs) {
        if (call.finished) return;
        if (m[0] === 1 && encoding !== 'identity') {
          // Compressed: order is kept by holding the half-close until it is decoded.
          call.holdMessage();
          const p = decompress(m, encoding, this.maxMsg) as Promise<Buffer>;
          p.then(
            (b) => {
              const r = this.deserialize(call, method, b);
              if (r.ok) call.pushMessage(r.msg);
              call.releaseMessage();
            },
            (st: Status) => {
              call.finish(st);
              call.releaseMessage();
            },
          );
          continue;
        }
        const r = this.deserialize(call, method, m.subarray(5));
        if (!r.ok) return;
        call.pushMessage(r.msg);
      }
    });
    stream.on('end', () => {
      if (call.finished) return;
      call.pushEnd();
    });
  }

  /** Stops accepting connections; calls `cb` when every session has ended. */
  tryShutdown(cb: (err?: Error) => void): void {
    this.shuttingDown = true;
    this.shutdownCb = () => cb();
    this.server?.close();
    for (const s of this.sessions.keys()) {
      if (!s.closed) s.close();
    }
    this.maybeShutdownDone();
  }

  forceShutdown(): void {
    this.shuttingDown = true;
    this.server?.close();
    for (const s of this.sessions.keys()) {
      if (!s.destroyed) s.destroy();
    }
    this.maybeShutdownDone();
  }

  private maybeShutdownDone(): void {
    if (this.shuttingDown && this.sessions.size === 0 && this.shutdownCb) {
      const cb = this.shutdownCb;
      this.shutdownCb = undefined;
      cb();
    }
  }
}

function splitAddress(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]*):(\d+)$/.exec(address);
  if (!m) throw new Error(`cannot listen on ${address}: not host:port`);
  return { host: m[1] === '' ? '0.0.0.0' : m[1]!, port: Number(m[2]) };
}

void CANCELLED;
void UNAVAILABLE;
void NGHTTP2_CANCEL;
