#!/usr/bin/env bash
# Re-record expected.txt from Apache ZooKeeper 3.8: see ../transcript_baseline.sh.
#
#   bash tests/clients/cclient/baseline.sh [RUNS]
exec bash "$(dirname "${BASH_SOURCE[0]}")/../transcript_baseline.sh" cclient "cli> " "$@"
