// Settings a member (or coordinator) etcd needs behind metaetcd: it must accept
// the proxy's largest client request as the proxy sends it on — a key appears
// in the write's guard, its put and its re-read, and small writes are repeated
// across slots (up to 256 KiB) — and more operations per transaction than
// clients send (guard compares and bookkeeping operations). Used by the sandbox
// and the tests; the README tells operators the same.

import type { EtcdProcessOptions } from './etcd-process.js';

export function memberEtcdSettings(proxyMaxRequestBytes: number, proxyMaxTxnOps: number): Pick<EtcdProcessOptions, 'maxRequestBytes' | 'extraArgs'> {
  return {
    maxRequestBytes: 3 * proxyMaxRequestBytes + 1024 * 1024,
    extraArgs: ['--max-txn-ops', String(Math.max(10_000, proxyMaxTxnOps * 4))],
  };
}
