#!/usr/bin/env bash
# Issue 5's ensemble figures: a 3-server ensemble of Apache ZooKeeper 3.8 (Debian's package)
# and/or of Keel on 127.0.0.1, one after the other in one run, measured with keel-loadgen:
#   (a) durable writes: 32 sessions x 16 outstanding setData of 100 B, sessions spread over the
#       three servers (a --workload-file with setData only);
#   (b) reads: the same shape, --workload read (getData, exists, getChildren);
#   (c) leader fail-over: `keel-loadgen failover --kill-pid <leader>` sends SIGKILL to the
#       leader and times from that instant to the first successful write on any server;
#       FAILOVERS rounds, the killed server restarted and the ensemble whole again in between;
#   (d) SNAP catch-up: a follower is stopped (SIGTERM), CATCHUP_NODES znodes of 100 B are
#       written (`keel-loadgen populate`), the follower is restarted; the time from its start
#       until srvr on it reports Mode: follower and the leader's Zxid. (ZooKeeper sends a SNAP
#       for 1M znodes, but a DIFF for a few thousand; the table notes which from its log.)
#
#   bash benches/ensemble.sh [OUT_DIR]
#
# Environment (defaults in brackets):
#   SERVER [both]: zookeeper, keel or both (ZooKeeper first, then Keel; never both at once)
#   WARMUP [2s]  DURATION [10s]  ROUNDS [1]: runs of (a) and (b) per ensemble, medians shown
#   PREWARM [15s]: unmeasured setData load once the ensemble forms (JIT warm-up; 0 for none)
#   FAILOVERS [3]  FAILOVER_TIMEOUT [60] s  ATTEMPT_TIMEOUT [1s]
#   FAILOVER_SETTLE [5] s: pause once the ensemble is whole, before each kill
#   CATCHUP_NODES [1000000]  CATCHUP_TIMEOUT [300] s: bound on the rejoined follower's sync
#   CATCHUP_SETTLE [0] s: pause between the populate and the follower's restart, so that the
#     servers' own snapshots after the populate end first (the restart then syncs alone)
#   POPULATE_TIMEOUT [1200] s  POPULATE_SESSIONS [64]
#   POPULATE_OUTSTANDING [64]  KEYS [10000]  THREADS [1]: loadgen worker threads
#   ENSEMBLE_TIMEOUT [90] s: bound on each wait for one leader and two followers
#   ZK_HEAP [2g]: -Xmx of each ZooKeeper JVM  KEEL_CFG_EXTRA []: extra zoo.cfg lines for Keel
#   KEEL_PINNED [0]: 1 lets each Keel server pin its threads (its default). The three servers
#     share this machine, and each would pin its replica core to the first CPU and its shard
#     to the second: all three shards on one CPU, the other idle in the read round (measured
#     36% idle; reads 567k-607k/s pinned, 864k-888k/s unpinned). So by default they run
#     with keel.unpinned=true and float like ZooKeeper's JVMs, and with keel.shards=0: each
#     server's shard is a task on its replica core's executor, one thread where there were
#     two, and no cross-thread wake-ups between them (README: in 15 alternating A/B pairs it
#     wrote more in 12 and used less CPU per write in all 15; reads within noise).
#   BUILD [1]: 0 skips `cargo build --release` (the binaries must be in CARGO_TARGET_DIR)
#   KEEL_BIN [CARGO_TARGET_DIR/release/keel]: the keel binary to run (another build of it)
#   REPORT_ONLY [0]: 1 runs nothing and prints the table from an earlier run's OUT_DIR (give
#   the same ROUNDS, FAILOVERS, CATCHUP_NODES, ... for the table's labels)
#
# All servers get the same zoo.cfg (tests/clients/lib.sh's kc_write_cfg, reconfigEnabled=false,
# forceSync=yes, tickTime=2000, initLimit=10, syncLimit=5, server.1..3) but for dataDir and
# clientPort; each dataDir holds a myid file. Everything listens on 127.0.0.1; every process is
# stopped by its PID on exit; every wait is bounded. Raw outputs and logs stay under OUT_DIR;
# the table is OUT_DIR/results.md.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$(mktemp -d /tmp/keel-ensemble.XXXXXX)}
SERVER=${SERVER:-both}
WARMUP=${WARMUP:-2s}
DURATION=${DURATION:-10s}
PREWARM=${PREWARM:-15s}
ROUNDS=${ROUNDS:-1}
FAILOVERS=${FAILOVERS:-3}
FAILOVER_TIMEOUT=${FAILOVER_TIMEOUT:-60}
FAILOVER_SETTLE=${FAILOVER_SETTLE:-5}
ATTEMPT_TIMEOUT=${ATTEMPT_TIMEOUT:-1s}
CATCHUP_NODES=${CATCHUP_NODES:-1000000}
CATCHUP_TIMEOUT=${CATCHUP_TIMEOUT:-300}
CATCHUP_SETTLE=${CATCHUP_SETTLE:-0}
POPULATE_TIMEOUT=${POPULATE_TIMEOUT:-1200}
POPULATE_SESSIONS=${POPULATE_SESSIONS:-64}
POPULATE_OUTSTANDING=${POPULATE_OUTSTANDING:-64}
KEYS=${KEYS:-10000}
THREADS=${THREADS:-1}
ENSEMBLE_TIMEOUT=${ENSEMBLE_TIMEOUT:-90}
ZK_HEAP=${ZK_HEAP:-2g}
KEEL_CFG_EXTRA=${KEEL_CFG_EXTRA:-}
KEEL_PINNED=${KEEL_PINNED:-0}
BUILD=${BUILD:-1}
target=${CARGO_TARGET_DIR:-$repo/target}
case $SERVER in
zookeeper | keel) kinds=$SERVER ;;
both) kinds="zookeeper keel" ;;
*)
    echo "SERVER must be zookeeper, keel or both (got '$SERVER')" >&2
    exit 2
    ;;
