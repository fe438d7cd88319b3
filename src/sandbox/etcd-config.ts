// The configuration of one local etcd process: options as callers give them,
// resolved (ports chosen, a fresh cluster token), and turned into etcd 3.4 flags
// and a hermetic environment.

import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { freePort } from './local-resources.js';

export interface EtcdProcessOptions {
  /** etcd --name; also used in log/error messages. */
  name: string;
  /** Created (recursive) if missing. */
  dataDir: string;
  /** Default '127.0.0.1'. */
  host?: string;
  /** A free loopback port is chosen when absent. */
  clientPort?: number;
  /** A free loopback port is chosen when absent. */
  peerPort?: number;
  /** Passed as --max-request-bytes when set. */
  maxRequestBytes?: number;
  /** Default 'error' (etcd 3.4: --logger=zap --log-level). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  extraArgs?: string[];
  /** Default 'etcd' (from PATH). */
  binary?: string;
  /** Default 30000. */
  startTimeoutMs?: number;
  /** Serve clients over TLS (https) with these PEM files; with clientCertAuth, require client certificates signed by `ca`. */
  tls?: EtcdTls;
}

export interface EtcdTls {
  cert: string;
  key: string;
  ca: string;
  clientCertAuth?: boolean;
  /** Client certificate and key the health probe presents (needed with clientCertAuth). */
  probeCert?: string;
  probeKey?: string;
}

export const DEFAULT_START_TIMEOUT_MS = 30_000;
/** Environment variables etcd would read as flags; dropped so runs are hermetic. */
const ETCD_ENV_KEEP = new Set(['ETCD_UNSUPPORTED_ARCH']);

export interface Config {
  name: string;
  dataDir: string;
  host: string;
  clientPort: number;
  peerPort: number;
  maxRequestBytes: number | undefined;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  extraArgs: string[];
  binary: string;
  startTimeoutMs: number;
  clusterToken: string;
  tls: EtcdTls | undefined;
}

export class PortInUseError extends Error {
  constructor(
    message: string,
    readonly port: number,
  ) {
    super(message);
    this.name = 'PortInUseError';
  }
}

export function validateOptions(opts: EtcdProcessOptions): void {
  if (!opts.name || /[\s=,]/.test(opts.name)) throw new Error(`invalid etcd name ${JSON.stringify(opts.name)}`);
  if (!opts.dataDir) throw new Error(`etcd ${opts.name}: dataDir is required`);
  for (const key of ['clientPort', 'peerPort'] as const) {
    const port = opts[key];
    if (port !== undefined && (!Number.isInteger(port) || port <= 0 || port > 65535)) {
      throw new Error(`etcd ${opts.name}: invalid ${key} ${port}`);
    }
  }
}

export async function resolveConfig(opts: EtcdProcessOptions, host: string): Promise<Config> {
  const clientPort = opts.clientPort ?? (await freePort(host));
  let peerPort = opts.peerPort ?? (await freePort(host));
  while (peerPort === clientPort && opts.peerPort === undefined) peerPort = await freePort(host);
  if (peerPort === clientPort) throw new Error(`etcd ${opts.name}: clientPort and peerPort are both ${clientPort}`);
  return {
    name: opts.name,
    dataDir: opts.dataDir,
    host,
    clientPort,
    peerPort,
    maxRequestBytes: opts.maxRequestBytes,
    logLevel: opts.logLevel ?? 'error',
    extraArgs: opts.extraArgs ?? [],
    binary: opts.binary ?? 'etcd',
    startTimeoutMs: opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
    clusterToken: `${opts.name}-${randomBytes(6).toString('hex')}`,
    tls: opts.tls,
  };
}

/** Retrying with new ports only helps when the busy port is one we chose. */
export function canRetryPorts(opts: EtcdProcessOptions, busyPort: number): boolean {
  return busyPort !== opts.clientPort && busyPort !== opts.peerPort;
}

export function etcdArgs(c: Config): string[] {
  const clientUrl = `${c.tls ? 'https' : 'http'}://${c.host}:${c.clientPort}`;
  const peerUrl = `http://${c.host}:${c.peerPort}`;
  const args = [
    `--name=${c.name}`,
    `--data-dir=${c.dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${c.name}=${peerUrl}`,
    '--initial-cluster-state=new',
    `--initial-cluster-token=${c.clusterToken}`,
    '--logger=zap',
    `--log-level=${c.logLevel}`,
    // 'default' means journald when run under systemd; we want the output.
    '--log-outputs=stderr',
  ];
  if (c.maxRequestBytes !== undefined) args.push(`--max-request-bytes=${c.maxRequestBytes}`);
  if (c.tls) {
    args.push(`--cert-file=${c.tls.cert}`, `--key-file=${c.tls.key}`, `--trusted-ca-file=${c.tls.ca}`);
    if (c.tls.clientCertAuth) args.push('--client-cert-auth');
  }
  return [...args, ...c.extraArgs];
}

export function etcdEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('ETCD_') && !ETCD_ENV_KEEP.has(key)) continue;
    env[key] = value;
  }
  return env;
}

export function isMissingOrEmpty(dir: string): boolean {
  try {
    return readdirSync(dir).length === 0;
  } catch {
    return !existsSync(dir);
  }
}

/** Finds "listen tcp HOST:PORT: bind: address already in use" in etcd's output. */
export function portInUse(output: string, host: string): number | undefined {
  if (!/address already in use/i.test(output)) return undefined;
  const escapedHost = host.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const match = new RegExp(`listen tcp \\[?${escapedHost}\\]?:(\\d+): bind: address already in use`).exec(output);
  return match ? Number(match[1]) : -1;
}
