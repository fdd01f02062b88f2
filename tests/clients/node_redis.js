// node-redis (the `redis` package) through shardproxy: a plain client
// (strings, hashes, a multi-key command within a hash tag, MULTI, a
// pipeline, an error that keeps the connection) and, with `cluster`, its
// cluster client, which the proxy answers as one node holding every slot.
//
// Usage: node node_redis.js PORT [cluster]
const { createClient, createCluster } = require("redis");
const { assert, run, port } = require("./harness");

async function plain() {
  const c = createClient({ socket: { host: "127.0.0.1", port, connectTimeout: 10000 } });
  c.on("error", () => {});
  await c.connect();
  assert((await c.ping()) === "PONG", "ping");
  assert((await c.set("nr:s", "v")) === "OK", "set");
  assert((await c.get("nr:s")) === "v", "get");
  assert((await c.hSet("nr:h", { a: "1", b: "2" })) === 2, "hset");
  const h = await c.hGetAll("nr:h");
  assert(h.a === "1" && h.b === "2", `hgetall ${JSON.stringify(h)}`);
  assert((await c.mSet({ "{nr}a": "1", "{nr}b": "2" })) === "OK", "mset");
  const m = await c.mGet(["{nr}a", "{nr}b", "{nr}none"]);
  assert(m[0] === "1" && m[1] === "2" && m[2] === null, `mget ${m}`);
  const tx = await c.multi().incr("{nr}n").incr("{nr}n").exec();
  assert(tx[1] === 2, `multi ${JSON.stringify(tx)}`);
  // Commands sent without awaiting each: pipelined on the connection.
  const many = await Promise.all(Array.from({ length: 100 }, (_, i) => c.set(`nr:p${i}`, String(i))));
  assert(many.every((r) => r === "OK"), "pipelined sets");
  const back = await Promise.all(Array.from({ length: 100 }, (_, i) => c.get(`nr:p${i}`)));
  assert(back.every((v, i) => v === String(i)), "pipelined gets");
  let refused = false;
  try {
    await c.sendCommand(["CONFIG", "SET", "maxmemory", "1"]);
  } catch (e) {
    refused = /proxy/.test(e.message);
  }
  assert(refused, "CONFIG SET is refused by the proxy");
  assert((await c.get("nr:s")) === "v", "the connection survives the error");
  await c.del(["nr:s", "nr:h", "{nr}a", "{nr}b", "{nr}n"]);
  await (c.close ? c.close() : c.quit());
}

async function cluster() {
  const c = createCluster({ rootNodes: [{ socket: { host: "127.0.0.1", port } }] });
  c.on("error", () => {});
  await c.connect();
  const masters = c.masters;
  assert(masters.length === 1 && masters[0].port === port, `one master at the proxy: ${JSON.stringify(masters.map((m) => m.port))}`);
  for (let i = 0; i < 100; i++) {
    assert((await c.set(`nr:c${i}`, String(i))) === "OK", `set nr:c${i}`);
  }
  for (let i = 0; i < 100; i++) {
    const v = await c.get(`nr:c${i}`);
    assert(v === String(i), `nr:c${i} = ${v}`);
  }
  const m = await c.mGet(["{nrc}a", "{nrc}b"]);
  assert(m[0] === null && m[1] === null, `mget ${m}`);
  const tx = await c.multi().set("{nrc}a", "1").incr("{nrc}n").exec();
  assert(tx[0] === "OK" && tx[1] === 1, `multi ${JSON.stringify(tx)}`);
  await c.del(["{nrc}a", "{nrc}n"]);
  await (c.close ? c.close() : c.quit());
}

run(async () => {
  await plain();
  if (process.argv[3] === "cluster") {
    await cluster();
  }
});
