#!/usr/bin/env bash
# A/B of Keel builds on the ensemble's write and read rounds, alternating builds round by
# round, for changes too small to see in one benches/ensemble.sh run on a noisy box.
#
#   bash benches/ensemble_ab.sh REPS label=/path/to/keel [label=/path/to/keel ...]
#
# Each rep runs, for every build in turn, `benches/ensemble.sh` with SERVER=keel ROUNDS=1
# FAILOVERS=0 CATCHUP_NODES=1000 PREWARM=5s (a fresh 3-server ensemble on 127.0.0.1, stopped
# by PID when it ends) and prints one line: writes/s, write p99, reads/s, and the CPU time
# (user + system) of the three keel processes per 1000 writes, sampled from /proc over the
# last 9 s of the 10 s write round: a second view of the same change (a build that does
# less per write needs less CPU even when the load generator, not the CPU, is the limit).
# Both spread by about +-20% from rep to rep here: compare medians over several reps.
#
# Environment: BUILD [1] builds keel-loadgen first (0: it must be in CARGO_TARGET_DIR);
# OUT [/tmp/keel-ab] where each run's OUT_DIR goes (removed after its line is printed).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if (($# < 2)) || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 REPS label=/path/to/keel [label=/path/to/keel ...]" >&2
    exit 2
fi
reps=$1
shift
for build in "$@"; do
    if [[ $build != *=* || ! -x ${build#*=} ]]; then
        echo "not label=/path/to/executable: $build" >&2
        exit 2
    fi
done
out_root=${OUT:-/tmp/keel-ab}
if [[ ${BUILD:-1} == 1 ]]; then
    cargo build --release --manifest-path "$repo/Cargo.toml" -p keel-loadgen >/dev/null 2>&1
fi
ticks_per_s=$(getconf CLK_TCK)
mkdir -p "$out_root"

# The summed utime + stime (clock ticks) of the given pids that still exist.
cpu_ticks() {
    local pid total=0 fields
    for pid in "$@"; do
        fields=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + ${fields% *} + ${fields#* }))
    done
    echo "$total"
}

# The cell of row $2 in the Keel column of $1 (ensemble.sh's results.md), trimmed.
keel_cell() {
    grep -F "$2" "$1" | head -n 1 | awk -F'|' '{gsub(/^ +| +$/, "", $4); print $4}'
}

run_one() {
    local label=$1 keel=$2 rep=$3 out=$out_root/$1 log pid pids i c0 c1 writes
    rm -rf "$out"
    log=$out_root/$label.log
    KEEL_BIN=$keel SERVER=keel ROUNDS=1 FAILOVERS=0 CATCHUP_NODES=1000 PREWARM=5s BUILD=0 \
        bash "$repo/benches/ensemble.sh" "$out" >"$log" 2>&1 &
    pid=$!
    for ((i = 0; i < 480; i++)); do
        grep -q "write round" "$log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    sleep 2.5 # the round's 2 s warm-up
    mapfile -t pids < <(pgrep -f "$out/keel/s[0-9]+/zoo.cfg" || true)
    c0=$(cpu_ticks "${pids[@]}")
    sleep 9
    c1=$(cpu_ticks "${pids[@]}")
    wait "$pid" || true
    writes=$(keel_cell "$out/results.md" "writes ops/s")
    writes=${writes//,/}
    if [[ -z $writes || $writes == n/a || ${#pids[@]} -ne 3 ]]; then
        echo "$(date -u +%T) $label rep $rep: not measured (writes '$writes', ${#pids[@]} keel pids; see $log)"
        return
    fi
    python3 - "$label" "$rep" "$writes" "$((c1 - c0))" "$ticks_per_s" \
        "$(keel_cell "$out/results.md" "writes p99")" \
        "$(keel_cell "$out/results.md" "reads ops/s" | tr -d ,)" <<'EOF'
import sys, time
label, rep, writes, ticks, hz, p99, reads = sys.argv[1:]
cpu_ms = int(ticks) * 1000 / int(hz)
per_1k = cpu_ms / (int(writes) * 9 / 1000)
print(f"{time.strftime('%H:%M:%S', time.gmtime())} {label} rep {rep}: writes {int(writes):,}/s "
      f"p99 {p99}, reads {int(reads):,}/s, cpu {per_1k:.1f} ms per 1000 writes")
EOF
    rm -rf "$out"
}

for ((rep = 1; rep <= reps; rep++)); do
    for build in "$@"; do
        run_one "${build%%=*}" "${build#*=}" "$rep"
    done
done
