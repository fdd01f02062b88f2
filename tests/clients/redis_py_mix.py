"""redis-py (current release) running an application's mix of Redis 7
features through shardproxy over several servers: streams with consumer
groups, Lua scripts (register_script: EVALSHA with the NOSCRIPT fallback),
EXPIRE … NX, SCAN iteration, INFO, multi-key commands on hash-tagged keys,
and a clear error for keys on different servers.

Usage: redis_py_mix.py PORT PROTOCOL(2|3). Exits non-zero on the first failure.
"""
import sys

import redis

port, proto = int(sys.argv[1]), int(sys.argv[2])
r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True,
                socket_timeout=10, protocol=proto)

# Streams and a consumer group, on many streams (over every server).
for s in range(12):
    key = f"mix:stream:{s}"
    for i in range(5):
        r.xadd(key, {"job": str(i)}, id=f"1-{i + 1}")
    r.xgroup_create(key, "workers", id="0")
    got = r.xreadgroup("workers", "w1", {key: ">"}, count=10)
    entries = got[key][0] if isinstance(got, dict) else got[0][1]
    assert len(entries) == 5, got
    assert r.xpending(key, "workers")["pending"] == 5
    assert r.xack(key, "workers", "1-1", "1-2") == 2
    claimed = r.xautoclaim(key, "workers", "w2", min_idle_time=0, start_id="0-0")
    assert len(claimed[1]) == 3, claimed
    assert r.xlen(key) == 5
    assert r.xinfo_stream(key)["length"] == 5
    assert [e[0] for e in r.xrange(key, count=2)] == ["1-1", "1-2"]
# Several streams in one XREAD: hash-tagged, they share a server.
r.xadd("{orders}:a", {"n": "1"}, id="1-1")
r.xadd("{orders}:b", {"n": "2"}, id="1-1")
got = r.xread({"{orders}:a": "0", "{orders}:b": "0"})
assert len(got) == 2, got

# Lua: a registered script runs by sha on every server (EVALSHA, then EVAL
# after NOSCRIPT where it was not loaded yet).
incr_by = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
for i in range(40):
    assert incr_by(keys=[f"mix:counter:{i}"], args=[i]) == i
sha = r.script_load("return redis.call('GET', KEYS[1])")
assert all(r.script_exists(sha))
assert r.evalsha(sha, 1, "mix:counter:7") == "7"
assert r.eval("return #KEYS", 2, "{u1}:a", "{u1}:b") == 2
try:
    r.eval("return 1", 0)
    raise AssertionError("EVAL with no keys must be refused")
except redis.ResponseError as e:
    assert "cannot be routed" in str(e), e

# EXPIRE … NX/XX/GT (Redis 7).
r.set("mix:ttl", "v")
assert r.expire("mix:ttl", 100, nx=True) is True
assert r.expire("mix:ttl", 200, nx=True) is False
assert r.expire("mix:ttl", 300, gt=True) is True
assert 200 < r.ttl("mix:ttl") <= 300
assert r.expiretime("mix:ttl") > 0

# SCAN iteration over every server: each key once.
r.mset({f"mix:scan:{i}": i for i in range(500)})
seen = list(r.scan_iter(match="mix:scan:*", count=10))
assert len(seen) == 500 and len(set(seen)) == 500, len(seen)
assert sorted(r.keys("mix:scan:1*")) == sorted(k for k in seen if k.startswith("mix:scan:1"))
assert r.dbsize() >= 500

# INFO: the proxy's view (clients use redis_version for feature checks).
info = r.info()
assert info["redis_version"].startswith("7."), info.get("redis_version")
assert "proxy" in info and info["proxy"].startswith("shardproxy"), info.get("proxy")
assert r.info("keyspace")["db0"]["keys"] == r.dbsize()

# Multi-key commands on co-located keys (hash tags), and the error otherwise.
r.rpush("{q}:src", "a", "b", "c")
assert r.lmove("{q}:src", "{q}:dst", "LEFT", "RIGHT") == "a"
assert r.lmpop(2, "{q}:src", "{q}:dst", direction="LEFT") == ["{q}:src", ["b"]]
r.sadd("{s}:a", 1, 2, 3)
r.sadd("{s}:b", 2, 3, 4)
assert r.sintercard(2, ["{s}:a", "{s}:b"]) == 2
assert r.sinterstore("{s}:c", ["{s}:a", "{s}:b"]) == 2
assert r.copy("{s}:c", "{s}:d") is True
assert r.rename("{s}:d", "{s}:e") is True
r.zadd("{z}:a", {"x": 1, "y": 2})
r.zadd("{z}:b", {"y": 3})
assert r.zunionstore("{z}:u", ["{z}:a", "{z}:b"]) == 2
assert r.zrangestore("{z}:r", "{z}:u", 0, 0) == 1
r.set("{l}:1", "ohmytext")
r.set("{l}:2", "mynewtext")
assert r.lcs("{l}:1", "{l}:2") == "mytext"
crossed = 0
for i in range(20):
    try:
        r.rename(f"mix:scan:{i}", f"mix:renamed:{i}")
    except redis.exceptions.ClusterCrossSlotError:
        # -CROSSSLOT: redis-py recognises Redis Cluster's error class.
        crossed += 1
        assert r.exists(f"mix:scan:{i}") == 1
assert crossed > 0
# Pipelines (not transactions) mix everything above.
p = r.pipeline(transaction=False)
p.set("mix:p", 1).incr("mix:p").get("mix:p").dbsize()
assert p.execute()[:3] == [True, 2, "2"]
print("redis-py", redis.__version__, f"RESP{proto} application mix ok")
