# shellcheck shell=bash
# Shared shell helpers for the real-client harness (sourced by .ci/run and the suite scripts).
#
# Everything listens on 127.0.0.1 only; every process started here is stopped by its PID
# (kc_stop_pid); every wait loop is bounded in count and time.
#
# Functions set globals instead of printing, so they can be called without a subshell
# (a server started in a subshell would not be a child of the caller).

KC_HOST=127.0.0.1
# Keep the work tree clean: no __pycache__ next to the harness's Python files.
export PYTHONDONTWRITEBYTECODE=1
# The superuser digest kazoo's own harness configures ("super:test").
KC_SUPER_DIGEST='super:D/InIHSb7yEEbrWz8b9l71RjZJU='
# Debian's zookeeper package: zookeeper.jar's manifest carries its Class-Path; add a log4j binding.
KC_ZK_CLASSPATH=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar

kc_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# kc_free_port: sets KC_PORT to a TCP port that was free on 127.0.0.1 a moment ago.
kc_free_port() {
    KC_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
}

# kc_4lw PORT WORD: prints the server's answer to a four-letter word (empty on failure).
kc_4lw() {
    printf '%s' "$2" | timeout 5 nc -w 3 "$KC_HOST" "$1" 2>/dev/null || true
}

# kc_wait_ruok PORT PID SECONDS: waits until the server on PORT answers imok. Fails early if PID
# has exited. Bounded: at most SECONDS*5 probes.
kc_wait_ruok() {
    local port=$1 pid=$2 secs=$3 i
    for ((i = 0; i < secs * 5; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            kc_log "process $pid exited before answering ruok on port $port"
            return 1
        fi
        if [[ "$(kc_4lw "$port" ruok)" == imok ]]; then
            return 0
        fi
        sleep 0.2
    done
    kc_log "no imok from 127.0.0.1:$port after ${secs}s"
    return 1
}

# kc_stop_pid PID NAME: SIGTERM, wait up to 10 s, then SIGKILL. Only ever the given PID.
kc_stop_pid() {
    local pid=$1 name=${2:-process} i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        kc_log "$name ($pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# kc_write_cfg FILE PORT DATADIR: the zoo.cfg both servers get (Keel and Apache ZooKeeper alike).
# Keys mirror what kazoo's own harness configures for a 3.5+ server, plus what zkCli's TTL nodes
# need, minus TLS and multi-server settings.
kc_write_cfg() {
    local file=$1 port=$2 datadir=$3
    cat >"$file" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$datadir
clientPort=$port
clientPortAddress=$KC_HOST
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
extendedTypesEnabled=true
reconfigEnabled=true
localSessionsEnabled=false
localSessionsUpgradingEnabled=false
DigestAuthenticationProvider.superDigest=$KC_SUPER_DIGEST
authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider
java.security.auth.login.config=$(dirname "$file")/jaas.conf
EOF
    # The users kazoo's SASL DIGEST-MD5 tests log in as (kazoo/testing/harness.py).
    cat >"$(dirname "$file")/jaas.conf" <<'EOF'
Server {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    user_super="super_secret"
    user_jaasuser="jaas_password";
};
EOF
}

# kc_start_zookeeper WORKDIR [EXTRA_CFG]: starts Apache ZooKeeper 3.8 (Debian's package) standalone
# on a free loopback port. Sets ZK_PID and ZK_PORT. Log in WORKDIR/zookeeper.log. EXTRA_CFG (lines)
# is appended to zoo.cfg. WORKDIR is wiped first unless KC_ZK_KEEP_DATA=1 (a restart).
# KC_ZK_JAVA_OPTS: extra JVM flags (system properties zoo.cfg cannot set).
kc_start_zookeeper() {
    local dir=$1 extra=${2:-}
    [[ "${KC_ZK_KEEP_DATA:-}" == 1 ]] || rm -rf "$dir"
    mkdir -p "$dir/data"
    kc_free_port
    ZK_PORT=$KC_PORT
    kc_write_cfg "$dir/zoo.cfg" "$ZK_PORT" "$dir/data"
    if [[ -n "$extra" ]]; then printf '%s\n' "$extra" >>"$dir/zoo.cfg"; fi
    # kc_write_cfg wrote jaas.conf too; the JVM takes its path as a system property.
    cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=$dir/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
EOF
    java -Xmx512m -cp "$KC_ZK_CLASSPATH" \
        -Dfile.encoding=UTF-8 \
        -Dlog4j.configuration="file:$dir/log4j.properties" \
        -Dzookeeper.jmx.log4j.disable=true \
        -Dreadonlymode.enabled=true \
        -Djava.security.auth.login.config="$dir/jaas.conf" \
        ${KC_ZK_JAVA_OPTS:-} \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
        >"$dir/stdout.log" 2>&1 &
    ZK_PID=$!
    kc_log "Apache ZooKeeper pid $ZK_PID on 127.0.0.1:$ZK_PORT (dir $dir)"
    kc_wait_ruok "$ZK_PORT" "$ZK_PID" 60
}

# kc_start_keel BIN WORKDIR: starts `BIN WORKDIR/zoo.cfg` on a free loopback port. Sets KEEL_PID
# and KEEL_PORT. Log in WORKDIR/keel.log.
kc_start_keel() {
    local bin=$1 dir=$2
    rm -rf "$dir"
    mkdir -p "$dir/data"
    kc_free_port
    KEEL_PORT=$KC_PORT
    kc_write_cfg "$dir/zoo.cfg" "$KEEL_PORT" "$dir/data"
    "$bin" "$dir/zoo.cfg" >"$dir/keel.log" 2>&1 &
    KEEL_PID=$!
    kc_log "keel pid $KEEL_PID on 127.0.0.1:$KEEL_PORT (dir $dir)"
    kc_wait_ruok "$KEEL_PORT" "$KEEL_PID" 30
}
