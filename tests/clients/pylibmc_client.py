"""pylibmc (libmemcached) through shardproxy, in binary or ASCII mode
(tests/memcache_binary.rs). usage: pylibmc_client.py PORT binary|ascii"""
import sys

import pylibmc

port, mode = int(sys.argv[1]), sys.argv[2]
c = pylibmc.Client([f"127.0.0.1:{port}"], binary=(mode == "binary"))
assert c.set("pl:a", "hello")
assert c.get("pl:a") == "hello"
assert c.get("pl:missing") is None
assert not c.add("pl:a", "again")
assert c.replace("pl:a", "bye")
assert c.incr("pl:n", 1) if c.set("pl:n", 10) else False
assert c.get("pl:n") == 11 or c.get("pl:n") == "11"
assert c.delete("pl:a")
assert c.get("pl:a") is None
values = {f"pl:m:{i}": f"v{i}" for i in range(1000)}
assert not c.set_multi(values), "set_multi failed keys"
got = c.get_multi(list(values) + ["pl:none"])
assert got == values, (len(got), len(values))
c.delete_multi(list(values)[:100])
assert len(c.get_multi(list(values))) == 900
print(f"pylibmc ({mode}): set/get/add/replace/incr/delete, 1,000-key set_multi/get_multi/delete_multi")
