// A member cluster that comes back after a kill -9 is writable as soon as it is
// readable: a write that finds the member's watch stream still down asks the
// stream to reconnect at once and waits for it (within the request timeout),
// instead of failing while reads already succeed. While the member is down,
// writes to it still fail with Unavailable (member-outage.test.ts bounds how fast).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { EtcdClient } from '../../src/members/etcd-client.js';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { codeOf, describeErr, killHard, sleep, Status, timed } from '../harness/faults.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import { keysOnMember } from '../lease/lease-helpers.js';

const REQUEST_TIMEOUT_MS = 3000;

let set: EtcdSet;
let P: TestProxy;
let c: EtcdClient;

before(async () => {
  set = await startEtcdSet({ name: 'member-return' });
  P = await startTestProxy(set, { requestTimeoutMs: REQUEST_TIMEOUT_MS });
  c = clientFor(P.url, 'proxy', 20_000);
});

after(async () => {
  c?.close();
  await P?.stop();
  await set?.stop();
});

test('after a member restarts, the first write following the first successful read succeeds; while it is down, writes fail with Unavailable', { timeout: 90_000 }, async () => {
  const [key] = keysOnMember(P.handle.router, '/return/k', 0, 1);
  await c.put({ key: key!, value: Buffer.from('before') });
  for (let round = 0; round < 3; round++) {
    await killHard(set.members[0]!);
    const down = await timed(() => c.put({ key: key!, value: Buffer.from('down') }));
    assert.equal(codeOf(down.err), Status.UNAVAILABLE, `a write while the member is down: ${describeErr(down.err)}`);
    // Down long enough for the stream's reconnect back-off to grow to its longest.
    await sleep(3500);
    await set.members[0]!.restart();
    // The first read that works …
    for (;;) {
      try {
        await c.range({ key: key! });
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    // … is followed by a write that works.
    const put = await timed(() => c.put({ key: key!, value: Buffer.from(`after ${round}`) }));
    assert.equal(put.err, undefined, `round ${round}: the first write after the first successful read: ${describeErr(put.err)}`);
    assert.equal((await c.range({ key: key! })).kvs[0]?.value.toString(), `after ${round}`);
  }
});
