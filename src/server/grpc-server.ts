// Construction of the client-facing gRPC server: credentials (plaintext, TLS,
// or TLS with required client certificates), etcd-compatible message limits,
// keepalive, and binding. Both servers use new certificate files for new
// connections when the files change (src/tls/reloading-files.ts).

import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { GRPC_OVERHEAD_BYTES } from '../limits.js';
import { reloadingServerCredentials } from '../tls/grpc-credentials.js';
import { ReloadingTlsFiles, type TlsSource } from '../tls/reloading-files.js';
import { H2Server } from './h2/server.js';

export interface GrpcServerOptions {
  maxRequestBytes: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  maxIdleMs: number;
  serverCert?: string | undefined;
  serverCertKey?: string | undefined;
  caCert?: string | undefined;
  /** The files above, reloaded when they change; without it they are read once here. */
  tls?: TlsSource | undefined;
  /** 'node': the lean server on node:http2 (src/server/h2); 'grpc-js': @grpc/grpc-js's Server. */
  impl?: 'node' | 'grpc-js' | undefined;
}

/** The part of a gRPC server the app uses; both implementations have it. */
export type ProxyServer = Server | H2Server;

export function createGrpcServer(o: GrpcServerOptions): ProxyServer {
  if ((o.impl ?? 'node') === 'node') {
    return new H2Server({
      maxReceiveMessageLength: o.maxRequestBytes + GRPC_OVERHEAD_BYTES,
      keepaliveIntervalMs: o.keepaliveIntervalMs,
      keepaliveTimeoutMs: o.keepaliveTimeoutMs,
      maxIdleMs: o.maxIdleMs,
      tls: serverTls(o),
    });
  }
  const options: Record<string, number> = {
    'grpc.max_receive_message_length': o.maxRequestBytes + GRPC_OVERHEAD_BYTES,
    'grpc.max_send_message_length': -1,
    'grpc.keepalive_time_ms': o.keepaliveIntervalMs,
    'grpc.keepalive_timeout_ms': o.keepaliveTimeoutMs,
    // etcd allows 2^32-1 concurrent streams per connection; Node's http2 caps lower, so ask for the most it takes.
    'grpc.max_concurrent_streams': 2 ** 31 - 1,
  };
  if (o.maxIdleMs > 0) options['grpc.max_connection_idle_ms'] = o.maxIdleMs;
  return new Server(options);
}

export function serverCredentials(o: GrpcServerOptions): ServerCredentials {
  const tls = serverTls(o);
  return tls ? reloadingServerCredentials(tls) : ServerCredentials.createInsecure();
}

/** The server's TLS material: none without a certificate. */
function serverTls(o: GrpcServerOptions): TlsSource | undefined {
  if (!o.serverCert || !o.serverCertKey) return undefined;
  return o.tls ?? new ReloadingTlsFiles({ cert: o.serverCert, key: o.serverCertKey, ca: o.caCert });
}

export function bind(server: ProxyServer, address: string, creds: ServerCredentials): Promise<number> {
  if (server instanceof H2Server) return server.listen(address);
  return new Promise((resolve, reject) => {
    server.bindAsync(address, creds, (err, port) => (err ? reject(new Error(`cannot listen on ${address}: ${err.message}`)) : resolve(port)));
  });
}

export function addService<S extends UntypedServiceImplementation>(server: ProxyServer, def: ServiceDefinition, impl: S): void {
  if (server instanceof H2Server) server.addService(def, impl);
  else server.addService(def, impl);
}
