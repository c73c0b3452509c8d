#!/usr/bin/env bash
# Latency of reads and writes while snapshots of a 1M-znode tree are written back to back,
# against the same server with snapshots off, in alternating rounds (issue 3).
#
#   bash benches/snapshot_stall.sh [rounds] [duration]
#
# Environment (defaults in brackets):
#   SHAPES     [spread flat]  spread: 1,000 parents x 1,000 children of 100 B, loaded from a
#              snapshot written by tests/snapshot_fixture.rs, the load on its own 10k keys;
#              flat: keel-loadgen's own 1,000,000 keys of 100 B under one parent (created in
#              its setup), so every setData lands in a child table of a million entries.
#   LOADS      [write-32x16 read-32x16 write-1x1 read-1x1]  keel-loadgen WORKLOAD-SESSIONSxOUT
#              (workload write, read or mixed: 90% reads). A read load alone writes nothing, so
#              no snapshot would start under it: beside each read load a second keel-loadgen
#              writes at BG_RATE [4000] setData/create/delete per second (4 sessions x 4) in
#              every mode, which with snapshots on keeps them starting back to back.
#   MODES      [on off]  on: snapCount=20000 (a 1M-znode snapshot starts every 10-20k txns,
#              i.e. back to back under load); off: snapCount=2000000000. Both keep the newest
#              3 snapshots (autopurge), so back-to-back 206 MB files do not fill the disk.
#   KEEL, LOADGEN  binaries to test [$CARGO_TARGET_DIR or target, release; built first];
#              give KEELS="a:/path/keel b:/path/keel" to alternate two builds inside each round.
#   WARMUP [3s]
#   DATA_ROOT [/tmp]  where the servers' data directories go; /dev/shm takes the disk out
#              (fdatasync costs nothing there), leaving the snapshot's CPU and memory effects.
#
# Each (round, shape, build, mode) starts a fresh server on 127.0.0.1:22400 (the spread shape
# on a copy of the fixture), runs the loads one after another, and stops it by PID. One line
# per load: throughput, p99 / p99.9 / max over all ops, the op with the worst p99.9, the
# snapshots finished during it and the log's write + fdatasync count and mean time (mntr).
# Processes started here are killed by PID on exit; every wait is bounded.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-2}
duration=${2:-15s}
shapes=${SHAPES:-spread flat}
loads=${LOADS:-write-32x16 read-32x16 write-1x1 read-1x1}
modes=${MODES:-on off}
warmup=${WARMUP:-3s}
target=${CARGO_TARGET_DIR:-$repo/target}
keels=${KEELS:-this:${KEEL:-$target/release/keel}}
loadgen=${LOADGEN:-$target/release/keel-loadgen}
port=22400
work=$(mktemp -d "${DATA_ROOT:-/tmp}/keel-snapstall.XXXXXX")
fixture=${FIXTURE_DIR:-/tmp/keel-snapstall-fixture}
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then kill -9 "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work/data"
}
trap cleanup EXIT

if [[ -z ${KEELS:-} && -z ${KEEL:-} ]]; then
    nice -n 10 cargo build --release --manifest-path "$repo/Cargo.toml" -p keel -p keel-loadgen \
        >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
fi
if [[ $shapes == *spread* && ! -d $fixture/version-2 ]]; then
    echo "== writing the spread fixture snapshot into $fixture"
    mkdir -p "$fixture"
    KEEL_FIXTURE_DIR=$fixture KEEL_FIXTURE_SHAPE=spread nice -n 10 cargo test --release \
        --manifest-path "$repo/Cargo.toml" --test snapshot_fixture -- --ignored --nocapture \
        2>&1 | grep -E "^spread|error" || true
fi

