#!/usr/bin/env bash
# Keel vs Apache ZooKeeper 3.8 (Debian's package), side by side on this machine: the standard
# matrix of keel-loadgen workloads against both servers, run as `keel-loadgen compare` (A = ZK,
# B = Keel, alternating A/B for ROUNDS rounds), summarised as a markdown table with the
# Keel/ZooKeeper ratios, plus latency and throughput plots per cell.
#
#   bash benches/side_by_side.sh [OUT_DIR]
#
# Environment (defaults in brackets; short on purpose, raise them for real measurements):
#   WARMUP [1s]  DURATION [3s]  ROUNDS [1]  KEYS [10000]  VALUE_BYTES [100]  THREADS [1]
#   WORKLOADS ["read write mixed fanout"]  SHAPES ["1x1 32x16"]
#
# The matrix: read, write, mixed (90% reads), watch fan-out; each at 1 session x 1 outstanding
# and 32 sessions x 16 outstanding; 100-byte values on 10,000 znodes. Fan-out needs a writer and
# watchers, so its "1x1" is 2 sessions (1 writer, 1 watcher) and its "32x16" is 32 sessions
# (1 writer, 31 watchers) on one node; each watcher has one getData in flight at a time whatever
# the outstanding count. Its figures come from the fanout_last_notify row (rounds/s, and the
# time from the setData's send to the last watcher's notification); the other workloads use the
# `all` row.
#
# Both servers get the same zoo.cfg (tests/clients/lib.sh's kc_write_cfg plus forceSync=yes),
# listen on 127.0.0.1 only, and keep their data under OUT_DIR. Both are stopped by PID on exit.
# Debian's zookeeper package is installed with apt-get if it is missing (needs root).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$(mktemp -d /tmp/keel-side-by-side.XXXXXX)}
WARMUP=${WARMUP:-1s}
DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-1}
KEYS=${KEYS:-10000}
VALUE_BYTES=${VALUE_BYTES:-100}
THREADS=${THREADS:-1}
WORKLOADS=${WORKLOADS:-"read write mixed fanout"}
SHAPES=${SHAPES:-"1x1 32x16"}
target=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# shellcheck source=../tests/clients/lib.sh
source "$repo/tests/clients/lib.sh"
# Same config for both servers as the client harness, with fsync on every commit stated.
eval "$(declare -f kc_write_cfg | sed '1s/kc_write_cfg/kc_write_cfg_harness/')"
kc_write_cfg() {
    kc_write_cfg_harness "$@"
    echo "forceSync=yes" >>"$1"
}

ZK_PID=
KEEL_PID=
cleanup() {
    kc_stop_pid "$KEEL_PID" keel
    kc_stop_pid "$ZK_PID" zookeeper
}
trap cleanup EXIT

if [[ ! -e /usr/share/java/zookeeper.jar ]]; then
    kc_log "installing Debian's zookeeper package"
    apt-get install -y --no-install-recommends zookeeper >"$out/apt.log" 2>&1
fi

kc_log "building keel and keel-loadgen (release) into $target"
cargo build --release --manifest-path "$repo/Cargo.toml" -p keel -p keel-loadgen \
    >"$out/build.log" 2>&1
loadgen=$target/release/keel-loadgen

# ZooKeeper answers ruok before it serves sessions ("ZooKeeperServer not running"); srvr
# reports a Mode only once it does. Bounded: 30 s.
wait_serving() { # PORT NAME
    local i
    for ((i = 0; i < 150; i++)); do
        [[ "$(kc_4lw "$1" srvr)" == *Mode:* ]] && return 0
        sleep 0.2
    done
    kc_log "$2 on port $1 does not serve sessions after 30 s"
    return 1
}
kc_start_zookeeper "$out/zookeeper"
kc_start_keel "$target/release/keel" "$out/keel"
wait_serving "$ZK_PORT" zookeeper
wait_serving "$KEEL_PORT" keel
zk=127.0.0.1:$ZK_PORT
keel=127.0.0.1:$KEEL_PORT
kc_log "ZooKeeper $zk (pid $ZK_PID), Keel $keel (pid $KEEL_PID); results in $out"

