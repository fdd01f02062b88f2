"""redis-py pub/sub through the proxy (tests/pubsub.rs).

usage: redis_py_pubsub.py PORT PROTOCOL   (PROTOCOL 2 or 3)
"""
import sys
import threading
import time

import redis

port, proto = int(sys.argv[1]), int(sys.argv[2])
r = redis.Redis(port=port, protocol=proto, decode_responses=True)
ps = r.pubsub()
ps.subscribe("py:a", "py:b", "py:c")
ps.psubscribe("py:p.*")


def drain_until(n, timeout=10.0):
    got = []
    end = time.time() + timeout
    while len(got) < n and time.time() < end:
        m = ps.get_message(timeout=0.2)
        if m is not None:
            got.append(m)
    return got


confirms = drain_until(4)
assert [m["type"] for m in confirms] == ["subscribe"] * 3 + ["psubscribe"], confirms
assert [m["data"] for m in confirms] == [1, 2, 3, 4], confirms

pub = redis.Redis(port=port, decode_responses=True)
for i in range(100):
    for ch in ("py:a", "py:b", "py:c", f"py:p.{i}"):
        assert pub.publish(ch, str(i)) == 1, ch
msgs = drain_until(400)
assert len(msgs) == 400, len(msgs)
per = {}
for m in msgs:
    key = m["channel"] if m["type"] == "message" else "pattern"
    per.setdefault(key, []).append(int(m["data"]))
assert per["py:a"] == list(range(100)) and per["py:c"] == list(range(100)), per.keys()
assert sorted(per["pattern"]) == list(range(100))

# A handler in a background thread, as applications run it.
seen = []
ps2 = r.pubsub()
ps2.subscribe(**{"py:t": lambda m: seen.append(m["data"])})
t = ps2.run_in_thread(sleep_time=0.05)
time.sleep(0.2)
for i in range(10):
    pub.publish("py:t", f"t{i}")
end = time.time() + 5
while len(seen) < 10 and time.time() < end:
    time.sleep(0.05)
t.stop()
t.join(timeout=5)
assert seen == [f"t{i}" for i in range(10)], seen

ps.unsubscribe()
ps.punsubscribe()
gone = drain_until(4)
assert sorted(m["type"] for m in gone) == ["punsubscribe"] + ["unsubscribe"] * 3, gone
assert gone[-1]["data"] == 0, gone
ps.close()
ps2.close()
print(f"redis-py RESP{proto}: 3 channels and a pattern over 3 servers, 400 messages in order, run_in_thread")
