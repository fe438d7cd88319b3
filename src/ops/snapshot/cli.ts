// `metaetcd snapshot save|restore FILE [flags]`.

import { applyFlags, defaultProxyConfig, parseFlags, type ProxyConfig } from '../../config.js';
import { usage } from '../../lifecycle.js';
import { createLogger } from '../../log.js';
import { restoreToEtcd, restoreToMetaCluster } from './restore.js';
import { saveSnapshot } from './save.js';

type Kind = 'string' | 'duration' | 'int';

interface SnapshotFlags {
  coordinator: string;
  members: string;
  etcd: string;
  caCert: string | undefined;
  clientCert: string | undefined;
  clientCertKey: string | undefined;
  requestTimeoutMs: number;
  pageSize: number;
  logLevel: string;
}

const FLAGS: Record<string, { key: keyof SnapshotFlags; kind: Kind; help: string }> = {
  coordinator: { key: 'coordinator', kind: 'string', help: 'URL of the coordinator cluster (several endpoints separated by ";")' },
  members: { key: 'members', kind: 'string', help: 'comma-separated member clusters; one cluster may list several endpoints separated by ";"' },
  etcd: { key: 'etcd', kind: 'string', help: 'restore only: one plain etcd to restore into instead (revisions are renumbered)' },
  'ca-cert': { key: 'caCert', kind: 'string', help: 'CA used to verify etcd certificates' },
  'client-cert': { key: 'clientCert', kind: 'string', help: 'certificate presented to the etcd clusters' },
  'client-cert-key': { key: 'clientCertKey', kind: 'string', help: 'key of --client-cert' },
  'request-timeout': { key: 'requestTimeoutMs', kind: 'duration', help: 'bound on each request to the etcd clusters (default 30s)' },
  'page-size': { key: 'pageSize', kind: 'int', help: 'save only: keys per Range page, the bound on what is held in memory (default 1000)' },
  v: { key: 'logLevel', kind: 'string', help: 'log level: debug, info, warn, error (default warn)' },
};

const SYNOPSIS =
  'metaetcd snapshot save FILE --coordinator URL --members URL,...\n' +
  '       metaetcd snapshot restore FILE --coordinator URL --members URL,...   (fresh, empty clusters)\n' +
  '       metaetcd snapshot restore FILE --etcd URL                           (one fresh plain etcd)';

export async function runSnapshot(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  let parsed;
  try {
    parsed = parseFlags(rest, new Set(Object.keys(FLAGS)));
  } catch (err) {
    return fail(err);
  }
  if (parsed.help || verb === undefined || verb === 'help' || verb === '--help' || verb === '-h') {
    process.stdout.write(usage(SYNOPSIS, FLAGS));
    return 0;
  }
  let flags: SnapshotFlags;
  try {
    flags = applyFlags<SnapshotFlags>(
      { coordinator: '', members: '', etcd: '', caCert: undefined, clientCert: undefined, clientCertKey: undefined, requestTimeoutMs: 30_000, pageSize: 1000, logLevel: 'warn' },
      parsed.values,
      FLAGS,
    );
  } catch (err) {
    return fail(err);
  }
  const [file, ...extra] = parsed.positional;
  if (verb !== 'save' && verb !== 'restore') return fail(new Error(`unknown snapshot command ${JSON.stringify(verb)} (want save or restore)`));
  if (!file) return fail(new Error(`snapshot ${verb} needs a FILE`));
  if (extra.length > 0) return fail(new Error(`unexpected argument ${JSON.stringify(extra[0])}`));
  if (!!flags.clientCert !== !!flags.clientCertKey) return fail(new Error('--client-cert and --client-cert-key go together'));
  const log = createLogger(flags.logLevel);
  const tls = { caCert: flags.caCert, clientCert: flags.clientCert, clientCertKey: flags.clientCertKey };
  try {
    if (verb === 'save') {
      if (flags.etcd) throw new Error('--etcd is for restore only: save reads a meta cluster (--coordinator, --members)');
      requireCluster(flags);
      const config: ProxyConfig = { ...defaultProxyConfig(), coordinator: flags.coordinator, members: flags.members, ...tls, requestTimeoutMs: flags.requestTimeoutMs, workers: 1, metricsPort: 0 };
      if (flags.pageSize < 1) throw new Error('--page-size must be at least 1');
      await saveSnapshot({ file, config, log, pageSize: flags.pageSize });
    } else if (flags.etcd) {
      if (flags.coordinator || flags.members) throw new Error('give either --etcd or --coordinator and --members, not both');
      await restoreToEtcd({ file, etcd: flags.etcd, tls, requestTimeoutMs: flags.requestTimeoutMs, log });
    } else {
      requireCluster(flags);
      await restoreToMetaCluster({ file, coordinator: flags.coordinator, members: flags.members, tls, requestTimeoutMs: flags.requestTimeoutMs, log });
    }
    return 0;
  } catch (err) {
    return fail(err);
  }
}

function requireCluster(f: SnapshotFlags): void {
  if (!f.coordinator) throw new Error('--coordinator is required');
  if (!f.members) throw new Error('--members is required');
}

function fail(err: unknown): number {
  process.stderr.write(`metaetcd snapshot: ${err instanceof Error ? err.message : String(err)}\n`);
  return 1;
}
