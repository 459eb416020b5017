#!/usr/bin/env bash
# Fleet size: does a connection or an enrolment cost more because other nodes exist?
#
# Usage: bench/fleet.sh [--small N] [--big N] [--rounds R] [--secs S] [--enrol K] [--write]
#   --small N   nodes in the store for the small case (default 1: only the bench node)
#   --big N     nodes in the store for the big case (default 20000)
#   --rounds R  small/big alternations (default 2)
#   --secs S    seconds of `rr cps` per measurement (default 5)
#   --enrol K   agents adit-loadgen enrols (and connects) per measurement (default 300)
#   --write     replace (or append) the section "## Fleet size (`bench/fleet.sh`)" in
#               bench/RESULTS.md
#
# Environment:
#   ADIT_BIN_DIR   use adit-server, adit-agent, adit, adit-loadgen and rr from this
#                  directory instead of building target/release (e.g. an older build, to
#                  compare before and after)
#
# One adit-server on 127.0.0.1 with one real agent ("bench") that allows an rr echo
# server, and `adit forward` to it. Each measurement: `rr cps --workers 4` (connections/s
# and connect-to-first-byte through the forward), `rr cps --workers 1` (first byte one
# connection at a time), and adit-loadgen enrolling K new agents (32 at a time; the
# enrolment rate). Between measurements the server is stopped and the store grown to the
# big size by inserting offline nodes named fleet-* with their certificates straight into
# its SQLite file (or shrunk back by deleting every node but the bench one), then started
# again. Small and
# big alternate, so drift on this machine shows as spread, not as a difference.
# Everything listens on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail

SMALL=1
BIG=20000
ROUNDS=2
SECS=5
ENROL=300
WRITE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --small) SMALL="${2:?--small needs a value}"; shift 2 ;;
        --big) BIG="${2:?--big needs a value}"; shift 2 ;;
        --rounds) ROUNDS="${2:?--rounds needs a value}"; shift 2 ;;
        --secs) SECS="${2:?--secs needs a value}"; shift 2 ;;
        --enrol) ENROL="${2:?--enrol needs a value}"; shift 2 ;;
        --write) WRITE=1; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see bench/fleet.sh --help)" >&2; exit 2 ;;
    esac
done
for v in "$SMALL" "$BIG" "$ROUNDS" "$SECS" "$ENROL"; do
    case "$v" in ''|*[!0-9]*) echo "every value must be a non-negative integer" >&2; exit 2 ;; esac
