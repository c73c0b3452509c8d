#!/usr/bin/env bash
# 1M znodes: Keel's restart time and its latencies while 1M-znode snapshots are written, side
# by side with Apache ZooKeeper 3.8 (Debian's package) in one run, both forceSync=yes.
#
#  1. Both servers get the same tree (benches/load_tree.py: 1,000 x 1,000 znodes of 100 B,
#     20-character names) with their default snapCount (100,000).
#  2. Restart: each is killed with SIGKILL and started again on its data; the time from the
#     new process's start to its first successful getData is measured over the raw protocol
#     (benches/first_read.py).
#  3. Snapshot stall: keel-loadgen mixed 90:10 (32 sessions x 16 outstanding, 10k keys of
#     100 B) against Keel holding the 1M tree, once with snapCount=20000 (a 1M-znode snapshot
#     started every 10-20k txns, i.e. back to back) and once with snapshots off; p99 and p99.9
#     of reads and writes side by side, with the snapshots taken and their mean duration.
#     ZooKeeper runs the same load with snapCount=20000 for reference.
#
#   bash benches/restart_1m.sh [parents] [children] [duration]
# Needs: cargo, Debian's zookeeper package, python3 with kazoo (bash .ci/run installs both).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
parents=${1:-1000}
children=${2:-1000}
duration=${3:-20s}
python=${KC_PYTHON:-$repo/.ci/.venv/bin/python}
work=$(mktemp -d /tmp/keel-restart1m.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

cargo build --release --manifest-path "$repo/Cargo.toml" -p keel -p keel-loadgen >/dev/null 2>&1
keel=$repo/target/release/keel
loadgen=$repo/target/release/keel-loadgen
zk_cp=/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar
probe=/p0000/node-000000000000000

wait_port() {
    for _ in $(seq 1 600); do
        [[ $(echo ruok | nc -q1 127.0.0.1 "$1" 2>/dev/null) == imok ]] && return 0
        sleep 0.2
    done
    echo "server on port $1 did not answer ruok" >&2
    return 1
}
write_cfg() { # FILE PORT DATADIR [extra lines]
    printf 'tickTime=2000\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n4lw.commands.whitelist=*\nadmin.enableServer=false\nforceSync=yes\n%s' \
        "$3" "$2" "${4:-}" >"$1"
}
start_keel() { # CFG LOG; sets server_pid, started
    started=$(date +%s.%N)
    "$keel" "$1" >>"$2" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
}
start_zk() { # CFG LOG
    started=$(date +%s.%N)
    java -cp "$zk_cp" -Dzookeeper.root.logger=WARN,CONSOLE \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$1" >>"$2" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
}
kill9() { kill -9 "$1"; wait "$1" 2>/dev/null || true; }
mntr() { echo mntr | nc -q1 127.0.0.1 "$1" | awk -v k="$2" '$1 == k {print $2}'; }
stall_run() { # NAME PORT
    local out=$work/$1.json
    "$loadgen" --servers "127.0.0.1:$2" --workload mixed --read-pct 90 --sessions 32 \
        --outstanding 16 --keys 10000 --threads 1 --warmup 2s --duration "$duration" --quiet \
        --json "$out" >/dev/null 2>&1 || true
    "$python" - "$out" "$1" <<'PY'
import json, sys
path, name = sys.argv[1:3]
j = json.load(open(path))
print(f"{name}: {j['result']['throughput_ops_per_s']:.0f} ops/s, errors {j['result']['errors']}")
for o in j["operations"]:
    l = o["latency_us"]
    print(f"  {o['op']:<14} p50 {l['p50']:>8.0f} us  p99 {l['p99']:>8.0f} us  "
          f"p99.9 {l['p99.9']:>8.0f} us  max {l['max']:>8.0f} us")
PY
}

mkdir -p "$work/keel" "$work/zk"
echo "== loading ${parents}x${children} znodes"
write_cfg "$work/keel/load.cfg" 22390 "$work/keel/data"
start_keel "$work/keel/load.cfg" "$work/keel/log"
wait_port 22390
"$python" "$repo/benches/load_tree.py" 127.0.0.1:22390 "$parents" "$children" | sed 's/^/keel: /'
keel_pid=$server_pid
write_cfg "$work/zk/load.cfg" 22391 "$work/zk/data"
start_zk "$work/zk/load.cfg" "$work/zk/log"
wait_port 22391
"$python" "$repo/benches/load_tree.py" 127.0.0.1:22391 "$parents" "$children" | sed 's/^/zookeeper: /'
zk_pid=$server_pid
sleep 5 # let a snapshot started near the end finish
echo "keel data: $(du -sh "$work/keel/data" | cut -f1), zookeeper data: $(du -sh "$work/zk/data" | cut -f1)"

echo "== restart after SIGKILL: process start -> first successful getData"
kill9 "$keel_pid"
write_cfg "$work/keel/snap.cfg" 22390 "$work/keel/data" 'snapCount=20000\n'
start_keel "$work/keel/snap.cfg" "$work/keel/log"
keel_pid=$server_pid
echo "keel: $("$python" "$repo/benches/first_read.py" 127.0.0.1:22390 "$probe" "$started") s"
kill9 "$zk_pid"
write_cfg "$work/zk/snap.cfg" 22391 "$work/zk/data" 'snapCount=20000\n'
start_zk "$work/zk/snap.cfg" "$work/zk/log"
zk_pid=$server_pid
echo "zookeeper: $("$python" "$repo/benches/first_read.py" 127.0.0.1:22391 "$probe" "$started") s"
wait_port 22391

echo "== latency while 1M-znode snapshots are written (mixed 90:10, 32x16, $duration)"
before=$(mntr 22390 zk_cnt_snapshottime)
stall_run keel-snapshots-on 22390
echo "  snapshots during the run: $(($(mntr 22390 zk_cnt_snapshottime) - before)), mean $(mntr 22390 zk_avg_snapshottime) ms, last $(mntr 22390 keel_last_snapshot_bytes) bytes"
kill9 "$keel_pid"
write_cfg "$work/keel/nosnap.cfg" 22390 "$work/keel/data" 'snapCount=2000000000\n'
start_keel "$work/keel/nosnap.cfg" "$work/keel/log"
keel_pid=$server_pid
wait_port 22390
stall_run keel-snapshots-off 22390
stall_run zookeeper-snapCount-20000 22391
echo "raw JSON and logs in $work"
