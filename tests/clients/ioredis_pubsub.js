// ioredis pub/sub through the proxy (tests/pubsub.rs).
// usage: node ioredis_pubsub.js PORT
const Redis = require("ioredis");

const { assert, run, port } = require("./harness");

async function main() {
  const sub = new Redis({ port, host: "127.0.0.1" });
  const pub = new Redis({ port, host: "127.0.0.1" });
  const got = [];
  const step = (s) => process.env.DEBUG_STEPS && console.log(s);
  sub.on("message", (ch, m) => got.push([ch, m]));
  sub.on("pmessage", (p, ch, m) => got.push([p, ch, m]));
  const n = await sub.subscribe("io:a", "io:b", "io:c");
  assert(n === 3, "subscribe count " + n);
  const pn = await sub.psubscribe("io:p.*");
  assert(pn === 4, "psubscribe count " + pn);
  for (let i = 0; i < 50; i++) {
    for (const ch of ["io:a", "io:b", "io:c", "io:p." + i]) {
      const r = await pub.publish(ch, String(i));
      assert(r === 1, "publish " + ch + " " + r);
    }
  }
  const end = Date.now() + 10000;
  while (got.length < 200 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
  }
  step("got " + got.length);
  assert(got.length === 200, "messages " + got.length);
  const a = got.filter((m) => m[0] === "io:a").map((m) => Number(m[1]));
  assert(JSON.stringify(a) === JSON.stringify([...Array(50).keys()]), "order " + a);
  step("unsubscribe");
  // With names: ioredis resolves an argument-less UNSUBSCRIBE only when the
  // count reaches 0, which the remaining pattern prevents (so with Redis).
  await sub.unsubscribe("io:a", "io:b", "io:c");
  step("punsubscribe");
  await sub.punsubscribe("io:p.*");
  step("set");
  // Out of subscriber mode, the connection serves commands again.
  await sub.set("io:k", "v");
  assert((await sub.get("io:k")) === "v", "get after unsubscribe");
  sub.disconnect();
  pub.disconnect();
  console.log("ioredis: 3 channels and a pattern over 3 servers, 200 messages, back to commands");
}

run(main);
