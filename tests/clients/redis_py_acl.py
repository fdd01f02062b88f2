"""redis-py with a client user (tests/acl.rs). usage: redis_py_acl.py PORT"""
import sys

import redis

r = redis.Redis(port=int(sys.argv[1]), username="bob", password="bobpw", decode_responses=True)
assert r.get("k") == "c"
try:
    r.set("k", "z")
    raise SystemExit("bob, a readonly user, wrote")
except redis.exceptions.NoPermissionError:
    pass
print("redis-py: username=bob reads, and its SET is refused with NoPermissionError")
