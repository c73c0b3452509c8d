#!/usr/bin/env python3
"""Drive the ZooKeeper C client's CLI (Debian's zookeeper-bin: /usr/lib/zookeeper/bin/cli_mt)
through a scripted session and print a normalised transcript.

usage: cclient.py --server 127.0.0.1:PORT [--script session.cli] [--raw FILE]

The script has one cli_mt command per line, plus "# comment" lines, blank lines and
"!sort COMMAND" (sort the child names COMMAND prints: cli_mt prints them in the server's order).

cli_mt runs commands asynchronously: it prints what a command answers (and the watch events that
arrive before that answer) from its completion thread, all on stderr. So after each command the
driver sends `sync /zookeeper`, whose answer "[/zookeeper]: rc = 0" + "\tname = /zookeeper" comes
after every earlier answer on the session, and waits for it and then QUIET seconds of silence.
The sentinel's own lines are dropped (a non-zero rc is kept, marked "!!"). Every wait is bounded
(STEP_LIMIT, TOTAL_LIMIT). The transcript is "cli> COMMAND" followed by that command's output.

Normalisation (the same for every server):
  * the session id ("Got a new session id: 0x...", "ephemeralOwner = ...") -> SESSION1, ...
    by first appearance (so an ephemeral's owner must be the session that created it);
  * ctime/mtime dates -> TIME; "time = N msec" -> "time = N msec" with N;
  * czxid/mzxid -> Z1, Z2, ... by numeric rank among all zxids shown (equality and order kept);
  * the C library's own log lines keep only "ZOO_LEVEL@function@line: message", with
    addresses replaced by ADDR.
Sequence numbers, return codes, data, versions, watch events and their order are kept.
"""

import argparse
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

CLI = os.environ.get("KC_CLI_MT", "/usr/lib/zookeeper/bin/cli_mt")
QUIET = float(os.environ.get("KC_CCLIENT_QUIET", "0.2"))
STEP_LIMIT = 15.0
TOTAL_LIMIT = float(os.environ.get("KC_CCLIENT_LIMIT", "120"))
SENTINEL_PATH = "/zookeeper"
SENTINEL_CMD = "sync " + SENTINEL_PATH
RE_SENTINEL = re.compile(r"^\[" + re.escape(SENTINEL_PATH) + r"\]: rc = (-?\d+)$")
SENTINEL_NAME = "\tname = " + SENTINEL_PATH


class Transcript(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []  # ("cmd", text) or ("out", line)
        self.last_output = time.monotonic()
        self.sentinels = 0
        self.connected = False
        self.swallow_name = False

    def add(self, kind, text):
        with self.lock:
            if kind == "out":
                self.last_output = time.monotonic()
                m = RE_SENTINEL.match(text)
                if m:
                    self.sentinels += 1
                    self.swallow_name = m.group(1) == "0"
                    if m.group(1) != "0":
                        self.items.append(("out", "!! sentinel `%s` answered rc = %s"
                                           % (SENTINEL_CMD, m.group(1))))
                    return
                if self.swallow_name and text == SENTINEL_NAME:
                    self.swallow_name = False
                    return
                self.swallow_name = False
                if text.startswith("Got a new session id:"):
                    self.connected = True
            self.items.append((kind, text))


def reader(stream, transcript):
    for raw in iter(stream.readline, b""):
        transcript.add("out", raw.decode("utf-8", "replace").rstrip("\r\n"))


def wait_until(transcript, cond):
    """Wait until cond(transcript) holds and QUIET seconds passed without output."""
    deadline = time.monotonic() + STEP_LIMIT
    while time.monotonic() < deadline:
        time.sleep(0.02)
        with transcript.lock:
            ok = cond(transcript)
            last = transcript.last_output
        if ok and time.monotonic() - last >= QUIET:
            return True
    return False


def parse_script(path):
    steps = []
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith("!sort "):
                steps.append((s[len("!sort "):].strip(), True))
            else:
                steps.append((s, False))
    return steps


def wait_for_sessions(server, limit=20.0):
    """Bounded wait until the server completes a session handshake (then close that session).
    Apache ZooKeeper answers ruok a moment before it accepts sessions; without this wait the C
    library's connection retries would show up in the transcript's banner."""
    host, port = server.rsplit(":", 1)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=2.0) as s:
                # ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd, readOnly
                body = struct.pack(">iqiqi16sB", 0, 0, 10000, 0, 16, b"\0" * 16, 0)
                s.sendall(struct.pack(">i", len(body)) + body)
                head = s.recv(4)
                if len(head) == 4:
                    # closeSession: xid 1, type -11
                    s.sendall(struct.pack(">iii", 8, 1, -11))
                    s.recv(64)
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


