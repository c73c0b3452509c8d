#!/usr/bin/env python3
"""Four-letter words: probe a server, normalise the answers, compare their shape with Apache
ZooKeeper 3.8's.

usage:
  fourlw.py probe --server 127.0.0.1:PORT --datadir DIR --raw OUTDIR [--activity] [--words W,W]
      (optionally) run the scripted client activity below, then send each word on its own
      connection and write the raw answer to OUTDIR/<word>.raw (and OUTDIR/<word>.datadir).
  fourlw.py normalise --raw RAWDIR --out OUTDIR [--whitelist-raw DIR]
      normalise every OUTDIR/<word>.raw into OUTDIR/<word>.txt; the default-whitelist answers
      (--whitelist-raw) become one file, whitelist.txt.
  fourlw.py compare --expected DIR --actual DIR --gaps known_gaps.txt [--counts FILE]
      one check per word (and one for the whitelist): prints the differences, the tolerated gaps,
      and "fourlw: N passed, N failed"; writes "N N" to --counts. Exit 1 if anything failed.

The activity (kazoo, one session, kept open while the words are sent): create /fourlw,
/fourlw/data and the ephemeral /fourlw/eph, leave a data watch on /fourlw/data (getData) and a
child watch on /fourlw (getChildren).

Normalisation (the same for every server) -- what it hides is exactly:
  * the version string ("3.8.0-..., built on ...") -> <VERSION>;
  * Java Date strings ("Sun Nov 22 01:58:28 UTC 2026") -> <DATE>;
  * the server's dataDir path -> <DATADIR> (what follows it, e.g. "/version-2", is kept);
  * IPv4 address:port -> <ADDR>; hex numbers 0x... (session ids, zxids) -> <HEX>;
  * dotted versions (a.b.c) -> <VER>; decimals (1.5) -> <F>; integers -> <N>
    (an integer directly after a letter or "_" is kept: "amd64", "x86_64");
  * in key/value answers (conf, envi, mntr, dirs): only values are normalised, never keys; a
    value that is an absolute path (or a :-separated list of them) -> <PATH>; host.name ->
    <HOST>; os.version -> <OSVERSION>; user.name -> <USER> when it is the user running the probe;
  * order that ZooKeeper takes from a hash set is sorted: the client lines of stat and cons, and
    the entries of each "... Sets" section of dump, whose expiry buckets (one "N expire at DATE:"
    line each, depending on the clock) are merged into the first.
Everything else (line structure, keys and their order, literal values such as "standalone",
"rw", "GETC", trailing blank lines, a missing final newline) must match.
"""

import argparse
import difflib
import os
import pwd
import re
import socket
import sys
import time

WORDS = ["ruok", "srvr", "stat", "conf", "cons", "crst", "srst", "mntr", "wchs", "wchc", "wchp",
         "dump", "envi", "dirs", "isro"]
# Answers made of key/value lines: compared key by key, with known_gaps.txt applied.
KV_WORDS = {"conf": "=", "envi": "=", "mntr": "\t", "dirs": ": "}
WHITELIST = "whitelist"
SOCKET_TIMEOUT = 5.0
ACTIVITY_TIMEOUT = 20.0


# ------------------------------------------------------------------------------------- probe

def send_word(host, port, word):
    """The server's whole answer to WORD (it closes the connection after answering)."""
    deadline = time.monotonic() + 2 * SOCKET_TIMEOUT
    s = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT)
    try:
        s.sendall(word.encode())
        chunks = []
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except socket.timeout:
                chunks.append(b"\n!! no end of answer within %ds\n" % SOCKET_TIMEOUT)
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)
    finally:
        s.close()


def activity(server):
    from kazoo.client import KazooClient  # the venv's kazoo (.ci/.venv)

    zk = KazooClient(hosts=server, timeout=10.0)
    zk.start(timeout=ACTIVITY_TIMEOUT)
    zk.create("/fourlw", b"fourlw")
    zk.create("/fourlw/data", b"data")
    zk.create("/fourlw/eph", b"eph", ephemeral=True)
    zk.get("/fourlw/data", watch=lambda event: None)  # a data watch
    zk.get_children("/fourlw", watch=lambda event: None)  # a child watch
    return zk