esac
mkdir -p "$out"
out=$(cd "$out" && pwd)

# shellcheck source=../tests/clients/lib.sh
source "$repo/tests/clients/lib.sh"
eval "$(declare -f kc_write_cfg | sed '1s/kc_write_cfg/kc_write_cfg_harness/')"

# The ensemble: index 1..3. SRV_PID is empty for a server that is not running.
declare -a SRV_PID=() CPORT=() QPORT=() EPORT=()
SRV_KIND=
SRV_BASE=
cleanup() {
    local id
    for id in 1 2 3; do
        kc_stop_pid "${SRV_PID[$id]:-}" "$SRV_KIND server $id"
    done
}
trap cleanup EXIT

# prepare: the zookeeper package if missing, and the release binaries (BUILD=1).
prepare() {
    if [[ " $kinds " == *" zookeeper "* && ! -e /usr/share/java/zookeeper.jar ]]; then
        kc_log "installing Debian's zookeeper package"
        apt-get install -y --no-install-recommends zookeeper >"$out/apt.log" 2>&1
    fi
    if [[ $BUILD == 1 ]]; then
        kc_log "building keel and keel-loadgen (release) into $target"
        cargo build --release --manifest-path "$repo/Cargo.toml" -p keel -p keel-loadgen \
            >"$out/build.log" 2>&1
    fi
}

loadgen=$target/release/keel-loadgen
keel_bin=${KEEL_BIN:-$target/release/keel}

# Nine distinct free loopback ports: client, quorum and election port of each server.
pick_ports() {
    local id kind used=" "
    for id in 1 2 3; do
        for kind in CPORT QPORT EPORT; do
            local tries=0
            while :; do
                kc_free_port
                [[ $used == *" $KC_PORT "* ]] || break
                ((++tries < 20)) || {
                    kc_log "no distinct free port"
                    return 1
                }
            done
            used+="$KC_PORT "
            eval "$kind[$id]=$KC_PORT"
        done
    done
}

