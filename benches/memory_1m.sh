#!/usr/bin/env bash
# Memory holding 1M znodes: Keel vs Apache ZooKeeper 3.8 (Debian's package, default JVM
# settings), side by side in one run. Each server gets the same tree (1,000 parents x 1,000
# children, 100 B data, 20-character names) from benches/load_tree.py; RSS is read from
# /proc/PID/status after a full GC-free settle of 5 s.
#
#   bash benches/memory_1m.sh [parents] [children]
# Needs: cargo, Debian's zookeeper package, python3 with kazoo (bash .ci/run installs both).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
parents=${1:-1000}
children=${2:-1000}
python=${KC_PYTHON:-$repo/.ci/.venv/bin/python}
work=$(mktemp -d /tmp/keel-mem.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_port() {
    for _ in $(seq 1 100); do
        if [[ $(echo ruok | nc -q1 127.0.0.1 "$1" 2>/dev/null) == imok ]]; then return 0; fi
        sleep 0.2
    done
    echo "server on port $1 did not answer ruok" >&2
    return 1
}
write_cfg() { # write_cfg FILE PORT DATADIR
    printf 'tickTime=2000\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\nmaxClientCnxns=0\nadmin.enableServer=false\n' \
        "$3" "$2" >"$1"
}

measure() { # measure NAME PORT PID
    local before after
    before=$(rss_kb "$3")
    "$python" "$repo/benches/load_tree.py" "127.0.0.1:$2" "$parents" "$children"
    sleep 5
    after=$(rss_kb "$3")
    echo "$1: RSS ${before} kB empty, ${after} kB with $((parents * children)) znodes"
    echo "$1 $after" >>"$work/results"
}

cargo build --release --bin keel --manifest-path "$repo/Cargo.toml" >/dev/null
mkdir -p "$work/keel" "$work/zk"
write_cfg "$work/keel/zoo.cfg" 22190 "$work/keel/data"
"$repo/target/release/keel" "$work/keel/zoo.cfg" >"$work/keel/log" 2>&1 &
pids+=($!)
wait_port 22190
measure keel 22190 "${pids[-1]}"

write_cfg "$work/zk/zoo.cfg" 22191 "$work/zk/data"
java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar \
    -Dzookeeper.root.logger=WARN,CONSOLE org.apache.zookeeper.server.quorum.QuorumPeerMain \
    "$work/zk/zoo.cfg" >"$work/zk/log" 2>&1 &
pids+=($!)
wait_port 22191
measure zookeeper 22191 "${pids[-1]}"

awk '{rss[$1]=$2} END {printf "keel/zookeeper RSS ratio: %.3f\n", rss["keel"]/rss["zookeeper"]}' "$work/results"
