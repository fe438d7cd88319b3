// Command-line configuration of the proxy. Flag names, meanings and defaults are
// the original metaetcd's (a drop-in replacement), plus a few of ours. Flags are
// parsed the way Go's flag package does: "-name value", "--name value",
// "-name=value" and "--name=value" are all accepted.

import { availableParallelism, hostname } from 'node:os';
import { parseDuration } from './util/duration.js';

export interface ProxyConfig {
  listenAddr: string;
  advertiseClientUrls: string[];
  coordinator: string;
  members: string;
  caCert: string | undefined;
  clientCert: string | undefined;
  clientCertKey: string | undefined;
  serverCert: string | undefined;
  serverCertKey: string | undefined;
  watchTimeoutMs: number;
  watchBufferLen: number;
  watchBufferBytes: number;
  progressNotifyIntervalMs: number;
  metricsPort: number;
  metricsAddr: string;
  logLevel: string;
  maxRequestBytes: number;
  maxTxnOps: number;
  requestTimeoutMs: number;
  fenceAfterMs: number;
  grpcServerKeepaliveMaxIdleMs: number;
  /** Which gRPC server implementation serves clients. */
  grpcServer: 'node' | 'grpc-js';
  /** Concurrent writes to one member go out as one member transaction (docs/notes/write-batching.md). */
  writeBatching: 'on' | 'off';
  grpcServerKeepaliveIntervalMs: number;
  grpcServerKeepaliveTimeoutMs: number;
  grpcClientKeepaliveIntervalMs: number;
  grpcClientKeepaliveTimeoutMs: number;
  /** Processes serving --listen-addr (1: this process serves it alone). */
  workers: number;
}

export type Kind = 'string' | 'int' | 'duration' | 'list';

interface FlagSpec {
  key: keyof ProxyConfig | 'pprofPort';
  kind: Kind;
  help: string;
}