# write_cfg ID: SRV_BASE/sID/zoo.cfg and SRV_BASE/sID/data/myid.
write_cfg() {
    local id=$1 dir=$SRV_BASE/s$1 i
    mkdir -p "$dir/data"
    echo "$id" >"$dir/data/myid"
    kc_write_cfg_harness "$dir/zoo.cfg" "${CPORT[$id]}" "$dir/data"
    sed -i 's/^reconfigEnabled=true$/reconfigEnabled=false/' "$dir/zoo.cfg"
    {
        echo "forceSync=yes"
        for i in 1 2 3; do
            echo "server.$i=$KC_HOST:${QPORT[$i]}:${EPORT[$i]}"
        done
        if [[ $SRV_KIND == keel && $KEEL_PINNED != 1 ]]; then
            # Servers sharing CPUs: see KEEL_PINNED.
            printf 'keel.unpinned=true\nkeel.shards=0\n'
        fi
        if [[ $SRV_KIND == keel && -n $KEEL_CFG_EXTRA ]]; then
            printf '%s\n' "$KEEL_CFG_EXTRA"
        fi
    } >>"$dir/zoo.cfg"
}

# start_server ID: starts server ID of SRV_KIND on its existing cfg and data; sets SRV_PID[ID]
# and START_NS (the launch instant, ns since the epoch).
start_server() {
    local id=$1 dir=$SRV_BASE/s$1
    START_NS=$(date +%s%N)
    if [[ $SRV_KIND == zookeeper ]]; then
        cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=$dir/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
EOF
        java "-Xmx$ZK_HEAP" -cp "$KC_ZK_CLASSPATH" \
            -Dfile.encoding=UTF-8 \
            -Dlog4j.configuration="file:$dir/log4j.properties" \
            -Dzookeeper.jmx.log4j.disable=true \
            -Djava.security.auth.login.config="$dir/jaas.conf" \
            org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
            >>"$dir/stdout.log" 2>&1 &
    else
        "$keel_bin" "$dir/zoo.cfg" >>"$dir/keel.log" 2>&1 &
    fi
    SRV_PID[$id]=$!
    kc_log "$SRV_KIND server $id: pid ${SRV_PID[$id]}, client port ${CPORT[$id]} (dir $dir)"
}

# server_mode ID: prints leader, follower, standalone, ... or nothing (not serving).
server_mode() {
    kc_4lw "${CPORT[$1]}" srvr | sed -n 's/^Mode: *//p' | head -n 1
}

# server_zxid ID: prints the srvr Zxid as a decimal number, or nothing.
server_zxid() {
    local hex
    hex=$(kc_4lw "${CPORT[$1]}" srvr | sed -n 's/^Zxid: *//p' | head -n 1)
    [[ $hex == 0x* ]] && printf '%d\n' "$hex"
    return 0
}

# not_measured MESSAGE: logs MESSAGE and appends it to SRV_BASE/problems.txt (shown in the table).
not_measured() {
    kc_log "$*"
    echo "$*" >>"$SRV_BASE/problems.txt"
}

# wait_whole: waits (ENSEMBLE_TIMEOUT) until one server reports Mode: leader and the others
# Mode: follower; sets LEADER. Fails early if a server process has exited.
wait_whole() {
    local deadline=$((SECONDS + ENSEMBLE_TIMEOUT)) id modes
    while ((SECONDS < deadline)); do
        LEADER=
        local followers=0
        modes=
        for id in 1 2 3; do
            if ! kill -0 "${SRV_PID[$id]:-0}" 2>/dev/null; then
                not_measured "$SRV_KIND server $id (pid ${SRV_PID[$id]:-none}) is not running"
                return 1
            fi
            local mode
            mode=$(server_mode "$id")
            modes+="$id=${mode:-none} "
            case $mode in
            leader) LEADER=$id ;;
            follower) followers=$((followers + 1)) ;;
            standalone)
                # A quorum member never reports standalone: this server ignored server.N.
                not_measured "$SRV_KIND server $id reports Mode: standalone despite the server.N lines"
                return 1
                ;;
            esac
        done
        if [[ -n $LEADER ]] && ((followers == 2)); then
            kc_log "$SRV_KIND ensemble whole: leader is server $LEADER ($modes)"
            return 0
        fi
        sleep 0.2
    done
    not_measured "$SRV_KIND ensemble not whole after ${ENSEMBLE_TIMEOUT}s (modes: $modes)"
    return 1
}

