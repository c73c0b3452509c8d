#!/usr/bin/env bash
# Re-derive expected.txt / excluded.txt: start Apache ZooKeeper 3.8 (Debian's package) by hand on
# 127.0.0.1, run every kazoo test against it RUNS times (default 3), feed the results to
# baseline.py, stop ZooKeeper by PID. Needs the venv made by .ci/run (or KC_PYTHON).
#
#   bash tests/clients/kazoo/baseline.sh [RUNS]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=tests/clients/lib.sh
source "$here/../lib.sh"
runs=${1:-3}
work=$repo/.ci/work/kazoo-baseline
python=${KC_PYTHON:-$repo/.ci/.venv/bin/python}

ZK_PID=
trap 'kc_stop_pid "$ZK_PID" zookeeper' EXIT
results=()
for ((i = 1; i <= runs; i++)); do
    # A fresh server per run, as kazoo's own harness would have.
    kc_start_zookeeper "$work/zk"
    start=$(date +%s)
    KEEL_ADDR=127.0.0.1:$ZK_PORT KC_OUT=$work/run$i KC_PYTHON=$python \
        KEEL_SERVER_LOG=$work/zk/zookeeper.log "$here/run.sh" --all >"$work/run$i.log" 2>&1 || true
    kc_log "run $i: $(grep -E "^=+ .*(passed|failed).* in " "$work/run$i.log" | tail -1) ($(($(date +%s) - start))s)"
    kc_stop_pid "$ZK_PID" zookeeper
    ZK_PID=
    results+=("$work/run$i/results.jsonl")
done
"$python" "$here/baseline.py" "${results[@]}"