done
[ "$SMALL" -ge 1 ] && [ "$BIG" -gt "$SMALL" ] && [ "$ROUNDS" -ge 1 ] && [ "$SECS" -ge 1 ] && [ "$ENROL" -ge 1 ] \
    || { echo "need 1 <= --small < --big, and --rounds, --secs, --enrol >= 1" >&2; exit 2; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
COMMAND="bench/fleet.sh --small $SMALL --big $BIG --rounds $ROUNDS --secs $SECS --enrol $ENROL"
log() { echo "[fleet.sh] $*" >&2; }
die() { echo "[fleet.sh] error: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed (SQLite seeding and the report)"

if [ -n "${ADIT_BIN_DIR:-}" ]; then
    BIN="$ADIT_BIN_DIR"
else
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -j2 -p adit-server -p adit-agent -p adit-cli -p adit-loadgen --bins \
        && cargo build --release -j2 -p adit-bench --bin rr) >&2
    BIN="$ROOT/target/release"
fi
[ -n "${ADIT_BIN_DIR:-}" ] && COMMAND="ADIT_BIN_DIR=$ADIT_BIN_DIR $COMMAND"
for b in adit-server adit-agent adit adit-loadgen rr; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing"
done

WORK="$(mktemp -d /tmp/adit-fleet.XXXXXX)"
PIDS=()
SERVER_PID=""
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}" $SERVER_PID; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}" $SERVER_PID; do wait "$p" 2>/dev/null || true; done
    [ "$rc" -ne 0 ] && [ -f "$WORK/server.log" ] && tail -n 20 "$WORK/server.log" >&2
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_listening() { # port seconds
    local i
    for i in $(seq 1 $(($2 * 10))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

SP=$(free_port); URL="https://127.0.0.1:$SP"
ECHO=$(free_port); FWD=$(free_port)
PW="fleet-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
export ADIT_HOME="$WORK/adit-home"
mkdir -p "$ADIT_HOME"
DB="$WORK/data/adit.db"

start_server() {
    ADIT_BOOTSTRAP_ADMIN_PASSWORD="$PW" "$BIN/adit-server" start --data-dir "$WORK/data" \
        --listen "127.0.0.1:$SP" >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_listening "$SP" 60 || die "adit-server did not listen"
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# Grows the store to $1 nodes with offline fleet-* nodes, or shrinks it (never removing
# the bench node); the server is stopped.
resize_store() {
    python3 - "$DB" "$1" <<'PYEOF'
import sqlite3, sys, uuid
db, want = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
c.execute("PRAGMA foreign_keys = ON")
tenant = c.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()[0]
have = c.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
fleet = c.execute("SELECT COUNT(*) FROM nodes WHERE name LIKE 'fleet-%'").fetchone()[0]
if have < want:
    rows = []
    for i in range(fleet, fleet + want - have):
        rows.append((str(uuid.uuid4()), tenant, f"fleet-{i:06d}", uuid.uuid4().hex))
    c.executemany(
        "INSERT INTO nodes (id, tenant_id, name, labels, status, created_at, cert_serial,"
        " cert_not_after) VALUES (?, ?, ?, '{\"fleet\":\"yes\"}', 'offline', 1, ?, 4000000000000)",
        rows)
    c.executemany(
        "INSERT INTO certificates (serial, tenant_id, node_id, issued_at, not_after)"
        " VALUES (?, ?, ?, 1, 4000000000000)",
        [(serial, t, node) for (node, t, _, serial) in rows])
elif have > want:
    # Every node but the bench node may go: seeded ones and those adit-loadgen enrolled.
    ids = [r[0] for r in c.execute(
        "SELECT id FROM nodes WHERE name <> 'bench' ORDER BY created_at DESC LIMIT ?",
        (have - want,))]
    c.executemany("DELETE FROM node_commands WHERE node_id = ?", [(i,) for i in ids])
    c.executemany("DELETE FROM certificates WHERE node_id = ?", [(i,) for i in ids])
    c.executemany("DELETE FROM nodes WHERE id = ?", [(i,) for i in ids])
c.commit()
print(c.execute("SELECT COUNT(*) FROM nodes").fetchone()[0])
PYEOF
}

log "rr echo on 127.0.0.1:$ECHO"
"$BIN/rr" serve --listen "127.0.0.1:$ECHO" >"$WORK/rr-serve.log" 2>&1 &
PIDS+=($!)
log "adit-server on $URL"
start_server
PIN=$(wait_ca_pin "$WORK/server.log" 100) || die "no CA fingerprint in the server log"
printf '%s\n' "$PW" | "$BIN/adit" login --server "$URL" --user admin --password-stdin --ca-pin "$PIN" \
    >"$WORK/login.log" 2>&1 || die "login failed: $(cat "$WORK/login.log")"
TOKEN=$("$BIN/adit" tokens create --ttl 1h 2>>"$WORK/login.log") || die "no join token"
"$BIN/adit-agent" enroll --server "$URL" --token "$TOKEN" --name bench --state-dir "$WORK/agent" \
    >"$WORK/enroll.log" 2>&1 || die "enrolment failed: $(cat "$WORK/enroll.log")"
"$BIN/adit-agent" run --state-dir "$WORK/agent" --allow "127.0.0.1:$ECHO" \
    >"$WORK/agent.log" 2>&1 &
PIDS+=($!)

FWD_PID=""
# Waits for the bench node and (re)starts the forward; one echo through it proves the path.
connect_forward() {
    local i online=0
    for i in $(seq 1 300); do
        if "$BIN/adit" nodes show bench --output json 2>/dev/null \
            | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("status")=="online" else 1)' 2>/dev/null; then
            online=1; break
        fi
        sleep 0.1
    done
    [ "$online" = 1 ] || die "the bench agent did not come online"
    [ -n "$FWD_PID" ] && { kill "$FWD_PID" 2>/dev/null || true; wait "$FWD_PID" 2>/dev/null || true; }
    "$BIN/adit" forward bench "127.0.0.1:$FWD:127.0.0.1:$ECHO" >"$WORK/forward.out" 2>>"$WORK/forward.log" &
    FWD_PID=$!
    wait_listening "$FWD" 30 || die "adit forward did not listen"
    timeout 30 "$BIN/rr" cps --connect "127.0.0.1:$FWD" --secs 1 --workers 1 >/dev/null 2>>"$WORK/rr.log" \
        || die "no echo through the forward"
}
cleanup_forward() { [ -n "$FWD_PID" ] && kill "$FWD_PID" 2>/dev/null; wait "$FWD_PID" 2>/dev/null || true; }
trap 'cleanup_forward; cleanup' EXIT

RUNS="$WORK/runs.tsv"
: >"$RUNS"
measure() { # label round
    local label=$1 round=$2 nodes
    nodes=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM nodes").fetchone()[0])' "$DB")
    connect_forward
    log "$label (store: $nodes nodes), round $round: rr cps --workers 4, ${SECS}s"
    timeout $((SECS + 30)) "$BIN/rr" cps --connect "127.0.0.1:$FWD" --secs "$SECS" --workers 4 \
        >"$WORK/cps-$label-$round.json" 2>>"$WORK/rr.log" || die "rr cps failed"
    timeout 40 "$BIN/rr" cps --connect "127.0.0.1:$FWD" --secs 2 --workers 1 \
        >"$WORK/cps1-$label-$round.json" 2>>"$WORK/rr.log" || die "rr cps (1 worker) failed"
    log "$label, round $round: adit-loadgen enrols $ENROL agents"
    printf '%s\n' "$PW" | timeout 600 "$BIN/adit-loadgen" --server "$URL" --ca-pin "$PIN" --password-stdin \
        --agents "$ENROL" --idle 1 --state-dir "$WORK/loadgen-$label-$round" --json \
        >"$WORK/enrol-$label-$round.json" 2>>"$WORK/loadgen.log" || die "adit-loadgen failed (see its log)"
    printf '%s\t%s\t%s\n' "$label" "$round" "$nodes" >>"$RUNS"
}

for round in $(seq 1 "$ROUNDS"); do
    for label in small big; do
        size=$SMALL; [ "$label" = big ] && size=$BIG
        stop_server
        log "store to $size nodes: $(resize_store "$size")"
        start_server
        measure "$label" "$round"
    done
done

REPORT="$WORK/report.md"
python3 - "$WORK" "$RUNS" "$COMMAND" "$ENROL" >"$REPORT" <<'PYEOF'
import json, statistics, subprocess, sys, datetime
work, runs, command, enrol = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [l.split("\t") for l in open(runs).read().splitlines() if l]
def load(name):
    text = open(f"{work}/{name}").read().strip()
    try:
        return json.loads(text)  # adit-loadgen: one JSON document
    except ValueError:
        return json.loads(text.splitlines()[-1])  # rr: the last line
per = {"small": [], "big": []}
for label, rnd, nodes in rows:
    c4, c1, e = load(f"cps-{label}-{rnd}.json"), load(f"cps1-{label}-{rnd}.json"), load(f"enrol-{label}-{rnd}.json")
    en = e["enroll"]
    rate = en["new"] / en["secs"] if en["secs"] else None
    per[label].append(dict(nodes=int(nodes), cps=c4["cps"], p50=c4["p50_us"],
                           fb1=c1["p50_us"], enrol=rate, failed=en["failed"]))
def med(label, key):
    v = [r[key] for r in per[label] if r[key] is not None]
    return statistics.median(v) if v else None
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print("## Fleet size (`bench/fleet.sh`)\n")
print(f"`{command}` at {rev}, {now}, this 2-core machine, release build, loopback. "
      "One real agent behind `adit forward`; the other nodes are offline rows in the store. "
      f"conn/s: `rr cps --workers 4`; first byte: `rr cps --workers 1` (p50, µs); enrolment: "
      f"adit-loadgen enrolling {enrol} new agents 32 at a time (new enrolments / s).\n")
print("| store | round | nodes | conn/s | first byte p50 (4 workers) | first byte p50 (1 at a time) | enrolments/s |")
print("|---|---|---:|---:|---:|---:|---:|")
for label, rnd, _ in rows:
    r = per[label][int(rnd) - 1]
    print(f"| {label} | {rnd} | {r['nodes']} | {r['cps']:.0f} | {r['p50']:.0f} µs | {r['fb1']:.0f} µs | "
          + (f"{r['enrol']:.0f}" if r['enrol'] else "–") + (f" ({r['failed']} failed)" if r['failed'] else "") + " |")
def ratio(key):
    s, b = med("small", key), med("big", key)
    return None if not s or not b else b / s
print()
cps_r, fb_r, en_r = ratio("cps"), ratio("fb1"), ratio("enrol")
big_enrol = min((r["enrol"] for r in per["big"] if r["enrol"]), default=None)
print(f"Medians, big / small: conn/s {cps_r:.2f}×, first byte {fb_r:.2f}×, enrolments/s {en_r:.2f}×. "
      f"Targets: conn/s and first byte within 20 % ({'met' if cps_r >= 0.8 and fb_r <= 1.2 else 'not met'}); "
      f"enrolment ≥ 150/s at every size (slowest big run {big_enrol:.0f}/s: "
      f"{'met' if big_enrol and big_enrol >= 150 and min(r['enrol'] or 0 for r in per['small']) >= 150 else 'not met'}).")
PYEOF
cat "$REPORT"
if [ "$WRITE" = 1 ]; then
    python3 - "$ROOT/bench/RESULTS.md" "$REPORT" <<'PYEOF'
import sys
path, report = sys.argv[1], open(sys.argv[2]).read().rstrip() + "\n"
text = open(path).read()
head = "## Fleet size (`bench/fleet.sh`)"
if head in text:
    start = text.index(head)
    nxt = text.find("\n## ", start + len(head))
    text = text[:start] + report + ("\n" + text[nxt + 1:] if nxt >= 0 else "")
else:
    text = text.rstrip() + "\n\n" + report
open(path, "w").write(text)
PYEOF
    log "wrote the section to bench/RESULTS.md"
fi
