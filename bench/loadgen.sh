#!/usr/bin/env bash
# Agent-scale load test: N simulated agents (real adit_agent::Agent tasks, all in one
# adit-loadgen process) against an adit-server that adit-loadgen starts, kills with
# SIGKILL and restarts, all on 127.0.0.1.
#
# Usage: bench/loadgen.sh [N] [--idle SECS] [--fresh] [--json] [-- ADIT-LOADGEN FLAGS...]
#   N          agents (default 1000). The product target is 10,000 agents per proxy:
#              <= 32 KiB proxy memory per idle tunnel, idle CPU < 5%, all 10,000 back
#              within 10 s of a proxy restart.
#   --idle S   idle phase in seconds (default 30: two agent PING intervals)
#   --fresh    delete the state (enrolments, server data) of earlier runs with this N
#   --json     print adit-loadgen's JSON report instead of the table
#   -- ...     passed to adit-loadgen, e.g. -- --connect-rate 500 --reconnect-max-secs 10
#
# Environment:
#   ADIT_BIN_DIR   use adit-server and adit-loadgen from this directory instead of
#                  building target/release
#   LOADGEN_STATE  state directory (default target/loadgen/nN); reruns reuse its
#                  enrolments and server data directory, so only the first run with a
#                  given N pays for enrolment
#
# Prints the report (nothing is written to bench/RESULTS.md). Measured: time until the
# server reports N tunnels; server VmRSS before the agents connect and after the idle
# phase (→ memory per idle tunnel); server utime+stime over the idle phase (→ % of one
# core); adit-loadgen's own RSS / N; after kill -9 and restart, the time until 99% and
# 100% of the agents are back. Both processes share this machine's cores, so connect
# and reconnect times include the simulated agents' own TLS handshakes.
#
# Limits: both processes need one file descriptor per agent; the script raises the
# soft limit (ulimit -n) to what N needs, up to the hard limit, before starting
# adit-loadgen, which raises the server's to the hard limit. Each agent holds one
# ephemeral port on 127.0.0.1 (net.ipv4.ip_local_port_range, usually ~28,000).
set -euo pipefail

N=1000
IDLE=30
FRESH=0
JSON=0
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --idle) IDLE="${2:?--idle needs a value}"; shift 2 ;;
        --idle=*) IDLE="${1#--idle=}"; shift ;;
        --fresh) FRESH=1; shift ;;
        --json) JSON=1; shift ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        ''|*[!0-9]*) echo "unknown argument: $1 (see bench/loadgen.sh --help)" >&2; exit 2 ;;
        *) N="$1"; shift ;;
    esac
done
case "$N" in ''|*[!0-9]*|0) echo "N must be a positive integer" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
log() { echo "[loadgen.sh] $*" >&2; }
die() { echo "[loadgen.sh] error: $*" >&2; exit 1; }

# --- binaries ------------------------------------------------------------------
if [ -n "${ADIT_BIN_DIR:-}" ]; then
    BIN="$ADIT_BIN_DIR"
else
    log "building release binaries (adit-server, adit-loadgen)"
    (cd "$ROOT" && cargo build --release -j2 -p adit-server -p adit-loadgen) >&2
    BIN="$ROOT/target/release"
fi
[ -x "$BIN/adit-server" ] || die "$BIN/adit-server is missing"
[ -x "$BIN/adit-loadgen" ] || die "$BIN/adit-loadgen is missing"

# --- limits --------------------------------------------------------------------
NEED=$((N + 1024))
HARD="$(ulimit -Hn)"
if [ "$HARD" != unlimited ] && [ "$HARD" -lt "$NEED" ]; then
    log "warning: the hard open-file limit ($HARD) is below the $NEED that $N agents need"
    NEED="$HARD"
fi
ulimit -n "$NEED" || die "cannot raise the open-file limit to $NEED"
read -r PORT_LO PORT_HI < /proc/sys/net/ipv4/ip_local_port_range || true
if [ -n "${PORT_LO:-}" ] && [ $((PORT_HI - PORT_LO + 1)) -lt $((2 * N)) ]; then
    log "warning: only $((PORT_HI - PORT_LO + 1)) ephemeral ports for $N agents plus a restart"
fi

# --- run -----------------------------------------------------------------------
STATE="${LOADGEN_STATE:-$ROOT/target/loadgen/n$N}"
if [ "$FRESH" = 1 ]; then
    log "removing $STATE"
    rm -rf "$STATE"
fi
mkdir -p "$STATE"
# Bound every waiting phase: 2 minutes, or longer for very large N.
PHASE_TIMEOUT=$((N / 50 > 120 ? N / 50 : 120))
FORMAT=()
[ "$JSON" = 1 ] && FORMAT=(--json)

log "N=$N idle=${IDLE}s state=$STATE open-file limit $(ulimit -n)"
START=$(date +%s)
set +e
"$BIN/adit-loadgen" \
    --spawn-server "$BIN/adit-server" \
    --state-dir "$STATE" \
    --agents "$N" \
    --idle "$IDLE" \
    --phase-timeout "$PHASE_TIMEOUT" \
    --restart \
    "${FORMAT[@]}" "${EXTRA[@]}"
RC=$?
set -e
END=$(date +%s)
if [ "$JSON" = 0 ]; then
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(uname -sr)"
    echo "date: $(date -u)"
    echo "command: bench/loadgen.sh $N --idle $IDLE ${EXTRA[*]:-} (${PHASE_TIMEOUT}s phase timeout, $((END - START))s total)"
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
exit "$RC"
