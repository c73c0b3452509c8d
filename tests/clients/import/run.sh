#!/usr/bin/env bash
# Import of Apache ZooKeeper data, end to end, on 127.0.0.1 only:
#  1. starts Apache ZooKeeper 3.8 (Debian's package) with snapCount=20 (so several snapshots and
#     logs) and extendedTypesEnabled=true (TTL nodes), builds a tree with kazoo (zk_import.py
#     build --scenario full: persistent, sequential, container, TTL, digest-ACL'd and ephemeral
#     nodes, multis, a failed multi, error txns, setData/setACL/delete so that versions,
#     cversions and pzxids differ, ~330 nodes, a count quota set with zkCli on a subtree that
#     then changes), its ephemerals held by a session that stays open;
#  2. dumps every node (path, Stat, ACL, data) through kazoo, then kills ZooKeeper with SIGKILL
#     (a crash: a snapshot may be half written, so the fuzzy-tail and fall-back paths run);
#  3. case "cli": `keel import <zk dataDir> <zoo.cfg>`, starts keel on that dataDir, dumps, diffs;
#     Then writes a node, restarts keel (Keel's snapshot + Keel's log) and diffs again.
#  4. case "auto": a copy of ZooKeeper's dataDir given to keel as its own dataDir (auto-import
#     on start), dumps, diffs, checks the files were moved to version-2/zookeeper-imported/, and
#     that the imported holder session expires on keel (its ephemerals go; about 40 s);
#  5. case "oldest": only the oldest snapshot, a torn copy of the newest and every log: the
#     import must skip the torn one and replay every logged txn, and give the same tree.
#
#   tests/clients/import/run.sh KEEL_BIN
# Environment: KC_OUT (default .ci/work/import), KC_COUNTS gets "PASSED FAILED", KC_PYTHON (a
# python with kazoo). Each server is stopped by its PID.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=tests/clients/lib.sh
source "$repo/tests/clients/lib.sh"
keel_bin=${1:?usage: run.sh KEEL_BIN}
out=${KC_OUT:-$repo/.ci/work/import}
py=${KC_PYTHON:-$repo/.ci/.venv/bin/python}
rm -rf "$out"
mkdir -p "$out"

passed=0 failed=0
check() { # check NAME CONDITION-RESULT(0/1)
    if [[ $2 == 0 ]]; then
        passed=$((passed + 1))
        echo "ok   $1"
    else
        failed=$((failed + 1))
        echo "FAIL $1"
    fi
}
report() {
    echo "import: $passed passed, $failed failed"
    if [[ -n "${KC_COUNTS:-}" ]]; then echo "$passed $failed" >"$KC_COUNTS"; fi
}

ZK_PID= BUILD_PID= KEEL_PID=
cleanup() {
    kc_stop_pid "$KEEL_PID" keel
    kc_stop_pid "$BUILD_PID" builder
    kc_stop_pid "$ZK_PID" zookeeper
}
on_exit() {
    local rc=$1
    cleanup
    if ((rc != 0 && failed == 0)); then
        failed=1
        echo "FAIL run.sh stopped early (exit $rc)"
    fi
    report
}
trap 'on_exit $?' EXIT

# --- 1. ZooKeeper and the tree ------------------------------------------------------------------
# The ContainerManager reaps emptied containers and expired TTL nodes within a second.
KC_ZK_JAVA_OPTS=-Dznode.container.checkIntervalMs=500 \
    kc_start_zookeeper "$out/zk" $'snapCount=20\npreAllocSize=64'
zk_data=$out/zk/data
# A quota, set as zkCli sets it: ZooKeeper keeps its zookeeper_stats node up to date on every
# change below /quota-app without logging those updates, so the import must recompute them.
for cmd in "create /quota-app q" "setquota -n 100 /quota-app"; do
    # shellcheck disable=SC2086 # the command's words
    timeout 60 java -cp "$KC_ZK_CLASSPATH" -Dlog4j.configuration="file:$out/zk/log4j.properties" \
        org.apache.zookeeper.ZooKeeperMain -server "127.0.0.1:$ZK_PORT" $cmd >>"$out/zkcli.log" 2>&1
