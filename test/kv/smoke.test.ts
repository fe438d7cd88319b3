import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdSet, type EtcdSet } from '../harness/etcd-set.js';
import { clientFor, startTestProxy, type TestProxy } from '../harness/proxy.js';
import type { EtcdClient } from '../../src/members/etcd-client.js';

let set: EtcdSet;
let proxy: TestProxy;
let client: EtcdClient;

before(async () => {
  set = await startEtcdSet({ name: 'smoke' });
  proxy = await startTestProxy(set);
  client = clientFor(proxy.url);
});
after(async () => {
  client?.close();
  await proxy?.stop();
  await set?.stop();
});

test('put then get through the proxy returns the value with meta revisions', async () => {
  const put = await client.put({ key: Buffer.from('a'), value: Buffer.from('1') });
  const got = await client.range({ key: Buffer.from('a') });
  assert.equal(got.kvs.length, 1);
  assert.equal(got.kvs[0]!.value.toString(), '1');
  assert.equal(got.kvs[0]!.modRevision, put.header!.revision);
  assert.equal(got.kvs[0]!.createRevision, put.header!.revision);
});
