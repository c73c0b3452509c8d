#!/usr/bin/env bash
# Run kazoo's own test suite against an already running server.
#
#   KEEL_ADDR=127.0.0.1:PORT tests/clients/kazoo/run.sh            # exactly expected.txt (CI)
#   KEEL_ADDR=127.0.0.1:PORT tests/clients/kazoo/run.sh --all      # every test, for a baseline
#   KEEL_ADDR=... tests/clients/kazoo/run.sh --all -- -k test_create   # extra pytest arguments
#
#   KEEL_CLUSTER=127.0.0.1:P1,... KEEL_CONTROL=SCRIPT KC_EXPECTED=FILE tests/clients/kazoo/run.sh
#                        an ensemble the harness may stop and start (see ensemble.sh, keel_kazoo.py)
#
# Environment:
#   KEEL_ADDR            server under test (required unless KEEL_CLUSTER is set)
#   KEEL_CLUSTER, KEEL_CONTROL   ensemble mode: the servers, in myid order, and their control
#                        script ("SCRIPT start|stop|reset N"); see keel_kazoo.py
#   KC_EXPECTED          the test ids to run (default: expected.txt next to this script)
#   KC_LABEL             prefix of the summary lines (default: kazoo)
#   KC_PYTHON            python with kazoo/pytest installed (default: .ci/.venv/bin/python)
#   KC_OUT               directory for results.jsonl and pytest.log (default: .ci/work/kazoo)
#   KC_COUNTS            file to receive "PASSED FAILED" (optional)
#   KC_KAZOO_TIMEOUT     wall-clock limit for the whole run, seconds (default 900)
#   KC_HANG_SECONDS, KC_DEAD_SECONDS   watchdog limits (see keel_kazoo.py)
#   KEEL_SERVER_LOG      server log; its tail is shown for failing tests (optional)
# If the watchdog aborts pytest (exit 3: a test hung) while the server still answers ruok,
# pytest is started again on the expected tests that have no result yet, at most 3 times.
# Exit status: 0 only if every expected test passed (in --all mode: 0 if pytest ran).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=tests/clients/lib.sh
source "$here/../lib.sh"
python=${KC_PYTHON:-$repo/.ci/.venv/bin/python}
out=${KC_OUT:-$repo/.ci/work/kazoo}
limit=${KC_KAZOO_TIMEOUT:-900}
expected=${KC_EXPECTED:-$here/expected.txt}
label=${KC_LABEL:-kazoo}
if [[ -n "${KEEL_CLUSTER:-}" ]]; then
    : "${KEEL_CONTROL:?KEEL_CLUSTER needs KEEL_CONTROL=/path/to/control-script}"
    IFS=, read -r -a addrs <<<"$KEEL_CLUSTER"
else
    : "${KEEL_ADDR:?KEEL_ADDR=127.0.0.1:PORT must name the server under test}"
    addrs=("$KEEL_ADDR")
fi
any_ruok() { # 0 if some server under test answers imok
    local a
    for a in "${addrs[@]}"; do
        if [[ "$(kc_4lw "${a##*:}" ruok)" == imok ]]; then return 0; fi
    done
    return 1
}

mode=expected
if [[ "${1:-}" == --all ]]; then
    mode=all
    shift
fi
if [[ "${1:-}" == -- ]]; then shift; fi

mkdir -p "$out"
results=$out/results.jsonl
rm -f "$results" "$out/pytest.log"
site=$("$python" -c 'import importlib.util as u, os; s = u.find_spec("kazoo.tests"); print(os.path.dirname(os.path.dirname(os.path.dirname(s.origin))))')

run_pytest() { # run_pytest SECONDS EXTRA-ARGS...: returns pytest's exit status
    local secs=$1 rc
    shift
    set +e
    (
        cd "$site"
        PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" \
            timeout --kill-after=30 "$secs" "$python" -m pytest -c "$here/pytest.ini" \
            --rootdir="$site" --keel-results="$results" -v "$@"
    ) 2>&1 | tee -a "$out/pytest.log"
    rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}

start=$(date +%s)
if [[ $mode == all ]]; then
    rc=0
    run_pytest "$limit" kazoo/tests "$@" || rc=$?
    echo "$label: pytest exit $rc after $(($(date +%s) - start))s (limit ${limit}s)"
    [[ $rc -le 1 ]]
    exit
fi

selection=$expected
for attempt in 1 2 3 4; do
    left=$((limit - ($(date +%s) - start)))
    if ((left < 30)); then
        echo "$label: time limit (${limit}s) reached"
        break
    fi
    rc=0
    run_pytest "$left" --keel-expected="$selection" kazoo/tests "$@" || rc=$?
    echo "$label: pytest exit $rc after $(($(date +%s) - start))s (limit ${limit}s)"
    "$python" "$here/summarize.py" --remaining "$results" "$expected" >"$out/remaining.txt"
    n=$(wc -l <"$out/remaining.txt")
    if ((n == 0)); then break; fi
    if ((rc != 3)); then
        echo "$label: pytest stopped by itself (exit $rc); $n tests not run"
        break
    fi
    if ! any_ruok; then
        echo "$label: server at ${KEEL_CLUSTER:-$KEEL_ADDR} no longer answers ruok; $n tests not run"
        break
    fi
    if ((attempt == 4)); then break; fi
    echo "$label: restarting pytest (attempt $((attempt + 1))) for the $n tests not run yet"
    selection=$out/remaining.txt
done
KC_LABEL=$label "$python" "$here/summarize.py" "$results" "$expected" ${KC_COUNTS:+"$KC_COUNTS"}
