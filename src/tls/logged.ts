// ReloadingTlsFiles whose reloads and rejected files are logged.

import type { Logger } from '../log.js';
import { ReloadingTlsFiles, type TlsPaths } from './reloading-files.js';

export function reloadingTlsFiles(paths: TlsPaths, log: Logger, checkIntervalMs?: number): ReloadingTlsFiles {
  const files = Object.fromEntries(Object.entries(paths).filter(([, v]) => v));
  return new ReloadingTlsFiles(paths, {
    ...(checkIntervalMs !== undefined ? { checkIntervalMs } : {}),
    onReloaded: () => log.info({ files }, 'TLS files changed: new connections use them'),
    onRejected: (err) => log.warn({ files, err: err.message }, 'TLS files changed but cannot be used; keeping the previous ones until they change again'),
  });
}