export const PROXY_FLAGS: Record<string, FlagSpec> = {
  'listen-addr': { key: 'listenAddr', kind: 'string', help: 'address to serve the etcd API on (default 127.0.0.1:2379)' },
  'advertise-client-urls': {
    key: 'advertiseClientUrls',
    kind: 'list',
    help: 'comma-separated URLs of this proxy reported by MemberList (default: derived from --listen-addr)',
  },
  coordinator: { key: 'coordinator', kind: 'string', help: 'URL of the coordinator cluster (several endpoints separated by ";")' },
  members: {
    key: 'members',
    kind: 'string',
    help: 'comma-separated member clusters; one cluster may list several endpoints separated by ";"',
  },
  'ca-cert': { key: 'caCert', kind: 'string', help: 'CA used to verify member/coordinator certificates and, with --server-cert, required client certificates' },
  'client-cert': { key: 'clientCert', kind: 'string', help: 'certificate presented to the coordinator and member clusters' },
  'client-cert-key': { key: 'clientCertKey', kind: 'string', help: 'key of --client-cert' },
  'server-cert': { key: 'serverCert', kind: 'string', help: 'certificate presented to clients (TLS is off without it)' },
  'server-cert-key': { key: 'serverCertKey', kind: 'string', help: 'key of --server-cert' },
  'watch-timeout': { key: 'watchTimeoutMs', kind: 'duration', help: 'how long a missing revision may hold back watch events before it is given up (default 10s)' },
  'watch-buffer-len': { key: 'watchBufferLen', kind: 'int', help: 'how many recent watch events to keep in memory (default 1000)' },
  'watch-buffer-bytes': { key: 'watchBufferBytes', kind: 'int', help: 'byte bound of the in-memory watch event buffer (default 64 MiB)' },
  'progress-notify-interval': {
    key: 'progressNotifyIntervalMs',
    kind: 'duration',
    help: 'interval of progress notifications on idle watches that asked for them (default 5s)',
  },
  'metrics-port': { key: 'metricsPort', kind: 'int', help: 'port to serve Prometheus metrics on, 0 disables (default 9090)' },
  'metrics-addr': { key: 'metricsAddr', kind: 'string', help: 'address the metrics server binds (default 127.0.0.1)' },
  v: { key: 'logLevel', kind: 'string', help: 'log level: debug, info, warn, error (default warn)' },
  'max-request-bytes': { key: 'maxRequestBytes', kind: 'int', help: "largest client write accepted, as etcd's flag (default 1572864)" },
  'max-txn-ops': { key: 'maxTxnOps', kind: 'int', help: "most operations per transaction, as etcd's flag (default 128)" },
  'request-timeout': { key: 'requestTimeoutMs', kind: 'duration', help: 'bound on waiting for member clusters within one request (default 5s)' },
  'fence-after': {
    key: 'fenceAfterMs',
    kind: 'duration',
    help: 'how long a revision taken by a write may stay unresolved before readers close it (default 1s)',
  },
  'write-batching': {
    key: 'writeBatching',
    kind: 'string',
    help: 'send the writes that are ready for one member together, as one member transaction: on or off (default on)',
  },
  'grpc-server': { key: 'grpcServer', kind: 'string', help: 'gRPC server implementation: node (lean, on node:http2) or grpc-js (default node)' },
  'grpc-server-keepalive-max-idle': { key: 'grpcServerKeepaliveMaxIdleMs', kind: 'duration', help: 'close client connections idle this long (default 5s; 0 = never)' },
  'grpc-server-keepalive-interval': { key: 'grpcServerKeepaliveIntervalMs', kind: 'duration', help: 'ping clients after this much inactivity (default 10s)' },
  'grpc-server-keepalive-timeout': { key: 'grpcServerKeepaliveTimeoutMs', kind: 'duration', help: 'drop a client that does not answer a ping within (default 20s)' },
  'grpc-client-keepalive-interval': {
    key: 'grpcClientKeepaliveIntervalMs',
    kind: 'duration',
    help: 'ping member clusters this often while calls are open (default 10s; at least 6s, as etcd refuses pings more often than every 5s)',
  },
  'grpc-client-keepalive-timeout': { key: 'grpcClientKeepaliveTimeoutMs', kind: 'duration', help: 'drop a member connection that does not answer a ping within (default 20s)' },
  workers: { key: 'workers', kind: 'int', help: 'worker processes serving --listen-addr, each a whole proxy (default: the cores available)' },
  'pprof-port': { key: 'pprofPort', kind: 'int', help: 'accepted for compatibility with the original; profiling is not served' },
};

export function defaultProxyConfig(): ProxyConfig {
  return {
    listenAddr: '127.0.0.1:2379',
    advertiseClientUrls: [],
    coordinator: '',
    members: '',
    caCert: undefined,
    clientCert: undefined,
    clientCertKey: undefined,
    serverCert: undefined,
    serverCertKey: undefined,
    watchTimeoutMs: 10_000,
    watchBufferLen: 1000,
    watchBufferBytes: 64 * 1024 * 1024,
    progressNotifyIntervalMs: 5000,
    metricsPort: 9090,
    metricsAddr: '127.0.0.1',
    logLevel: 'warn',
    maxRequestBytes: 1.5 * 1024 * 1024,
    maxTxnOps: 128,
    requestTimeoutMs: 5000,
    fenceAfterMs: 1000,
    grpcServerKeepaliveMaxIdleMs: 5000,
    grpcServer: 'node',
    writeBatching: 'on',
    grpcServerKeepaliveIntervalMs: 10_000,
    grpcServerKeepaliveTimeoutMs: 20_000,
    grpcClientKeepaliveIntervalMs: 10_000,
    grpcClientKeepaliveTimeoutMs: 20_000,
    workers: availableParallelism(),
  };
}

export interface ParsedFlags {
  values: Record<string, string>;
  positional: string[];
  help: boolean;
}

