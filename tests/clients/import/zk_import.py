"""Builds a ZooKeeper tree with kazoo, dumps every node, and compares two dumps.

  zk_import.py build --server 127.0.0.1:PORT --ready FILE [--scenario full|fixture1|fixture2]
      builds the tree, writes FILE, then keeps its session (and so its ephemerals) open until
      it is killed (at most 900 s).
  zk_import.py dump --server 127.0.0.1:PORT --out FILE
      one line per node, sorted by path: path, Stat, ACL, data (hex).
  zk_import.py after-import --server 127.0.0.1:PORT --last-zxid Z [--verify]
      creates (or checks) /after-import: a write after the import gets a zxid above Z.
  zk_import.py wait-gone --server 127.0.0.1:PORT --path P [--path P ...] [--timeout S]
      waits until the paths are gone (an imported session's ephemerals, after it expired).
  zk_import.py compare EXPECTED ACTUAL [--counts FILE] [--name NAME] [--skip PATH ...]
      one check per node of EXPECTED (and one for "no extra nodes"); prints
      "NAME: N passed, M failed" and writes "N M" to FILE.

Every connection goes to the --server address given (127.0.0.1 only).
"""

import argparse
import os
import struct
import sys
import time
from collections import namedtuple

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NotEmptyError
from kazoo.protocol.serialization import (
    Create,
    Create2,
    CheckVersion,
    Delete,
    MultiHeader,
    SetData,
    Transaction,
    ZnodeStat,
    int_struct,
    read_string,
    stat_struct,
    write_buffer,
    write_string,
)
from kazoo.protocol.states import KazooState
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl
from kazoo.exceptions import EXCEPTIONS

USER, PASSWORD = "importer", "secret"
AUTH = ("digest", f"{USER}:{PASSWORD}")
DIGEST_ACL = [make_digest_acl(USER, PASSWORD, all=True)]
MIXED_ACL = [make_digest_acl(USER, PASSWORD, all=True), make_digest_acl("reader", "pw", read=True)]
HOUR_MS = 3600 * 1000

CREATE_MODE_CONTAINER = 4
CREATE_MODE_TTL = 5
CREATE_MODE_TTL_SEQUENTIAL = 6
CREATE_MODE_EPHEMERAL_SEQUENTIAL = 3


def _acl_bytes(acls):
    b = bytearray(int_struct.pack(len(acls)))
    for acl in acls:
        b.extend(int_struct.pack(acl.perms) + write_string(acl.id.scheme) + write_string(acl.id.id))
    return b


class CreateContainer(namedtuple("CreateContainer", "path data acl flags")):
    """createContainer (19): a CreateRequest answered with Create2Response."""

    type = 19

    def serialize(self):
        return (write_string(self.path) + write_buffer(self.data) + _acl_bytes(self.acl)
                + int_struct.pack(self.flags))

    @classmethod
    def deserialize(cls, bytes, offset):
        return Create2.deserialize(bytes, offset)


class CreateTTL(namedtuple("CreateTTL", "path data acl flags ttl")):
    """createTTL (21): CreateTTLRequest{path, data, acl, flags, long ttl}."""

    type = 21

    def serialize(self):
        return (write_string(self.path) + write_buffer(self.data) + _acl_bytes(self.acl)
                + int_struct.pack(self.flags) + struct.pack("!q", self.ttl))

    @classmethod
    def deserialize(cls, bytes, offset):
        return Create2.deserialize(bytes, offset)


