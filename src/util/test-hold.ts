// Test-only hooks that stop a process at a named step so that a test can kill it
// there (kill -9): when env var `env` names `step`, say "holding after <step>" on
// stderr and wait forever. Unset in production, where they cost one lookup.

import type { Logger } from '../log.js';

export async function holdIfAsked(env: string, step: string, log: Logger): Promise<void> {
  if (process.env[env] !== step) return;
  log.warn({ step }, 'holding (test hook)');
  process.stderr.write(`holding after ${step}\n`);
  await new Promise<never>(() => setInterval(() => undefined, 1 << 30));
}
