// Structured logging (pino). One root logger per process, created by the CLI and
// handed down; components take child loggers with a `component` field.

import { pino, type Logger } from 'pino';

export type { Logger };

/** Log levels accepted by -v, named as in the original (zap) plus pino's. */
const LEVELS: Record<string, pino.LevelWithSilent> = {
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  warning: 'warn',
  error: 'error',
  dpanic: 'fatal',
  panic: 'fatal',
  fatal: 'fatal',
  trace: 'trace',
  silent: 'silent',
};

export function parseLogLevel(v: string): pino.LevelWithSilent {
  const level = LEVELS[v.toLowerCase()];
  if (!level) throw new Error(`unknown log level ${JSON.stringify(v)} (use debug, info, warn or error)`);
  return level;
}

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level: parseLogLevel(level), base: { app: 'metaetcd' } }, destination ?? pino.destination(2));
}

/** A logger that drops everything (tests and embedded use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
