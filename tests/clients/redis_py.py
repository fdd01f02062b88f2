"""redis-py (the current release from PyPI) through shardproxy.

Usage: redis_py.py PORT [PASSWORD DB]. Exits non-zero on the first failure.
"""
import sys

import redis

port = int(sys.argv[1])
password = sys.argv[2] if len(sys.argv) > 2 else None
db = int(sys.argv[3]) if len(sys.argv) > 3 else 0

r = redis.Redis(host="127.0.0.1", port=port, password=password, db=db,
                decode_responses=True, socket_timeout=10, client_name="sp-test")
assert r.ping() is True
assert r.echo("hi") == "hi"
assert r.set("py:s", "v") is True
assert r.get("py:s") == "v"
assert r.mset({f"py:k{i}": str(i) for i in range(50)}) is True
assert r.mget([f"py:k{i}" for i in range(50)] + ["py:nosuch"]) == [str(i) for i in range(50)] + [None]
assert r.exists("py:k1", "py:k2", "py:nosuch", "py:k1") == 3
assert r.incr("py:n", 5) == 5
assert r.hset("py:h", mapping={"a": "1", "b": "2"}) == 2
assert r.hgetall("py:h") == {"a": "1", "b": "2"}
assert r.rpush("py:l", "x", "y") == 2
assert r.lrange("py:l", 0, -1) == ["x", "y"]
assert r.expire("py:s", 100) is True
assert 0 < r.ttl("py:s") <= 100
assert r.eval("return redis.call('GET', KEYS[1])", 1, "py:s") == "v"
pipe = r.pipeline(transaction=False)
for i in range(200):
    pipe.set(f"py:p{i}", i)
    pipe.get(f"py:p{i}")
out = pipe.execute()
assert out == [x for i in range(200) for x in (True, str(i))], out[:6]
# A refused command is an error reply; the connection stays usable.
try:
    r.execute_command("CONFIG", "SET", "maxmemory", "1")
    raise AssertionError("CONFIG SET should fail")
except redis.ResponseError as e:
    assert "not allowed through the proxy" in str(e), e
assert r.get("py:s") == "v"
assert r.delete(*[f"py:k{i}" for i in range(50)], "py:s", "py:n", "py:h", "py:l") == 54
print("redis-py", redis.__version__, "ok")