servers_list() {
    echo "$KC_HOST:${CPORT[1]},$KC_HOST:${CPORT[2]},$KC_HOST:${CPORT[3]}"
}

# seconds TEXT: a loadgen duration in seconds (integer, rounded up).
seconds() {
    python3 -c '
import math, sys
t = sys.argv[1]
for unit, scale in (("ms", 1e-3), ("s", 1), ("m", 60)):
    if t.endswith(unit):
        print(math.ceil(float(t[: -len(unit)]) * scale)); break
else:
    print(math.ceil(float(t)))' "$1"
}

# load NAME ARGS...: one keel-loadgen run (32 x 16, spread over the servers) ROUNDS times.
load() {
    local name=$1 round status limit
    shift
    limit=$(($(seconds "$WARMUP") + $(seconds "$DURATION") + 60))
    for ((round = 1; round <= ROUNDS; round++)); do
        kc_log "$SRV_KIND $name round $round/$ROUNDS"
        status=0
        timeout $((limit + 30)) "$loadgen" --servers "$(servers_list)" --sessions 32 \
            --outstanding 16 --threads "$THREADS" --warmup "$WARMUP" --duration "$DURATION" \
            --time-limit "${limit}s" --run-id "ens-$SRV_KIND-$name-$round-$$" --quiet \
            --json "$SRV_BASE/$name-$round.json" "$@" \
            >"$SRV_BASE/$name-$round.txt" 2>"$SRV_BASE/$name-$round.err" || status=$?
        echo "$status" >"$SRV_BASE/$name-$round.status"
        ((status == 0)) || kc_log "$SRV_KIND $name round $round: exit $status (see $SRV_BASE/$name-$round.err)"
    done
}

# prewarm: PREWARM of setData load before the first measured run, not counted (a fresh JVM's
# first seconds run interpreted code; Keel gets the same). Its output: SRV_BASE/prewarm.*.
prewarm() {
    [[ $PREWARM != 0 && $PREWARM != 0s ]] || return 0
    local limit=$(($(seconds "$PREWARM") + 60)) status=0
    kc_log "$SRV_KIND prewarm: $PREWARM of setData, not counted"
    timeout $((limit + 30)) "$loadgen" --servers "$(servers_list)" --sessions 32 \
        --outstanding 16 --threads "$THREADS" --warmup 0s --duration "$PREWARM" \
        --time-limit "${limit}s" --run-id "ens-$SRV_KIND-prewarm-$$" --quiet \
        --workload-file "$SRV_BASE/setdata.toml" --json "$SRV_BASE/prewarm.json" \
        >"$SRV_BASE/prewarm.txt" 2>"$SRV_BASE/prewarm.err" || status=$?
    ((status == 0)) || kc_log "$SRV_KIND prewarm: exit $status (see $SRV_BASE/prewarm.err)"
}

# failovers: FAILOVERS rounds of kill -9 leader / first write / restart / wait whole.
failovers() {
    local round status victim
    for ((round = 1; round <= FAILOVERS; round++)); do
        wait_whole || return 1
        # A server restarted by the previous round may still be catching up; let it settle.
        sleep "$FAILOVER_SETTLE"
        wait_whole || return 1
        victim=$LEADER
        kc_log "$SRV_KIND fail-over $round/$FAILOVERS: SIGKILL to leader server $victim (pid ${SRV_PID[$victim]})"
        status=0
        timeout $((2 * FAILOVER_TIMEOUT + 30)) "$loadgen" failover --servers "$(servers_list)" \
            --kill-pid "${SRV_PID[$victim]}" --timeout "${FAILOVER_TIMEOUT}s" \
            --attempt-timeout "$ATTEMPT_TIMEOUT" --json "$SRV_BASE/failover-$round.json" \
            >"$SRV_BASE/failover-$round.txt" 2>"$SRV_BASE/failover-$round.err" || status=$?
        echo "$status" >"$SRV_BASE/failover-$round.status"
        ((status == 0)) || not_measured "$SRV_KIND fail-over round $round: exit $status, no successful write within ${FAILOVER_TIMEOUT}s"
        kc_log "$SRV_KIND fail-over $round: exit $status; $(grep -h 'first successful write' "$SRV_BASE/failover-$round.txt" || true)"
        if kill -0 "${SRV_PID[$victim]}" 2>/dev/null; then
            # The tool refused to kill (no write before the kill): stop here.
            kc_log "leader still running after the fail-over tool; stopping the fail-over rounds"
            return 1
        fi
        { wait "${SRV_PID[$victim]}"; } 2>/dev/null || true
        SRV_PID[$victim]=
        start_server "$victim"
    done
    wait_whole
}

