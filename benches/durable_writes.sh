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

mntr() { echo mntr | nc -q1 127.0.0.1 "$1" | awk -v k="$2" '$1 == k {print $2}'; }
run() { # NAME PORT SESSIONS OUTSTANDING ROUND
    local out=$work/$1-$3x$4-$5.json syncs0 txns0 bytes0 t0 syncs=- txns=- bytes=- secs=1
    # Keel's group-commit figures from mntr around the run (ZooKeeper has no such counters).
    syncs0=$(mntr "$2" zk_cnt_fsynctime) txns0=$(mntr "$2" zk_sum_sync_processor_batch_size)
    bytes0=$(mntr "$2" keel_sum_wal_batch_bytes) t0=$(date +%s.%N)
    "$loadgen" --servers "127.0.0.1:$2" --workload write --sessions "$3" --outstanding "$4" \
        --threads 1 --warmup 2s --duration "$duration" --quiet --json "$out" >/dev/null 2>&1 || true
    if [[ -n $syncs0 ]]; then
        secs=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")
        syncs=$(($(mntr "$2" zk_cnt_fsynctime) - syncs0))
        txns=$(($(mntr "$2" zk_sum_sync_processor_batch_size) - txns0))
        bytes=$(($(mntr "$2" keel_sum_wal_batch_bytes) - bytes0))
    fi
    python3 - "$out" "$1" "$3x$4" "$syncs" "$txns" "$bytes" "$secs" <<'PY'
import json, sys
path, name, shape, syncs, txns, nbytes, secs = sys.argv[1:8]
try:
    j = json.load(open(path))
except Exception as e:
    print(f"{name} {shape} no result ({e})"); sys.exit(0)
ops = j["result"]["throughput_ops_per_s"]
lat = next(o for o in j["operations"] if o["op"] == "all")["latency_us"]
extra = ""
if syncs not in ("-", "0"):
    s, t, b = int(syncs), int(txns), int(nbytes)
    extra = (f" fsyncs/s={s / float(secs):.0f} mean_batch={t / s:.1f}txns/"
             f"{b / s / 1024:.1f}KiB")
print(f"{name} {shape} ops/s={ops:.0f} p50_us={lat['p50']:.0f} p99_us={lat['p99']:.0f} "
      f"errors={j['result']['errors']}{extra}")
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
