import { Etcd3 } from 'etcd3';
const c = new Etcd3({ hosts: '127.0.0.1:23790' });
const rev = async () => BigInt((await c.get('a').exec()).header.revision);
const n = +process.argv[2], pfx = process.argv[3];
const r0 = await rev();
await Promise.all(Array.from({ length: n }, async (_, j) => { for (let i = 0; i < 12; i++) await c.put(`${pfx}/${j}/${i % 7}`).value(String(i)); }));
const r1 = await rev(); console.log(`${n} clients, ${n * 12} puts: revision moved by`, r1 - r0);
c.close();