class Multi(namedtuple("Multi", "operations")):
    """A multi whose response parser also knows create2 (15) results."""

    type = 14

    def serialize(self):
        return Transaction(self.operations).serialize()

    @classmethod
    def deserialize(cls, bytes, offset):
        results = []
        while True:
            header, offset = MultiHeader.deserialize(bytes, offset)
            if header.done:
                return results
            if header.type == Create.type:
                path, offset = read_string(bytes, offset)
                results.append(path)
            elif header.type == Create2.type:
                path, offset = read_string(bytes, offset)
                offset += stat_struct.size
                results.append(path)
            elif header.type == SetData.type:
                results.append(ZnodeStat._make(stat_struct.unpack_from(bytes, offset)))
                offset += stat_struct.size
            elif header.type in (Delete.type, CheckVersion.type):
                results.append(True)
            elif header.type == -1:
                err = int_struct.unpack_from(bytes, offset)[0]
                offset += int_struct.size
                results.append(EXCEPTIONS[err]())
            else:
                raise ValueError(f"unexpected multi result type {header.type}")

    @staticmethod
    def unchroot(client, response):
        return response


def call(client, request):
    result = client.handler.async_result()
    client._call(request, result)
    return result.get(timeout=30)


def connect(server, timeout=30.0):
    client = KazooClient(hosts=server, timeout=timeout, auth_data=[AUTH])
    client.start(timeout=30)
    return client


def container(client, path, data=b""):
    return call(client, CreateContainer(path, data, OPEN_ACL_UNSAFE, CREATE_MODE_CONTAINER))


def ttl_node(client, path, data=b"", ttl=HOUR_MS, sequential=False):
    flags = CREATE_MODE_TTL_SEQUENTIAL if sequential else CREATE_MODE_TTL
    return call(client, CreateTTL(path, data, OPEN_ACL_UNSAFE, flags, ttl))


def expect_error(fn, error):
    try:
        fn()
    except error:
        return
    raise AssertionError(f"expected {error.__name__}")


def scenario_fixture1(zk, holder):
    """Phase one of the fixture: every node kind, before a restart snapshots them."""
    zk.create("/app", b"root of the app")
    zk.create("/app/cfg", b"v0")
    for i in range(1, 4):
        zk.set("/app/cfg", f"v{i}".encode())
    zk.create("/app/seq-", b"s", sequence=True)
    zk.create("/app/seq-", b"s", sequence=True)
    zk.create("/app/secret", b"only importer", acl=DIGEST_ACL)
    zk.set_acls("/app/secret", MIXED_ACL)
    container(zk, "/app/box")
    zk.create("/app/box/item", b"keeps the container")
    ttl_node(zk, "/app/ttl", b"lives an hour")
    zk.create("/app/null", None)
    zk.create("/app/gone", b"x")
    zk.delete("/app/gone")
    holder.create("/app/eph", b"held", ephemeral=True)
    holder.create("/app/eph-seq-", b"", ephemeral=True, sequence=True)


def scenario_fixture2(zk, holder):
    """Phase two: txns logged after the snapshot taken at restart."""
    zk.create("/log", b"after the snapshot")
    call(zk, Create2("/log/c2", b"create2", OPEN_ACL_UNSAFE, 0))
    container(zk, "/log/box")
    zk.create("/log/box/a", b"")
    ttl_node(zk, "/log/ttl-", b"t", ttl=2 * HOUR_MS, sequential=True)
    zk.set("/app/cfg", b"v4")
    zk.set_acls("/app/cfg", DIGEST_ACL)
    zk.delete("/app/" + sorted(c for c in zk.get_children("/app") if c.startswith("seq-"))[0])
    expect_error(lambda: zk.create("/log", b"again"), NodeExistsError)
    expect_error(lambda: zk.set("/log", b"bad", version=7), BadVersionError)
    call(zk, Multi([
        Create("/log/m1", b"multi", OPEN_ACL_UNSAFE, 0),
        CreateContainer("/log/mbox", b"", OPEN_ACL_UNSAFE, CREATE_MODE_CONTAINER),
        CreateTTL("/log/mttl", b"", OPEN_ACL_UNSAFE, CREATE_MODE_TTL, HOUR_MS),
        Create("/log/mbox/x", b"", OPEN_ACL_UNSAFE, 0),
        SetData("/log/m1", b"multi set", 0),
        CheckVersion("/log", 0),
        Delete("/log/c2", -1),
    ]))
    failed = call(zk, Multi([
        Create("/log/never", b"", OPEN_ACL_UNSAFE, 0),
        CheckVersion("/log", 42),
    ]))
    assert isinstance(failed[1], BadVersionError), failed
    # ZooKeeper's ContainerManager (run with znode.container.checkIntervalMs small) deletes
    # an emptied container and an expired TTL node: deleteContainer (20) txns.
    container(zk, "/log/emptied")
    zk.create("/log/emptied/only", b"")
    zk.delete("/log/emptied/only")
    ttl_node(zk, "/log/short-ttl", ttl=300)
    deadline = time.time() + 30
    while zk.exists("/log/emptied") or zk.exists("/log/short-ttl"):
        assert time.time() < deadline, "ZooKeeper's ContainerManager did not reap"
        time.sleep(0.2)
    holder.create("/log/eph", b"held", ephemeral=True)
    # A session that ends: its closeSession txn deletes its ephemeral.
    short = connect(holder.hosts_for_tests, timeout=10.0)
    short.create("/log/short-lived", b"", ephemeral=True)
    short.stop()
    short.close()


