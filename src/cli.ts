// The `metaetcd` command: runs the proxy (`metaetcd --coordinator URL --members
// URL,...`) or the embedded sandbox (`metaetcd sandbox`), or reports on the
// clusters (`metaetcd status`), or moves partitions between members
// (`metaetcd partitions move`, `members add|drain|remove|list`, `rebalance`).

import cluster from 'node:cluster';
import { startProxy } from './app.js';
import { parseProxyArgs, PROXY_FLAGS } from './config.js';
import { createLogger } from './log.js';
import { keepServingOnStrayRejections, usage, waitForSignal } from './lifecycle.js';
import { runSnapshot } from './ops/snapshot/cli.js';
import { runMover } from './repartition/cli.js';
import { runPlacement } from './repartition/placement-cli.js';
import { runStatus } from './ops/status-command.js';
import { runSandbox } from './sandbox/sandbox.js';
import { WORKER_INDEX_ENV } from './workers/messages.js';
import { runPrimary } from './workers/primary.js';
import { runWorker } from './workers/worker.js';

export const VERSION = '0.1.0';

export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  switch (first) {
    case 'sandbox':
      return runSandbox(rest);
    case 'status':
      return runStatus(rest);
    case 'snapshot':
      return runSnapshot(rest);
    case 'partitions':
    case 'members':
    case 'rebalance':
      return runMover(first, rest);
    case 'placement':
      return runPlacement(rest);
    case 'version':
    case '--version':
      process.stdout.write(`metaetcd ${VERSION}\n`);
      return 0;
    case 'help':
      process.stdout.write(help());
      return 0;
    default:
      return runProxy(argv);
  }
}

function help(): string {
  return (
    usage(
      'metaetcd --coordinator URL --members URL[;URL...][,URL...] [flags]\n' +
        '       metaetcd sandbox [flags]   (metaetcd sandbox --help)\n' +
        '       metaetcd status [flags]    (metaetcd status --help)\n' +
        '       metaetcd snapshot save|restore FILE [flags]   (metaetcd snapshot --help)\n' +
        '       metaetcd partitions move P... --to N | members add URL... | members drain N | members remove N | members list | rebalance [flags]   (metaetcd rebalance --help)\n' +
        '       metaetcd placement add PREFIX --to N | placement remove PREFIX [--dry-run] [flags]   (metaetcd placement --help)',
      PROXY_FLAGS,
    )
  );
}

async function runProxy(argv: string[]): Promise<number> {
  const { config, help: wantHelp, pprofPort } = parseProxyArgs(argv);
  if (wantHelp) {
    process.stdout.write(help());
    return 0;
  }
  const log = createLogger(config.logLevel);
  if (cluster.isWorker) return runWorker(config, log, Number(process.env[WORKER_INDEX_ENV] ?? 0));
  if (pprofPort) log.warn({ pprofPort }, '--pprof-port is accepted for compatibility but profiling is not served');
  if (config.workers > 1) return runPrimary(config, argv, log);
  keepServingOnStrayRejections(log);
  const proxy = await startProxy(config, log);
  await waitForSignal(log);
  await proxy.stop();
  return 0;
}
