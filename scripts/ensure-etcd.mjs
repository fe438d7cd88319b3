// Makes sure etcd and etcdctl (3.4 or newer) are on PATH before `npm start` and
// `npm test`. On Debian/Ubuntu, as root, it installs Debian's etcd-server and
// etcd-client with apt-get (without starting the packaged etcd service, which
// would take port 2379); otherwise it says how to install them.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';

const runs = (cmd, args) => spawnSync(cmd, args, { stdio: 'ignore', env: { ...process.env, ETCDCTL_API: '3' } }).status === 0;
const present = () => runs('etcd', ['--version']) && runs('etcdctl', ['version']);

if (present()) process.exit(0);

const canApt = process.getuid?.() === 0 && existsSync('/usr/bin/apt-get');
if (!canApt) {
  console.error(
    'metaetcd needs etcd and etcdctl (3.4 or newer) on PATH.\n' +
      'On Debian/Ubuntu: sudo apt-get install -y etcd-server etcd-client\n' +
      'Elsewhere: https://etcd.io/docs/latest/install/',
  );
  process.exit(1);
}

console.error('etcd not found: installing etcd-server and etcd-client with apt-get');
const policy = '/usr/sbin/policy-rc.d';
const hadPolicy = existsSync(policy);
// Keep the package from starting its own etcd service on 127.0.0.1:2379.
if (!hadPolicy) writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
try {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', 'etcd-server', 'etcd-client']]) {
    const r = spawnSync('apt-get', args, { stdio: 'inherit', env });
    if (r.status !== 0) {
      console.error(`apt-get ${args.join(' ')} failed`);
      process.exit(1);
    }
  }
} finally {
  if (!hadPolicy) rmSync(policy, { force: true });
}
if (!present()) {
  console.error('etcd is still not on PATH after installing it');
  process.exit(1);
}
