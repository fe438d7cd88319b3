// `metaetcd sandbox`: the embedded default. Starts a coordinator and N member
// etcd processes on free loopback ports (data in a temporary directory unless
// --data-dir is given, in which case ports and data survive restarts), then the
// proxy on --listen-addr; prints how to connect; stops everything on Ctrl-C.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startProxy, type ProxyHandle } from '../app.js';
import { applyFlags, defaultProxyConfig, parseFlags, PROXY_FLAGS, type ProxyConfig } from '../config.js';
import { defaultScratchRoot, EtcdProcess } from './etcd-process.js';
import { memberEtcdSettings } from './member-settings.js';
import { keepServingOnStrayRejections, usage, waitForSignal } from '../lifecycle.js';
import { createLogger, type Logger } from '../log.js';
import { textDestination } from '../log-text.js';

export const SANDBOX_FLAGS = {
  ...Object.fromEntries(Object.entries(PROXY_FLAGS).filter(([name]) => name !== 'coordinator' && name !== 'members')),
  'data-dir': { key: 'dataDir', kind: 'string' as const, help: 'keep the sandbox data (and ports) here across restarts (default: a temporary directory)' },
  'member-count': { key: 'memberCount', kind: 'int' as const, help: 'number of member etcd clusters (default 3)' },
  'log-format': { key: 'logFormat', kind: 'string' as const, help: 'logs on stderr: text (readable lines), json, or auto: text when stderr is a terminal (default auto)' },
};

interface SandboxOptions extends ProxyConfig {
  dataDir: string | undefined;
  memberCount: number;
  logFormat: string;
}

const LOG_FORMATS = ['auto', 'text', 'json'];

interface SandboxState {
  coordinator: { clientPort: number; peerPort: number };
  members: { clientPort: number; peerPort: number }[];
}

export interface Sandbox {
  proxy: ProxyHandle;
  coordinator: EtcdProcess;
  members: EtcdProcess[];
  dataDir: string;
  stop(): Promise<void>;
}

export function parseSandboxArgs(argv: string[]): { options: SandboxOptions; help: boolean } {
  const parsed = parseFlags(argv, new Set(Object.keys(SANDBOX_FLAGS)));
  if (parsed.positional.length > 0) throw new Error(`unexpected argument ${JSON.stringify(parsed.positional[0])}`);
  const options: SandboxOptions = applyFlags(
    { ...defaultProxyConfig(), logLevel: 'info', dataDir: undefined, memberCount: 3, logFormat: 'auto' },
    parsed.values,
    SANDBOX_FLAGS,
  );
  if (options.memberCount < 1) throw new Error('--member-count must be at least 1');
  if (!LOG_FORMATS.includes(options.logFormat)) throw new Error(`--log-format must be one of ${LOG_FORMATS.join(', ')}`);
  return { options, help: parsed.help };
}

export async function startSandbox(o: SandboxOptions, log: Logger): Promise<Sandbox> {
  const persistent = o.dataDir !== undefined;
  const dataDir = persistent ? resolve(o.dataDir!) : mkdtempSync(join(defaultScratchRoot(), 'metaetcd-sandbox-'));
  mkdirSync(dataDir, { recursive: true });
  const stateFile = join(dataDir, 'sandbox.json');
  const previous = existsSync(stateFile) ? (JSON.parse(readFileSync(stateFile, 'utf8')) as SandboxState) : undefined;
  if (previous && previous.members.length !== o.memberCount) {
    throw new Error(`${dataDir} holds a sandbox with ${previous.members.length} members; --member-count is ${o.memberCount}`);
  }
  const etcdOpts = memberEtcdSettings(o.maxRequestBytes, o.maxTxnOps);
  const started: EtcdProcess[] = [];
  const stopAll = () => Promise.all(started.map((p) => p.stop())).then(() => undefined);
  try {
    const [coordinator, ...members] = await Promise.all([
      EtcdProcess.start({ name: 'coordinator', dataDir: join(dataDir, 'coordinator'), ...previous?.coordinator, ...etcdOpts }),
      ...Array.from({ length: o.memberCount }, (_, i) =>
        EtcdProcess.start({ name: `member-${i}`, dataDir: join(dataDir, `member-${i}`), ...previous?.members[i], ...etcdOpts }),
      ),
    ]).then((ps) => {
      started.push(...ps);
      return ps;
    });
    const state: SandboxState = {
      coordinator: { clientPort: coordinator!.clientPort, peerPort: coordinator!.peerPort },
      members: members.map((m) => ({ clientPort: m.clientPort, peerPort: m.peerPort })),
    };
    if (persistent) writeFileSync(stateFile, JSON.stringify(state, null, 2));
    log.info({ dataDir, coordinator: coordinator!.clientUrl, members: members.map((m) => m.clientUrl) }, 'sandbox etcd processes are up');

    const proxy = await startProxy(
      { ...o, coordinator: coordinator!.clientUrl, members: members.map((m) => m.clientUrl).join(',') },
      log,
      undefined,
      { metricsOptional: true },
    );
    let stopping: Promise<void> | undefined;
    return {
      proxy,
      coordinator: coordinator!,
      members,
      dataDir,
      stop: () => {
        stopping ??= (async () => {
          await proxy.stop();
          await stopAll();
          if (!persistent) rmSync(dataDir, { recursive: true, force: true });
        })();
        return stopping;
      },
    };
  } catch (err) {
    await stopAll();
    if (!persistent) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
}

export async function runSandbox(argv: string[]): Promise<number> {
  const { options, help } = parseSandboxArgs(argv);
  if (help) {
    process.stdout.write(usage('metaetcd sandbox [flags]', SANDBOX_FLAGS));
    return 0;
  }
  const text = options.logFormat === 'text' || (options.logFormat === 'auto' && process.stderr.isTTY === true);
  const log = createLogger(options.logLevel, text ? textDestination({ color: process.stderr.isTTY === true && !process.env.NO_COLOR }) : undefined);
  keepServingOnStrayRejections(log);
  const sandbox = await startSandbox(options, log);
  const endpoint = options.listenAddr.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^:/, '127.0.0.1:');
  process.stdout.write(
    [
      `metaetcd sandbox is serving on ${endpoint} (coordinator + ${sandbox.members.length} member etcd clusters, data in ${sandbox.dataDir})`,
      `  ETCDCTL_API=3 etcdctl --endpoints ${endpoint} put foo bar`,
      `  ETCDCTL_API=3 etcdctl --endpoints ${endpoint} get foo`,
      sandbox.proxy.metricsPort ? `  metrics: http://${options.metricsAddr}:${sandbox.proxy.metricsPort}/metrics` : '',
      'Press Ctrl-C to stop.',
      '',
    ]
      .filter((l) => l !== '')
      .join('\n') + '\n',
  );
  await waitForSignal(log, { exitWithParent: true });
  await sandbox.stop();
  return 0;
}
