#!/usr/bin/env python3
"""Summarise a keel_kazoo results file against expected.txt.

usage: summarize.py RESULTS_JSONL EXPECTED_TXT [COUNTS_FILE]
       summarize.py --remaining RESULTS_JSONL EXPECTED_TXT   (print the ids with no result yet)

Every id in EXPECTED_TXT counts once: passed only if its outcome is "passed"; failed, error,
skipped, missing (not collected) or absent from the results (run stopped or timed out) all count
as failed. Prints the failures with their first message line and ends with
"kazoo: N passed, N failed" (prefix: $KC_LABEL if set); writes "N N" to COUNTS_FILE if given.
Exit 1 if anything failed.
"""

import json
import os
import sys

LABEL = os.environ.get("KC_LABEL") or "kazoo"


def read_ids(path):
    ids = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                ids.append(line)
    return ids


def load_results(path):
    """{nodeid: record} from a keel_kazoo JSON-lines results file; the last record of an id wins."""
    results = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed run
            results[rec["nodeid"]] = rec
    return results


def main():
    if sys.argv[1] == "--remaining":
        try:
            done = load_results(sys.argv[2])
        except OSError:
            done = {}
        for nodeid in read_ids(sys.argv[3]):
            if nodeid not in done:
                print(nodeid)
        return 0
    results_path, expected_path = sys.argv[1], sys.argv[2]
    counts_path = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        results = load_results(results_path)
    except OSError as e:
        print(LABEL + ": no usable results file (%s)" % e)
        results = {}
    expected = read_ids(expected_path)
    passed, failed = 0, []
    for nodeid in expected:
        r = results.get(nodeid)
        if r is None:
            failed.append((nodeid, "not run", "run stopped or timed out before this test"))
        elif r["outcome"] == "passed":
            passed += 1
        else:
            failed.append((nodeid, r["outcome"], r.get("message", "")))
    for nodeid, outcome, msg in failed:
        print("FAILED(%s) %s :: %s" % (outcome, nodeid, msg))
    total_time = sum(r.get("duration", 0.0) for r in results.values())
    print("%s: %d expected, test time %.0fs" % (LABEL, len(expected), total_time))
    print("%s: %d passed, %d failed" % (LABEL, passed, len(failed)))
    if counts_path:
        with open(counts_path, "w") as f:
            f.write("%d %d\n" % (passed, len(failed)))
    return 1 if failed or not expected else 0


if __name__ == "__main__":
    sys.exit(main())
