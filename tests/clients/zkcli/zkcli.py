#!/usr/bin/env python3
"""Drive Debian's ZooKeeper Java CLI (org.apache.zookeeper.ZooKeeperMain, what zkCli.sh runs)
through a scripted session and print a normalised transcript.

usage: zkcli.py --server 127.0.0.1:PORT [--script session.zk] [--raw FILE]

The session script has one zkCli command per line, plus:
  # comment           ignored (so are blank lines)
  !sleep SECONDS      pause before the next command
  !sort COMMAND       run COMMAND and sort its output lines, and the items of "[a, b]" lines
                      (for output in the server's child order, e.g. ls -R or getEphemerals;
                      zkCli itself sorts plain `ls`)

Commands are fed one at a time on the CLI's stdin, each followed by the client-only command
`printwatches`, whose answer "printwatches is on" marks the end of the command's output (the CLI
runs commands in order on its main thread); then the driver waits until the output has been
quiet for QUIET seconds, so that watch notifications the command triggered (printed by the CLI's
event thread) land in its block too. Every wait is bounded (STEP_LIMIT, TOTAL_LIMIT). The
transcript is "zk> COMMAND" followed by that output.

Normalisation (the same for every server):
  * SLF4J warnings dropped; "Connecting to HOST:PORT" -> "Connecting to SERVER".
  * Watch notifications ("WATCHER::" + "WatchedEvent ...", printed by the CLI's event thread and
    so interleaved arbitrarily with the main thread's output) are taken out of the block and
    listed after it, in arrival order, as "WATCHER:: WatchedEvent ...".
  * ctime/mtime -> TIME.
  * zxids (cZxid/mZxid/pZxid) other than 0x0 -> Z1, Z2, ... by numeric rank among all zxids
    shown in the transcript: equality and order are kept, absolute values are not.
  * ephemeralOwner other than 0x0 -> SESSION1, SESSION2, ... by first appearance.
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Exactly what Debian's /usr/share/zookeeper/bin/zkCli.sh runs (CLASSPATH from zkEnv.sh), but
# started directly so that the JVM is our child and can be stopped by its PID.
CLASSPATH = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"
MAIN = "org.apache.zookeeper.ZooKeeperMain"
QUIET = float(os.environ.get("KC_ZKCLI_QUIET", "0.2"))
SENTINEL_CMD = "printwatches"
SENTINEL_OUT = "printwatches is on"
STEP_LIMIT = 15.0
TOTAL_LIMIT = float(os.environ.get("KC_ZKCLI_LIMIT", "240"))


class Transcript(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []  # ("cmd", text) or ("out", line)
        self.last_output = time.monotonic()
        self.sentinels = 0

    def add(self, kind, text):
        with self.lock:
            if kind == "out" and text == SENTINEL_OUT:
                self.sentinels += 1
                self.last_output = time.monotonic()
                return None
            self.items.append((kind, text))
            if kind == "out":
                self.last_output = time.monotonic()
            return len(self.items) - 1


def reader(stream, transcript):
    for raw in iter(stream.readline, b""):
        transcript.add("out", raw.decode("utf-8", "replace").rstrip("\r\n"))


def wait_step(transcript, start, sentinels):
    """Wait for `sentinels` sentinel answers in all, then for QUIET seconds of silence."""
    deadline = start + STEP_LIMIT
    while time.monotonic() < deadline:
        time.sleep(0.02)
        with transcript.lock:
            last = transcript.last_output
            seen = transcript.sentinels
        now = time.monotonic()
        if seen >= sentinels and now - last >= QUIET:
            return True
    return False


def parse_script(path):
    steps = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith("!sleep "):
                steps.append(("sleep", float(s.split()[1]), False))
            elif s.startswith("!sort "):
                steps.append(("cmd", s[len("!sort "):].strip(), True))
            else:
                steps.append(("cmd", s, False))
    return steps


def run_session(server, steps):
    proc = subprocess.Popen(
        ["java", "-cp", CLASSPATH, MAIN, "-server", server, "-waitforconnection"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    transcript = Transcript()
    t = threading.Thread(target=reader, args=(proc.stdout, transcript), daemon=True)
    t.start()
    begin = time.monotonic()
    sorted_cmds = set()
    sent = 0
    try:
        # The banner and connection event come before the CLI reads its first command.
        proc.stdin.write((SENTINEL_CMD + "\n").encode())
        proc.stdin.flush()
        sent += 1
        if not wait_step(transcript, time.monotonic(), sent):
            transcript.add("cmd", "!! no banner within %ds" % STEP_LIMIT)
        for i, (kind, arg, sort) in enumerate(steps):
            if time.monotonic() - begin > TOTAL_LIMIT:
                transcript.add("cmd", "!! session time limit (%ds) reached" % TOTAL_LIMIT)
                break
            if kind == "sleep":
                time.sleep(arg)
                continue
            idx = transcript.add("cmd", arg)
            if sort:
                sorted_cmds.add(idx)
            line = arg + "\n"
            if arg != "quit":
                line += SENTINEL_CMD + "\n"
                sent += 1
            try:
                proc.stdin.write(line.encode())
                proc.stdin.flush()
            except BrokenPipeError:
                transcript.add("cmd", "!! the CLI exited")
                break
            if arg != "quit" and not wait_step(transcript, time.monotonic(), sent):
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
    return transcript.items, sorted_cmds


def blocks(items, sorted_cmds):
    """Split into (command or None, output lines, sort flag) blocks."""
    out = [[None, [], False]]
    for idx, (kind, text) in enumerate(items):
        if kind == "cmd":
            out.append([text, [], idx in sorted_cmds])
        else:
            out[-1][1].append(text)
    return out


def split_events(lines):
    rest, events = [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        if line == "" and nxt == "WATCHER::":
            i += 2
            continue
        if line == "" and nxt is not None and nxt.startswith("WatchedEvent "):
            events.append(nxt)
            i += 2
            continue
        if line == "WATCHER::":
            i += 1
            continue
        if line.startswith("WatchedEvent "):
            events.append(line)
            i += 1
            continue
        rest.append(line)
        i += 1
    return rest, events


def sort_list(line):
    if line.startswith("[") and line.endswith("]") and len(line) > 2:
        return "[" + ", ".join(sorted(line[1:-1].split(", "))) + "]"
    return line


ZXID_RE = re.compile(r"^(cZxid|mZxid|pZxid) = (0x[0-9a-fA-F]+)$")
TIME_RE = re.compile(r"^(ctime|mtime) = .*$")
OWNER_RE = re.compile(r"^ephemeralOwner = (0x[0-9a-fA-F]+)$")


def normalise(items, sorted_cmds):
    text = []
    zxids = set()
    for cmd, lines, sort in blocks(items, sorted_cmds):
        lines = [l for l in lines if not l.startswith("SLF4J:")]
        lines = [re.sub(r"^Connecting to \S+$", "Connecting to SERVER", l) for l in lines]
        rest, events = split_events(lines)
        if sort:
            rest = sorted(sort_list(l) for l in rest)
        if cmd is not None:
            text.append("zk> " + cmd)
        text.extend(rest)
        text.extend("WATCHER:: " + e for e in events)
    for l in text:
        m = ZXID_RE.match(l)
        if m and int(m.group(2), 16) != 0:
            zxids.add(int(m.group(2), 16))
    rank = {z: "Z%d" % (i + 1) for i, z in enumerate(sorted(zxids))}
    sessions = {}
    result = []
    for l in text:
        m = ZXID_RE.match(l)
        if m and int(m.group(2), 16) != 0:
            l = "%s = %s" % (m.group(1), rank[int(m.group(2), 16)])
        elif TIME_RE.match(l):
            l = TIME_RE.sub(lambda mm: "%s = TIME" % mm.group(1), l)
        else:
            m = OWNER_RE.match(l)
            if m and int(m.group(1), 16) != 0:
                sid = sessions.setdefault(m.group(1).lower(), "SESSION%d" % (len(sessions) + 1))
                l = "ephemeralOwner = " + sid
        result.append(l)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True, help="host:port")
    ap.add_argument("--script", default=os.path.join(HERE, "session.zk"))
    ap.add_argument("--raw", help="also write the raw transcript here")
    args = ap.parse_args()
    items, sorted_cmds = run_session(args.server, parse_script(args.script))
    if args.raw:
        with open(args.raw, "w") as f:
            for kind, text in items:
                f.write(("zk> " + text if kind == "cmd" else text) + "\n")
    sys.stdout.write("\n".join(normalise(items, sorted_cmds)) + "\n")


if __name__ == "__main__":
    main()
