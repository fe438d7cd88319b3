// Unary gRPC calls to one etcd endpoint over Node's own HTTP/2 client, without
// grpc-js's channel stack (resolver, load balancer, interceptors, channelz): the
// proxy makes one or two such calls per client request, and grpc-js spent about
// 2.5 times the CPU of a plain HTTP/2 request on each. Streams (Watch,
// LeaseKeepAlive) stay on grpc-js.
//
// One HTTP/2 session per endpoint, opened on first use and again after it
// closes. A failed connect is not retried for a short, growing back-off, so a
// dead endpoint fails calls at once (Unavailable) instead of queueing them.
// While calls are open the session is pinged every keepalive interval and
// dropped when a ping is not answered in time; an idle session is never pinged
// (etcd answers pings on a connection without calls with GOAWAY too_many_pings).
// Failures reject with grpc-js-shaped ServiceErrors, so callers classify them
// the same way whichever transport carried the call.

import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { connect as netConnect, isIP, type NetConnectOpts } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type SecureClientSessionOptions, type IncomingHttpHeaders, type IncomingHttpStatusHeader } from 'node:http2';

export interface H2Tls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface H2UnaryOptions {
  /** host:port */
  address: string;
  secure: boolean;
  /** Static material, or a function asked for the current material before each new connection (files that may change). */
  tls?: H2Tls | (() => H2Tls);
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
}

const BACKOFF_MS = { first: 100, max: 1000 };
/** Large flow-control windows: member responses (lists) can be many MiB. */
const WINDOW_BYTES = 64 * 1024 * 1024;

const { HTTP2_HEADER_PATH, HTTP2_HEADER_METHOD, HTTP2_HEADER_CONTENT_TYPE, HTTP2_HEADER_TE, HTTP2_HEADER_STATUS } = http2.constants;

export class H2UnaryChannel {
  private session: ClientHttp2Session | undefined;
  private failedUntil = 0;
  private backoffMs = BACKOFF_MS.first;
  private lastError = '';
  private active = 0;
  private pingTimer: NodeJS.Timeout | undefined;
  private readonly url: string;

  constructor(private readonly o: H2UnaryOptions) {
    this.url = `${o.secure ? 'https' : 'http'}://${o.address}`;
  }

  /** Sends one request message (already encoded) and resolves with the response message's bytes. */
  call(path: string, body: Uint8Array, timeoutMs: number): Promise<Buffer> {
    let session: ClientHttp2Session;
    try {
      session = this.connected();
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<Buffer>((resolve, reject) => {
      let stream: ClientHttp2Stream;
      try {
        stream = session.request(
          {
            [HTTP2_HEADER_METHOD]: 'POST',
            [HTTP2_HEADER_PATH]: path,
            [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
            [HTTP2_HEADER_TE]: 'trailers',
            'grpc-timeout': `${Math.max(1, Math.ceil(timeoutMs))}m`,
          },
          { endStream: false },
        );
      } catch (err) {
        this.drop(session, String(err));
        reject(serviceError(Status.UNAVAILABLE, `${this.o.address}: ${String(err)}`));
        return;
      }
      this.opened();
      const call = new UnaryCall(stream, resolve, reject, () => this.closed());
      call.arm(timeoutMs);
      stream.end(frame(body));
    });
  }

  close(): void {
    this.session?.close();
    this.session = undefined;
    this.stopPinging();
  }

  private connected(): ClientHttp2Session {
    const s = this.session;
    if (s && !s.closed && !s.destroyed) return s;
    if (Date.now() < this.failedUntil) throw serviceError(Status.UNAVAILABLE, `${this.o.address}: ${this.lastError || 'not connected'}`);
    const tls = (typeof this.o.tls === 'function' ? this.o.tls() : this.o.tls) ?? {};
    const session = http2.connect(this.url, {
      ...(this.o.secure ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {}),
      // Many calls share the connection: Nagle would hold each small request back until the previous one is acknowledged.
      createConnection: (authority: URL, options: SecureClientSessionOptions) => {
        const host = authority.hostname.replace(/^\[|\]$/g, '');
        const port = Number(authority.port);
        const socket = this.o.secure
          ? tlsConnect({ ...options, host, port, ALPNProtocols: ['h2'], servername: serverName(host) })
          : netConnect({ ...(options as NetConnectOpts), host, port } as NetConnectOpts);
        socket.setNoDelay(true);
        return socket;
      },
      settings: { enablePush: false, initialWindowSize: WINDOW_BYTES },
      maxSessionMemory: 256,
    });
    session.on('connect', () => {
      session.setLocalWindowSize(WINDOW_BYTES);
      this.backoffMs = BACKOFF_MS.first;
    });
    session.on('error', (err: Error) => this.drop(session, err.message));
    session.on('goaway', () => this.drop(session, 'the server sent GOAWAY'));
    session.on('close', () => this.drop(session, 'connection closed'));
    session.unref();
    this.session = session;
    return session;
  }

  /** Forgets a session that failed or ended; calls on it fail on their own 'close'. */
  private drop(session: ClientHttp2Session, why: string): void {
    if (this.session !== session) return;
    this.session = undefined;
    this.lastError = why;
    if (!session.destroyed) session.destroy();
    // Only a session that never connected backs off; a lost connection is retried at once.
    if (session.connecting) {
      this.failedUntil = Date.now() + this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MS.max);
    }
    this.stopPinging();
  }

  private opened(): void {
    if (this.active++ === 0 && !this.pingTimer) {
      this.pingTimer = setInterval(() => this.ping(), this.o.keepaliveTimeMs);
      this.pingTimer.unref();
    }
  }

  private closed(): void {
    if (--this.active === 0) this.stopPinging();
  }

  private stopPinging(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
  }

  private ping(): void {
    const s = this.session;
    if (!s || this.active === 0) return;
    const timer = setTimeout(() => this.drop(s, `keepalive ping not answered within ${this.o.keepaliveTimeoutMs} ms`), this.o.keepaliveTimeoutMs);
    timer.unref();
    s.ping((err) => {
      clearTimeout(timer);
      if (err) this.drop(s, `keepalive ping failed: ${err.message}`);
    });
  }
}

/** One call's response: headers, message bytes, trailers, and the outcome when the stream closes. */
class UnaryCall {
  private chunks: Buffer[] = [];
  private httpStatus = 0;
  private grpcStatus: number | undefined;
  private grpcMessage = '';
  private timer: NodeJS.Timeout | undefined;
  private settled = false;

