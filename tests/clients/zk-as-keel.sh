#!/usr/bin/env bash
# Stand-in for target/release/keel: runs Apache ZooKeeper 3.8 (Debian's package) on the given
# zoo.cfg, in the foreground, as this same PID (exec). A self-test of the real-client harness:
#   KC_SKIP_CARGO=1 KC_KEEL_BIN=tests/clients/zk-as-keel.sh bash .ci/run     # expect 0 failed
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 zoo.cfg" >&2; exit 2; }
exec java -Xmx512m \
    -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar \
    -Dfile.encoding=UTF-8 -Dzookeeper.jmx.log4j.disable=true -Dzookeeper.root.logger=INFO,CONSOLE \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$1"