def cmd_probe(args):
    host, port = args.server.rsplit(":", 1)
    port = int(port)
    os.makedirs(args.raw, exist_ok=True)
    words = args.words.split(",") if args.words else WORDS
    zk = activity(args.server) if args.activity else None
    try:
        for word in words:
            try:
                answer = send_word(host, port, word)
            except OSError as e:
                answer = ("!! %s: %s\n" % (type(e).__name__, e)).encode()
            with open(os.path.join(args.raw, word + ".raw"), "wb") as f:
                f.write(answer)
            with open(os.path.join(args.raw, word + ".datadir"), "w") as f:
                f.write(args.datadir)
            time.sleep(0.05)  # let the server forget the previous 4lw connection
    finally:
        if zk is not None:
            zk.stop()
            zk.close()
    return 0


# --------------------------------------------------------------------------------- normalise

MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
RE_VERSION = re.compile(r"\b\d+\.\d+\.\d+-\S*, built on .*$")
RE_DATE = re.compile(r"\b(?:%s) (?:%s) [ \d]\d \d\d:\d\d:\d\d(?: [A-Z]{2,5})? \d{4}\b" % (DAYS, MONTHS))
RE_ADDR = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}:\d+\b")
RE_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
RE_VER = re.compile(r"(?<![\w.])\d+(?:\.\d+){2,}(?![\w.])")
RE_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])")
RE_INT = re.compile(r"(?<![A-Za-z_<\d])-?\d+")
RE_PATHS = re.compile(r"^/[^:\s]*(?::/[^:\s]*)*$")


def current_user():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


def norm_text(s, datadir):
    s = RE_VERSION.sub("<VERSION>", s)
    s = RE_DATE.sub("<DATE>", s)
    if datadir:
        s = s.replace(datadir, "<DATADIR>")
    s = RE_ADDR.sub("<ADDR>", s)
    s = RE_HEX.sub("<HEX>", s)
    s = RE_VER.sub("<VER>", s)
    s = RE_FLOAT.sub("<F>", s)
    s = RE_INT.sub("<N>", s)
    return s


def norm_value(key, value, datadir):
    if key in ("host.name",) and value:
        return "<HOST>"
    if key == "os.version" and value:
        return "<OSVERSION>"
    if key == "user.name" and value and value == current_user():
        return "<USER>"
    if RE_VERSION.search(value):
        return RE_VERSION.sub("<VERSION>", value)
    if datadir and value.startswith(datadir):
        value = "<DATADIR>" + value[len(datadir):]
    elif RE_PATHS.match(value):
        return "<PATH>"
    return norm_text(value, None)


def split_lines(text):
    # "a\nb\n" -> ["a", "b", ""]; "imok" -> ["imok"]: a missing final newline shows.
    return text.split("\n")


def norm_kv(lines, sep, datadir):
    out = []
    for line in lines:
        if sep in line:
            key, value = line.split(sep, 1)
            out.append(key + sep + norm_value(key, value, datadir))
        else:
            out.append(norm_text(line, datadir))
    return out


def sort_runs(lines, pred):
    """Sort every maximal run of consecutive lines satisfying pred."""
    out, run = [], []
    for line in lines + [None]:
        if line is not None and pred(line):
            run.append(line)
            continue
        out.extend(sorted(run))
        run = []
        if line is not None:
            out.append(line)
    return out


def norm_dump(lines):
    """Merge the expiry buckets of each "... Sets (N)/(M):" section and sort its entries."""
    out, i = [], 0
    bucket = re.compile(r"^<N> expire at .*:$")
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if "Sets (" not in line:
            continue
        entries, first_bucket = [], None
        while i < len(lines) and (bucket.match(lines[i]) or lines[i].startswith("\t")):
            if bucket.match(lines[i]):
                if first_bucket is None:
                    first_bucket = lines[i]
            else:
                entries.append(lines[i])
            i += 1
        if first_bucket is not None:
            out.append(first_bucket)
        out.extend(sorted(entries))
    return out


