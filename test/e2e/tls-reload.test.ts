// Certificates are reloaded when their files change, without a restart (etcd
// reads its files per handshake):
//  - towards clients (--server-cert, --server-cert-key), with either server
//    implementation: new connections get the new certificate, open ones carry on,
//    and an unusable replacement (a key of another certificate) keeps the old
//    certificate serving and is logged once;
//  - towards members and coordinator (--ca-cert, --client-cert, --client-cert-key):
//    after a member comes back with a certificate of another CA and trusting only
//    that CA for clients, the proxy's new connections (unary calls and watch
//    streams) use the rotated files.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { pino } from 'pino';
import { startProxy, type ProxyHandle } from '../../src/app.js';
import { defaultProxyConfig, type ProxyConfig } from '../../src/config.js';
import { parseEndpoint } from '../../src/members/endpoints.js';
import { EtcdClient } from '../../src/members/etcd-client.js';
import { Metrics } from '../../src/metrics.js';
import { WatchRequest, type WatchResponse } from '../../src/proto/gen/rpc.js';
import { memberEtcdSettings } from '../../src/sandbox/member-settings.js';
import { defaultScratchRoot, EtcdProcess } from '../../src/sandbox/etcd-process.js';
import { CertFactory, fingerprint, replaceFile, type CertPair } from '../harness/certs.js';
import { etcdctl } from '../harness/etcdctl.js';

let dir: string;
let certs: CertFactory;
let ca1: CertPair;
let ca2: CertPair;
let a: CertPair; // signed by CA1
let b: CertPair; // signed by CA2
const etcds: EtcdProcess[] = [];
const proxies: ProxyHandle[] = [];
const clients: EtcdClient[] = [];

before(() => {
  dir = mkdtempSync(join(defaultScratchRoot(), 'metaetcd-tls-reload-'));
  certs = new CertFactory(dir);
  ca1 = certs.ca('ca1');
  ca2 = certs.ca('ca2');
  a = certs.sign(ca1, 'a');
  b = certs.sign(ca2, 'b');
});

const cleanups: Array<() => void> = [];

after(async () => {
  for (const f of cleanups) f();
  for (const c of clients) c.close();
  await Promise.all(proxies.map((p) => p.stop()));
  await Promise.all(etcds.map((e) => e.stop()));
  rmSync(dir, { recursive: true, force: true });
});

const read = (p: string) => readFileSync(p);

function config(o: Partial<ProxyConfig>): ProxyConfig {
  return { ...defaultProxyConfig(), listenAddr: '127.0.0.1:0', metricsPort: 0, grpcServerKeepaliveMaxIdleMs: 0, ...o };
}

/** Log lines of a proxy, parsed. */
function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      if (process.env.METAETCD_TEST_LOG) process.stderr.write(chunk);
      cb();
    },
  });
  return { log: pino({ level: 'info' }, sink), lines };
}

/** A TLS handshake trusting `ca`; resolves with the fingerprint of the certificate the server presented. */
function presented(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca: read(ca), ALPNProtocols: ['h2'] }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.destroy();
      resolve(fp);
    });
    s.on('error', reject);
  });
}

