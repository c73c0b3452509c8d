#!/usr/bin/env bash
# Re-record expected/ from Apache ZooKeeper 3.8 (Debian's package, run through
# tests/clients/zk-as-keel.sh on 127.0.0.1 with fresh dataDirs, stopped by PID): runs run.sh
# RUNS times (default 2) and insists the normalised answers agree.
#
#   bash tests/clients/fourlw/baseline.sh [RUNS]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=tests/clients/lib.sh
source "$here/../lib.sh"
runs=${1:-2}
work=$repo/.ci/work/fourlw-baseline
rm -rf "$work"
mkdir -p "$work"
for ((i = 1; i <= runs; i++)); do
    KC_OUT=$work/run$i "$here/run.sh" "$here/../zk-as-keel.sh" --record >"$work/run$i.log" 2>&1 ||
        { cat "$work/run$i.log"; exit 1; }
    cp -r "$here/expected" "$work/expected$i"
    if ((i > 1)) && ! diff -ru "$work/expected1" "$work/expected$i"; then
        kc_log "run $i differs from run 1: the probe or its normalisation is not deterministic"
        exit 1
    fi
done
kc_log "expected/: $(ls "$here/expected" | wc -l) files, identical over $runs run(s)"
