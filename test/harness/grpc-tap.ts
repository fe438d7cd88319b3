// A TCP relay in front of an etcd (plain-text gRPC over HTTP/2) that reads the
// client-to-server direction as HTTP/2 frames, splits DATA frames into gRPC
// messages, and calls the test with every request message before forwarding
// the frame that completes it. While the callback runs, nothing more of that
// connection is forwarded; so a test can act at an exact point of a
// conversation — e.g. SIGSTOP a member once a proxy has sent one particular
// transaction and before it reaches its etcd — without any hook in the proxy.
// The server-to-client direction is passed through untouched.
//
// Used by test/faults/cross-member-crash.test.ts: a proxy started with
// --members naming the relay instead of the member (the members' identity is
// in their data, not their address, so the proxy cannot tell).

import { createConnection, createServer, type Server, type Socket } from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const DATA = 0;
const PADDED = 0x8;

export type TapCallback = (message: Buffer) => void | Promise<void>;

export class GrpcTap {
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listens on a free loopback port, relaying to `targetUrl` (http://host:port). */
  static async start(targetUrl: string, onMessage: TapCallback): Promise<GrpcTap> {
    const target = new URL(targetUrl);
    const server = createServer();
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
    });
    const tap = new GrpcTap(server, port);
    server.on('connection', (client) => tap.relay(client, target, onMessage));
    return tap;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Stops listening and cuts every relayed connection. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: Socket, target: URL, onMessage: TapCallback): void {
    const upstream = createConnection({ host: target.hostname, port: Number(target.port) });
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    let pending = Buffer.alloc(0);
    let prefaceSeen = false;
    const streams = new Map<number, Buffer>();
    let chain = Promise.resolve();
    client.on('data', (chunk: Buffer) => {
      chain = chain.then(async () => {
        pending = Buffer.concat([pending, chunk]);
        if (!prefaceSeen) {
          if (pending.length < PREFACE.length) return;
          prefaceSeen = true;
          upstream.write(pending.subarray(0, PREFACE.length));
          pending = pending.subarray(PREFACE.length);
        }
        while (pending.length >= 9) {
          const length = pending.readUIntBE(0, 3);
          if (pending.length < 9 + length) break;
          const frame = pending.subarray(0, 9 + length);
          pending = pending.subarray(9 + length);
          const [type, flags] = [frame[3]!, frame[4]!];
          const stream = frame.readUInt32BE(5) & 0x7fffffff;
          if (type === DATA) {
            let payload = frame.subarray(9);
            if (flags & PADDED) payload = payload.subarray(1, payload.length - payload[0]!);
            let buf = Buffer.concat([streams.get(stream) ?? Buffer.alloc(0), payload]);
            while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
              const len = buf.readUInt32BE(1);
              const message = Buffer.from(buf.subarray(5, 5 + len));
              buf = buf.subarray(5 + len);
              try {
                await onMessage(message);
              } catch {
                // the test's callback reports its own failures
              }
            }
            streams.set(stream, buf);
          }
          upstream.write(frame);
        }
      });
    });
  }
}