  constructor(
    private readonly stream: ClientHttp2Stream,
    private readonly resolve: (b: Buffer) => void,
    private readonly reject: (e: ServiceError) => void,
    private readonly done: () => void,
  ) {
    stream.on('response', (h: IncomingHttpHeaders & IncomingHttpStatusHeader) => {
      this.httpStatus = Number(h[HTTP2_HEADER_STATUS] ?? 0);
      this.statusFrom(h); // a trailers-only response carries the status in its headers
    });
    stream.on('data', (chunk: Buffer) => this.chunks.push(chunk));
    stream.on('trailers', (h: IncomingHttpHeaders) => this.statusFrom(h));
    stream.on('error', () => undefined); // the outcome is decided on 'close'
    stream.on('close', () => this.finish());
  }

  arm(timeoutMs: number): void {
    this.timer = setTimeout(() => {
      this.fail(Status.DEADLINE_EXCEEDED, `Deadline exceeded after ${(timeoutMs / 1000).toFixed(3)}s`);
      this.stream.close(http2.constants.NGHTTP2_CANCEL);
    }, timeoutMs);
  }

  private statusFrom(h: IncomingHttpHeaders): void {
    const s = h['grpc-status'];
    if (s === undefined) return;
    this.grpcStatus = Number(s);
    const m = h['grpc-message'];
    if (typeof m === 'string') this.grpcMessage = percentDecode(m);
  }

  private finish(): void {
    if (this.settled) return;
    if (this.grpcStatus === undefined) {
      const code = this.stream.rstCode;
      const why = this.httpStatus !== 0 && this.httpStatus !== 200 ? `HTTP status ${this.httpStatus}` : `stream closed without a status (RST code ${code ?? 'none'})`;
      return this.fail(Status.UNAVAILABLE, why);
    }
    if (this.grpcStatus !== Status.OK) return this.fail(this.grpcStatus, this.grpcMessage);
    const body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    if (body.length < 5 || body.readUInt32BE(1) !== body.length - 5) {
      return this.fail(Status.INTERNAL, `malformed response message (${body.length} bytes)`);
    }
    if (body[0] !== 0) return this.fail(Status.INTERNAL, 'compressed response message without a negotiated encoding');
    this.settle();
    this.resolve(body.subarray(5));
  }

  private fail(code: Status, details: string): void {
    if (this.settled) return;
    this.settle();
    this.reject(serviceError(code, details));
  }

  private settle(): void {
    this.settled = true;
    if (this.timer) clearTimeout(this.timer);
    this.done();
  }
}

/** SNI takes host names only. */
function serverName(host: string): string | undefined {
  return isIP(host) ? undefined : host;
}

function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = 0;
  out.writeUInt32BE(body.length, 1);
  out.set(body, 5);
  return out;
}

function serviceError(code: Status, details: string): ServiceError {
  return Object.assign(new Error(`${code} ${Status[code]}: ${details}`), { code, details, metadata: new Metadata() });
}

function percentDecode(s: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
