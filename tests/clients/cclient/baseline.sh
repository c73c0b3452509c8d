#!/usr/bin/env bash
# Re-record expected.txt: start Apache ZooKeeper 3.8 (Debian's package) by hand on 127.0.0.1
# with a fresh dataDir, run the session RUNS times (default 2, a fresh server each) and insist the
# normalised transcripts agree, write expected.txt, stop ZooKeeper by PID.
#
#   bash tests/clients/cclient/baseline.sh [RUNS]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=tests/clients/lib.sh
source "$here/../lib.sh"
runs=${1:-2}
work=$repo/.ci/work/cclient-baseline

ZK_PID=
trap 'kc_stop_pid "$ZK_PID" zookeeper' EXIT
for ((i = 1; i <= runs; i++)); do
    kc_start_zookeeper "$work/zk"
    KEEL_ADDR=127.0.0.1:$ZK_PORT KC_OUT=$work/run$i "$here/run.sh" --record >/dev/null
    kc_stop_pid "$ZK_PID" zookeeper
    ZK_PID=
    cp "$here/expected.txt" "$work/run$i.txt"
    if ((i > 1)) && ! diff -u "$work/run1.txt" "$work/run$i.txt"; then
        kc_log "run $i differs from run 1: the session or its normalisation is not deterministic"
        exit 1
    fi
done
kc_log "expected.txt: $(grep -c '^cli> ' "$here/expected.txt") commands, identical over $runs run(s)"