# One cell: keel-loadgen compare with A = ZooKeeper, B = Keel. Never fails the script: a cell
# whose compare fails shows its exit status in the table.
cell() { # WORKLOAD SHAPE
    local workload=$1 shape=$2 sessions=${2%x*} outstanding=${2#*x} keys=$KEYS
    if [[ $workload == fanout ]]; then
        keys=1
        ((sessions >= 2)) || sessions=2
    fi
    local name=$workload-$shape
    local time_limit
    time_limit=$(python3 -c '
import sys
def seconds(text):
    for unit, scale in (("ms", 1e-3), ("s", 1), ("m", 60)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)
print(int(seconds(sys.argv[1]) + seconds(sys.argv[2]) + 60))' "$WARMUP" "$DURATION")
    kc_log "cell $name: $sessions sessions x $outstanding outstanding, keys $keys"
    local status=0
    timeout $((time_limit * 2 * ROUNDS + 30)) "$loadgen" compare --a "$zk" --b "$keel" \
        --rounds "$ROUNDS" --workload "$workload" --sessions "$sessions" \
        --outstanding "$outstanding" --threads "$THREADS" --keys "$keys" \
        --value-bytes "$VALUE_BYTES" --warmup "$WARMUP" --duration "$DURATION" \
        --time-limit "${time_limit}s" --run-id "sbs-$name-$$" --quiet \
        --json "$out/$name.json" --plot-dir "$out/plots/$name" >"$out/$name.txt" 2>"$out/$name.err" ||
        status=$?
    echo "$status" >"$out/$name.status"
}

for workload in $WORKLOADS; do
    for shape in $SHAPES; do
        cell "$workload" "$shape"
    done
done

python3 - "$out" "$WARMUP" "$DURATION" "$ROUNDS" "$KEYS" "$VALUE_BYTES" "$WORKLOADS" "$SHAPES" \
    >"$out/results.md" <<'PY'
import json, statistics, sys
out, warmup, duration, rounds, keys, value_bytes, workloads, shapes = sys.argv[1:9]

def figures(summary, op):
    row = next(r for r in summary["operations"] if r["op"] == op)
    lat = row["latency_us"]
    return row["throughput_ops_per_s"], lat["p50"], lat["p99"], summary["result"]["errors"]

def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"

print(f"Keel vs Apache ZooKeeper 3.8, keel-loadgen compare (A = ZooKeeper, B = Keel), "
      f"{rounds} round(s), warmup {warmup}, duration {duration}, {keys} znodes, "
      f"{value_bytes}-byte values, forceSync=yes; medians over rounds.\n")
print("| workload | sessions × outstanding | ZK ops/s | Keel ops/s | Keel/ZK ops/s "
      "| ZK p50 | Keel p50 | Keel/ZK p50 | ZK p99 | Keel p99 | Keel/ZK p99 | errors ZK/Keel |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for workload in workloads.split():
    for shape in shapes.split():
        name = f"{workload}-{shape}"
        status = open(f"{out}/{name}.status").read().strip()
        try:
            result = json.load(open(f"{out}/{name}.json"))
        except Exception:
            print(f"| {workload} | {shape} | no result (exit {status}, see {name}.err) |")
            continue
        op = "fanout_last_notify" if workload == "fanout" else "all"
        a = [figures(r["a"], op) for r in result["runs"]]
        b = [figures(r["b"], op) for r in result["runs"]]
        med = lambda rows, i: statistics.median(r[i] for r in rows)
        ratio = lambda i: med(b, i) / med(a, i) if med(a, i) else float("nan")
        shown = shape
        if workload == "fanout":
            shown += f" ({result['runs'][0]['a']['run']['sessions']} sessions)"
        errors = f"{sum(r[3] for r in a)}/{sum(r[3] for r in b)}"
        print(f"| {workload} | {shown} | {med(a, 0):,.0f} | {med(b, 0):,.0f} | {ratio(0):.2f} "
              f"| {fmt_us(med(a, 1))} | {fmt_us(med(b, 1))} | {ratio(1):.2f} "
              f"| {fmt_us(med(a, 2))} | {fmt_us(med(b, 2))} | {ratio(2):.2f} | {errors} |")
print("\nfanout: ops/s is rounds per second; latencies are from the setData's send to the last "
      "watcher's notification. Plots: plots/<workload>-<shape>/{latency,throughput}.svg.")
PY
cat "$out/results.md"
kc_log "table: $out/results.md"