done
"$py" "$here/zk_import.py" build --server "127.0.0.1:$ZK_PORT" --ready "$out/ready" --scenario full \
    >"$out/build.log" 2>&1 &
BUILD_PID=$!
for ((i = 0; i < 900; i++)); do
    [[ -e $out/ready ]] && break
    kill -0 "$BUILD_PID" 2>/dev/null || break
    sleep 0.2
done
if [[ ! -e $out/ready ]]; then
    tail -n 20 "$out/build.log"
    check "kazoo builds the tree on ZooKeeper" 1
    exit 1
fi
check "kazoo builds the tree on ZooKeeper" 0
"$py" "$here/zk_import.py" dump --server "127.0.0.1:$ZK_PORT" --out "$out/zookeeper.txt"
snapshots=$(find "$zk_data/version-2" -name 'snapshot.*' | wc -l)
logs=$(find "$zk_data/version-2" -name 'log.*' | wc -l)
echo "ZooKeeper wrote $snapshots snapshots and $logs logs"
check "at least 2 snapshots ($snapshots)" "$((snapshots >= 2 ? 0 : 1))"
check "at least 2 logs ($logs)" "$((logs >= 2 ? 0 : 1))"

# --- 2. crash ZooKeeper ---------------------------------------------------------------------------
kill -KILL "$ZK_PID"
wait "$ZK_PID" 2>/dev/null || true
ZK_PID=
kc_stop_pid "$BUILD_PID" builder
BUILD_PID=
cp -a "$zk_data" "$out/auto-data"
# For case 5: the oldest snapshot and a torn copy of the newest, every log.
mkdir -p "$out/oldest-data/version-2"
cp -a "$zk_data/version-2/"log.* "$out/oldest-data/version-2/"
by_zxid=$(cd "$zk_data/version-2" && for f in snapshot.*; do printf '%d %s\n' "0x${f#snapshot.}" "$f"; done | sort -n | cut -d' ' -f2)
oldest=$(head -1 <<<"$by_zxid")
newest=$(tail -1 <<<"$by_zxid")
cp -a "$zk_data/version-2/$oldest" "$out/oldest-data/version-2/"
head -c "$(($(stat -c %s "$zk_data/version-2/$newest") / 2))" "$zk_data/version-2/$newest" \
    >"$out/oldest-data/version-2/$newest"

start_keel_on() { # start_keel_on DIR DATADIR: keel with DIR/zoo.cfg naming DATADIR
    "$keel_bin" "$1/zoo.cfg" >"$1/keel.log" 2>&1 &
    KEEL_PID=$!
    kc_log "keel pid $KEEL_PID on 127.0.0.1:$KEEL_PORT (dataDir $2)"
    kc_wait_ruok "$KEEL_PORT" "$KEEL_PID" 30
}

compare_with() { # compare_with NAME DIR [--skip PATH ...]: dump keel, diff with ZooKeeper's dump
    local name=$1 dir=$2 rc=0
    shift 2
    "$py" "$here/zk_import.py" dump --server "127.0.0.1:$KEEL_PORT" --out "$dir/$name.txt"
    "$py" "$here/zk_import.py" compare "$out/zookeeper.txt" "$dir/$name.txt" --name "$name" \
        --counts "$dir/counts" "$@" || rc=$?
    local p f
    read -r p f <"$dir/counts"
    passed=$((passed + p))
    failed=$((failed + f))
    return $rc
}

# --- 3. keel import, then keel ------------------------------------------------------------------
dir=$out/keel-cli
mkdir -p "$dir"
kc_free_port
KEEL_PORT=$KC_PORT
kc_write_cfg "$dir/zoo.cfg" "$KEEL_PORT" "$dir/data"
rc=0
"$keel_bin" import "$zk_data" "$dir/zoo.cfg" >"$dir/import.txt" 2>&1 || rc=$?
cat "$dir/import.txt"
check "keel import exits 0" "$rc"
rc=0
grep -q "^tree digest: matches ZooKeeper's" "$dir/import.txt" || rc=1
check "the imported tree's digest equals the one ZooKeeper logged last" "$rc"
rc=0
"$keel_bin" import "$zk_data" "$dir/zoo.cfg" >"$dir/import-again.txt" 2>&1 || rc=$?
check "keel import refuses to import over Keel state" "$((rc != 0 ? 0 : 1))"
last_zxid=$(sed -n 's/^imported .* last zxid \(0x[0-9a-f]*\)$/\1/p' "$dir/import.txt")
if start_keel_on "$dir" "$dir/data"; then
    compare_with import-cli "$dir" || true
    rc=0
    "$py" "$here/zk_import.py" after-import --server "127.0.0.1:$KEEL_PORT" --last-zxid "${last_zxid:-0}" || rc=$?
    check "a write after the import gets a zxid after the import's" "$rc"