# catchup: stop a follower, populate CATCHUP_NODES nodes, restart it, time its sync.
catchup() {
    wait_whole || return 1
    local leader=$LEADER victim id status
    for id in 1 2 3; do
        if [[ $id != "$leader" ]]; then
            victim=$id
            break
        fi
    done
    kc_log "$SRV_KIND catch-up: stopping follower server $victim (pid ${SRV_PID[$victim]})"
    kc_stop_pid "${SRV_PID[$victim]}" "$SRV_KIND server $victim"
    SRV_PID[$victim]=
    local alive=""
    for id in 1 2 3; do
        [[ $id == "$victim" ]] || alive+="${alive:+,}$KC_HOST:${CPORT[$id]}"
    done
    kc_log "$SRV_KIND catch-up: creating $CATCHUP_NODES nodes on $alive"
    status=0
    timeout $((POPULATE_TIMEOUT + 60)) "$loadgen" populate --servers "$alive" \
        --nodes "$CATCHUP_NODES" --value-bytes 100 --sessions "$POPULATE_SESSIONS" \
        --outstanding "$POPULATE_OUTSTANDING" --prefix "/keel-catchup-$$" \
        --timeout "${POPULATE_TIMEOUT}s" --json "$SRV_BASE/populate.json" \
        >"$SRV_BASE/populate.txt" 2>"$SRV_BASE/populate.err" || status=$?
    echo "$status" >"$SRV_BASE/populate.status"
    if ((status != 0)); then
        kc_log "$SRV_KIND populate failed (exit $status, see $SRV_BASE/populate.err)"
        return 1
    fi
    kc_log "$SRV_KIND populate: $(grep -h 'seconds:' "$SRV_BASE/populate.txt")"
    if ((CATCHUP_SETTLE > 0)); then
        kc_log "$SRV_KIND catch-up: ${CATCHUP_SETTLE}s for the servers' own snapshots to end"
        sleep "$CATCHUP_SETTLE"
    fi
    local leader_zxid
    leader_zxid=$(server_zxid "$leader")
    kc_log "$SRV_KIND catch-up: leader zxid $leader_zxid; restarting server $victim"
    start_server "$victim"
    local started=$START_NS synced
    # keel-loadgen polls srvr every 5 ms at little CPU (a shell loop of nc calls added ~50 ms
    # to both servers' figures; a Python poller took ~10% of the CPUs during the transfer):
    # synced = srvr says follower with a zxid at least the leader's.
    if synced=$(timeout $((CATCHUP_TIMEOUT + 30)) "$loadgen" synced \
        --server "$KC_HOST:${CPORT[$victim]}" --leader "$KC_HOST:${CPORT[$leader]}" \
        --started-ns "$started" --pid "${SRV_PID[$victim]}" --timeout "${CATCHUP_TIMEOUT}s" \
        --json "$SRV_BASE/catchup.json" 2>"$SRV_BASE/catchup.err"); then
        kc_log "$SRV_KIND catch-up: server $victim $synced"
        if [[ $SRV_KIND == zookeeper ]]; then
            # How it synced (SNAP, DIFF or TRUNC): the rejoined follower's last sync line.
            grep -h -o 'Getting a snapshot from leader.*\|Getting a diff from the leader.*\|Truncating log to.*' \
                "$SRV_BASE/s$victim/zookeeper.log" | tail -n 1 >"$SRV_BASE/catchup-sync-kind.txt" || true
            kc_log "$SRV_KIND catch-up sync: $(cat "$SRV_BASE/catchup-sync-kind.txt")"
        fi
        return 0
    fi
    if ! kill -0 "${SRV_PID[$victim]}" 2>/dev/null; then
        kc_log "$SRV_KIND server $victim exited during catch-up"
        return 1
    fi
    not_measured "$SRV_KIND server $victim not synced after ${CATCHUP_TIMEOUT}s (srvr: $(server_mode "$victim" || true) zxid $(server_zxid "$victim" || true), leader zxid $(server_zxid "$leader" || true))"
    return 1
}

