// Test certificates made with openssl (EC P-256: quick to generate): CAs and
// certificates they sign, as PEM files in a directory.

import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertPair {
  cert: string;
  key: string;
}

export class CertFactory {
  constructor(readonly dir: string) {}

  private openssl(args: string[]): void {
    execFileSync('openssl', args, { cwd: this.dir, stdio: 'pipe' });
  }

  /** A self-signed CA: `<name>.pem`, `<name>.key`. */
  ca(name: string): CertPair {
    this.openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`]);
    return { cert: join(this.dir, `${name}.pem`), key: join(this.dir, `${name}.key`) };
  }

  /** A certificate signed by `ca` for 127.0.0.1/localhost, usable by servers and clients. */
  sign(ca: CertPair, name: string, ext = 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n'): CertPair {
    writeFileSync(join(this.dir, `${name}.ext`), ext);
    this.openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    this.openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`]);
    return { cert: join(this.dir, `${name}.pem`), key: join(this.dir, `${name}.key`) };
  }
}

/** Replaces `target` with `content` atomically (a temporary file renamed over it), as rotation tools do. */
export function replaceFile(target: string, content: Buffer | string): void {
  const tmp = `${target}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  writeFileSync(tmp, content);
  renameSync(tmp, target);
}

/** SHA-256 fingerprint of a PEM certificate file, as tls's peer certificates give it (fingerprint256). */
export function fingerprint(certFile: string): string {
  return new X509Certificate(readFileSync(certFile)).fingerprint256;
}
