// TLS files (CA bundle, certificate, key) read again when they change on disk,
// so certificates can be rotated without a restart (etcd reads its files per
// handshake). Changes are found by stat (inode, size, mtime, ctime) at most once
// per check interval: on demand (current(), e.g. before a new connection) and,
// while someone is subscribed, on an unref'd timer. fs.watch is not used:
// editors and atomic renames (write a temp file, rename it over) make it
// unreliable.
//
// A change is taken only when the new files parse and belong together (the key
// matches the certificate, every CA block is a whole certificate); otherwise the
// previous material stays in use, the rejection is reported once for that state
// of the files, and the files are tried again when they change again (e.g. when
// the second half of a certificate + key rotation lands).

import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createSecureContext } from 'node:tls';

export interface TlsPaths {
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

/** The files' contents (a field is absent when its path is). */
export interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** TLS material that may change while the process runs. */
export interface TlsSource {
  /** The newest valid material; looks at the files first when the last look is older than the check interval. */
  current(): TlsMaterial;
  /** Calls `fn` with every new valid material (not the current one); the files are checked on a timer meanwhile. Returns the unsubscribe function. */
  subscribe(fn: (m: TlsMaterial) => void): () => void;
}

export interface ReloadingTlsFilesOptions {
  /** Least time between two looks at the files, and the timer's period while subscribed. Default 1000 ms. */
  checkIntervalMs?: number;
  /** New files that cannot be used (once per state of the files); the previous material stays. */
  onRejected?: (err: Error) => void;
  /** New material was taken. */
  onReloaded?: () => void;
  now?: () => number;
}

const KINDS = ['ca', 'cert', 'key'] as const;
const DEFAULT_CHECK_INTERVAL_MS = 1000;

export function isTlsSource(v: unknown): v is TlsSource {
  return typeof v === 'object' && v !== null && typeof (v as TlsSource).current === 'function' && typeof (v as TlsSource).subscribe === 'function';
}

/** A fixed TlsSource (material that never changes). */
export function staticTls(m: TlsMaterial): TlsSource {
  return { current: () => m, subscribe: () => () => undefined };
}

export class ReloadingTlsFiles implements TlsSource {
  readonly paths: TlsPaths;
  private material: TlsMaterial;
  /** The files' state the material (or the last no-op look) was read from. */
  private seen: string;
  /** The files' state last rejected: reported once, tried again only after it changes. */
  private rejected: string | undefined;
  private lastCheck: number;
  private readonly listeners = new Set<(m: TlsMaterial) => void>();
  private timer: NodeJS.Timeout | undefined;
  private readonly intervalMs: number;
  private readonly now: () => number;

  /** Reads and checks the files; throws (naming the file) when they cannot be used. */
  constructor(
    paths: TlsPaths,
    private readonly o: ReloadingTlsFilesOptions = {},
  ) {
    this.paths = { ...paths };
    this.intervalMs = o.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
    this.now = o.now ?? Date.now;
    this.seen = this.signature();
    this.material = readMaterial(this.paths);
    validateTls(this.material, this.paths);
    this.lastCheck = this.now();
  }

  current(): TlsMaterial {
    if (this.now() - this.lastCheck >= this.intervalMs) this.check();
    return this.material;
  }

  subscribe(fn: (m: TlsMaterial) => void): () => void {
    this.listeners.add(fn);
    if (!this.timer) {
      this.timer = setInterval(() => this.check(), this.intervalMs);
      this.timer.unref();
    }
    return () => {
      this.listeners.delete(fn);
      if (this.listeners.size === 0) this.stop();
    };
  }

  /** Stops the timer (subscribers get no more updates until one subscribes again). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Looks at the files now; true when new material was taken. */
  check(): boolean {
    this.lastCheck = this.now();
    const sig = this.signature();
    if (sig === this.seen || sig === this.rejected) return false;
    let next: TlsMaterial;
    try {
      next = readMaterial(this.paths);
      validateTls(next, this.paths);
    } catch (err) {
      this.rejected = sig;
      this.o.onRejected?.(err instanceof Error ? err : new Error(String(err)));
      return false;
    }
    this.seen = sig;
    this.rejected = undefined;
    if (sameMaterial(next, this.material)) return false; // touched or rewritten with the same bytes
    this.material = next;
    this.o.onReloaded?.();
    for (const fn of [...this.listeners]) fn(next);
    return true;
  }

  private signature(): string {
    return KINDS.map((k) => {
      const p = this.paths[k];
      if (!p) return '-';
      try {
        const s = statSync(p, { bigint: true });
        return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
      } catch (err) {
        return `missing:${(err as NodeJS.ErrnoException).code ?? ''}`;
      }
    }).join('|');
  }
}

function readMaterial(paths: TlsPaths): TlsMaterial {
  const m: TlsMaterial = {};
  for (const k of KINDS) {
    const p = paths[k];
    if (!p) continue;
    try {
      m[k] = readFileSync(p);
    } catch (err) {
      throw new Error(`cannot read ${p}: ${(err as Error).message}`);
    }
  }
  return m;
}

function sameMaterial(a: TlsMaterial, b: TlsMaterial): boolean {
  return KINDS.every((k) => (a[k] === undefined ? b[k] === undefined : b[k] !== undefined && a[k].equals(b[k])));
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
/** Any whole PEM block (a bundle may hold others, e.g. TRUSTED CERTIFICATE). */
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/**
 * Throws when the material cannot be used: a CA bundle without certificates or
 * with a cut or unparsable one, a certificate that does not parse, a key that
 * does not parse or does not match the certificate.
 */
export function validateTls(m: TlsMaterial, paths: TlsPaths = {}): void {
  if (m.ca) {
    const text = m.ca.toString('latin1');
    const blocks = text.match(PEM_CERT) ?? [];
    if (blocks.length === 0) throw new Error(`${paths.ca ?? 'CA'}: no PEM certificate`);
    if (text.replace(PEM_BLOCK, '').includes('-----BEGIN')) throw new Error(`${paths.ca ?? 'CA'}: a PEM block is cut short`);
    for (const b of blocks) {
      try {
        new X509Certificate(b);
      } catch (err) {
        throw new Error(`${paths.ca ?? 'CA'}: ${(err as Error).message}`);
      }
    }
  }
  if (m.cert || m.key) {
    if (!m.cert || !m.key) throw new Error('a certificate needs its key and a key its certificate');
    try {
      new X509Certificate(m.cert);
    } catch (err) {
      throw new Error(`${paths.cert ?? 'certificate'}: ${(err as Error).message}`);
    }
    try {
      createSecureContext({ cert: m.cert, key: m.key });
    } catch (err) {
      throw new Error(`${paths.cert ?? 'certificate'} and ${paths.key ?? 'key'}: ${(err as Error).message}`);
    }
  }
}