# ensemble KIND: every measurement on a fresh 3-server ensemble of KIND; all stopped at the end.
ensemble() {
    SRV_KIND=$1
    SRV_BASE=$out/$1
    rm -rf "$SRV_BASE"
    mkdir -p "$SRV_BASE"
    if [[ $SRV_KIND == keel && ! -x $keel_bin ]]; then
        not_measured "no keel binary at $keel_bin"
        return 1
    fi
    pick_ports || return 1
    local id
    for id in 1 2 3; do
        write_cfg "$id"
    done
    for id in 1 2 3; do
        start_server "$id"
    done
    if ! wait_whole; then
        for id in 1 2 3; do
            kc_log "$SRV_KIND server $id srvr: $(kc_4lw "${CPORT[$id]}" srvr | tr '\n' ' ')"
        done
        return 1
    fi
    cat >"$SRV_BASE/setdata.toml" <<EOF
name = "setData-100B"
[ops]
setData = 1
[keys]
count = $KEYS
[values]
bytes = 100
EOF
    prewarm
    load write --workload-file "$SRV_BASE/setdata.toml"
    load read --workload read --keys "$KEYS" --value-bytes 100
    failovers || not_measured "$SRV_KIND fail-over rounds ended early"
    catchup || not_measured "$SRV_KIND catch-up not measured"
    for id in 1 2 3; do
        kc_stop_pid "${SRV_PID[$id]:-}" "$SRV_KIND server $id"
        SRV_PID[$id]=
    done
}

# report: the markdown table from the raw outputs under OUT_DIR.
report() {
    python3 - "$out" "$WARMUP" "$DURATION" "$ROUNDS" "$FAILOVERS" "$CATCHUP_NODES" "$KEYS" \
        >"$out/results.md" <<'PY'
import glob, json, os, statistics, sys
out, warmup, duration, rounds, failovers, nodes, keys = sys.argv[1:8]

def load(path):
    try:
        return json.load(open(path))
    except Exception:
        return None

def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def figures(kind):
    base = os.path.join(out, kind)
    f = {}
    for name in ("write", "read"):
        runs = [load(p) for p in sorted(glob.glob(f"{base}/{name}-*.json"))]
        runs = [r for r in runs if r]
        alls = [next(o for o in r["operations"] if o["op"] == "all") for r in runs]
        f[f"{name}_ops"] = median_of([r["result"]["throughput_ops_per_s"] for r in runs])
        f[f"{name}_p50"] = median_of([a["latency_us"]["p50"] for a in alls])
        f[f"{name}_p99"] = median_of([a["latency_us"]["p99"] for a in alls])
        f[f"{name}_errors"] = sum(r["result"]["errors"] for r in runs) if runs else None
    fo = [load(p) for p in sorted(glob.glob(f"{base}/failover-*.json"))]
    f["failover_each"] = [r["first_write_ms"] for r in fo if r]
    # The median is over the rounds with a write; the cell says how many had none.
    f["failover_ms"] = median_of(f["failover_each"])
    f["failover_ms_none"] = sum(1 for ms in f["failover_each"] if ms is None)
    pop = load(f"{base}/populate.json")
    f["populate_s"] = pop["seconds"] if pop else None
    f["populate_rate"] = pop["creates_per_s"] if pop else None
    cu = load(f"{base}/catchup.json")
    f["catchup_s"] = cu["seconds"] if cu else None
    f["catchup_answer_s"] = cu.get("first_answer_s") if cu else None
    try:
        f["problems"] = open(f"{base}/problems.txt").read().split("\n")[:-1]
    except OSError:
        f["problems"] = []
    try:
        f["sync_kind"] = open(f"{base}/catchup-sync-kind.txt").read().strip() or None
    except OSError:
        f["sync_kind"] = None
    return f

zk, keel = figures("zookeeper"), figures("keel")

def fmt(value, unit):
    if value is None:
        return "n/a"
    if unit == "us":
        return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} µs"
    if unit == "ops":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    return str(value)

