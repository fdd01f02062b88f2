"""redis-py transactions through the proxy (tests/sessions.rs).

usage: redis_py_txn.py PORT abort X Y   (X and Y on different servers)
       redis_py_txn.py PORT watch
"""
import sys
import threading

import redis

port, mode = int(sys.argv[1]), sys.argv[2]
r = redis.Redis(port=port, decode_responses=True)

if mode == "abort":
    x, y = sys.argv[3], sys.argv[4]
    p = r.pipeline(transaction=True)
    p.set(x, "py")
    p.set(y, "py")
    try:
        p.execute()
        raise SystemExit("a transaction over two servers succeeded")
    except redis.exceptions.ClusterCrossSlotError as e:
        # redis-py knows -CROSSSLOT as Redis Cluster's error.
        assert "same server" in str(e), e
    assert r.exists(x, y) == 0, "the aborted transaction wrote"
    print("redis-py: a transaction over two servers raised and wrote nothing")
elif mode == "watch":
    # pipeline(transaction=True) on one server.
    p = r.pipeline(transaction=True)
    p.set("{acct}a", 100).set("{acct}b", 0).incrby("{acct}a", -10).incrby("{acct}b", 10)
    assert p.execute() == [True, True, 90, 10]

    # transaction() with WATCH: 4 threads move 1 unit 25 times each;
    # conflicts retry; the total is conserved and every move lands.
    def move(pipe):
        a = int(pipe.get("{acct}a"))
        b = int(pipe.get("{acct}b"))
        pipe.multi()
        pipe.set("{acct}a", a - 1)
        pipe.set("{acct}b", b + 1)

    retries = []

    def worker():
        c = redis.Redis(port=port, decode_responses=True)
        for _ in range(25):
            c.transaction(move, "{acct}a", "{acct}b")

    # Count conflicts by wrapping WatchError retries.
    orig = redis.client.Pipeline.execute

    def counting(self, raise_on_error=True):
        try:
            return orig(self, raise_on_error)
        except redis.WatchError:
            retries.append(1)
            raise

    redis.client.Pipeline.execute = counting
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    a, b = int(r.get("{acct}a")), int(r.get("{acct}b"))
    assert (a, b) == (90 - 100, 10 + 100), (a, b)
    print(f"redis-py: 100 WATCH transactions from 4 threads, {len(retries)} conflicts retried, total conserved")

    # A conflict is reported as WatchError.
    with r.pipeline() as pipe:
        pipe.watch("{acct}a")
        r.set("{acct}a", 0)
        pipe.multi()
        pipe.set("{acct}a", 1)
        try:
            pipe.execute()
            raise SystemExit("a conflicting transaction committed")
        except redis.WatchError:
            pass
    assert r.get("{acct}a") == "0"
    # Blocking pop with a timeout, and one woken by another client.
    assert r.blpop(["{q}none"], timeout=0.2) is None
    def push():
        redis.Redis(port=port).rpush("{q}jobs", "j1")
    t = threading.Timer(0.3, push)
    t.start()
    assert r.blpop(["{q}jobs"], timeout=0) == ("{q}jobs", "j1")
    t.join()
    print("redis-py: WatchError on conflict; BLPOP with a timeout and BLPOP 0")
else:
    raise SystemExit(f"unknown mode {mode}")