/** Retries `fn` until it resolves. (Assertions in `fn` carry messages: assert.ok without one makes node read the transpiled source for a message, which can hang.) */
async function eventually<T>(what: string, fn: () => Promise<T>, timeoutMs = 3000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function client(port: number, ca: string): EtcdClient {
  const c = new EtcdClient({ name: `client (${ca})`, endpoints: [parseEndpoint(`https://127.0.0.1:${port}`)], tls: { ca: read(ca) }, requestTimeoutMs: 5000, rawErrors: true });
  clients.push(c);
  return c;
}

async function plainEtcds(prefix: string): Promise<EtcdProcess[]> {
  const list = await Promise.all(
    ['coordinator', 'm0'].map((n) => EtcdProcess.start({ name: `${prefix}-${n}`, dataDir: join(dir, `${prefix}-${n}`), ...memberEtcdSettings(1.5 * 1024 * 1024, 128) })),
  );
  etcds.push(...list);
  return list;
}

for (const impl of ['node', 'grpc-js'] as const) {
  test(`--grpc-server ${impl}: a replaced server certificate is used for new connections; open ones carry on; an unusable one is refused and logged`, async () => {
    const [coordinator, member] = await plainEtcds(`s-${impl}`);
    const live = { cert: join(dir, `server-${impl}.pem`), key: join(dir, `server-${impl}.key`) };
    replaceFile(live.cert, read(a.cert));
    replaceFile(live.key, read(a.key));
    const { log, lines } = capture();
    const proxy = await startProxy(
      config({ coordinator: coordinator!.clientUrl, members: member!.clientUrl, serverCert: live.cert, serverCertKey: live.key, grpcServer: impl }),
      log,
      new Metrics(),
    );
    proxies.push(proxy);
    const port = proxy.port;

    assert.equal(await presented(port, ca1.cert), fingerprint(a.cert));
    const old = client(port, ca1.cert);
    await old.put({ key: Buffer.from('k'), value: Buffer.from('v1') });

    // Rotate to B (another CA): key and certificate each replaced by a rename.
    replaceFile(live.key, read(b.key));
    replaceFile(live.cert, read(b.cert));
    const fp = await eventually('the new certificate is presented', () => presented(port, ca2.cert));
    assert.equal(fp, fingerprint(b.cert));
    await assert.rejects(presented(port, ca1.cert), 'a client trusting only CA1 no longer accepts the server');
    const fresh = client(port, ca2.cert);
    await fresh.put({ key: Buffer.from('k'), value: Buffer.from('v2') });
    const r = await fresh.range({ key: Buffer.from('k') });
    assert.equal(Buffer.from(r.kvs[0]!.value).toString(), 'v2');
    // The connection opened before the rotation still works (a new one would not trust B).
    const r2 = await old.range({ key: Buffer.from('k') });
    assert.equal(Buffer.from(r2.kvs[0]!.value).toString(), 'v2');
    const etcdctlGet = await etcdctl(`https://127.0.0.1:${port}`, ['--cacert', ca2.cert, 'get', 'k', '--print-value-only']);
    assert.equal(etcdctlGet.stdout.trim(), 'v2', etcdctlGet.stderr);
    assert.ok(lines.some((l) => String(l.msg).startsWith('TLS files changed: new connections use them')), 'the reload is logged');

    // Unusable: A's certificate with B's key. B stays; one warning.
    const warnings = () => lines.filter((l) => l.level === 40 && String(l.msg).includes('cannot be used'));
    // (The rotation above may have been seen half done, B's key with A's certificate: count from here.)
    const earlier = warnings().length;
    replaceFile(live.cert, read(a.cert));
    await eventually('the rejected files are logged', async () => assert.equal(warnings().length, earlier + 1));
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(warnings().length, earlier + 1, 'one warning for one state of the files');
    assert.match(String(warnings().at(-1)!.err), /key values mismatch|private key/i);
    assert.equal(await presented(port, ca2.cert), fingerprint(b.cert), 'still B');
    await client(port, ca2.cert).put({ key: Buffer.from('k'), value: Buffer.from('v3') });
    // Fixed (A's key lands): A again.
    replaceFile(live.key, read(a.key));
    assert.equal(await eventually('A is presented again', () => presented(port, ca1.cert)), fingerprint(a.cert));
  });
}

test('members: after a member returns with a certificate of another CA, trusting only that CA for clients, new connections use the rotated --ca-cert and --client-cert', { timeout: 90_000 }, async () => {
  const copy = (from: CertPair, to: CertPair) => {
    replaceFile(to.cert, read(from.cert));
    replaceFile(to.key, read(from.key));
  };
  const bundle = join(dir, 'bundle.pem');
  replaceFile(bundle, Buffer.concat([read(ca1.cert), read(ca2.cert)]));
  // The coordinator trusts both CAs for client certificates and keeps its certificate (A).
  const coordinator = await EtcdProcess.start({
    name: 'c-coordinator',
    dataDir: join(dir, 'c-coordinator'),
    ...memberEtcdSettings(1.5 * 1024 * 1024, 128),
    tls: { cert: a.cert, key: a.key, ca: bundle, clientCertAuth: true, probeCert: a.cert, probeKey: a.key },
  });
  etcds.push(coordinator);
  // The member's files change while it is down: certificate A → B, trusted client CA CA1 → CA2.
  const memberPair = { cert: join(dir, 'member.pem'), key: join(dir, 'member.key') };
  const memberCa = join(dir, 'member-ca.pem');
  copy(a, memberPair);
  replaceFile(memberCa, read(ca1.cert));
  const member = await EtcdProcess.start({
    name: 'c-m0',
    dataDir: join(dir, 'c-m0'),
    ...memberEtcdSettings(1.5 * 1024 * 1024, 128),
    tls: { cert: memberPair.cert, key: memberPair.key, ca: memberCa, clientCertAuth: true, probeCert: memberPair.cert, probeKey: memberPair.key },
  });
  etcds.push(member);
  // The proxy's files: CA1 and client certificate A, then CA1+CA2 and B.
  const proxyPair = { cert: join(dir, 'proxy-client.pem'), key: join(dir, 'proxy-client.key') };
  const proxyCa = join(dir, 'proxy-ca.pem');
  copy(a, proxyPair);
  replaceFile(proxyCa, read(ca1.cert));
  const { log, lines } = capture();
  const proxy = await startProxy(
    config({ coordinator: coordinator.clientUrl, members: member.clientUrl, caCert: proxyCa, clientCert: proxyPair.cert, clientCertKey: proxyPair.key }),
    log,
    new Metrics(),
  );
  proxies.push(proxy);
  const c = new EtcdClient({ name: 'proxy', endpoints: [parseEndpoint(`http://127.0.0.1:${proxy.port}`)], requestTimeoutMs: 5000, rawErrors: true });
  clients.push(c);
  await c.put({ key: Buffer.from('k'), value: Buffer.from('before') });

  // A watch through the proxy: the proxy's member watch stream (grpc-js) must reconnect with the new files too.
  const seen: string[] = [];
  let created = false;
  const w = c.watch();
  w.on('data', (r: WatchResponse) => {
    if (r.created) created = true;
    for (const e of r.events) seen.push(`${Buffer.from(e.kv!.key).toString()}=${Buffer.from(e.kv!.value).toString()}`);
  });
  w.on('error', () => undefined);
  cleanups.push(() => w.cancel());
  w.write(WatchRequest.fromPartial({ requestUnion: { $case: 'createRequest', value: { key: Buffer.from('w/'), rangeEnd: Buffer.from('w0') } } }));
  await eventually('the watch is created', async () => assert.equal(created, true, 'created'), 5000);
  await c.put({ key: Buffer.from('w/1'), value: Buffer.from('before') });
  await eventually('the watch sees the first put', async () => assert.deepEqual(seen, ['w/1=before']), 5000);

  copy(b, proxyPair);
  replaceFile(proxyCa, read(bundle));
  await eventually('the proxy took its new files', async () => assert.ok(lines.some((l) => String(l.msg).startsWith('TLS files changed')), 'reload logged'));
  await member.stop();
  copy(b, memberPair);
  replaceFile(memberCa, read(ca2.cert));
  await member.restart();

  await eventually('a put through the returned member', () => c.put({ key: Buffer.from('k'), value: Buffer.from('after') }), 20_000);
  const r = await c.range({ key: Buffer.from('k') });
  assert.equal(Buffer.from(r.kvs[0]!.value).toString(), 'after');
  await c.put({ key: Buffer.from('w/2'), value: Buffer.from('after') });
  await eventually('the watch sees the put after the member returned', async () => assert.deepEqual(seen.slice(-1), ['w/2=after']), 20_000);
  w.cancel();
});

test('--grpc-server grpc-js with --ca-cert requires client certificates signed by it (certificate-provider credentials)', async () => {
  const [coordinator, member] = await plainEtcds('r-grpcjs');
  const proxy = await startProxy(
    config({ coordinator: coordinator!.clientUrl, members: member!.clientUrl, serverCert: a.cert, serverCertKey: a.key, caCert: ca1.cert, grpcServer: 'grpc-js' }),
    capture().log,
    new Metrics(),
  );
  proxies.push(proxy);
  const endpoint = `https://127.0.0.1:${proxy.port}`;
  const put = await etcdctl(endpoint, ['--cacert', ca1.cert, '--cert', a.cert, '--key', a.key, 'put', 'k', 'v']);
  assert.equal(put.code, 0, put.stderr);
  const anonymous = await etcdctl(endpoint, ['--cacert', ca1.cert, '--dial-timeout', '2s', '--command-timeout', '3s', 'get', 'k'], { timeoutMs: 10_000 });
  assert.notEqual(anonymous.code, 0, 'a client without a certificate must be refused');
  const otherCa = await etcdctl(endpoint, ['--cacert', ca1.cert, '--cert', b.cert, '--key', b.key, '--dial-timeout', '2s', '--command-timeout', '3s', 'get', 'k'], { timeoutMs: 10_000 });
  assert.notEqual(otherCa.code, 0, 'a client certificate of another CA must be refused');
});
