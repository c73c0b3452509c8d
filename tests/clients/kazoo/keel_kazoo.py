"""pytest plugin: run kazoo's own test suite against an already running server.

kazoo's harness (kazoo/testing/harness.py + common.py) starts a 3-node Apache ZooKeeper cluster
of its own. Loaded with ``-p keel_kazoo`` (this directory on PYTHONPATH), this plugin replaces
that cluster with the single external server at ``KEEL_ADDR=127.0.0.1:PORT``:

* ``kazoo.testing.common`` is replaced by a stub before kazoo's harness is imported (so the
  harness neither starts Java nor needs pyOpenSSL/pyjks), and ``get_global_cluster`` returns an
  ``ExternalCluster`` of one server. Asking it to stop/restart a server, for a second server, or
  for TLS raises ``ExternalServerError`` with a reason, so such tests fail loudly instead of
  passing vacuously (they are listed in excluded.txt).
* After every harness-based test the whole tree except ``/zookeeper`` is deleted (as a superuser
  "super:test", the digest kazoo's harness configures), and the test errors if that fails: the
  next test starts from an empty tree, as with kazoo's own fresh cluster.
* If a test fails and the server no longer answers ``ruok``, the run stops (the remaining tests
  count as failed) instead of burning every test's connect timeout.

Ensemble mode (tests/clients/kazoo/ensemble.sh): with ``KEEL_CLUSTER=127.0.0.1:P1,...`` (instead
of KEEL_ADDR) and ``KEEL_CONTROL=/path/to/script``, the ``ExternalCluster`` has one server per
address, in order, and the harness may stop and start them: a server's ``stop()`` runs
``$KEEL_CONTROL stop N`` (N = 1-based position in KEEL_CLUSTER, the server's myid), ``run()``
runs ``$KEEL_CONTROL start N``, ``reset()`` runs ``$KEEL_CONTROL reset N`` (stop, wipe its data,
keep myid); the cluster's ``start()``/``stop()``/``reset()`` do that for every server (start in
reverse order, as kazoo's own harness does). Each command is bounded (KC_CONTROL_SECONDS,
default 60) and is followed by a bounded wait (KC_SERVE_SECONDS, default 60) until the running
servers serve again: each answers ``srvr`` with a Mode and exactly one of them is the leader
(no wait if the running servers are not a majority; none with KC_SERVE_SECONDS=0, as kazoo's own
harness, whose ``run()`` returns once the process is started, and the control script's
``start`` waits only for ``ruok``). A failed command or wait raises
``ExternalServerError``. After every harness-based test, servers a test left stopped are started
again and the ensemble must serve before the tree is cleaned. ``cluster.terminate()`` (kazoo's
tearDownClass) still leaves the servers running. ``KEEL_SERVER_LOGS=LOG1,LOG2,...`` names the
servers' logs for kazoo's failure report. "Alive" for the watchdog means: some server answers
``ruok``.

* A watchdog thread bounds the run: if the server stops answering ``ruok`` for
  KC_DEAD_SECONDS (default 10), or one test (setup+call+teardown) runs longer than
  KC_HANG_SECONDS (default 150; pytest-timeout fails a test at 60 s but cannot always unstick
  its teardown), the in-flight test is recorded as an error and the process exits at once
  (exit status 3). run.sh restarts pytest on the tests not yet run if the server is still up.
  After 5 consecutive tests that each failed only after >= 45 s, the run stops (the rest
  count as failed): a server that answers ruok but not requests costs minutes, not the cap.

Options:
  --keel-expected FILE  run exactly the test ids listed in FILE (one per line, '#' comments);
                        an id that is not collected is reported as missing.
  --keel-results FILE   append one JSON line per finished test:
                        {"nodeid", "outcome", "duration", "uses_server", "message"}; outcome is
                        passed, failed, error, skipped or missing. Written as each test ends, so
                        a run that is killed keeps what it had.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

# kazoo/tests/util.py reads these at import time; fix them so runs do not depend on the caller's
# environment (CI=true in CI, unset on a developer's machine).
os.environ["CI"] = "true"
os.environ["ZOOKEEPER_VERSION"] = os.environ.get("KEEL_ZK_VERSION", "3.8.0")

log = logging.getLogger("keel_kazoo")

SUPER_AUTH = ("digest", "super:test")
CLEAN_MAX_NODES = 100000
CLEAN_MAX_SECONDS = 60
CLEAN_ROUNDS = 5
DEAD_SECONDS = float(os.environ.get("KC_DEAD_SECONDS", "10"))
HANG_SECONDS = float(os.environ.get("KC_HANG_SECONDS", "150"))
# Stop the run after this many consecutive tests that failed only after running >= 45 s (the
# server answers ruok but not requests): each would otherwise cost the 60 s per-test timeout.
SLOW_FAILURES_STOP = 5
SLOW_FAILURE_SECONDS = float(os.environ.get("KC_SLOW_FAILURE_SECONDS", "45"))
WATCH_INTERVAL = 2.0


def _split_addr(addr):
    host, _, port = addr.strip().rpartition(":")
    if not host or not port.isdigit():
        raise pytest.UsageError("not HOST:PORT: %r" % addr)
    return host, int(port)


def _ensemble_mode():
    return bool(os.environ.get("KEEL_CLUSTER"))


def _addrs():
    """[(host, port)]: the servers under test (KEEL_CLUSTER, else the one KEEL_ADDR)."""
    cluster = os.environ.get("KEEL_CLUSTER")
    if cluster:
        if not os.environ.get("KEEL_CONTROL"):
            raise pytest.UsageError("KEEL_CLUSTER needs KEEL_CONTROL=/path/to/control-script")
        return [_split_addr(a) for a in cluster.split(",") if a.strip()]
    addr = os.environ.get("KEEL_ADDR")
    if not addr:
        raise pytest.UsageError(
            "KEEL_ADDR=127.0.0.1:PORT (or KEEL_CLUSTER=... with KEEL_CONTROL=...) must name "
            "the server(s) under test"
        )
    return [_split_addr(addr)]


def _addr():
    return _addrs()[0]


def _hosts_arg():
    return ",".join("%s:%d" % a for a in _addrs())


class ExternalServerError(RuntimeError):
    """The test needs control over the server that this harness does not have."""


class ExternalServer(object):
    def __init__(self, host, port):
        self.host = host
        self.client_port = port
        self.running = True

    @property
    def address(self):
        return "%s:%s" % (self.host, self.client_port)

    @property
    def secure_address(self):
        raise ExternalServerError("needs TLS (secureClientPort): external server is plaintext only")

    @property
    def secure_client_port(self):
        return self.secure_address

    def run(self):
        # Never stopped by this harness, so there is nothing to start.
        pass

    def stop(self):
        raise ExternalServerError("needs to stop/restart a server through the harness's cluster")

    reset = stop
    destroy = stop

    def get_logs(self, num_lines=30):
        path = os.environ.get("KEEL_SERVER_LOG")
        if not path or not os.path.exists(path):
            return []
        with open(path, "r", errors="replace") as f:
            return f.readlines()[-num_lines:]


class ExternalCluster(object):
    def __init__(self, host, port):
        self._servers = [ExternalServer(host, port)]

    def __getitem__(self, k):
        if isinstance(k, int) and k >= len(self._servers):
            raise ExternalServerError(
                "needs several servers: asked for server index %d of a 1-server external cluster" % k
            )
        return self._servers[k]

    def __iter__(self):
        return iter(self._servers)

    def __len__(self):
        return len(self._servers)

    def start(self):
        pass

    def terminate(self):
        # Called from KazooTestCase.tearDownClass and on kazoo's "nuke the cluster" retry path:
        # the external server keeps running.
        pass

    def stop(self):
        raise ExternalServerError("needs to stop servers through the harness's cluster")

    def reset(self):
        raise ExternalServerError("needs to reset server data through the harness's cluster")

    def get_logs(self):
        return self._servers[0].get_logs()

    def get_ssl_client_configuration(self):
        raise ExternalServerError("needs TLS (secureClientPort): external server is plaintext only")


CONTROL_SECONDS = float(os.environ.get("KC_CONTROL_SECONDS", "60"))
SERVE_SECONDS = float(os.environ.get("KC_SERVE_SECONDS", "60"))


def four_letter(host, port, word, timeout=3.0):
    """The server's answer to a four-letter word ("" if it does not answer)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(word.encode())
            data = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.decode("utf-8", "replace")
    except OSError:
        return ""


