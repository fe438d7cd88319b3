import { startEtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy } from '../harness/proxy.js';
import { KeepAliveStream } from '../lease/lease-helpers.js';
const set = await startEtcdSet({ name: 'karace', oracle: true });
const P = await startTestProxy(set, {});
const N = 70;
for (const [name, url] of [['etcd', set.oracle!.clientUrl], ['proxy', P.url]] as const) {
  let zero = 0, errs = 0;
  for (let i = 0; i < N; i++) {
    const c = clientFor(url, name);
    try {
      const g = await c.leaseGrant({ TTL: 10n });
      const ka = new KeepAliveStream(c);
      const [r] = await Promise.all([ka.ask(g.ID, 5000), c.leaseRevoke({ ID: g.ID })]);
      if (r.TTL === 0n) zero++;
      ka.close();
    } catch (e) { errs++; }
    c.close();
  }
  console.log(`${name}: ${zero}/${N} keep-alives racing a revoke answered TTL 0 (${errs} errors)`);
}
await P.stop(); await set.stop();