def scenario_full(zk, holder):
    scenario_fixture1(zk, holder)
    scenario_fixture2(zk, holder)
    for i in range(12):
        zk.set("/app/cfg", f"round {i}".encode())
    zk.create("/big", b"B" * 200_000)
    zk.create("/unicode-\u00e9\u4e2d", "d\u00e9j\u00e0".encode())
    zk.create("/bulk", b"")
    for d in range(10):
        zk.create(f"/bulk/d{d}", f"dir {d}".encode())
        for n in range(30):
            zk.create(f"/bulk/d{d}/n-", f"{d}/{n}".encode(), sequence=True)
        # deletes so that cversion and pzxid move on without the child count
        for n in range(0, 30, 7):
            zk.delete(f"/bulk/d{d}/n-{n:010d}")
        if d % 3 == 0:
            zk.set_acls(f"/bulk/d{d}", DIGEST_ACL)
    container(zk, "/bulk/box")
    for n in range(5):
        zk.create(f"/bulk/box/c{n}", b"")
    zk.delete("/bulk/box/c0")
    ttl_node(zk, "/bulk/ttl")
    ttl_node(zk, "/bulk/ttl/child-ttl-", sequential=True)
    zk.create("/bulk/ttl/plain", b"under a TTL node")
    for n in range(20):
        holder.create(f"/bulk/eph-{n}", b"e", ephemeral=True)
    holder.create("/bulk/eph-seq-", b"", ephemeral=True, sequence=True)
    txn = zk.transaction()
    for n in range(10):
        txn.create(f"/bulk/txn-{n}", b"in a multi")
    txn.set_data("/bulk", b"bulk after the multi")
    txn.check("/big", 0)
    txn.delete("/bulk/d1/n-0000000001")
    results = txn.commit()
    assert all(not isinstance(r, Exception) for r in results), results
    expect_error(lambda: zk.delete("/bulk"), NotEmptyError)
    if zk.exists("/quota-app"):  # run.sh set a quota on it with zkCli
        for n in range(8):
            zk.create(f"/quota-app/c{n}", b"x" * (n * 10))
        zk.set("/quota-app/c3", b"longer data than before")
        zk.delete("/quota-app/c0")
        zk.create("/quota-app/c1/deeper", b"d")


def build(args):
    zk = connect(args.server)
    # The holder's ephemerals must survive the import: a long session timeout.
    holder = connect(args.server, timeout=40.0)
    holder.hosts_for_tests = args.server
    {"full": scenario_full, "fixture1": scenario_fixture1, "fixture2": scenario_fixture2}[
        args.scenario](zk, holder)
    zk.stop()
    zk.close()
    with open(args.ready + ".tmp", "w") as f:
        f.write(f"{holder.client_id[0]:#x}\n")
    os.rename(args.ready + ".tmp", args.ready)
    deadline = time.time() + 900
    while time.time() < deadline:
        time.sleep(1)