def server_mode(host, port):
    """srvr's Mode (leader, follower, observer, standalone) or None if not serving."""
    for line in four_letter(host, port, "srvr", timeout=2.0).splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


class ControlledServer(ExternalServer):
    """One server of an external ensemble, stopped and started through $KEEL_CONTROL."""

    def __init__(self, cluster, index, host, port):
        super(ControlledServer, self).__init__(host, port)
        self.cluster = cluster
        self.index = index  # 0-based; the control script gets index + 1 (the myid)

    def _control(self, action):
        cmd = [os.environ["KEEL_CONTROL"], action, str(self.index + 1)]
        log.info("keel_kazoo: %s", " ".join(cmd))
        start = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=CONTROL_SECONDS,
            )
        except subprocess.TimeoutExpired:
            raise ExternalServerError("%s: no answer within %ds" % (" ".join(cmd), CONTROL_SECONDS))
        out = proc.stdout.decode("utf-8", "replace").strip()
        log.info("keel_kazoo: %s -> exit %d after %.1fs %s", action, proc.returncode,
                 time.monotonic() - start, out)
        if proc.returncode != 0:
            raise ExternalServerError(
                "%s failed (exit %d): %s" % (" ".join(cmd), proc.returncode, out[-500:])
            )

    def run(self):
        if self.running:
            return
        self._control("start")
        self.running = True
        self.cluster.wait_serving("after starting server %d" % (self.index + 1))

    def stop(self):
        if not self.running:
            return
        self._control("stop")
        self.running = False
        self.cluster.wait_serving("after stopping server %d" % (self.index + 1))

    def reset(self):
        self._control("reset")
        self.running = False
        self.cluster.wait_serving("after resetting server %d" % (self.index + 1))

    def destroy(self):
        self.stop()

    def get_logs(self, num_lines=30):
        paths = [p for p in os.environ.get("KEEL_SERVER_LOGS", "").split(",") if p]
        if self.index >= len(paths) or not os.path.exists(paths[self.index]):
            return []
        with open(paths[self.index], "r", errors="replace") as f:
            return ["[server %d] %s" % (self.index + 1, l) for l in f.readlines()[-num_lines:]]


