"""redis-py with ssl=True through a TLS listener (tests/tls.rs).

usage: redis_py_tls.py PORT CA [CERT KEY]: verifies the proxy's certificate
against CA (and presents CERT/KEY when given); exits non-zero on a failure.
"""
import sys

import redis

port, ca = int(sys.argv[1]), sys.argv[2]
extra = {}
if len(sys.argv) > 4:
    extra = {"ssl_certfile": sys.argv[3], "ssl_keyfile": sys.argv[4]}
r = redis.Redis(
    host="127.0.0.1",
    port=port,
    ssl=True,
    ssl_ca_certs=ca,
    ssl_cert_reqs="required",
    decode_responses=True,
    **extra,
)
assert r.set("tls:py", "ok") is True
assert r.get("tls:py") == "ok"
# A pipeline of 200 commands and a 1 MB value: more than one TLS record.
p = r.pipeline(transaction=False)
for i in range(200):
    p.set(f"tls:p:{i}", i)
assert all(p.execute())
assert r.mget([f"tls:p:{i}" for i in range(200)]) == [str(i) for i in range(200)]
big = "x" * (1 << 20)
assert r.set("tls:big", big) is True
assert r.get("tls:big") == big
# A transaction, through the same TLS connection.
with r.pipeline(transaction=True) as t:
    t.incr("tls:n")
    t.incr("tls:n")
    assert t.execute() == [1, 2]
print("redis-py: ssl=True through the TLS listener (pipeline, MGET, 1 MB value, MULTI)")
