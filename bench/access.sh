#!/usr/bin/env bash
# Time from `access create` to STARTED for an agent in on-demand tunnel mode.
#
# Usage: bench/access.sh [--runs N]      (default 100 runs)
#
# Builds the release binaries (unless ADIT_BIN_DIR points at built ones), starts a
# throwaway adit-server on 127.0.0.1 with one on-demand agent, and runs
# `access-start` (bench/src/bin/access_start.rs): each run creates a remote-access
# configuration with an endpoint, polls it every 2 ms until STARTED, deletes it and
# waits until the agent has closed its tunnel. Prints p50/p90/p99/max, client-observed
# and by the server's timestamps, with the machine and commit; copy them into
# bench/RESULTS.md ("## Remote access: create → STARTED"). Bar: p99 ≤ 500 ms.
set -euo pipefail

RUNS=100
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="${2:?--runs needs a value}"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -z "${ADIT_BIN_DIR:-}" ]; then
    cargo build --release -j2 --bins -p adit-server -p adit-agent -p adit-bench
    export ADIT_BIN_DIR="$ROOT/target/release"
fi
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
timeout 600 "$ADIT_BIN_DIR/access_start" --runs "$RUNS"
