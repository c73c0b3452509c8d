#!/usr/bin/env bash
# Run the scripted zkCli session (session.zk) against a running server with an empty tree,
# normalise, and compare with expected.txt command by command.
#
#   KEEL_ADDR=127.0.0.1:PORT tests/clients/zkcli/run.sh            # check (CI)
#   KEEL_ADDR=127.0.0.1:PORT tests/clients/zkcli/run.sh --record   # rewrite expected.txt
#                                     (only against Apache ZooKeeper 3.8: see baseline.sh)
# Environment: KC_OUT (default .ci/work/zkcli) receives raw.txt and actual.txt; KC_COUNTS gets
# "PASSED FAILED". Needs Debian's zookeeper package (java, /usr/share/java/zookeeper.jar).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out=${KC_OUT:-$repo/.ci/work/zkcli}
: "${KEEL_ADDR:?KEEL_ADDR=127.0.0.1:PORT must name the server under test}"
mkdir -p "$out"
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the work tree

start=$(date +%s)
"${KC_PYTHON:-python3}" "$here/zkcli.py" --server "$KEEL_ADDR" --script "$here/session.zk" --raw "$out/raw.txt" >"$out/actual.txt"
echo "zkcli: session took $(($(date +%s) - start))s; raw transcript $out/raw.txt"

if [[ "${1:-}" == --record ]]; then
    cp "$out/actual.txt" "$here/expected.txt"
    echo "zkcli: wrote $here/expected.txt ($(grep -c '^zk> ' "$here/expected.txt") commands)"
    exit 0
fi
"${KC_PYTHON:-python3}" "$here/../transcript_compare.py" zkcli "zk> " "$here/expected.txt" \
    "$out/actual.txt" ${KC_COUNTS:+"$KC_COUNTS"}
