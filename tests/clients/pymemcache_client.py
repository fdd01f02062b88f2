"""pymemcache (the current release from PyPI) through shardproxy.

Usage: pymemcache_client.py PORT. Exits non-zero on the first failure.
"""
import sys

import pymemcache
from pymemcache.client.base import Client

port = int(sys.argv[1])
c = Client(("127.0.0.1", port), timeout=10, connect_timeout=10)
# pymemcache sends set/add/… with noreply by default: exercise both.
assert c.set("pm:a", b"1") is True
assert c.set("pm:b", b"2", noreply=False) is True
assert c.get("pm:a") == b"1"
assert c.get_many(["pm:a", "pm:b", "pm:nosuch"]) == {"pm:a": b"1", "pm:b": b"2"}
assert c.add("pm:a", b"x", noreply=False) is False
assert c.replace("pm:a", b"10", noreply=False) is True
assert c.append("pm:a", b"0", noreply=False) is True
assert c.prepend("pm:a", b"1", noreply=False) is True
assert c.get("pm:a") == b"1100"
assert c.incr("pm:a", 5) == 1105
assert c.decr("pm:a", 1105) == 0
value, cas = c.gets("pm:b")
assert value == b"2"
assert c.cas("pm:b", b"3", cas, noreply=False) is True
assert c.cas("pm:b", b"4", cas, noreply=False) is False
assert c.touch("pm:b", 100, noreply=False) is True
many = {f"pm:k{i}": str(i).encode() for i in range(300)}
assert c.set_many(many, noreply=False) == []
assert c.get_many(list(many) + ["pm:nosuch"]) == many
assert c.delete("pm:b", noreply=False) is True
assert c.delete("pm:b", noreply=False) is False
assert c.delete_many(list(many)) is True
assert c.get_many(list(many)) == {}
assert c.version().startswith(b"shardproxy-")
print("pymemcache", pymemcache.__version__, "ok")
