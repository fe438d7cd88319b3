// The unary HTTP/2 channel's handling of the gRPC wire protocol, against a
// loopback HTTP/2 peer that answers in each of the shapes a server may use
// (real etcd is exercised by every other suite).

import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { status as Status } from '@grpc/grpc-js';
import { H2UnaryChannel } from '../../src/members/h2-unary.js';

let server: http2.Http2Server;
let port: number;

function framed(body: Buffer): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

before(async () => {
  server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const path = String(headers[':path']);
    const chunks: Buffer[] = [];
    stream.on('error', () => undefined); // the reset case
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const req = Buffer.concat(chunks);
      switch (path) {
        case '/echo': {
          // The message back in two DATA frames, status in trailers.
          stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
          stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
          const out = framed(req.subarray(5));
          stream.write(out.subarray(0, 3));
          stream.end(out.subarray(3));
          break;
        }
        case '/fail':
          // Trailers-only error with a percent-encoded message.
          stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '9', 'grpc-message': 'etcdserver%3A no%20leader' }, { endStream: true });
          break;
        case '/reset':
          stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
          break;
        case '/hang':
          break;
        default:
          stream.respond({ ':status': 404 }, { endStream: true });
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});

after(() => new Promise<void>((r) => server.close(() => r())));

const channel = () => new H2UnaryChannel({ address: `127.0.0.1:${port}`, secure: false, keepaliveTimeMs: 10_000, keepaliveTimeoutMs: 5000 });

test('a response message split over DATA frames comes back whole; concurrent calls share one session', async () => {
  const c = channel();
  const bodies = Array.from({ length: 20 }, (_, i) => Buffer.from(`message ${i} `.repeat(i + 1)));
  const got = await Promise.all(bodies.map((b) => c.call('/echo', b, 5000)));
  got.forEach((g, i) => assert.deepEqual(g, bodies[i]));
  assert.deepEqual(await c.call('/echo', Buffer.alloc(0), 5000), Buffer.alloc(0), 'an empty message');
  c.close();
});

test('statuses: trailers-only error with a decoded message; HTTP errors and resets are Unavailable', async () => {
  const c = channel();
  await assert.rejects(c.call('/fail', Buffer.from('x'), 5000), (e: { code: number; details: string }) => {
    assert.equal(e.code, Status.FAILED_PRECONDITION);
    assert.equal(e.details, 'etcdserver: no leader');
    return true;
  });
  await assert.rejects(c.call('/nope', Buffer.from('x'), 5000), (e: { code: number; details: string }) => e.code === Status.UNAVAILABLE && /HTTP status 404/.test(e.details));
  await assert.rejects(c.call('/reset', Buffer.from('x'), 5000), (e: { code: number }) => e.code === Status.UNAVAILABLE);
  // The session survives a failed call.
  assert.deepEqual(await c.call('/echo', Buffer.from('after'), 5000), Buffer.from('after'));
  c.close();
});

test('a call past its deadline fails with DeadlineExceeded', async () => {
  const c = channel();
  await assert.rejects(c.call('/hang', Buffer.from('x'), 200), (e: { code: number }) => e.code === Status.DEADLINE_EXCEEDED);
  c.close();
});

test('nothing listening: Unavailable at once, then again without a new connect during the back-off', async () => {
  const probe = http2.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const deadPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const c = new H2UnaryChannel({ address: `127.0.0.1:${deadPort}`, secure: false, keepaliveTimeMs: 10_000, keepaliveTimeoutMs: 5000 });
  await assert.rejects(c.call('/echo', Buffer.from('x'), 5000), (e: { code: number }) => e.code === Status.UNAVAILABLE);
  await assert.rejects(c.call('/echo', Buffer.from('x'), 5000), (e: { code: number; details: string }) => e.code === Status.UNAVAILABLE && e.details.length > 0);
  c.close();
});