/** Splits argv Go-style against a set of known flag names (all of which take a value). */
export function parseFlags(argv: string[], known: Set<string>): ParsedFlags {
  const values: Record<string, string> = {};
  const positional: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, '');
    if (body === 'h' || body === 'help') {
      help = true;
      continue;
    }
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (!known.has(name)) throw new Error(`flag provided but not defined: -${name}`);
    let value: string;
    if (eq >= 0) value = body.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new Error(`flag needs an argument: -${name}`);
      value = next;
      i++;
    }
    values[name] = value;
  }
  return { values, positional, help };
}

/** Applies parsed flag values onto a config object according to a flag table. */
export function applyFlags<T extends object>(target: T, values: Record<string, string>, table: Record<string, { key: string; kind: Kind }>): T {
  const out = target as Record<string, unknown>;
  for (const [name, raw] of Object.entries(values)) {
    const spec = table[name]!;
    switch (spec.kind) {
      case 'string':
        out[spec.key] = raw;
        break;
      case 'int': {
        const n = Number(raw);
        if (!Number.isInteger(n) || n < 0) throw new Error(`invalid value ${JSON.stringify(raw)} for flag -${name}: want a non-negative integer`);
        out[spec.key] = n;
        break;
      }
      case 'duration':
        try {
          out[spec.key] = parseDuration(raw);
        } catch (err) {
          throw new Error(`invalid value ${JSON.stringify(raw)} for flag -${name}: ${(err as Error).message}`);
        }
        break;
      case 'list':
        out[spec.key] = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
        break;
    }
  }
  return target;
}

export function parseProxyArgs(argv: string[]): { config: ProxyConfig; help: boolean; pprofPort: number | undefined } {
  const parsed = parseFlags(argv, new Set(Object.keys(PROXY_FLAGS)));
  if (parsed.positional.length > 0) throw new Error(`unexpected argument ${JSON.stringify(parsed.positional[0])}`);
  const config = applyFlags(defaultProxyConfig(), parsed.values, PROXY_FLAGS);
  const pprof = (config as unknown as { pprofPort?: number }).pprofPort;
  delete (config as unknown as { pprofPort?: number }).pprofPort;
  if (!parsed.help) validateProxyConfig(config);
  return { config, help: parsed.help, pprofPort: pprof };
}

export function validateProxyConfig(c: ProxyConfig): void {
  if (c.coordinator === '') throw new Error('--coordinator is required');
  if (c.members === '') throw new Error('--members is required');
  if (!!c.serverCert !== !!c.serverCertKey) throw new Error('--server-cert and --server-cert-key go together');
  if (!!c.clientCert !== !!c.clientCertKey) throw new Error('--client-cert and --client-cert-key go together');
  if (c.watchBufferLen < 1) throw new Error('--watch-buffer-len must be at least 1');
  if (c.maxTxnOps < 1) throw new Error('--max-txn-ops must be at least 1');
  if (c.workers < 1) throw new Error('--workers must be at least 1');
  if (c.grpcServer !== 'node' && c.grpcServer !== 'grpc-js') throw new Error('--grpc-server must be node or grpc-js');
  if (c.writeBatching !== 'on' && c.writeBatching !== 'off') throw new Error('--write-batching must be on or off');
}

/** Client URLs this proxy advertises: the flag, or the listen address with a usable host. */
export function advertisedUrls(c: ProxyConfig, port: number): string[] {
  if (c.advertiseClientUrls.length > 0) return c.advertiseClientUrls;
  const scheme = c.serverCert ? 'https' : 'http';
  const host = listenHost(c.listenAddr);
  const usable = host === '' || host === '0.0.0.0' || host === '::' || host === '[::]' ? hostname() : host;
  return [`${scheme}://${usable}:${port}`];
}

export function listenHost(addr: string): string {
  const i = addr.lastIndexOf(':');
  return i < 0 ? addr : addr.slice(0, i);
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}