rows = [
    ("(a) writes ops/s (setData 100 B, 32×16)", "write_ops", "ops"),
    ("(a) writes p50", "write_p50", "us"),
    ("(a) writes p99", "write_p99", "us"),
    ("(b) reads ops/s (32×16)", "read_ops", "ops"),
    ("(b) reads p50", "read_p50", "us"),
    ("(b) reads p99", "read_p99", "us"),
    (f"(c) fail-over, kill -9 leader → first write (median of {failovers})", "failover_ms", "ms"),
    (f"(d) catch-up: follower restart → synced, after {int(nodes):,} znodes written", "catchup_s", "s"),
    (f"(d) of which: restarted follower's first srvr answer", "catchup_answer_s", "s"),
    (f"populate {int(nodes):,} znodes of 100 B (with one follower down)", "populate_s", "s"),
]
print(f"3-server ensembles on 127.0.0.1 (tickTime=2000, initLimit=10, syncLimit=5, "
      f"forceSync=yes), keel-loadgen, sessions spread over the servers; (a)/(b): {rounds} "
      f"round(s) of warmup {warmup} + duration {duration} on {keys} keys, medians.")
try:
    keel_cfg = open(os.path.join(out, "keel", "s1", "zoo.cfg")).read()
    print("Keel's threads: " + ("unpinned, shard on the replica core's executor "
          "(keel.unpinned=true, keel.shards=0)." if "keel.unpinned=true"
          in keel_cfg else "pinned (KEEL_PINNED=1)."))
except OSError:
    pass
print()
print("| metric | ZooKeeper | Keel | Keel/ZK ratio |")
print("| --- | ---: | ---: | ---: |")
for label, key, unit in rows:
    a, b = zk.get(key), keel.get(key)
    ratio = f"{b / a:.2f}" if a and b is not None else "n/a"
    cells = [fmt(a, unit), fmt(b, unit)]
    for i, f in enumerate((zk, keel)):
        if f.get(key + "_none"):
            cells[i] += f" ({f[key + '_none']} of {len(f['failover_each'])} rounds: no write)"
    print(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
for kind, f in (("ZooKeeper", zk), ("Keel", keel)):
    if f["problems"]:
        print(f"\n{kind} problems: " + "; ".join(f["problems"]))
    if f["write_ops"] is None and f["read_ops"] is None and not f["failover_each"]:
        print(f"\n{kind}: not measured.")
        continue
    each = ", ".join("no write" if ms is None else f"{ms:,.0f} ms" for ms in f["failover_each"]) or "none"
    print(f"\n{kind}: fail-over rounds: {each}; errors in (a)/(b): "
          f"{f['write_errors']}/{f['read_errors']}; populate rate: {fmt(f['populate_rate'], 'ops')} creates/s"
          + (f"; the follower's sync: \"{f['sync_kind']}\"." if f["sync_kind"] else "."))
PY
    cat "$out/results.md"
    kc_log "table: $out/results.md"
}

# The long part runs from here, so bash has parsed the whole file before it starts (an edit of
# the script during a run cannot change the run).
main() {
    if [[ ${REPORT_ONLY:-0} != 1 ]]; then
        prepare
        for kind in $kinds; do
            # Each side starts with the disk quiet: the other's last snapshots (GBs for a
            # 1M-znode catch-up) are written back first instead of during its measurements.
            kc_log "=== $kind ensemble; results under $out/$kind (flushing the page cache first)"
            timeout 300 sync || kc_log "sync did not end in 300 s; going on"
            ensemble "$kind" || kc_log "$kind ensemble: not measured (see the logs under $out/$kind)"
        done
    fi
    report
}

# One line: bash has read the exit before main runs.
main "$@"; exit