class ControlledCluster(ExternalCluster):
    """The servers of KEEL_CLUSTER, stopped and started through $KEEL_CONTROL."""

    def __init__(self, addrs):
        self._servers = [ControlledServer(self, i, h, p) for i, (h, p) in enumerate(addrs)]

    def modes(self):
        return [server_mode(s.host, s.client_port) if s.running else None for s in self._servers]

    def wait_serving(self, context):
        """Bounded wait until every running server serves, with exactly one leader among them.
        No wait when the running servers are no majority (they cannot serve)."""
        running = [s for s in self._servers if s.running]
        if 2 * len(running) <= len(self._servers) or SERVE_SECONDS <= 0:
            return
        deadline = time.monotonic() + SERVE_SECONDS
        start = time.monotonic()
        while True:
            modes = self.modes()
            live = [m for s, m in zip(self._servers, modes) if s.running]
            if all(live) and live.count("leader") == 1:
                log.info("keel_kazoo: serving %s after %.1fs: %s", context,
                         time.monotonic() - start, modes)
                return
            if time.monotonic() > deadline:
                raise ExternalServerError(
                    "ensemble not serving %s within %ds: modes %r" % (context, SERVE_SECONDS, modes)
                )
            time.sleep(0.1)

    def start(self):
        # Like kazoo's harness: highest index first.
        for server in reversed(self._servers):
            if not server.running:
                server._control("start")
                server.running = True
        self.wait_serving("after starting the cluster")

    def stop(self):
        for server in self._servers:
            if server.running:
                server._control("stop")
                server.running = False

    def reset(self):
        for server in self._servers:
            server._control("reset")
            server.running = False

    def get_logs(self):
        logs = []
        for server in self._servers:
            logs += server.get_logs()
        return logs


