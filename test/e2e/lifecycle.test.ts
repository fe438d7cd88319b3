// A proxy outlives the script that launched it (`nohup metaetcd … &` from a
// script that then ends), and says why whenever it stops.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { buildIfStale, canConnect, ROOT, sleep, waitUntil } from '../harness/faults.js';
import { freePort } from '../../src/sandbox/etcd-process.js';
import { clientFor } from '../harness/proxy.js';

let set: EtcdSet;
let pid: number | undefined;
const logFile = join(ROOT, `.lifecycle-test-${process.pid}.log`);

before(async () => {
  buildIfStale();
  set = await startEtcdSet({ name: 'lifecycle' });
});

after(async () => {
  if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(logFile, { force: true });
  await set?.stop();
});

test('a proxy started in the background by a shell that exits keeps serving; SIGTERM stops it and logs the reason at warn', async () => {
  const port = await freePort();
  const args = [
    join(ROOT, 'bin', 'metaetcd.js'),
    '--coordinator', set.coordinator.clientUrl,
    '--members', set.members.map((m) => m.clientUrl).join(','),
    '--listen-addr', `127.0.0.1:${port}`,
    '--metrics-port', '0',
    '--workers', '1',
  ];
  // The shell starts the proxy in the background, prints its pid and exits at once.
  const quoted = [process.execPath, ...args].map((a) => `'${a}'`).join(' ');
  const sh = spawnSync('sh', ['-c', `${quoted} > '${logFile}' 2>&1 & echo $!`], { encoding: 'utf8' });
  pid = Number(sh.stdout.trim());
  assert.ok(pid > 0, `a pid from the launcher: ${sh.stdout} ${sh.stderr}`);
  await waitUntil('the proxy listens', () => canConnect(port), 30_000, 50);
  await sleep(1500); // three of the old orphan checks
  assert.ok(alive(pid), `the proxy outlived its launcher:\n${readFileSync(logFile, 'utf8')}`);
  const c = clientFor(`http://127.0.0.1:${port}`);
  try {
    await c.put({ key: Buffer.from('/lifecycle/k'), value: Buffer.from('v') });
    assert.equal((await c.range({ key: Buffer.from('/lifecycle/k') })).kvs[0]?.value.toString(), 'v');
  } finally {
    c.close();
  }
  process.kill(pid, 'SIGTERM');
  const stoppedPid = pid;
  await waitUntil('the proxy exits', () => !alive(stoppedPid), 15_000);
  const lines = readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string; reason?: string });
  const shutdown = lines.find((l) => l.msg === 'shutting down');
  assert.ok(shutdown, `a shutdown line: ${lines.map((l) => l.msg).join(' | ')}`);
  assert.equal(shutdown.level, 40, 'logged at warn');
  assert.match(shutdown.reason ?? '', /SIGTERM/);
});

/** Running (a zombie left for an init that does not reap counts as gone). */
function alive(p: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${p}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