mntr() { echo mntr | timeout 5 nc -q1 127.0.0.1 "$port" 2>/dev/null | awk -v k="$1" '$1 == k {print $2}'; }
wait_port() {
    for _ in $(seq 1 300); do
        [[ $(echo ruok | timeout 2 nc -q1 127.0.0.1 "$port" 2>/dev/null) == imok ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || { echo "keel exited" >&2; return 1; }
        sleep 0.2
    done
    echo "keel did not answer ruok in 60 s" >&2
    return 1
}
start_keel() { # BINARY SNAPCOUNT SHAPE
    rm -rf "$work/data"
    mkdir -p "$work/data"
    if [[ $3 == spread ]]; then cp -r "$fixture/version-2" "$work/data/"; fi
    printf 'tickTime=2000\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n4lw.commands.whitelist=*\nadmin.enableServer=false\nforceSync=yes\nsnapCount=%s\nautopurge.snapRetainCount=3\nautopurge.purgeInterval=1\n' \
        "$work/data" "$port" "$2" >"$work/keel.cfg"
    "$1" "$work/keel.cfg" >>"$work/keel.log" 2>&1 &
    server_pid=$!
    wait_port
}
stop_keel() {
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}
run_load() { # LABEL SHAPE LOAD
    local workload=${3%%-*} shape=${3#*-}
    local sessions=${shape%x*} outstanding=${shape#*x}
    local keys=10000
    [[ $2 == flat ]] && keys=1000000
    local out
    out=$work/$(echo "$1-$3" | tr ' /' '__').json
    local before after
    local bg_pid=
    if [[ $workload == read ]]; then
        timeout 300 "$loadgen" --servers "127.0.0.1:$port" --workload write --sessions 4 \
            --outstanding 4 --rate "${BG_RATE:-4000}" --keys 1000 --threads 1 --warmup 0s \
            --duration 280s --quiet >/dev/null 2>>"$work/loadgen.log" &
        bg_pid=$!
        sleep 2
    fi
    before=$(mntr zk_cnt_snapshottime)
    local syncs_before sync_ms_before
    syncs_before=$(mntr zk_cnt_fsynctime)
    sync_ms_before=$(mntr zk_sum_fsynctime)
    # Setup of 1M keys and their teardown take a while: bound the run, generously.
    local mix=()
    [[ $workload == mixed ]] && mix=(--read-pct 90)
    timeout 300 "$loadgen" --servers "127.0.0.1:$port" --workload "$workload" "${mix[@]}" \
        --sessions "$sessions" --outstanding "$outstanding" --keys "$keys" --threads 1 \
        --warmup "$warmup" --duration "$duration" --time-limit 240s --quiet \
        --json "$out" >/dev/null 2>>"$work/loadgen.log" || true
    after=$(mntr zk_cnt_snapshottime)
    local syncs=$(($(mntr zk_cnt_fsynctime) - ${syncs_before:-0}))
    local sync_ms=$(($(mntr zk_sum_fsynctime) - ${sync_ms_before:-0}))
    if [[ -n $bg_pid ]]; then
        kill "$bg_pid" 2>/dev/null || true
        wait "$bg_pid" 2>/dev/null || true
    fi
    python3 - "$out" "$1 $3" "$((${after:-0} - ${before:-0}))" "$(mntr zk_avg_snapshottime)" "$syncs" "$sync_ms" <<'PY'
import json, sys
path, label, snaps, avg, syncs, sync_ms = sys.argv[1:7]
try:
    j = json.load(open(path))
except Exception as e:
    print(f"{label:<40} FAILED ({e})")
    sys.exit(0)
ops = {o["op"]: o["latency_us"] for o in j["operations"]}
total = ops.pop("all")
worst = max((l["p99.9"], name) for name, l in ops.items())
print(f"{label:<40} {j['result']['throughput_ops_per_s']:>7.0f} ops/s  "
      f"p99 {total['p99']/1000:6.2f}  p99.9 {total['p99.9']/1000:6.2f}  max {total['max']/1000:6.2f} ms  "
      f"(worst p99.9 {worst[1]} {worst[0]/1000:.2f})  err {j['result']['errors']}  "
      f"snaps {snaps} (mean {float(avg):.0f} ms)  log syncs {syncs} (mean {int(sync_ms) / max(1, int(syncs)):.2f} ms)",
      flush=True)
PY
}

echo "== builds: $keels; shapes: $shapes; loads: $loads; modes: $modes; $rounds rounds of $duration"
for round in $(seq 1 "$rounds"); do
    for shape in $shapes; do
        # Alternate which build and which mode go first, so drift over time favours neither.
        builds=$keels ordered=$modes
        if ((round % 2 == 0)); then
            builds=$(echo "$keels" | tr ' ' '\n' | tac | tr '\n' ' ')
            ordered=$(echo "$modes" | tr ' ' '\n' | tac | tr '\n' ' ')
        fi
        for build in $builds; do
            for mode in $ordered; do
                snap_count=2000000000
                [[ $mode == on ]] && snap_count=20000
                start_keel "${build#*:}" "$snap_count" "$shape"
                for load in $loads; do
                    run_load "r$round $shape ${build%%:*} snap-$mode" "$shape" "$load"
                done
                stop_keel
            done
        done
    done
done
echo "raw JSON and logs in $work"
