// ioredis's Cluster through shardproxy: the proxy answers CLUSTER SLOTS and
// CLUSTER INFO as one node holding every slot. Reads the keys
// redis_py_cluster.py wrote (rc:k0..rc:k99 = their index).
const Redis = require("ioredis");
const { assert, run, port } = require("./harness");

run(async () => {
  const c = new Redis.Cluster([{ host: "127.0.0.1", port }], {
    enableReadyCheck: true,
    redisOptions: { connectTimeout: 10000 },
  });
  await new Promise((resolve, reject) => {
    c.once("ready", resolve);
    c.once("error", reject);
  });
  const masters = c.nodes("master");
  assert(masters.length === 1, `one node, got ${masters.length}`);
  assert(masters[0].options.port === port, `the proxy's port, got ${masters[0].options.port}`);
  for (let i = 0; i < 100; i++) {
    const v = await c.get(`rc:k${i}`);
    assert(v === String(i), `rc:k${i} = ${v}`);
  }
  // A pipeline across slots: ioredis needs every command of it on one node.
  const p = c.pipeline();
  for (let i = 0; i < 20; i++) p.get(`rc:k${i}`);
  const out = await p.exec();
  out.forEach(([err, v], i) => assert(!err && v === String(i), `pipeline ${i}: ${err} ${v}`));
  // Multi-key in one slot, and a transaction in one slot.
  assert((await c.mset("{io}a", "1", "{io}b", "2")) === "OK", "mset");
  const got = await c.mget("{io}a", "{io}b");
  assert(got[0] === "1" && got[1] === "2", `mget ${got}`);
  const tx = await c.multi().incr("{io}n").incr("{io}n").exec();
  assert(tx[1][1] === 2, `multi ${JSON.stringify(tx)}`);
  assert((await c.del("{io}a", "{io}b", "{io}n")) === 3, "del");
  await c.quit();
});