def normalise_answer(word, raw, datadir):
    text = raw.decode("utf-8", "replace")
    lines = split_lines(text)
    if word in KV_WORDS:
        return norm_kv(lines, KV_WORDS[word], datadir)
    lines = [norm_text(line, datadir) for line in lines]
    if word in ("stat", "cons"):
        lines = sort_runs(lines, lambda l: l.startswith(" /"))
    elif word == "dump":
        lines = norm_dump(lines)
    return lines


def read_raw(rawdir, word):
    with open(os.path.join(rawdir, word + ".raw"), "rb") as f:
        raw = f.read()
    try:
        with open(os.path.join(rawdir, word + ".datadir")) as f:
            datadir = f.read().strip()
    except OSError:
        datadir = None
    return raw, datadir


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def cmd_normalise(args):
    os.makedirs(args.out, exist_ok=True)
    for word in WORDS:
        try:
            raw, datadir = read_raw(args.raw, word)
        except OSError:
            continue  # no answer recorded: compare reports it missing
        write_lines(os.path.join(args.out, word + ".txt"), normalise_answer(word, raw, datadir))
    if args.whitelist_raw:
        lines = []
        for word in WORDS:
            try:
                raw, datadir = read_raw(args.whitelist_raw, word)
            except OSError:
                lines += ["==> %s" % word, "!! no answer recorded"]
                continue
            lines.append("==> %s" % word)
            lines += normalise_answer(word, raw, datadir)
        write_lines(os.path.join(args.out, WHITELIST + ".txt"), lines)
    return 0


# ----------------------------------------------------------------------------------- compare

def read_lines(path):
    with open(path) as f:
        text = f.read()
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n")


def read_gaps(path):
    """known_gaps.txt: "## reason" starts a group; "WORD KEY" lines are keys Apache ZooKeeper
    prints that keel may lack (for that reason); "WORD +KEY" lines are keys keel may print that
    ZooKeeper does not. Returns {(word, key): reason} and {(word, key): reason}."""
    missing, extra = {}, {}
    reason = "(no reason given)"
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith("## "):
                reason = line[3:].strip()
                continue
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or parts[0] not in KV_WORDS:
                raise SystemExit("%s:%d: expected 'WORD KEY' with WORD in %s: %r"
                                 % (path, n, sorted(KV_WORDS), line))
            word, key = parts
            if key.startswith("+"):
                extra[(word, key[1:])] = reason
            else:
                missing[(word, key)] = reason
    return missing, extra


def kv_key(line, sep):
    return line.split(sep, 1)[0] if sep in line else None


def compare_kv(word, exp, act, gaps_missing, gaps_extra):
    """Returns (ok, messages, tolerated, stale)."""
    sep = KV_WORDS[word]
    act_keys = {kv_key(l, sep) for l in act} - {None}
    exp_keys = {kv_key(l, sep) for l in exp} - {None}
    tolerated, stale = [], []
    exp_f = []
    for line in exp:
        key = kv_key(line, sep)
        if key is not None and (word, key) in gaps_missing:
            if key in act_keys:
                stale.append(key)  # listed as a gap, but keel has it now
            else:
                tolerated.append((key, gaps_missing[(word, key)]))
                continue
        exp_f.append(line)
    act_f = [l for l in act if kv_key(l, sep) is None or kv_key(l, sep) in exp_keys
             or (word, kv_key(l, sep)) not in gaps_extra]
    for (w, key), _ in gaps_extra.items():
        if w == word and key in act_keys and key not in exp_keys:
            tolerated.append(("+" + key, gaps_extra[(w, key)]))
    msgs = []
    if exp_f != act_f:
        missing = [kv_key(l, sep) for l in exp_f if kv_key(l, sep) not in act_keys and kv_key(l, sep)]
        extra = [kv_key(l, sep) for l in act_f if kv_key(l, sep) not in exp_keys and kv_key(l, sep)]
        if missing:
            msgs.append("keys ZooKeeper prints that keel lacks (not in known_gaps.txt): "
                        + ", ".join(missing))
        if extra:
            msgs.append("keys keel prints that ZooKeeper does not: " + ", ".join(extra))
        common_exp = [kv_key(l, sep) for l in exp_f if kv_key(l, sep) in act_keys]
        common_act = [kv_key(l, sep) for l in act_f if kv_key(l, sep) in exp_keys]
        if common_exp != common_act:
            msgs.append("keys in a different order; ZooKeeper's order: " + ", ".join(common_exp))
        exp_vals = {kv_key(l, sep): l for l in exp_f if kv_key(l, sep)}
        for l in act_f:
            k = kv_key(l, sep)
            if k in exp_vals and exp_vals[k] != l:
                msgs.append("value of %s: expected %r, got %r" % (k, exp_vals[k], l))
        msgs.extend(unified(exp_f, act_f))
    return exp_f == act_f, msgs, tolerated, stale


