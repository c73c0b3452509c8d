#!/usr/bin/env bash
# Re-record a CLI suite's expected.txt: start Apache ZooKeeper 3.8 (Debian's package) by hand on
# 127.0.0.1 with a fresh dataDir, run the suite's session RUNS times (default 2, a fresh server
# each) and insist the normalised transcripts agree, write expected.txt, stop ZooKeeper by PID.
# Shared by the zkCli (Java) and cli_mt (C) suites.
#
#   bash tests/clients/transcript_baseline.sh SUITE PROMPT [RUNS]     e.g. zkcli "zk> " 2
set -euo pipefail
clients=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$clients/../.." && pwd)
# shellcheck source=tests/clients/lib.sh
source "$clients/lib.sh"
[[ $# -ge 2 ]] || { echo "usage: $0 SUITE PROMPT [RUNS]" >&2; exit 2; }
suite=$1 prompt=$2 runs=${3:-2}
here=$clients/$suite
work=$repo/.ci/work/$suite-baseline

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
kc_log "expected.txt: $(grep -c "^$prompt" "$here/expected.txt") commands, identical over $runs run(s)"
