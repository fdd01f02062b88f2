"""pymemcache with a TLS context through a memcache pool's TLS listener
(tests/tls.rs). usage: pymemcache_tls.py PORT CA"""
import ssl
import sys

from pymemcache.client.base import Client

ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.check_hostname = False
c = Client(("127.0.0.1", int(sys.argv[1])), tls_context=ctx, timeout=10)
assert c.set("tls:mc", b"v1") is True
assert c.get("tls:mc") == b"v1"
c.set_many({f"tls:m:{i}": str(i).encode() for i in range(50)})
got = c.get_many([f"tls:m:{i}" for i in range(50)])
assert got == {f"tls:m:{i}": str(i).encode() for i in range(50)}, got
print("pymemcache: TLS through the memcache pool's TLS listener, to memcached -Z")
