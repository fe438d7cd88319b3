// Microbenchmark (not a test): server CPU µs per unary Range, grpc-js Server vs
// the lean node:http2 server (src/server/h2), with the same handler. The server
// runs in a child process that reports its own CPU time; the client is plain
// node:http2 (many concurrent calls over a few connections).
//   node --import tsx bench/h2-server.ts [calls] [connections] [concurrency]

import { fork } from 'node:child_process';
import http2 from 'node:http2';
import { fileURLToPath } from 'node:url';
import { KVService, RangeRequest, RangeResponse } from '../src/proto/gen/rpc.js';
import { withRequestSizes } from '../src/server/request-size.js';
import { addService, bind, createGrpcServer, serverCredentials } from '../src/server/grpc-server.js';

const self = fileURLToPath(import.meta.url);

async function child(impl: 'node' | 'grpc-js' | 'raw'): Promise<void> {
  if (impl === 'raw') return rawChild();
  const o = { maxRequestBytes: 1.5 * 1024 * 1024, keepaliveIntervalMs: 10_000, keepaliveTimeoutMs: 20_000, maxIdleMs: 0, impl };
  const server = createGrpcServer(o);
  const resp = RangeResponse.fromPartial({
    header: { clusterId: '1', memberId: '2', revision: '100', raftTerm: '3' },
    kvs: [{ key: Buffer.from('/registry/pods/default/x'), value: Buffer.alloc(200, 1), createRevision: '5', modRevision: '9', version: '2' }],
    count: '1',
  });
  const handler = (call: { request: unknown }, cb: (e: null, r: unknown) => void) => {
    void call.request;
    Promise.resolve().then(() => cb(null, resp));
  };
  addService(server, withRequestSizes(KVService), { range: handler } as never);
  reportTo(await bind(server, '127.0.0.1:0', serverCredentials(o)));
}

/** The floor: bare node:http2 answering every stream with a fixed response (no gRPC at all). */
async function rawChild(): Promise<void> {
  const srv = http2.createServer();
  const reply = Buffer.alloc(300, 0);
  srv.on('stream', (st) => {
    st.on('data', () => {});
    st.on('end', () => {
      st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      st.once('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'OK' }));
      st.end(reply);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  reportTo((srv.address() as { port: number }).port);
}

function reportTo(port: number): void {
  let start = process.cpuUsage();
  process.on('message', (m: string) => {
    if (m === 'reset') {
      start = process.cpuUsage();
      process.send!({ reset: true });
    } else if (m === 'cpu') {
      const d = process.cpuUsage(start);
      process.send!({ cpu: d.user + d.system });
    }
  });
  process.send!({ port });
}

async function run(impl: 'node' | 'grpc-js' | 'raw', calls: number, conns: number, conc: number): Promise<number> {
  const c = fork(self, ['child', impl], { execArgv: ['--import', 'tsx'] });
  const ask = (m: string) => new Promise<any>((res) => c.once('message', res).send(m));
  const port: number = await new Promise((res) => c.once('message', (m: any) => res(m.port)));
  const sessions = Array.from({ length: conns }, () => http2.connect(`http://127.0.0.1:${port}`));
  const body = Buffer.from(RangeRequest.encode(RangeRequest.fromPartial({ key: Buffer.from('/registry/pods/default/x') })).finish());
  const framed = Buffer.alloc(5 + body.length);
  framed.writeUInt32BE(body.length, 1);
  body.copy(framed, 5);
  const one = (s: http2.ClientHttp2Session) =>
    new Promise<void>((res, rej) => {
      const st = s.request({ ':method': 'POST', ':path': '/etcdserverpb.KV/Range', 'content-type': 'application/grpc', te: 'trailers' });
      st.on('data', () => {});
      st.on('trailers', (t) => (t['grpc-status'] === '0' ? undefined : rej(new Error(String(t['grpc-message'])))));
      st.on('response', (h) => (h['grpc-status'] !== undefined && h['grpc-status'] !== '0' ? rej(new Error(String(h['grpc-message']))) : undefined));
      st.on('close', () => res());
      st.on('error', rej);
      st.end(framed);
    });
  const batch = async (n: number) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: conc }, async (_, w) => {
        while (next < n) {
          next++;
          await one(sessions[w % conns]!);
        }
      }),
    );
  };
  await batch(Math.min(5000, calls)); // warm-up
  await ask('reset');
  const t0 = performance.now();
  await batch(calls);
  const wall = performance.now() - t0;
  const { cpu } = await ask('cpu');
  for (const s of sessions) s.close();
  c.kill();
  console.log(`${impl.padEnd(7)} ${calls} calls, ${conns} conns, ${conc} in flight: server CPU ${(cpu / calls).toFixed(1)} µs/call, ${(calls / (wall / 1000)).toFixed(0)} calls/s`);
  return cpu / calls;
}

if (process.argv[2] === 'child') {
  void child(process.argv[3] as 'node' | 'grpc-js' | 'raw');
} else {
  const [calls = 30000, conns = 4, conc = 64] = process.argv.slice(2).map(Number);
  for (let i = 0; i < 2; i++) {
    await run('grpc-js', calls, conns, conc);
    await run('node', calls, conns, conc);
    await run('raw', calls, conns, conc);
  }
}
