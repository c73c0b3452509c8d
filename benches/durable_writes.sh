#!/usr/bin/env bash
# Durable writes, Keel vs Apache ZooKeeper 3.8 (Debian's package), side by side in one run on
# this machine, both with forceSync=yes and data on the same disk. keel-loadgen's `write`
# workload (setData of 100 B values on 1000 keys, plus create/delete pairs) at
# 32 sessions x 16 outstanding and at 1 x 1, alternating A/B for `rounds` rounds; prints each
# run and the Keel/ZooKeeper ratios of throughput and p50/p99.
#
#   bash benches/durable_writes.sh [rounds] [duration]
#   KEEL_BASELINE=/path/to/an/older/keel bash benches/durable_writes.sh ...   # adds it as a third server
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-2}
duration=${2:-10s}
work=$(mktemp -d /tmp/keel-durable.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

cargo build --release --manifest-path "$repo/Cargo.toml" -p keel -p keel-loadgen >/dev/null 2>&1
loadgen=$repo/target/release/keel-loadgen

wait_port() {
    for _ in $(seq 1 150); do
        [[ $(echo ruok | nc -q1 127.0.0.1 "$1" 2>/dev/null) == imok ]] && return 0
        sleep 0.2
    done
    echo "server on port $1 did not answer ruok" >&2
    return 1
}
write_cfg() { # FILE PORT DATADIR
    printf 'tickTime=2000\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n4lw.commands.whitelist=*\nadmin.enableServer=false\nforceSync=yes\n' \
        "$3" "$2" >"$1"
}

mkdir -p "$work/keel" "$work/zk"
write_cfg "$work/keel/zoo.cfg" 22290 "$work/keel/data"
"$repo/target/release/keel" "$work/keel/zoo.cfg" >"$work/keel/log" 2>&1 &
pids+=($!)
write_cfg "$work/zk/zoo.cfg" 22291 "$work/zk/data"
java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar \
    -Dzookeeper.root.logger=WARN,CONSOLE org.apache.zookeeper.server.quorum.QuorumPeerMain \
    "$work/zk/zoo.cfg" >"$work/zk/log" 2>&1 &
pids+=($!)
wait_port 22290
wait_port 22291
if [[ -n ${KEEL_BASELINE:-} ]]; then
    mkdir -p "$work/base"
    write_cfg "$work/base/zoo.cfg" 22292 "$work/base/data"
    "$KEEL_BASELINE" "$work/base/zoo.cfg" >"$work/base/log" 2>&1 &
    pids+=($!)
    wait_port 22292
fi

run() { # NAME PORT SESSIONS OUTSTANDING ROUND
    local out=$work/$1-$3x$4-$5.json
    "$loadgen" --servers "127.0.0.1:$2" --workload write --sessions "$3" --outstanding "$4" \
        --threads 1 --warmup 2s --duration "$duration" --quiet --json "$out" >/dev/null 2>&1 || true
    python3 - "$out" "$1" "$3x$4" <<'PY'
import json, sys
path, name, shape = sys.argv[1:4]
try:
    j = json.load(open(path))
except Exception as e:
    print(f"{name} {shape} no result ({e})"); sys.exit(0)
ops = j["result"]["throughput_ops_per_s"]
lat = next(o for o in j["operations"] if o["op"] == "all")["latency_us"]
print(f"{name} {shape} ops/s={ops:.0f} p50_us={lat['p50']:.0f} p99_us={lat['p99']:.0f} "
      f"errors={j['result']['errors']}")
PY
}

for round in $(seq 1 "$rounds"); do
    for shape in "32 16" "1 1"; do
        set -- $shape
        run keel 22290 "$1" "$2" "$round"
        if [[ -n ${KEEL_BASELINE:-} ]]; then run keel-baseline 22292 "$1" "$2" "$round"; fi
        run zookeeper 22291 "$1" "$2" "$round"
    done
done | tee "$work/results.txt"
echo "raw JSON in $work"
