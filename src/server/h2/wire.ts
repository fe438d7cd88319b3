// gRPC's wire format over HTTP/2 for the lean server: status codes, the 5-byte
// message prefix (framing and an incremental decoder), grpc-message encoding,
// trailers, deadlines and request decompression.

import http2 from 'node:http2';
import zlib from 'node:zlib';

const { HTTP2_HEADER_CONTENT_TYPE, HTTP2_HEADER_STATUS } = http2.constants;
import type { Metadata } from '@grpc/grpc-js';

export interface Status {
  code?: number | undefined;
  details?: string | undefined;
  message?: string | undefined;
  metadata?: Metadata | null | undefined;
}

export interface Method {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestDeserialize: (b: Buffer) => unknown;
  responseSerialize: (m: any) => Buffer;
  impl: (...args: any[]) => void;
}


export const OK = 0;
export const CANCELLED = 1;
export const UNKNOWN = 2;
export const DEADLINE_EXCEEDED = 4;
export const RESOURCE_EXHAUSTED = 8;
export const UNIMPLEMENTED = 12;
export const INTERNAL = 13;
export const UNAVAILABLE = 14;

export const RESPONSE_HEADERS = {
  [HTTP2_HEADER_STATUS]: 200,
  [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
  'grpc-accept-encoding': 'identity,deflate,gzip',
  'grpc-encoding': 'identity',
};
export const RESPOND_OPTS = { waitForTrailers: true };
export const DEADLINE_RE = /^(\d{1,8})([HMSmun])$/;
export const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
export const WINDOW = 64 * 1024 * 1024;

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

export const OK_TRAILERS: http2.OutgoingHttpHeaders = { 'grpc-status': '0', 'grpc-message': 'OK' };

export function trailersOf(st: Status): http2.OutgoingHttpHeaders {
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
export class Decoder {
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

export function decompress(msg: Buffer, encoding: string, max: number): Promise<Buffer> | Buffer {
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
