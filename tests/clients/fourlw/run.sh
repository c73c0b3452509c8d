#!/usr/bin/env bash
# Four-letter words against a server binary, compared in shape with Apache ZooKeeper 3.8's.
#
#   tests/clients/fourlw/run.sh BIN            # check (CI): BIN is target/release/keel
#   tests/clients/fourlw/run.sh BIN --record   # rewrite expected/ (only with Apache ZooKeeper,
#                                              # BIN=tests/clients/zk-as-keel.sh: see baseline.sh)
#
# Starts `BIN zoo.cfg` twice on 127.0.0.1, each time with a fresh dataDir, and stops it by PID:
#  1. with lib.sh's zoo.cfg (4lw.commands.whitelist=*): a kazoo session creates nodes, an
#     ephemeral, a data watch and a child watch, and every word is sent once (fourlw.py probe);
#  2. with the same zoo.cfg minus the whitelist line (ZooKeeper's default whitelist: srvr only):
#     every word is sent again; all but srvr must be refused with ZooKeeper's text.
# Then normalises (fourlw.py normalise) and compares with expected/ (fourlw.py compare), one
# check per word plus one for the whitelist. Needs kazoo (KC_PYTHON, default .ci/.venv's python).
# Environment: KC_OUT (default .ci/work/fourlw) gets the raw and normalised answers and the
# servers' logs; KC_COUNTS gets "PASSED FAILED".
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=tests/clients/lib.sh
source "$here/../lib.sh"
bin=${1:?usage: run.sh BIN [--record]}
[[ $bin == /* ]] || bin=$PWD/$bin
mode=${2:-check}
out=${KC_OUT:-$repo/.ci/work/fourlw}
py=${KC_PYTHON:-$repo/.ci/.venv/bin/python}
mkdir -p "$out"
rm -rf "$out/raw" "$out/raw-whitelist" "$out/actual" "$out/srv-all" "$out/srv-default"

KEEL_PID=
DEF_PID=
trap 'kc_stop_pid "$KEEL_PID" server; kc_stop_pid "$DEF_PID" server' EXIT
start=$(date +%s)

# 1. whitelist=*, with client activity.
if [[ -x $bin ]] && kc_start_keel "$bin" "$out/srv-all"; then
    "$py" "$here/fourlw.py" probe --server "127.0.0.1:$KEEL_PORT" --datadir "$out/srv-all/data" \
        --raw "$out/raw" --activity ||
        echo "fourlw: probe failed (server log: $out/srv-all/)"
    kill -0 "$KEEL_PID" 2>/dev/null || echo "fourlw: the server exited during the probe"
else
    echo "fourlw: server $bin did not come up (log: $out/srv-all/)"
    tail -n 20 "$out/srv-all/keel.log" 2>/dev/null || true
fi
kc_stop_pid "$KEEL_PID" server
KEEL_PID=

# 2. the default whitelist. Waits on srvr, the one word it allows. Bounded: 150 probes, 30 s.
start_default() {
    local dir=$out/srv-default i
    mkdir -p "$dir/data"
    kc_free_port
    DEF_PORT=$KC_PORT
    kc_write_cfg "$dir/zoo.cfg" "$DEF_PORT" "$dir/data"
    sed -i '/^4lw\.commands\.whitelist=/d' "$dir/zoo.cfg"
    [[ -x $bin ]] || return 1
    "$bin" "$dir/zoo.cfg" >"$dir/keel.log" 2>&1 &
    DEF_PID=$!
    kc_log "server pid $DEF_PID on 127.0.0.1:$DEF_PORT (default whitelist, dir $dir)"
    for ((i = 0; i < 150; i++)); do
        kill -0 "$DEF_PID" 2>/dev/null || return 1
        [[ "$(kc_4lw "$DEF_PORT" srvr)" == "Zookeeper version:"* ]] && return 0
        sleep 0.2
    done
    return 1
}
if start_default; then
    "$py" "$here/fourlw.py" probe --server "127.0.0.1:$DEF_PORT" --datadir "$out/srv-default/data" \
        --raw "$out/raw-whitelist" || echo "fourlw: default-whitelist probe failed"
else
    echo "fourlw: server $bin did not come up with the default whitelist (log: $out/srv-default/)"
fi
kc_stop_pid "$DEF_PID" server
DEF_PID=

"$py" "$here/fourlw.py" normalise --raw "$out/raw" --whitelist-raw "$out/raw-whitelist" --out "$out/actual"
echo "fourlw: probes took $(($(date +%s) - start))s; raw answers in $out/raw, $out/raw-whitelist"

if [[ $mode == --record ]]; then
    rm -rf "$here/expected"
    cp -r "$out/actual" "$here/expected"
    echo "fourlw: wrote $here/expected ($(ls "$here/expected" | wc -l) files)"
    exit 0
fi
"$py" "$here/fourlw.py" compare --expected "$here/expected" --actual "$out/actual" \
    --gaps "$here/known_gaps.txt" ${KC_COUNTS:+--counts "$KC_COUNTS"}
