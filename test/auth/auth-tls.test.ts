// Client-certificate users: with client certificates required (etcd
// --client-cert-auth; the proxy's --ca-cert with --server-cert), a call with no
// token is made as the certificate's CN. The same etcdctl commands against a
// plain etcd and the proxy, compared.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startProxy, type ProxyHandle } from '../../src/app.js';
import { defaultProxyConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { defaultScratchRoot, EtcdProcess } from '../../src/sandbox/etcd-process.js';
import { memberEtcdSettings } from '../../src/sandbox/member-settings.js';
import { etcdctl, type EtcdctlResult } from '../harness/etcdctl.js';

type Target = 'oracle' | 'proxy';
const TARGETS: Target[] = ['oracle', 'proxy'];
let dir: string;
const etcds: EtcdProcess[] = [];
let proxy: ProxyHandle | undefined;
const endpoint: Record<Target, string> = { oracle: '', proxy: '' };

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

function sign(name: string, cn: string, ext: string): void {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`]);
}

const file = (n: string) => join(dir, n);
const as = (who: 'root' | 'alice') => ['--cacert', file('ca.pem'), '--cert', file(`${who}.pem`), '--key', file(`${who}.key`)];

before(async () => {
  dir = mkdtempSync(join(defaultScratchRoot(), 'metaetcd-auth-tls-'));
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=metaetcd-test-ca']);
  sign('server', 'server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  sign('root', 'root', 'extendedKeyUsage=clientAuth\n');
  sign('alice', 'alice', 'extendedKeyUsage=clientAuth\n');
  const settings = memberEtcdSettings(1.5 * 1024 * 1024, 128);
  const [oracle, coordinator, m0, m1] = await Promise.all([
    EtcdProcess.start({
      name: 'oracle',
      dataDir: file('oracle'),
      ...settings,
      tls: { cert: file('server.pem'), key: file('server.key'), ca: file('ca.pem'), clientCertAuth: true, probeCert: file('root.pem'), probeKey: file('root.key') },
    }),
    ...['coordinator', 'm0', 'm1'].map((name) => EtcdProcess.start({ name, dataDir: file(name), ...settings })),
  ]);
  etcds.push(oracle!, coordinator!, m0!, m1!);
  proxy = await startProxy(
    {
      ...defaultProxyConfig(),
      listenAddr: '127.0.0.1:0',
      metricsPort: 0,
      coordinator: coordinator!.clientUrl,
      members: [m0!.clientUrl, m1!.clientUrl].join(','),
      serverCert: file('server.pem'),
      serverCertKey: file('server.key'),
      caCert: file('ca.pem'),
    },
    silentLogger(),
    new Metrics(),
  );
  endpoint.oracle = oracle!.clientUrl;
  endpoint.proxy = `https://127.0.0.1:${proxy.port}`;
});

after(async () => {
  await proxy?.stop();
  await Promise.all(etcds.map((e) => e.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function shape(t: Target, r: EtcdctlResult): { code: number | null; stdout: string; stderr: string } {
  const stderr = r.stderr
    .split('\n')
    .filter((l) => l.length > 0 && !l.startsWith('{"level"'))
    .join('\n');
  return { code: r.code, stdout: r.stdout, stderr: stderr.split(endpoint[t]).join('<endpoint>') };
}

async function same(args: string[]): Promise<void> {
  const out = {} as Record<Target, EtcdctlResult>;
  // Generous timeouts: etcdctl authenticates within its dial timeout, which a loaded machine can exceed.
  for (const t of TARGETS) out[t] = await etcdctl(endpoint[t], ['--dial-timeout=15s', '--command-timeout=20s', ...args], { timeoutMs: 60_000 });
  assert.deepEqual(shape('proxy', out.proxy), shape('oracle', out.oracle), `etcdctl ${args.join(' ')}`);
}

test('with auth enabled, a call without a token is made as the client certificate CN', async () => {
  await same([...as('root'), 'user', 'add', 'root:rootpw']);
  await same([...as('root'), 'auth', 'enable']);
  await same([...as('root'), 'user', 'add', 'alice:a']); // CN root: an admin
  await same([...as('root'), 'role', 'add', 'r1']);
  await same([...as('root'), 'role', 'grant-permission', 'r1', 'readwrite', 'a']);
  await same([...as('root'), 'user', 'grant-role', 'alice', 'r1']);
  await same([...as('root'), 'put', 'b', '1']);
  await same([...as('alice'), 'put', 'a', '1']);
  await same([...as('alice'), 'get', 'a']);
  await same([...as('alice'), 'get', 'b']);
  await same([...as('alice'), 'user', 'list']);
  await same([...as('alice'), '--user', 'root:rootpw', 'user', 'list']); // a token wins over the CN
  await same([...as('root'), 'role', 'revoke-permission', 'r1', 'a']);
  await same([...as('alice'), 'get', 'a']);
  await same([...as('root'), 'auth', 'disable']);
  await same([...as('alice'), 'get', 'b']);
});
