// Client TLS material from the proxy's flags (--ca-cert, --client-cert, --client-cert-key).

import { readFileSync } from 'node:fs';
import type { ClientTls, EtcdClient } from '../../members/etcd-client.js';

export interface TlsFiles {
  caCert?: string | undefined;
  clientCert?: string | undefined;
  clientCertKey?: string | undefined;
}

export function loadTls(t: TlsFiles): ClientTls {
  const tls: ClientTls = {};
  if (t.caCert) tls.ca = readFileSync(t.caCert);
  if (t.clientCert) tls.cert = readFileSync(t.clientCert);
  if (t.clientCertKey) tls.key = readFileSync(t.clientCertKey);
  return tls;
}

export function urls(c: EtcdClient): string {
  return c.endpoints.map((e) => e.url).join(';');
}
