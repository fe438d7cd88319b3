// Construction of the client-facing gRPC server: credentials (plaintext, TLS,
// or TLS with required client certificates), etcd-compatible message limits,
// keepalive, and binding.

import { readFileSync } from 'node:fs';
import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { GRPC_OVERHEAD_BYTES } from '../limits.js';
import { H2Server } from './h2/server.js';

export interface GrpcServerOptions {
  maxRequestBytes: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  maxIdleMs: number;
  serverCert?: string | undefined;
  serverCertKey?: string | undefined;
  caCert?: string | undefined;
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
      tls:
        o.serverCert && o.serverCertKey
          ? { cert: readFileSync(o.serverCert), key: readFileSync(o.serverCertKey), ca: o.caCert ? readFileSync(o.caCert) : undefined }
          : undefined,
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
  if (!o.serverCert || !o.serverCertKey) return ServerCredentials.createInsecure();
  const ca = o.caCert ? readFileSync(o.caCert) : null;
  return ServerCredentials.createSsl(
    ca,
    [{ cert_chain: readFileSync(o.serverCert), private_key: readFileSync(o.serverCertKey) }],
    ca !== null,
  );
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