def _install_shim():
    stub = types.ModuleType("kazoo.testing.common")
    stub.__doc__ = "keel_kazoo stub: external server instead of a managed ZooKeeper cluster"
    stub.ZookeeperCluster = ExternalCluster
    stub.ManagedZooKeeper = ExternalServer
    stub.ExternalServerError = ExternalServerError
    sys.modules["kazoo.testing.common"] = stub

    import kazoo.testing.harness as harness

    if _ensemble_mode():
        cluster = ControlledCluster(_addrs())
    else:
        cluster = ExternalCluster(*_addr())
    harness.CLUSTER = cluster
    harness.get_global_cluster = lambda: cluster
    return harness


_harness = None


def _uses_server(item):
    cls = getattr(item, "cls", None)
    return bool(cls is not None and _harness is not None and issubclass(cls, _harness.KazooTestHarness))


def ruok(timeout=3.0):
    """True if the server (in ensemble mode: any server) answers imok."""
    return any(_ruok_one(host, port, timeout) for host, port in _addrs())


def _servers_desc():
    return os.environ.get("KEEL_CLUSTER") or os.environ.get("KEEL_ADDR")


def _ruok_one(host, port, timeout):
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"ruok")
            data = b""
            deadline = time.monotonic() + timeout
            while len(data) < 4 and time.monotonic() < deadline:
                chunk = s.recv(16)
                if not chunk:
                    break
                data += chunk
            return data == b"imok"
    except OSError:
        return False


