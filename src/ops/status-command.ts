// `metaetcd status --coordinator URL --members URL,... [-w table|json]`: the
// state of the clusters behind a meta cluster, read from them directly. Cluster
// and TLS flags are the proxy's own (config.ts). Exits 0 when the coordinator
// and every member are healthy, 1 otherwise (after printing what it gathered).

import { loadClientTls } from '../app/members.js';
import { applyFlags, parseFlags, PROXY_FLAGS, type Kind } from '../config.js';
import { usage } from '../lifecycle.js';
import { parseCluster, parseClusters } from '../members/endpoints.js';
import { gatherStatus } from './status.js';
import { formatStatus, type WriteOut } from './status-format.js';

interface StatusConfig {
  coordinator: string;
  members: string;
  caCert: string | undefined;
  clientCert: string | undefined;
  clientCertKey: string | undefined;
  writeOut: WriteOut;
  commandTimeoutMs: number;
}

const SHARED_FLAGS = ['coordinator', 'members', 'ca-cert', 'client-cert', 'client-cert-key'] as const;

export const STATUS_FLAGS: Record<string, { key: string; kind: Kind; help: string }> = {
  ...Object.fromEntries(SHARED_FLAGS.map((name) => [name, PROXY_FLAGS[name]!])),
  'write-out': { key: 'writeOut', kind: 'string', help: 'output format: table or json (default table)' },
  w: { key: 'writeOut', kind: 'string', help: 'short for --write-out' },
  'command-timeout': { key: 'commandTimeoutMs', kind: 'duration', help: 'bound on each call to a cluster (default 5s)' },
};

const STATUS_SYNOPSIS = 'metaetcd status --coordinator URL --members URL[;URL...][,URL...] [-w table|json] [flags]';

export function parseStatusArgs(argv: string[]): { config: StatusConfig; help: boolean } {
  const parsed = parseFlags(argv, new Set(Object.keys(STATUS_FLAGS)));
  if (parsed.positional.length > 0) throw new Error(`unexpected argument ${JSON.stringify(parsed.positional[0])}`);
  const config = applyFlags<StatusConfig>(
    { coordinator: '', members: '', caCert: undefined, clientCert: undefined, clientCertKey: undefined, writeOut: 'table', commandTimeoutMs: 5000 },
    parsed.values,
    STATUS_FLAGS,
  );
  if (!parsed.help) {
    if (config.coordinator === '') throw new Error('--coordinator is required');
    if (config.members === '') throw new Error('--members is required');
    if (!!config.clientCert !== !!config.clientCertKey) throw new Error('--client-cert and --client-cert-key go together');
    if (!['table', 'json'].includes(config.writeOut)) throw new Error('-w/--write-out must be table or json');
    if (config.commandTimeoutMs <= 0) throw new Error('--command-timeout must be positive');
  }
  return { config, help: parsed.help };
}

export async function runStatus(argv: string[]): Promise<number> {
  const { config, help } = parseStatusArgs(argv);
  if (help) {
    process.stdout.write(usage(STATUS_SYNOPSIS, STATUS_FLAGS));
    return 0;
  }
  const status = await gatherStatus({
    coordinator: parseCluster(config.coordinator),
    members: parseClusters(config.members),
    tls: loadClientTls(config),
    timeoutMs: config.commandTimeoutMs,
  });
  process.stdout.write(formatStatus(status, config.writeOut));
  return status.healthy ? 0 : 1;
}
