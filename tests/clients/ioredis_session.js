// ioredis transactions and blocking commands through the proxy
// (tests/sessions.rs). usage: node ioredis_session.js PORT
const Redis = require("ioredis");

const { assert, run, port } = require("./harness");

async function main() {
  const r = new Redis({ port, host: "127.0.0.1", lazyConnect: true });
  const other = new Redis({ port, host: "127.0.0.1", lazyConnect: true });
  await r.connect();
  await other.connect();

  // multi(): a pipelined transaction.
  const res = await r.multi().set("{io}a", "1").incr("{io}a").get("{io}a").exec();
  assert(JSON.stringify(res) === JSON.stringify([[null, "OK"], [null, 2], [null, "2"]]), JSON.stringify(res));

  // watch/multi/exec with a conflict: exec resolves to null.
  await r.watch("{io}a");
  await other.set("{io}a", "10");
  const conflict = await r.multi().set("{io}a", "x").exec();
  assert(conflict === null, "conflict: " + JSON.stringify(conflict));
  assert((await r.get("{io}a")) === "10", "the conflicting write landed");

  // Without a conflict it commits.
  await r.watch("{io}a");
  const ok = await r.multi().incr("{io}a").exec();
  assert(JSON.stringify(ok) === JSON.stringify([[null, 11]]), JSON.stringify(ok));

  // BLPOP 0 woken by another client; BRPOP with a timeout.
  setTimeout(() => other.rpush("{io}q", "job"), 200);
  const popped = await r.blpop("{io}q", 0);
  assert(JSON.stringify(popped) === JSON.stringify(["{io}q", "job"]), JSON.stringify(popped));
  const none = await r.brpop("{io}q", 0.1);
  assert(none === null, "brpop: " + JSON.stringify(none));

  // XREADGROUP BLOCK.
  await r.xgroup("CREATE", "{io}s", "g", "$", "MKSTREAM");
  setTimeout(() => other.xadd("{io}s", "*", "f", "v"), 200);
  const got = await r.xreadgroup("GROUP", "g", "c", "BLOCK", 0, "STREAMS", "{io}s", ">");
  assert(got[0][0] === "{io}s" && got[0][1][0][1][1] === "v", JSON.stringify(got));

  r.disconnect();
  other.disconnect();
  console.log("ioredis: multi(), watch conflicts, BLPOP 0, BRPOP timeout, XREADGROUP BLOCK");
}

run(main);
