// The `metaetcd` command: runs the proxy (`metaetcd --coordinator URL --members
// URL,...`) or the embedded sandbox (`metaetcd sandbox`).

import { startProxy } from './app.js';
import { parseProxyArgs, PROXY_FLAGS } from './config.js';
import { createLogger } from './log.js';
import { keepServingOnStrayRejections, usage, waitForSignal } from './lifecycle.js';
import { runSandbox } from './sandbox.js';

export const VERSION = '0.1.0';

export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  switch (first) {
    case 'sandbox':
      return runSandbox(rest);
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
    usage('metaetcd --coordinator URL --members URL[;URL...][,URL...] [flags]\n       metaetcd sandbox [flags]   (metaetcd sandbox --help)', PROXY_FLAGS)
  );
}

async function runProxy(argv: string[]): Promise<number> {
  const { config, help: wantHelp, pprofPort } = parseProxyArgs(argv);
  if (wantHelp) {
    process.stdout.write(help());
    return 0;
  }
  const log = createLogger(config.logLevel);
  keepServingOnStrayRejections(log);
  if (pprofPort) log.warn({ pprofPort }, '--pprof-port is accepted for compatibility but profiling is not served');
  const proxy = await startProxy(config, log);
  await waitForSignal(log);
  await proxy.stop();
  return 0;
}
