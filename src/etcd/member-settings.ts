// Settings a member (or coordinator) etcd needs behind metaetcd: it must accept
// the proxy's largest client request plus the envelope and guards the proxy
// adds, and more operations per transaction than clients send (the proxy adds
// guard compares and bookkeeping operations). Used by the sandbox and the tests.

import type { EtcdProcessOptions } from './etcd-process.js';

export function memberEtcdSettings(proxyMaxRequestBytes: number, proxyMaxTxnOps: number): Pick<EtcdProcessOptions, 'maxRequestBytes' | 'extraArgs'> {
  return {
    maxRequestBytes: proxyMaxRequestBytes + 1024 * 1024,
    extraArgs: ['--max-txn-ops', String(Math.max(10_000, proxyMaxTxnOps * 4))],
  };
}
