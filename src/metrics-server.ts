// The HTTP side server (loopback by default): the Prometheus registry at
// /metrics and, as etcd serves on its metrics URLs, /health — 200 with
// {"health":"true","reason":""} when healthy, 503 with {"health":"false",
// "reason":"…"} when not — and, as kube-apiserver does, /readyz: 200 "ok" when
// ready (/health's checks and every member watch stream up), 503 listing each
// check otherwise; "?verbose" lists them either way ("[+]name ok",
// "[-]name failed: reason").

import { createServer, type Server } from 'node:http';
import { isReady, type HealthReport } from './health.js';

/** The text exposition of a Prometheus registry (one process's, or the sum over workers). */
export interface Scrape {
  body(): Promise<string>;
  contentType: string;
}

export interface MetricsServerOptions {
  scrape: Scrape;
  host: string;
  port: number;
  health: () => Promise<HealthReport>;
}

export async function startMetricsServer(o: MetricsServerOptions): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/metrics') {
      o.scrape.body().then(
        (body) => res.writeHead(200, { 'content-type': o.scrape.contentType }).end(body),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
      return;
    }
    if (path === '/health') {
      o.health().then(
        (h) => {
          res.writeHead(h.healthy ? 200 : 503, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ health: String(h.healthy), reason: h.reason }));
        },
        (err: unknown) => res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ health: 'false', reason: String(err) })),
      );
      return;
    }
    if (path === '/readyz') {
      const verbose = new URL(req.url ?? '', 'http://x').searchParams.has('verbose');
      o.health().then(
        (h) => {
          const ready = isReady(h);
          res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8' }).end(readyzBody(h, ready, verbose));
        },
        (err: unknown) => res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' }).end(`readyz check failed: ${String(err)}\n`),
      );
      return;
    }
    res.writeHead(404).end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  return { server, port: typeof addr === 'object' && addr ? addr.port : o.port };
}

function readyzBody(h: HealthReport, ready: boolean, verbose: boolean): string {
  if (ready && !verbose) return 'ok';
  const lines = h.checks.map((c) => (c.ok ? `[+]${c.name} ok` : `[-]${c.name} failed: ${c.reason}`));
  lines.push(ready ? 'readyz check passed' : 'readyz check failed');
  return lines.join('\n') + '\n';
}