def clean_tree():
    """Delete every node except /zookeeper (and its subtree). Raises if the tree is not clean."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError, NotEmptyError

    client = KazooClient(
        hosts=_hosts_arg(),
        timeout=10,
        auth_data=[SUPER_AUTH],
        connection_retry={"max_tries": 3, "delay": 0.1},
        command_retry={"max_tries": 3, "delay": 0.1},
    )
    deadline = time.monotonic() + CLEAN_MAX_SECONDS
    deleted = 0
    try:
        client.start(timeout=15)
        for _round in range(CLEAN_ROUNDS):
            top = [c for c in client.get_children("/") if c != "zookeeper"]
            if not top:
                return deleted
            # Depth-first, iterative: try to delete; if it has children, push them first.
            stack = ["/" + c for c in top]
            while stack:
                if time.monotonic() > deadline or deleted > CLEAN_MAX_NODES:
                    raise AssertionError(
                        "tree cleanup exceeded its budget (%d nodes deleted)" % deleted
                    )
                path = stack[-1]
                try:
                    client.delete(path)
                    deleted += 1
                    stack.pop()
                except NoNodeError:
                    stack.pop()
                except NotEmptyError:
                    children = client.get_children(path)
                    stack.extend(path + "/" + c for c in children)
        left = [c for c in client.get_children("/") if c != "zookeeper"]
        if left:
            raise AssertionError("tree not clean after %d rounds: %r" % (CLEAN_ROUNDS, left))
        return deleted
    finally:
        try:
            client.stop()
        finally:
            client.close()


def pytest_addoption(parser):
    group = parser.getgroup("keel_kazoo")
    group.addoption("--keel-expected", default=None, help="file of test ids to run (exactly)")
    group.addoption("--keel-results", default=None, help="append per-test outcomes as JSON lines")


class _State(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.results_path = None
        self.partial = {}  # nodeid -> record being built from the phase reports
        self.current = None  # (nodeid, start time)
        self.missing = []
        self.session = None
        self.slow_failures = 0


_state = _State()


def _emit(record):
    """Append one finished test's record to the results file (under _state.lock)."""
    if not _state.results_path:
        return
    with open(_state.results_path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def _abort(reason):
    """Record the in-flight test as an error and leave at once: the main thread may be stuck."""
    with _state.lock:
        if _state.current is not None:
            nodeid, _start = _state.current
            rec = _state.partial.pop(nodeid, None) or {"nodeid": nodeid, "duration": 0.0, "uses_server": True}
            rec["outcome"] = "error"
            rec["message"] = "run aborted: " + reason
            _emit(rec)
    sys.stderr.write("\nkeel_kazoo: ABORT: %s\n" % reason)
    sys.stderr.flush()
    os._exit(3)


def _watchdog():
    dead_since = None
    while True:
        time.sleep(WATCH_INTERVAL)
        now = time.monotonic()
        with _state.lock:
            current = _state.current
        if current is not None and now - current[1] > HANG_SECONDS:
            _abort("test %s made no progress for %ds" % (current[0], HANG_SECONDS))
        if ruok(timeout=2.0):
            dead_since = None
        elif dead_since is None:
            dead_since = now
        elif now - dead_since >= DEAD_SECONDS:
            _abort("server at %s stopped answering ruok for %ds" % (_servers_desc(), DEAD_SECONDS))


def pytest_configure(config):
    global _harness
    _addrs()
    _harness = _install_shim()
    _state.results_path = config.getoption("--keel-results")


def pytest_sessionstart(session):
    _state.session = session
    threading.Thread(target=_watchdog, name="keel_kazoo-watchdog", daemon=True).start()


def pytest_collection_modifyitems(session, config, items):
    path = config.getoption("--keel-expected")
    if not path:
        return
    wanted = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                wanted.append(line)
    wanted_set = set(wanted)
    keep, drop = [], []
    for item in items:
        (keep if item.nodeid in wanted_set else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
    have = {i.nodeid for i in keep}
    _state.missing = [w for w in wanted if w not in have]
    with _state.lock:
        for w in _state.missing:
            _emit(
                {
                    "nodeid": w,
                    "outcome": "missing",
                    "duration": 0.0,
                    "uses_server": None,
                    "message": "listed in %s but not collected" % os.path.basename(path),
                }
            )


@pytest.fixture(autouse=True)
def _keel_clean_tree(request):
    yield
    if _uses_server(request.node):
        if _ensemble_mode():
            # Servers a test left stopped run again, and the ensemble serves, before the next test.
            _harness.get_global_cluster().start()
        clean_tree()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    report.keel_uses_server = _uses_server(item)
    if report.failed and report.keel_uses_server and not ruok():
        item.session.shouldstop = "server at %s stopped answering ruok" % _servers_desc()
    return report


def _message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0][:300] if crash.message else ""
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:  # skip: (file, line, reason)
        return str(report.longrepr[2])[:300]
    return str(report.longrepr or "").splitlines()[-1:][0][:300] if report.longrepr else ""


def pytest_runtest_logstart(nodeid, location):
    with _state.lock:
        _state.current = (nodeid, time.monotonic())


def pytest_runtest_logreport(report):
    with _state.lock:
        r = _state.partial.setdefault(
            report.nodeid,
            {
                "nodeid": report.nodeid,
                "outcome": "passed",
                "duration": 0.0,
                "uses_server": getattr(report, "keel_uses_server", None),
                "message": "",
            },
        )
        r["duration"] = round(r["duration"] + report.duration, 3)
        if report.failed:
            if r["outcome"] not in ("failed", "error"):
                r["outcome"] = "failed" if report.when == "call" else "error"
                r["message"] = "[%s] %s" % (report.when, _message(report))
        elif report.skipped and r["outcome"] == "passed":
            r["outcome"] = "skipped"
            r["message"] = _message(report)


def pytest_runtest_logfinish(nodeid, location):
    with _state.lock:
        _state.current = None
        rec = _state.partial.pop(nodeid, None)
        if rec is not None:
            _emit(rec)
            slow = rec["outcome"] in ("failed", "error") and rec["duration"] >= SLOW_FAILURE_SECONDS
            _state.slow_failures = _state.slow_failures + 1 if slow else 0
            if _state.slow_failures >= SLOW_FAILURES_STOP and _state.session is not None:
                _state.session.shouldstop = "%d consecutive tests failed after >= %ds each" % (
                    SLOW_FAILURES_STOP,
                    SLOW_FAILURE_SECONDS,
                )


def pytest_sessionfinish(session, exitstatus):
    if _state.missing:
        sys.stderr.write("keel_kazoo: %d expected test id(s) were not collected\n" % len(_state.missing))
