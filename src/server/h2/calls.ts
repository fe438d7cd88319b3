// The call objects handlers receive, shaped as grpc-js's: a unary call (request,
// metadata, cancelled, getPeer) and a streaming call (data/end/error/cancelled/drain
// events, write with backpressure, end, destroy, emit('error', status)).

import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import { Metadata } from '@grpc/grpc-js';
import { DEADLINE_EXCEEDED, INTERNAL, OK, OK_TRAILERS, RESPOND_OPTS, RESPONSE_HEADERS, UNKNOWN, trailersOf, type Method, type Status } from './wire.js';
import { framed } from '../../proto/grpc-frame.js';

/** What a call tells the server that owns its connection. */
export interface CallHost {
  callEnded(s: http2.Http2Session | undefined): void;
}

const {
  HTTP2_HEADER_CONTENT_TYPE,
  HTTP2_HEADER_STATUS,
} = http2.constants;

/** State shared by unary and streaming calls. */
export class CallBase extends EventEmitter {
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
    protected readonly server: CallHost,
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

export class UnaryCall extends CallBase {
  request: unknown = undefined;
}

export class StreamCall extends CallBase {
  private halfClosed = false;
  private inflight = 0;
  private pendingEnd = false;

  constructor(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, method: Method, server: CallHost) {
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
      buf = framed(this.method.responseSerialize(msg));
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

