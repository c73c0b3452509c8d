#!/usr/bin/env python3
"""Compare a normalised CLI transcript with the one recorded from Apache ZooKeeper, command by
command. Shared by the zkCli (Java) and cli_mt (C) suites.

usage: transcript_compare.py NAME PROMPT EXPECTED ACTUAL [COUNTS_FILE]

Each "PROMPT COMMAND" block (and the banner before the first one) is one check: it passes if
its lines equal the expected block's. Blocks missing from ACTUAL fail. Prints the unified diff
of the whole transcripts when anything differs, then "NAME: N passed, N failed"; writes "N N"
to COUNTS_FILE if given. Exit 1 if anything failed.
"""

import difflib
import sys


def read_blocks(path, prompt):
    blocks = [("(banner)", [])]
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith(prompt):
            blocks.append((line, []))
        else:
            blocks[-1][1].append(line)
    return blocks, lines


def main():
    name, prompt, exp_path, act_path = sys.argv[1:5]
    counts = sys.argv[5] if len(sys.argv) > 5 else None
    expected, exp_lines = read_blocks(exp_path, prompt)
    actual, act_lines = read_blocks(act_path, prompt)
    passed, failed = 0, []
    for i, (head, body) in enumerate(expected):
        if i < len(actual) and actual[i][0] == head and actual[i][1] == body:
            passed += 1
        else:
            failed.append(head)
    if failed:
        sys.stdout.writelines(
            l + "\n"
            for l in difflib.unified_diff(
                exp_lines, act_lines, "expected (Apache ZooKeeper 3.8)", "actual", n=2, lineterm=""
            )
        )
        for head in failed:
            print("FAILED %s" % head)
    print("%s: %d passed, %d failed" % (name, passed, len(failed)))
    if counts:
        with open(counts, "w") as f:
            f.write("%d %d\n" % (passed, len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