else
    tail -n 20 "$dir/keel.log"
    check "keel starts on the imported dataDir" 1
fi
kc_stop_pid "$KEEL_PID" keel
KEEL_PID=
# A restart: Keel's snapshot of the import plus Keel's own log after it.
mv "$dir/keel.log" "$dir/keel-first.log"
if start_keel_on "$dir" "$dir/data"; then
    compare_with import-cli-restarted "$dir" --skip / --skip /after-import || true
    rc=0
    "$py" "$here/zk_import.py" after-import --server "127.0.0.1:$KEEL_PORT" --last-zxid "${last_zxid:-0}" --verify || rc=$?
    check "the write after the import survives a restart" "$rc"
else
    tail -n 20 "$dir/keel.log"
    check "keel restarts on the imported dataDir" 1
fi
kc_stop_pid "$KEEL_PID" keel
KEEL_PID=

# --- 4. auto-import on start ------------------------------------------------------------------
dir=$out/keel-auto
mkdir -p "$dir"
kc_free_port
KEEL_PORT=$KC_PORT
kc_write_cfg "$dir/zoo.cfg" "$KEEL_PORT" "$out/auto-data"
if start_keel_on "$dir" "$out/auto-data"; then
    compare_with import-auto "$dir" || true
else
    tail -n 20 "$dir/keel.log"
    check "keel starts on ZooKeeper's dataDir" 1
fi
# The holder session was imported with its 40 s timeout: with no client, it expires on keel.
if kill -0 "$KEEL_PID" 2>/dev/null; then
    rc=0
    "$py" "$here/zk_import.py" wait-gone --server "127.0.0.1:$KEEL_PORT" --timeout 90 \
        --path /log/eph --path /bulk/eph-0 || rc=$?
    check "the imported session expires on keel and its ephemerals go" "$rc"
fi
kc_stop_pid "$KEEL_PID" keel
KEEL_PID=
moved=$(find "$out/auto-data/version-2/zookeeper-imported" -name 'snapshot.*' -o -name 'log.*' 2>/dev/null | wc -l)
left=$(find "$out/auto-data/version-2" -maxdepth 1 -name 'log.*' -exec head -c4 {} \; -print 2>/dev/null | grep -c ZKLG || true)
check "auto-import moved ZooKeeper's $moved files to zookeeper-imported/ ($left left)" \
    "$((moved == snapshots + logs && left == 0 ? 0 : 1))"
grep -h "zookeeper import" "$dir/keel.log" | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/  /' || true

# --- 5. fall back to the oldest snapshot: every log replayed over it --------------------------
dir=$out/keel-oldest
mkdir -p "$dir"
kc_free_port
KEEL_PORT=$KC_PORT
kc_write_cfg "$dir/zoo.cfg" "$KEEL_PORT" "$dir/data"
rc=0
"$keel_bin" import "$out/oldest-data" "$dir/zoo.cfg" >"$dir/import.txt" 2>&1 || rc=$?
cat "$dir/import.txt"
grep -q "^skipped newer snapshot: .*$newest" "$dir/import.txt" || rc=1
grep -q "^snapshot: .*/$oldest " "$dir/import.txt" || rc=1
grep -q "^tree digest: matches ZooKeeper's" "$dir/import.txt" || rc=1
check "keel import skips the torn $newest and replays every log over $oldest" "$rc"
if start_keel_on "$dir" "$dir/data"; then
    compare_with import-oldest "$dir" || true
else
    tail -n 20 "$dir/keel.log"
    check "keel starts on the dataDir imported from the oldest snapshot" 1
fi
kc_stop_pid "$KEEL_PID" keel
KEEL_PID=
((failed == 0))
