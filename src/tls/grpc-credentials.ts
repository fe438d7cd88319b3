// grpc-js credentials over a TlsSource, through grpc-js's certificate-provider
// API (experimental in 1.14): new connections (client side) and handshakes
// (server side) use the source's newest material. grpc-js's own
// FileWatcherCertificateProvider is not used: it hands over whatever the files
// hold, so a half-written or mismatched pair would break new connections, and
// its timer keeps the process alive.

import { experimental, type ChannelCredentials, type ServerCredentials } from '@grpc/grpc-js';
import { rootCertificates } from 'node:tls';
import type { TlsMaterial, TlsSource } from './reloading-files.js';

type Provider = experimental.CertificateProvider;
type CaListener = experimental.CaCertificateUpdateListener;
type IdListener = experimental.IdentityCertificateUpdateListener;

/**
 * A CertificateProvider that reports the source's material now and on each
 * change. `defaultCa`: the CA to report when the source has none (channel
 * credentials need one; Node's bundled roots are what createSsl(null) trusts).
 */
export function certificateProvider(src: TlsSource, defaultCa?: Buffer): Provider {
  const subs = new Map<CaListener | IdListener, () => void>();
  const ca = (m: TlsMaterial) => {
    const c = m.ca ?? defaultCa;
    return c ? { caCertificate: c } : null;
  };
  const identity = (m: TlsMaterial) => (m.cert && m.key ? { certificate: m.cert, privateKey: m.key } : null);
  const add = <L extends CaListener | IdListener>(listener: L, update: (m: TlsMaterial) => Parameters<L>[0]) => {
    if (subs.has(listener)) return;
    subs.set(listener, src.subscribe((m) => (listener as (u: Parameters<L>[0]) => void)(update(m))));
    // Later than the registration, as grpc-js's own provider does: its server credentials attach their watcher after adding listeners.
    process.nextTick(() => {
      if (subs.has(listener)) (listener as (u: Parameters<L>[0]) => void)(update(src.current()));
    });
  };
  const remove = (listener: CaListener | IdListener) => {
    subs.get(listener)?.();
    subs.delete(listener);
  };
  return {
    addCaCertificateListener: (l) => add(l, ca),
    removeCaCertificateListener: remove,
    addIdentityCertificateListener: (l) => add(l, identity),
    removeIdentityCertificateListener: remove,
  };
}

/** Client credentials: trust the source's CA (Node's roots without one), present its certificate when it has one. */
export function reloadingChannelCredentials(src: TlsSource): ChannelCredentials {
  const m = src.current();
  const provider = certificateProvider(src, Buffer.from(rootCertificates.join('\n')));
  return experimental.createCertificateProviderChannelCredentials(provider, m.cert ? provider : null);
}

/** Server credentials: present the source's certificate; with a CA, require client certificates it signed. */
export function reloadingServerCredentials(src: TlsSource): ServerCredentials {
  const requireClientCert = src.current().ca !== undefined;
  const provider = certificateProvider(src);
  // grpc-js 1.14 passes its first argument on as the identity provider and its second as the CA provider (whatever the declared names say); one provider serves both.
  return experimental.createCertificateProviderServerCredentials(provider, requireClientCert ? provider : null, requireClientCert);
}
