#!/usr/bin/env bash
# Run the scripted ZooKeeper C-client session (session.cli, through Debian's zookeeper-bin
# /usr/lib/zookeeper/bin/cli_mt) against a running server with an empty tree, normalise, and
# compare with expected.txt command by command.
#
#   KEEL_ADDR=127.0.0.1:PORT tests/clients/cclient/run.sh            # check (CI)
#   KEEL_ADDR=127.0.0.1:PORT tests/clients/cclient/run.sh --record   # rewrite expected.txt
#                                     (only against Apache ZooKeeper 3.8: see baseline.sh)
# Environment: KC_OUT (default .ci/work/cclient) receives raw.txt and actual.txt; KC_COUNTS gets
# "PASSED FAILED". Needs Debian's zookeeper-bin; Python stdlib only.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out=${KC_OUT:-$repo/.ci/work/cclient}
: "${KEEL_ADDR:?KEEL_ADDR=127.0.0.1:PORT must name the server under test}"
mkdir -p "$out"
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the work tree

start=$(date +%s)
"${KC_PYTHON:-python3}" "$here/cclient.py" --server "$KEEL_ADDR" --script "$here/session.cli" --raw "$out/raw.txt" >"$out/actual.txt"
echo "cclient: session took $(($(date +%s) - start))s; raw transcript $out/raw.txt"

if [[ "${1:-}" == --record ]]; then
    cp "$out/actual.txt" "$here/expected.txt"
    echo "cclient: wrote $here/expected.txt ($(grep -c '^cli> ' "$here/expected.txt") commands)"
    exit 0
fi
"${KC_PYTHON:-python3}" "$here/../transcript_compare.py" cclient "cli> " "$here/expected.txt" \
    "$out/actual.txt" ${KC_COUNTS:+"$KC_COUNTS"}
