// Reading a large range of one member cluster in pages, so that no response is
// huge: each page starts just after the last key of the one before.

import type { KeyValue } from '../proto/gen/kv.js';
import type { RangeRequest } from '../proto/gen/rpc.js';
import { nextKey } from '../util/bytes.js';
import type { CallOptions, EtcdClient } from './etcd-client.js';

type DeepPartialRange = Parameters<EtcdClient['range']>[0];

/**
 * The keys of [req.key, req.rangeEnd), `pageSize` at a time. Each page is read at
 * `req.revision` (0 or absent: each at the member's latest, so a key written
 * meanwhile may be missed or seen in a later state).
 */
export async function* rangePages(client: EtcdClient, req: DeepPartialRange & Pick<RangeRequest, 'key' | 'rangeEnd'>, pageSize: number, o?: CallOptions): AsyncGenerator<KeyValue[]> {
  let from = req.key;
  for (;;) {
    const page = await client.range({ ...req, key: from, limit: BigInt(pageSize) }, o);
    if (page.kvs.length > 0) yield page.kvs;
    const last = page.kvs[page.kvs.length - 1];
    if (!page.more || !last) return;
    from = nextKey(last.key);
  }
}
