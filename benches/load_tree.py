"""Loads a tree of `parents` x `children` znodes (100 B data, 20-character names) into a
ZooKeeper-protocol server with pipelined async creates, then verifies the count.

Usage: python3 load_tree.py HOST:PORT [parents] [children]
"""
import sys
import time

from kazoo.client import KazooClient

WINDOW = 2000
DATA = b"x" * 100


def drain(pending):
    """Waits for every outstanding create; returns how many failed."""
    errors = 0
    for result in pending:
        try:
            result.get(timeout=60)
        except Exception:
            errors += 1
    pending.clear()
    return errors


def main():
    hosts = sys.argv[1]
    parents = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    children = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    zk = KazooClient(hosts=hosts, timeout=30)
    zk.start(timeout=30)
    started = time.monotonic()
    for p in range(parents):
        zk.create("/p%04d" % p, b"")
    pending = []
    errors = 0
    for p in range(parents):
        for c in range(children):
            pending.append(zk.create_async("/p%04d/node-%015d" % (p, c), DATA))
            if len(pending) >= WINDOW:
                errors += drain(pending)
    errors += drain(pending)
    elapsed = time.monotonic() - started
    total = zk.get_children("/p%04d" % (parents - 1))
    print("created %d znodes in %.1fs (%.0f/s), %d errors, last parent has %d children"
          % (parents * children, elapsed, parents * children / elapsed, errors, len(total)))
    zk.stop()
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
