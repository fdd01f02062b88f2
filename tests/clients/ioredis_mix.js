// ioredis (current release from npm) running an application's mix of
// Redis 7 features through shardproxy over several servers: the ready check
// (INFO), streams with consumer groups, Lua via defineCommand (EVALSHA with
// the NOSCRIPT fallback), EXPIRE … NX, scanStream, pipelines.
//
// Usage: node ioredis_mix.js PORT. Exits non-zero on the first failure.
const assert = require("assert");
const Redis = require("ioredis");

async function main() {
  const port = Number(process.argv[2]);
  // enableReadyCheck (the default) sends INFO and waits for loading:0.
  const r = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0 });
  await r.connect();
  assert.strictEqual(await r.ping(), "PONG");

  for (let s = 0; s < 12; s++) {
    const key = `js:stream:${s}`;
    for (let i = 1; i <= 4; i++) await r.xadd(key, `1-${i}`, "job", String(i));
    assert.strictEqual(await r.xgroup("CREATE", key, "g", "0"), "OK");
    const got = await r.xreadgroup("GROUP", "g", "c1", "COUNT", 10, "STREAMS", key, ">");
    assert.strictEqual(got[0][1].length, 4);
    assert.strictEqual(await r.xack(key, "g", "1-1", "1-2", "1-3", "1-4"), 4);
    const pending = await r.xpending(key, "g");
    assert.strictEqual(pending[0], 0);
  }

  r.defineCommand("addTo", {
    numberOfKeys: 1,
    lua: "return redis.call('INCRBY', KEYS[1], ARGV[1])",
  });
  for (let i = 0; i < 30; i++) {
    assert.strictEqual(await r.addTo(`js:count:${i}`, i + 1), i + 1);
  }

  await r.set("js:ttl", "v");
  assert.strictEqual(await r.expire("js:ttl", 100, "NX"), 1);
  assert.strictEqual(await r.expire("js:ttl", 100, "NX"), 0);

  const pipe = r.pipeline();
  for (let i = 0; i < 300; i++) pipe.set(`js:scan:${i}`, i);
  await pipe.exec();
  const seen = new Set();
  let calls = 0;
  await new Promise((resolve, reject) => {
    const stream = r.scanStream({ match: "js:scan:*", count: 10 });
    stream.on("data", (keys) => { calls++; keys.forEach((k) => { assert(!seen.has(k), `twice: ${k}`); seen.add(k); }); });
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  assert.strictEqual(seen.size, 300);

  const info = await r.info("server");
  assert.match(info, /redis_version:7\./);
  assert.match(info, /proxy:shardproxy-/);

  await r.rpush("{jq}:a", "x", "y");
  assert.strictEqual(await r.lmove("{jq}:a", "{jq}:b", "LEFT", "LEFT"), "x");
  // Keys on different servers: a clear error, nothing renamed.
  let crossed = 0;
  for (let i = 0; i < 20; i++) {
    try {
      await r.rename(`js:scan:${i}`, `js:moved:${i}`);
    } catch (e) {
      assert.match(String(e), /CROSSSLOT/);
      assert.strictEqual(await r.exists(`js:scan:${i}`), 1);
      crossed++;
    }
  }
  assert(crossed > 0, "no key pair spanned servers");
  console.log(`ioredis ${require("ioredis/package.json").version} application mix ok (${calls} SCAN calls)`);
  r.disconnect();
}

main().catch((e) => { console.error(e); process.exit(1); });
