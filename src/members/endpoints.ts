// Parsing of cluster URLs as given on the command line: "--members" takes a
// comma-separated list of member clusters, each of which may list several
// endpoints of that one cluster separated by ";".

export interface Endpoint {
  /** host:port as grpc-js expects it ("[::1]:2379" for IPv6). */
  address: string;
  secure: boolean;
  /** The URL as given, for messages. */
  url: string;
}

export function parseEndpoint(raw: string): Endpoint {
  const url = raw.trim();
  if (url === '') throw new Error('empty endpoint URL');
  let rest = url;
  let secure = false;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url);
  if (scheme) {
    const s = scheme[1]!.toLowerCase();
    if (s === 'https') secure = true;
    else if (s !== 'http') throw new Error(`unsupported URL scheme in ${JSON.stringify(url)} (use http:// or https://)`);
    rest = url.slice(scheme[0].length);
  }
  rest = rest.replace(/\/+$/, '');
  if (rest.includes('/')) throw new Error(`endpoint ${JSON.stringify(url)} must not have a path`);
  if (!/^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):\d+$/.test(rest)) {
    throw new Error(`endpoint ${JSON.stringify(url)} must be host:port or a URL with a port`);
  }
  return { address: rest, secure, url };
}

/** One cluster's endpoints from "url1;url2". */
export function parseCluster(raw: string): Endpoint[] {
  const endpoints = raw.split(';').filter((s) => s.trim() !== '').map(parseEndpoint);
  if (endpoints.length === 0) throw new Error(`no endpoint in ${JSON.stringify(raw)}`);
  const secure = new Set(endpoints.map((e) => e.secure));
  if (secure.size > 1) throw new Error(`endpoints of one cluster mix http and https: ${raw}`);
  return endpoints;
}

/** The member clusters from "a1;a2,b1,c1". */
export function parseClusters(raw: string): Endpoint[][] {
  const clusters = raw.split(',').filter((s) => s.trim() !== '').map(parseCluster);
  if (clusters.length === 0) throw new Error('no member cluster given');
  return clusters;
}
