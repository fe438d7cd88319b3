// What a local etcd needs from the machine: free loopback ports and scratch
// space (tmpfs when there is one), for the sandbox and the test harness.

import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';

export const DEFAULT_HOST = '127.0.0.1';

/** Binds port 0 on `host`, reads the port the kernel chose, closes. Avoids
 *  handing out the same port twice within this process (recent ports are remembered). */
export async function freePort(host: string = DEFAULT_HOST): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await bindEphemeral(host);
    if (!recentPorts.has(port)) {
      rememberPort(port);
      return port;
    }
  }
  throw new Error(`freePort(${host}): the kernel kept returning recently used ports`);
}

/** $METAETCD_SCRATCH_ROOT when set (the test runner gives each test file its
 *  own and removes it afterwards), else '/dev/shm' when it exists and is
 *  writable, else os.tmpdir(). */
export function defaultScratchRoot(): string {
  const chosen = process.env.METAETCD_SCRATCH_ROOT;
  if (chosen) return chosen;
  try {
    if (statSync('/dev/shm').isDirectory()) {
      accessSync('/dev/shm', fsConstants.W_OK | fsConstants.X_OK);
      return '/dev/shm';
    }
  } catch {
    // fall through
  }
  return tmpdir();
}

const recentPorts = new Set<number>();
const RECENT_PORTS_MAX = 4096;

function rememberPort(port: number): void {
  recentPorts.add(port);
  if (recentPorts.size > RECENT_PORTS_MAX) {
    const oldest = recentPorts.values().next().value;
    if (oldest !== undefined) recentPorts.delete(oldest);
  }
}

function bindEphemeral(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err) => reject(new Error(`freePort(${host}): ${err.message}`)));
    server.listen({ port: 0, host, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error(`freePort(${host}): no port assigned`))));
    });
  });
}
