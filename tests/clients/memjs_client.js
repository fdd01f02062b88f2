// memjs (Node's most used memcache client; binary protocol only) through
// shardproxy (tests/memcache_binary.rs). usage: node memjs_client.js PORT
const assert = require("assert");
const memjs = require("memjs");

const port = process.argv[2];
const client = memjs.Client.create(`127.0.0.1:${port}`, { timeout: 5, retries: 0, logger: { log() {} } });

(async () => {
  assert.strictEqual(await client.set("mj:a", "hello", { expires: 0 }), true);
  const got = await client.get("mj:a");
  assert.strictEqual(got.value.toString(), "hello");
  assert.strictEqual((await client.get("mj:missing")).value, null);
  assert.strictEqual(await client.add("mj:a", "again"), false);
  assert.strictEqual(await client.replace("mj:a", "bye"), true);
  assert.strictEqual((await client.get("mj:a")).value.toString(), "bye");
  assert.strictEqual(await client.append("mj:a", "!"), true);
  assert.strictEqual((await client.get("mj:a")).value.toString(), "bye!");
  const inc = await client.increment("mj:n", 5, { initial: 10 });
  assert.strictEqual(inc.success, true);
  assert.strictEqual((await client.increment("mj:n", 5)).value, 15);
  assert.strictEqual(await client.delete("mj:a"), true);
  assert.strictEqual((await client.get("mj:a")).value, null);
  // Many keys at once (memjs pipelines them), spread over the servers.
  const keys = [];
  for (let i = 0; i < 200; i++) keys.push(`mj:m:${i}`);
  await Promise.all(keys.map((k, i) => client.set(k, `v${i}`)));
  const values = await Promise.all(keys.map((k) => client.get(k)));
  values.forEach((v, i) => assert.strictEqual(v.value.toString(), `v${i}`));
  // What the proxy refuses is answered (Not supported), not left hanging
  // (memjs does not look at flush's status).
  await client.flush();
  assert.strictEqual((await client.get("mj:m:3")).value.toString(), "v3");
  // (memjs 1.3's prepend sends append's opcode: not exercised here.)
  assert.strictEqual(await client.touch("mj:m:1", 100), true);
  assert.strictEqual((await client.decrement("mj:n", 3, {})).value, 12);
  const stats = await new Promise((resolve, reject) =>
    client.stats((err, server, s) => (err ? reject(err) : resolve(s))),
  );
  assert.ok(String(stats.version).startsWith("shardproxy-"), JSON.stringify(stats));
  client.close();
  console.log(`memjs: set/get/add/replace/append/increment/delete, 200 keys in parallel, touch/decrement, stats; flush answered and refused (data kept)`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