def stat_text(stat):
    return " ".join(str(getattr(stat, f)) for f in (
        "czxid", "mzxid", "ctime", "mtime", "version", "cversion", "aversion",
        "ephemeralOwner", "dataLength", "numChildren", "pzxid"))


def dump(args):
    zk = connect(args.server)
    lines = []
    stack = ["/"]
    while stack:
        path = stack.pop()
        data, stat = zk.get(path)
        acls, _ = zk.get_acls(path)
        acl = ",".join(f"{a.perms}:{a.id.scheme}:{a.id.id}" for a in acls)
        lines.append(f"{path}\t{stat_text(stat)}\t{acl}\t{(data or b'').hex()}")
        for child in zk.get_children(path):
            stack.append(("" if path == "/" else path) + "/" + child)
    zk.stop()
    zk.close()
    lines.sort()
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"dumped {len(lines)} nodes from {args.server} into {args.out}")


def after_import(args):
    """Writes (or, with --verify, reads back) /after-import; its czxid must follow the import."""
    zk = connect(args.server)
    if args.verify:
        data, stat = zk.get("/after-import")
    else:
        zk.create("/after-import", b"written by keel")
        data, stat = zk.get("/after-import")
    zk.stop()
    zk.close()
    ok = data == b"written by keel" and stat.czxid > args.last_zxid
    print(f"/after-import czxid {stat.czxid:#x} (import ended at {args.last_zxid:#x}): "
          f"{'ok' if ok else 'WRONG'}")
    return 0 if ok else 1


def wait_gone(args):
    """Waits until every path is gone (an imported session expired and its ephemerals went)."""
    zk = connect(args.server)
    start = time.time()
    try:
        while any(zk.exists(path) for path in args.path):
            if time.time() - start > args.timeout:
                print(f"still there after {args.timeout}s: {args.path}")
                return 1
            time.sleep(1)
    finally:
        zk.stop()
        zk.close()
    print(f"gone after {time.time() - start:.0f}s: {args.path}")
    return 0


def read_dump(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                out[line.split("\t", 1)[0]] = line
    return out


def compare(args):
    expected, actual = read_dump(args.expected), read_dump(args.actual)
    passed = failed = 0
    for path, line in sorted(expected.items()):
        if path in args.skip:
            continue
        got = actual.get(path)
        if got == line:
            passed += 1
            continue
        failed += 1
        print(f"FAIL {path}\n  expected: {line!r}\n  actual:   {got!r}")
    extra = sorted(set(actual) - set(expected) - set(args.skip))
    if extra:
        failed += 1
        print(f"FAIL extra nodes: {extra}")
    else:
        passed += 1
    print(f"{args.name}: {passed} passed, {failed} failed ({len(expected)} nodes)")
    if args.counts:
        with open(args.counts, "w") as f:
            f.write(f"{passed} {failed}\n")
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--server", required=True)
    b.add_argument("--ready", required=True)
    b.add_argument("--scenario", default="full")
    d = sub.add_parser("dump")
    d.add_argument("--server", required=True)
    d.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("expected")
    c.add_argument("actual")
    c.add_argument("--counts")
    c.add_argument("--name", default="import")
    c.add_argument("--skip", action="append", default=[])
    a = sub.add_parser("after-import")
    a.add_argument("--server", required=True)
    a.add_argument("--last-zxid", type=lambda v: int(v, 0), required=True)
    a.add_argument("--verify", action="store_true")
    w = sub.add_parser("wait-gone")
    w.add_argument("--server", required=True)
    w.add_argument("--path", action="append", required=True)
    w.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args()
    if args.cmd == "build":
        build(args)
    elif args.cmd == "dump":
        dump(args)
    elif args.cmd == "wait-gone":
        sys.exit(wait_gone(args))
    elif args.cmd == "after-import":
        sys.exit(after_import(args))
    else:
        sys.exit(compare(args))


if __name__ == "__main__":
    main()
