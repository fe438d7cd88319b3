// Process lifecycle for the `metaetcd` command: waiting for a stop signal (for the
// sandbox, also for the launching wrapper to go away), surviving stray promise
// rejections, and the usage text of a flag table.

import type { Logger } from './log.js';

export function usage(synopsis: string, flags: Record<string, { help: string }>): string {
  const lines = [`Usage: ${synopsis}`, '', 'Flags:'];
  for (const [name, f] of Object.entries(flags)) lines.push(`  ${name.length === 1 ? '-' : '--'}${name}`.padEnd(36) + f.help);
  return lines.join('\n') + '\n';
}

export interface SignalWaitOptions {
  /**
   * Also stop when the process that started us goes away. For the sandbox, whose
   * etcd processes must not outlive a wrapper such as `npx` (which does not pass
   * SIGTERM on); a server started by a script with `nohup … &` must outlive it.
   */
  exitWithParent?: boolean;
}

/**
 * Resolves on the first SIGINT or SIGTERM (a second one exits at once), or, with
 * exitWithParent, when the launching process goes away. The reason is logged at
 * warn: a server that stops should always say why.
 */
export function waitForSignal(log: Logger, o: SignalWaitOptions = {}): Promise<NodeJS.Signals | 'orphaned'> {
  return new Promise((resolve) => {
    const parent = process.ppid;
    const done = (why: NodeJS.Signals | 'orphaned') => {
      log.warn({ reason: why === 'orphaned' ? 'the process that started this one exited' : `received ${why}` }, 'shutting down');
      if (watchParent) clearInterval(watchParent);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.once('SIGINT', () => process.exit(130));
      process.once('SIGTERM', () => process.exit(143));
      resolve(why);
    };
    const onSignal = (sig: NodeJS.Signals) => done(sig);
    const watchParent = o.exitWithParent
      ? setInterval(() => {
          if (process.ppid !== parent) done('orphaned');
        }, 500)
      : undefined;
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

/**
 * A rejected promise nobody handled is a bug, but it must not take every client's
 * connection down with the process: log it loudly and keep serving.
 */
export function keepServingOnStrayRejections(log: Logger): void {
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason instanceof Error ? reason.stack : String(reason) }, 'unhandled promise rejection (a bug; please report it)');
  });
}
