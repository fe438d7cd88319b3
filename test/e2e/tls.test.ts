// TLS both ways: the proxy talks to member and coordinator etcds that require
// client certificates (--ca-cert, --client-cert, --client-cert-key), and serves
// clients over TLS (--server-cert, --server-cert-key), requiring their
// certificates when --ca-cert is given. Without certificates it serves plaintext
// and warns when it listens beyond loopback.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { startProxy, type ProxyHandle } from '../../src/app.js';
import { defaultProxyConfig, type ProxyConfig } from '../../src/config.js';
import { defaultScratchRoot, EtcdProcess } from '../../src/sandbox/etcd-process.js';
import { memberEtcdSettings } from '../../src/sandbox/member-settings.js';
import { silentLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { etcdctl } from '../harness/etcdctl.js';

let dir: string;
let certs: Record<'ca' | 'server' | 'serverKey' | 'client' | 'clientKey', string>;
const etcds: EtcdProcess[] = [];
const proxies: ProxyHandle[] = [];

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA. */
function makeCertificates(): void {
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=metaetcd-test-ca']);
  const sign = (name: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`]);
  };
  sign('server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  sign('client', 'extendedKeyUsage=clientAuth\n');
  certs = {
    ca: join(dir, 'ca.pem'),
    server: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    client: join(dir, 'client.pem'),
    clientKey: join(dir, 'client.key'),
  };
}

async function startTlsEtcd(name: string): Promise<EtcdProcess> {
  const p = await EtcdProcess.start({
    name,
    dataDir: join(dir, name),
    ...memberEtcdSettings(1.5 * 1024 * 1024, 128),
    tls: { cert: certs.server, key: certs.serverKey, ca: certs.ca, clientCertAuth: true, probeCert: certs.client, probeKey: certs.clientKey },
  });
  etcds.push(p);
  return p;
}

async function startPlainEtcds(names: string[]): Promise<EtcdProcess[]> {
  return Promise.all(
    names.map(async (name) => {
      const p = await EtcdProcess.start({ name, dataDir: join(dir, name), ...memberEtcdSettings(1.5 * 1024 * 1024, 128) });
      etcds.push(p);
      return p;
    }),
  );
}

before(async () => {
  dir = mkdtempSync(join(defaultScratchRoot(), 'metaetcd-tls-'));
  makeCertificates();
});

after(async () => {
  await Promise.all(proxies.map((p) => p.stop()));
  await Promise.all(etcds.map((e) => e.stop()));
  rmSync(dir, { recursive: true, force: true });
});

function config(o: Partial<ProxyConfig>): ProxyConfig {
  return { ...defaultProxyConfig(), listenAddr: '127.0.0.1:0', metricsPort: 0, ...o };
}

test('TLS both ways: members and coordinator over TLS with client certificates; clients over TLS with required client certificates', async () => {
  const [coordinator, ...members] = await Promise.all(['coordinator', 'm0', 'm1', 'm2'].map(startTlsEtcd));
  assert.ok(coordinator!.clientUrl.startsWith('https://'));
  const proxy = await startProxy(
    config({
      coordinator: coordinator!.clientUrl,
      members: members.map((m) => m.clientUrl).join(','),
      caCert: certs.ca,
      clientCert: certs.client,
      clientCertKey: certs.clientKey,
      serverCert: certs.server,
      serverCertKey: certs.serverKey,
    }),
    silentLogger(),
    new Metrics(),
  );
  proxies.push(proxy);
  const endpoint = `https://127.0.0.1:${proxy.port}`;
  const tlsArgs = ['--cacert', certs.ca, '--cert', certs.client, '--key', certs.clientKey];

  const put = await etcdctl(endpoint, [...tlsArgs, 'put', 'tls/key', 'secret']);
  assert.equal(put.code, 0, put.stderr);
  const get = await etcdctl(endpoint, [...tlsArgs, 'get', 'tls/key', '--print-value-only']);
  assert.equal(get.stdout.trim(), 'secret');
  const list = await etcdctl(endpoint, [...tlsArgs, 'member', 'list', '-w', 'json']);
  assert.match(list.stdout, new RegExp(`https://127\\.0\\.0\\.1:${proxy.port}`), 'MemberList advertises the https URL');

  // No client certificate: refused during the handshake.
  const anonymous = await etcdctl(endpoint, ['--cacert', certs.ca, '--dial-timeout', '2s', '--command-timeout', '3s', 'get', 'tls/key'], { timeoutMs: 10_000 });
  assert.notEqual(anonymous.code, 0, 'a client without a certificate must be refused');
  // Plaintext to a TLS port: refused.
  const plain = await etcdctl(`http://127.0.0.1:${proxy.port}`, ['--dial-timeout', '2s', '--command-timeout', '3s', 'get', 'tls/key'], { timeoutMs: 10_000 });
  assert.notEqual(plain.code, 0, 'plaintext must not be served on a TLS port');
});

test('TLS towards clients without --ca-cert: no client certificate needed (members over plain http)', async () => {
  const plainEtcds = await startPlainEtcds(['p-coordinator', 'p-m0', 'p-m1']);
  const proxy = await startProxy(
    config({
      coordinator: plainEtcds[0]!.clientUrl,
      members: plainEtcds.slice(1).map((m) => m.clientUrl).join(','),
      serverCert: certs.server,
      serverCertKey: certs.serverKey,
    }),
    silentLogger(),
    new Metrics(),
  );
  proxies.push(proxy);
  const endpoint = `https://127.0.0.1:${proxy.port}`;
  const put = await etcdctl(endpoint, ['--cacert', certs.ca, 'put', 'k', 'v']);
  assert.equal(put.code, 0, put.stderr);
  const get = await etcdctl(endpoint, ['--cacert', certs.ca, 'get', 'k', '--print-value-only']);
  assert.equal(get.stdout.trim(), 'v');
});

test('plaintext beyond loopback is served with a warning; plaintext on loopback without one', async () => {
  const plainEtcds = await startPlainEtcds(['w-coordinator', 'w-m0']);
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const log = pino({ level: 'warn' }, sink);
  const base = { coordinator: plainEtcds[0]!.clientUrl, members: plainEtcds[1]!.clientUrl };
  proxies.push(await startProxy(config({ ...base, listenAddr: '127.0.0.1:0' }), log, new Metrics()));
  assert.ok(!lines.some((l) => l.includes('plaintext beyond loopback')), 'no warning on loopback');
  proxies.push(await startProxy(config({ ...base, listenAddr: '0.0.0.0:0' }), log, new Metrics()));
  assert.ok(lines.some((l) => l.includes('plaintext beyond loopback')), 'a warning when listening on every interface');
});
