#!/usr/bin/env bash
# Regenerates tests/fixtures/zookeeper-3.8/ with Apache ZooKeeper 3.8 (Debian's package) on
# 127.0.0.1: phase one builds every node kind; a restart makes ZooKeeper snapshot that tree
# (and later expire phase one's session); phase two logs every txn type after the snapshot.
# Kept: the restart's snapshot, the log after it, and kazoo's dump of the final tree; and in gz/
# the snapshot a third start takes with zookeeper.snapshot.compression.method=gz (same tree).
# The constants in src/import/tests.rs (zxids, session ids) follow these files.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=tests/clients/lib.sh
source "$repo/tests/clients/lib.sh"
py=${KC_PYTHON:-$repo/.ci/.venv/bin/python}
work=$repo/.ci/work/import-fixtures
out=${KC_FIXTURES_OUT:-$repo/tests/fixtures/zookeeper-3.8}
rm -rf "$work"
# The ContainerManager reaps emptied containers and expired TTL nodes within a second.
export KC_ZK_JAVA_OPTS=-Dznode.container.checkIntervalMs=500
extra=$'snapCount=100000\npreAllocSize=16'
ZK_PID= BUILD_PID=
cleanup() { kc_stop_pid "$BUILD_PID" builder; kc_stop_pid "$ZK_PID" zookeeper; }
trap cleanup EXIT

kc_start_zookeeper "$work/zk" "$extra"
"$py" "$here/zk_import.py" build --server "127.0.0.1:$ZK_PORT" --ready "$work/ready1" --scenario fixture1 &
BUILD_PID=$!
for ((i = 0; i < 300; i++)); do [[ -e $work/ready1 ]] && break; kill -0 "$BUILD_PID"; sleep 0.2; done
kc_stop_pid "$ZK_PID" zookeeper
kc_stop_pid "$BUILD_PID" builder
BUILD_PID=
ls -l "$work/zk/data/version-2"
before=$(ls "$work/zk/data/version-2")

KC_ZK_KEEP_DATA=1 kc_start_zookeeper "$work/zk" "$extra"
snapshot=$(cd "$work/zk/data/version-2" && ls snapshot.* | sort -V | tail -1)
kc_log "snapshot taken at restart: $snapshot"
# Phase one's holder session expires (its timeout is 40 s): wait for its closeSession.
for ((i = 0; i < 120; i++)); do
    "$py" -c "
from kazoo.client import KazooClient
z = KazooClient(hosts='127.0.0.1:$ZK_PORT'); z.start(timeout=10)
import sys; r = z.exists('/app/eph'); z.stop(); sys.exit(0 if r is None else 1)" && break
    sleep 1
done
"$py" "$here/zk_import.py" build --server "127.0.0.1:$ZK_PORT" --ready "$work/ready2" --scenario fixture2 &
BUILD_PID=$!
for ((i = 0; i < 300; i++)); do [[ -e $work/ready2 ]] && break; kill -0 "$BUILD_PID"; sleep 0.2; done
"$py" "$here/zk_import.py" dump --server "127.0.0.1:$ZK_PORT" --out "$work/expected.txt"
kc_stop_pid "$ZK_PID" zookeeper
ZK_PID=
kc_stop_pid "$BUILD_PID" builder
BUILD_PID=
ls -l "$work/zk/data/version-2"
rm -rf "$out"
mkdir -p "$out"
cp "$work/zk/data/version-2/$snapshot" "$out/"
for log in $(cd "$work/zk/data/version-2" && ls log.*); do
    grep -qx "$log" <<<"$before" || cp "$work/zk/data/version-2/$log" "$out/"
done
cp "$work/expected.txt" "$out/expected.txt"

# A third start on the kept files, compressing the snapshot it takes at start.
mkdir -p "$work/gz/data/version-2" "$out/gz"
cp "$out"/snapshot.* "$out"/log.* "$work/gz/data/version-2/"
KC_ZK_KEEP_DATA=1 KC_ZK_JAVA_OPTS=-Dzookeeper.snapshot.compression.method=gz \
    kc_start_zookeeper "$work/gz" "$extra"
kc_stop_pid "$ZK_PID" zookeeper
ZK_PID=
cp "$work/gz/data/version-2/"snapshot.*.gz "$out/gz/"
ls -l "$out"
