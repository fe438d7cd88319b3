// A lean gRPC server on node:http2: the subset of grpc-js's Server that the
// proxy uses (addService, listen, tryShutdown, forceShutdown), with handlers
// called as grpc-js calls them (unary: handler(call, callback); streaming: a
// Duplex-like call with data/end/error/cancelled/drain events, write/end, and
// emit('error', status) ending the call with that status). Status codes and
// texts follow grpc-js where clients or tests can see them. Call objects are in
// calls.ts, the wire format in wire.ts, session keepalive and idle close in
// sessions.ts.

import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { ServiceDefinition } from '@grpc/grpc-js';
import type { TlsMaterial, TlsSource } from '../../tls/reloading-files.js';
import { CallBase, StreamCall, UnaryCall } from './calls.js';
import { Sessions } from './sessions.js';
import { framed } from '../../proto/grpc-frame.js';
import { DEADLINE_RE, Decoder, INTERNAL, OK, RESOURCE_EXHAUSTED, UNIMPLEMENTED, UNIT_MS, UNKNOWN, WINDOW, decompress, encodeGrpcMessage, type Method, type Status } from './wire.js';

const {
  HTTP2_HEADER_PATH,
  HTTP2_HEADER_CONTENT_TYPE,
  HTTP2_HEADER_STATUS,
} = http2.constants;

export interface H2ServerOptions {
  /** Largest request message (bytes, excluding the 5-byte prefix); -1 = unbounded. */
  maxReceiveMessageLength: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  /** Close connections without calls for this long; 0 = never. */
  maxIdleMs: number;
  /**
   * Certificate and key (and, with a CA, required client certificates). New
   * material from the source is used for new connections (setSecureContext);
   * connections already open keep theirs. Whether client certificates are
   * required is decided at listen (a CA then or not).
   */
  tls?: TlsSource | undefined;
}

export class H2Server {
  private readonly methods = new Map<string, Method>();
  private server: http2.Http2Server | http2.Http2SecureServer | undefined;
  private readonly sessions: Sessions;
  private shuttingDown = false;
  private shutdownCb: (() => void) | undefined;
  private readonly maxMsg: number;
  private unsubscribeTls: (() => void) | undefined;

  constructor(private readonly o: H2ServerOptions) {
    this.maxMsg = o.maxReceiveMessageLength;
    this.sessions = new Sessions(o, () => this.maybeShutdownDone());
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
      const tls = this.o.tls.current();
      const secure = http2.createSecureServer({
        ...common,
        ...secureContextOptions(tls),
        ...(tls.ca ? { requestCert: true, rejectUnauthorized: true } : {}),
        ALPNProtocols: ['h2'],
        allowHTTP1: false,
      });
      // The source only hands over material that makes a context; should one still fail, the previous context stays.
      this.unsubscribeTls = this.o.tls.subscribe((m) => {
        try {
          secure.setSecureContext(secureContextOptions(m));
        } catch {
          /* keep the previous context */
        }
      });
      srv = secure;
    } else {
      srv = http2.createServer(common);
    }
    this.server = srv;
    // Replies to many concurrent calls share a connection: send each at once (no Nagle).
    srv.on('connection', (socket: Socket) => socket.setNoDelay(true));
    srv.on('session', (s: http2.Http2Session) => this.sessions.add(s, this.shuttingDown));
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
    this.sessions.callStarted(stream.session);
    const enc = headers['grpc-encoding'];
    const encoding = typeof enc === 'string' ? enc : 'identity';
    const call = method.requestStream ? new StreamCall(stream, headers, method, this.sessions) : new UnaryCall(stream, headers, method, this.sessions);
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
      buf = framed(method.responseSerialize(res));
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
    this.stopTls();
    this.server?.close();
    this.sessions.closeAll(false);
    this.maybeShutdownDone();
  }

  forceShutdown(): void {
    this.shuttingDown = true;
    this.stopTls();
    this.server?.close();
    this.sessions.closeAll(true);
    this.maybeShutdownDone();
  }

  private stopTls(): void {
    this.unsubscribeTls?.();
    this.unsubscribeTls = undefined;
  }

  private maybeShutdownDone(): void {
    if (this.shuttingDown && this.sessions.size === 0 && this.shutdownCb) {
      const cb = this.shutdownCb;
      this.shutdownCb = undefined;
      cb();
    }
  }
}

function secureContextOptions(m: TlsMaterial): { cert?: Buffer; key?: Buffer; ca?: Buffer } {
  return { ...(m.cert ? { cert: m.cert } : {}), ...(m.key ? { key: m.key } : {}), ...(m.ca ? { ca: m.ca } : {}) };
}

function splitAddress(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]*):(\d+)$/.exec(address);
  if (!m) throw new Error(`cannot listen on ${address}: not host:port`);
  return { host: m[1] === '' ? '0.0.0.0' : m[1]!, port: Number(m[2]) };
}