def run_session(server, steps):
    proc = subprocess.Popen([CLI, "-h", server], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    transcript = Transcript()
    t = threading.Thread(target=reader, args=(proc.stdout, transcript), daemon=True)
    t.start()
    begin = time.monotonic()
    sorted_cmds = set()
    sent = 0
    try:
        if not wait_until(transcript, lambda tr: tr.connected):
            transcript.add("cmd", "!! no session within %ds" % STEP_LIMIT)
        for cmd, sort in steps:
            if time.monotonic() - begin > TOTAL_LIMIT:
                transcript.add("cmd", "!! session time limit (%ds) reached" % TOTAL_LIMIT)
                break
            with transcript.lock:
                transcript.items.append(("cmd", cmd))
                if sort:
                    sorted_cmds.add(len(transcript.items) - 1)
            line = cmd + "\n"
            if cmd != "quit":
                line += SENTINEL_CMD + "\n"
                sent += 1
            try:
                proc.stdin.write(line.encode())
                proc.stdin.flush()
            except BrokenPipeError:
                transcript.add("cmd", "!! the CLI exited")
                break
            if cmd != "quit" and not wait_until(transcript, lambda tr: tr.sentinels >= sent):
                transcript.add("cmd", "!! no answer within %ds" % STEP_LIMIT)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            transcript.add("cmd", "!! the CLI did not exit; killed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        t.join(timeout=5)
    if proc.returncode not in (0, None):
        transcript.add("cmd", "!! the CLI exited with status %s" % proc.returncode)
    return transcript.items, sorted_cmds


RE_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+:\d+\(0x[0-9a-f]+\):(ZOO_.*)$")
RE_ADDR = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}:\d+\b")
RE_TIME = re.compile(r"^(\t[cm]time ?= ?).*$")
RE_ZXID = re.compile(r"^(\t[cm]zxid=)([0-9a-f]+)$")
RE_MSEC = re.compile(r"^time = -?\d+ msec$")
RE_SESSION = re.compile(r"^(Got a new session id: 0x|\tephemeralOwner = )([0-9a-f]+)$")


def normalise(items, sorted_cmds):
    zxids = sorted({int(m.group(2), 16) for kind, text in items if kind == "out"
                    for m in [RE_ZXID.match(text)] if m})
    zrank = {z: "Z%d" % (i + 1) for i, z in enumerate(zxids)}
    sessions = {}
    blocks = [[None, [], False]]
    for idx, (kind, text) in enumerate(items):
        if kind == "cmd":
            blocks.append([text, [], idx in sorted_cmds])
            continue
        m = RE_LOG.match(text)
        if m:
            text = RE_ADDR.sub("ADDR", m.group(1))
        elif RE_TIME.match(text):
            text = RE_TIME.sub(r"\1TIME", text)
        elif RE_MSEC.match(text):
            text = "time = N msec"
        elif RE_ZXID.match(text):
            m = RE_ZXID.match(text)
            text = m.group(1) + zrank[int(m.group(2), 16)]
        elif RE_SESSION.match(text):
            m = RE_SESSION.match(text)
            sid = int(m.group(2), 16)
            if sid != 0:
                sessions.setdefault(sid, "SESSION%d" % (len(sessions) + 1))
                text = m.group(1).replace("0x", "") + sessions[sid]
        blocks[-1][1].append(text)
    out = []
    for cmd, lines, sort in blocks:
        if cmd is not None:
            out.append("cli> " + cmd)
        if sort:
            lines = sort_children(lines)
        out.extend(lines)
    return out


def sort_children(lines):
    """Sort the tab-indented names right after a "PATH: rc = 0" line."""
    out, i = [], 0
    while i < len(lines):
        out.append(lines[i])
        i += 1
        if re.match(r"^/\S*: rc = 0$", out[-1]):
            run = []
            while i < len(lines) and lines[i].startswith("\t") and "=" not in lines[i]:
                run.append(lines[i])
                i += 1
            out.extend(sorted(run))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--script", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "session.cli"))
    ap.add_argument("--raw")
    args = ap.parse_args()
    if not wait_for_sessions(args.server):
        print("!! the server accepted no session within 20s", file=sys.stderr)
    items, sorted_cmds = run_session(args.server, parse_script(args.script))
    if args.raw:
        with open(args.raw, "w") as f:
            for kind, text in items:
                f.write(("cli> " + text if kind == "cmd" else text) + "\n")
    for line in normalise(items, sorted_cmds):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