def unified(exp, act):
    return list(difflib.unified_diff(exp, act, "expected (Apache ZooKeeper 3.8, normalised)",
                                     "actual (normalised)", n=1, lineterm=""))


def cmd_compare(args):
    gaps_missing, gaps_extra = read_gaps(args.gaps)
    passed, failed = 0, []
    all_tolerated, all_stale = {}, {}
    for word in WORDS + [WHITELIST]:
        exp_path = os.path.join(args.expected, word + ".txt")
        act_path = os.path.join(args.actual, word + ".txt")
        try:
            exp = read_lines(exp_path)
        except OSError:
            print("FAILED %s: no %s (re-record with baseline.sh)" % (word, exp_path))
            failed.append(word)
            continue
        try:
            act = read_lines(act_path)
        except OSError:
            print("FAILED %s: no answer recorded (%s)" % (word, act_path))
            failed.append(word)
            continue
        if word in KV_WORDS:
            ok, msgs, tolerated, stale = compare_kv(word, exp, act, gaps_missing, gaps_extra)
            if tolerated:
                all_tolerated[word] = tolerated
            if stale:
                all_stale[word] = stale
        else:
            ok = exp == act
            msgs = [] if ok else unified(exp, act)
        if ok:
            passed += 1
        else:
            failed.append(word)
            print("FAILED %s" % word)
            for m in msgs:
                print("    " + m)
    listed = {k for k in gaps_missing} | {k for k in gaps_extra}
    if all_tolerated:
        n = sum(len(v) for v in all_tolerated.values())
        print("fourlw: tolerated %d known gaps (tests/clients/fourlw/known_gaps.txt):" % n)
        for word, items in all_tolerated.items():
            by_reason = {}
            for key, reason in items:
                by_reason.setdefault(reason, []).append(key)
            for reason, keys in by_reason.items():
                print("  %s, %d key(s) [%s]: %s" % (word, len(keys), reason, " ".join(keys)))
    for word, keys in all_stale.items():
        print("fourlw: note: keel now prints %s key(s) listed as gaps; remove them from "
              "known_gaps.txt: %s" % (word, " ".join(keys)))
    exp_keys = set()
    for word in KV_WORDS:
        try:
            for line in read_lines(os.path.join(args.expected, word + ".txt")):
                k = kv_key(line, KV_WORDS[word])
                if k:
                    exp_keys.add((word, k))
        except OSError:
            pass
    unknown = sorted(k for k in gaps_missing if k not in exp_keys)
    if unknown:
        print("fourlw: note: known_gaps.txt lists keys ZooKeeper's answers do not have: "
              + " ".join("%s:%s" % k for k in unknown))
    print("fourlw: %d passed, %d failed" % (passed, len(failed)))
    if args.counts:
        with open(args.counts, "w") as f:
            f.write("%d %d\n" % (passed, len(failed)))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--server", required=True)
    p.add_argument("--datadir", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--activity", action="store_true")
    p.add_argument("--words")
    p = sub.add_parser("normalise")
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--whitelist-raw")
    p = sub.add_parser("compare")
    p.add_argument("--expected", required=True)
    p.add_argument("--actual", required=True)
    p.add_argument("--gaps", required=True)
    p.add_argument("--counts")
    args = ap.parse_args()
    return {"probe": cmd_probe, "normalise": cmd_normalise, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
