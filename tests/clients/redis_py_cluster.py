"""redis-py's RedisCluster (the current release from PyPI) through shardproxy:
the proxy answers CLUSTER SLOTS as one node holding every slot.

Usage: redis_py_cluster.py PORT. Exits non-zero on the first failure.
"""
import sys

from redis.cluster import RedisCluster

port = int(sys.argv[1])
rc = RedisCluster(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10)
nodes = rc.get_nodes()
assert [(n.host, n.port) for n in nodes] == [("127.0.0.1", port)], nodes
assert rc.ping() is True
for i in range(100):
    assert rc.set(f"rc:k{i}", str(i)) is True
for i in range(100):
    assert rc.get(f"rc:k{i}") == str(i)
# Keys of many slots, split by slot by the client, all to the one node.
keys = [f"rc:k{i}" for i in range(100)]
assert rc.mget_nonatomic(keys) == [str(i) for i in range(100)]
# Multi-key commands in one slot (a hash tag): as the client sends them.
assert rc.mset({"{u1}a": "1", "{u1}b": "2"}) is True
assert rc.mget("{u1}a", "{u1}b", "{u1}none") == ["1", "2", None]
assert rc.delete("{u1}a", "{u1}b") == 2
# The client's slot (computed locally) and the proxy's answer agree.
for k in ["foo", "{user1000}.following", "rc:k7"]:
    assert rc.cluster_keyslot(k) == rc.keyslot(k), k
info = rc.cluster_info()
assert info["cluster_state"] == "ok", info
pipe = rc.pipeline()
for i in range(50):
    pipe.incr("rc:n")
    pipe.get(f"rc:k{i}")
out = pipe.execute()
assert out[-2] == 50 and out[-1] == "49", out[-4:]
assert rc.delete("rc:n") == 1
rc.close()
print("ok")
