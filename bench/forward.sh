#!/usr/bin/env bash
# iperf3 through `adit forward`, on loopback, against iperf3 direct.
#
# Usage: bench/forward.sh [--secs N] [--write]
#   --secs N   seconds per iperf3 run (default 10)
#   --write    replace (or append) the section
#              "## iperf3 through adit forward (loopback)" in bench/RESULTS.md
#
# Environment:
#   ADIT_BIN_DIR   use adit-server/adit-agent/adit from this directory instead
#                  of building target/release
#
# Everything listens on 127.0.0.1 only; every process started here is stopped
# on exit (trap EXIT). Total run time is about 8 × SECS plus start-up.
#
# Runs: direct, adit, direct, adit, direct, adit (single stream,
# client → server), then direct -R and adit -R (server → client) once each.
# Reported: median of the three runs per path; CPU seconds of adit-server,
# adit-agent and adit forward during the adit runs (utime+stime from
# /proc/PID/stat) per GB moved; VmRSS of server, agent and forward after the
# runs.
set -euo pipefail

SECS=10
WRITE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) SECS="${2:?--secs needs a value}"; shift 2 ;;
        --secs=*) SECS="${1#--secs=}"; shift ;;
        --write) WRITE=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (usage: bench/forward.sh [--secs N] [--write])" >&2; exit 2 ;;
    esac
done
case "$SECS" in ''|*[!0-9]*|0) echo "--secs must be a positive integer" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
COMMAND="bench/forward.sh --secs $SECS"
[ "$WRITE" = 1 ] && COMMAND="$COMMAND --write"

log() { echo "[forward.sh] $*" >&2; }
die() { echo "[forward.sh] error: $*" >&2; exit 1; }

# --- 1. iperf3 -------------------------------------------------------------
if ! command -v iperf3 >/dev/null 2>&1; then
    log "installing iperf3 with apt"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3 >/dev/null 2>&1; then
        apt-get update >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3 >/dev/null
    fi
fi
command -v iperf3 >/dev/null || die "iperf3 is not installed"
command -v python3 >/dev/null || die "python3 is needed to parse iperf3 JSON"

# --- 2. binaries -------------------------------------------------------------
if [ -n "${ADIT_BIN_DIR:-}" ]; then
    BIN="$ADIT_BIN_DIR"
else
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -j2 --workspace --bins) >&2
    BIN="$ROOT/target/release"
fi
for b in adit-server adit-agent adit; do
    [ -x "$BIN/$b" ] || die "$BIN/$b not found"
done

WORK="$(mktemp -d /tmp/adit-forward-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ]; then
        log "failed (exit $rc); logs:"
        for f in "$WORK"/*.log; do
            [ -f "$f" ] || continue
            echo "--- $(basename "$f") (last 20 lines)" >&2
            tail -n 20 "$f" >&2
        done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Waits up to $2 seconds for a TCP listener on 127.0.0.1:$1 (checks the socket
# table; does not connect, so nothing is opened through the forward).
wait_listening() {
    local port=$1 secs=$2 hex
    hex=$(printf '%04X' "$port")
    for _ in $(seq 1 $((secs * 10))); do
        if awk -v p=":$hex" 'NR>1 && $4=="0A" && substr($2, length($2)-4)==p {f=1} END {exit !f}' /proc/net/tcp; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}
alive() { kill -0 "$1" 2>/dev/null || die "$2 exited early (see its log below)"; }

SERVER_PORT=$(free_port)
IPERF_PORT=$(free_port)
FWD_PORT=$(free_port)
while [ "$IPERF_PORT" = "$SERVER_PORT" ]; do IPERF_PORT=$(free_port); done
while [ "$FWD_PORT" = "$SERVER_PORT" ] || [ "$FWD_PORT" = "$IPERF_PORT" ]; do FWD_PORT=$(free_port); done
URL="https://127.0.0.1:$SERVER_PORT"
PASSWORD="bench-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
export ADIT_HOME="$WORK/home"
mkdir -p "$ADIT_HOME"

log "starting adit-server on 127.0.0.1:$SERVER_PORT (work dir $WORK)"
ADIT_BOOTSTRAP_ADMIN_PASSWORD="$PASSWORD" \
    "$BIN/adit-server" start --data-dir "$WORK/data" --listen "127.0.0.1:$SERVER_PORT" \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")

PIN=""
for _ in $(seq 1 300); do
    alive "$SERVER_PID" adit-server
    PIN=$(sed -n 's/^CA fingerprint: \(sha256:[0-9A-Fa-f:]*\).*$/\1/p' "$WORK/server.log" | head -n 1)
    [ -n "$PIN" ] && break
    sleep 0.1
done
[ -n "$PIN" ] || die "adit-server printed no 'CA fingerprint:' line within 30 s"
wait_listening "$SERVER_PORT" 10 || die "adit-server is not listening on $SERVER_PORT"

log "adit login"
printf '%s\n' "$PASSWORD" | "$BIN/adit" login --server "$URL" --user admin --password-stdin --ca-pin "$PIN" \
    >"$WORK/login.log" 2>&1 || { cat "$WORK/login.log" >&2; die "adit login failed"; }
TOKEN=$("$BIN/adit" tokens create --ttl 10m 2>"$WORK/tokens.log") \
    || { cat "$WORK/tokens.log" >&2; die "adit tokens create failed"; }
[ -n "$TOKEN" ] || die "adit tokens create printed no token"

log "adit-agent enroll + run (allow 127.0.0.1:$IPERF_PORT)"
"$BIN/adit-agent" enroll --server "$URL" --token "$TOKEN" --name bench --state-dir "$WORK/agent" \
    >"$WORK/enroll.log" 2>&1 || { cat "$WORK/enroll.log" >&2; die "adit-agent enroll failed"; }
"$BIN/adit-agent" run --state-dir "$WORK/agent" --allow "127.0.0.1:$IPERF_PORT" \
    >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")

online=0
for _ in $(seq 1 300); do
    alive "$AGENT_PID" adit-agent
    if "$BIN/adit" nodes show bench --output json 2>/dev/null \
        | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("status")=="online" else 1)' 2>/dev/null; then
        online=1
        break
    fi
    sleep 0.1
done
[ "$online" = 1 ] || die "node 'bench' not online within 30 s ($("$BIN/adit" nodes show bench --output json 2>&1 | tr '\n' ' '))"

log "iperf3 server on 127.0.0.1:$IPERF_PORT"
iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >"$WORK/iperf3-server.log" 2>&1 &
IPERF_PID=$!
PIDS+=("$IPERF_PID")
wait_listening "$IPERF_PORT" 10 || die "iperf3 -s is not listening on $IPERF_PORT"

log "adit forward bench 127.0.0.1:$FWD_PORT:127.0.0.1:$IPERF_PORT"
"$BIN/adit" forward bench "127.0.0.1:$FWD_PORT:127.0.0.1:$IPERF_PORT" \
    >"$WORK/forward.out" 2>"$WORK/forward.log" &
FWD_PID=$!
PIDS+=("$FWD_PID")
for _ in $(seq 1 300); do
    alive "$FWD_PID" "adit forward"
    grep -q '^forwarding ' "$WORK/forward.out" 2>/dev/null && break
    sleep 0.1
done
grep -q '^forwarding ' "$WORK/forward.out" || die "adit forward did not report 'forwarding' within 30 s"
wait_listening "$FWD_PORT" 10 || die "adit forward is not listening on $FWD_PORT"

# --- 3. measure ----------------------------------------------------------------
TICKS=$(getconf CLK_TCK)
# utime+stime in clock ticks of one pid
cpu_ticks() {
    # field 2 (comm) may hold spaces: cut at the last ')'
    local stat
    stat=$(cat "/proc/$1/stat") || die "process $1 is gone"
    stat=${stat##*) }
    set -- $stat
    # after "comm)": $1=state(3) ... utime is field 14 → $12, stime 15 → $13
    echo $(( ${12} + ${13} ))
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

RUNS="$WORK/runs.tsv"   # path dir n json srv_ticks agent_ticks fwd_ticks
: >"$RUNS"
run_iperf() { # name port dir(fwd|rev) n
    local name=$1 port=$2 dir=$3 n=$4 out="$WORK/iperf-$1-$3-$4.json" s0 a0 f0 flags=()
    [ "$dir" = rev ] && flags=(-R)
    log "iperf3 $name $dir #$n (${SECS}s)"
    alive "$SERVER_PID" adit-server; alive "$AGENT_PID" adit-agent; alive "$FWD_PID" "adit forward"
    s0=$(cpu_ticks "$SERVER_PID"); a0=$(cpu_ticks "$AGENT_PID"); f0=$(cpu_ticks "$FWD_PID")
    if ! timeout $((SECS + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -J "${flags[@]}" >"$out" 2>"$WORK/iperf-client.log"; then
        echo "--- iperf3 -c 127.0.0.1 -p $port -t $SECS -J ${flags[*]} failed:" >&2
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error","(no error field)"))' "$out" >&2 2>/dev/null || cat "$out" >&2
        cat "$WORK/iperf-client.log" >&2
        echo "--- adit forward stderr:" >&2; cat "$WORK/forward.log" >&2
        die "iperf3 $name $dir run $n failed"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$dir" "$n" "$out" \
        $(( $(cpu_ticks "$SERVER_PID") - s0 )) $(( $(cpu_ticks "$AGENT_PID") - a0 )) $(( $(cpu_ticks "$FWD_PID") - f0 )) >>"$RUNS"
}
# Whole-machine busy ticks and our own ticks over the measurements, to show
# how much CPU other processes (e.g. a concurrent build) took meanwhile.
busy_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
own_ticks() { # long-lived processes + this shell's waited children (iperf3 clients)
    local self
    self=$(cat /proc/$$/stat); self=${self##*) }
    set -- $self
    echo $(( $(cpu_ticks "$SERVER_PID") + $(cpu_ticks "$AGENT_PID") + $(cpu_ticks "$FWD_PID") + $(cpu_ticks "$IPERF_PID") + ${14} + ${15} ))
}
BUSY0=$(busy_ticks); OWN0=$(own_ticks); T0=$(date +%s.%N)
for n in 1 2 3; do
    run_iperf direct "$IPERF_PORT" fwd "$n"
    run_iperf adit "$FWD_PORT" fwd "$n"
done
run_iperf direct "$IPERF_PORT" rev 1
run_iperf adit "$FWD_PORT" rev 1

alive "$SERVER_PID" adit-server; alive "$AGENT_PID" adit-agent; alive "$FWD_PID" "adit forward"
BUSY1=$(busy_ticks); OWN1=$(own_ticks); T1=$(date +%s.%N)
OTHER_CPU=$(python3 -c 'import sys; b0,b1,o0,o1,t,t0,t1,n=map(float,sys.argv[1:]); print(f"{max(0.0,((b1-b0)-(o1-o0))/t):.1f} CPU s of {(t1-t0)*n:.0f} available ({(t1-t0):.0f} s × {n:.0f} CPUs)")' \
    "$BUSY0" "$BUSY1" "$OWN0" "$OWN1" "$TICKS" "$T0" "$T1" "$(nproc)")
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
RSS_SERVER=$(rss_kib "$SERVER_PID")
RSS_AGENT=$(rss_kib "$AGENT_PID")
RSS_FWD=$(rss_kib "$FWD_PID")
# Anything the forward reported (errors, tunnel drops) goes into the notes.
FWD_ERR_COUNT=$(grep -c '^error:' "$WORK/forward.log" || true)
FWD_OTHER=$(grep -v -e '^press ctrl-c' -e '^error:' "$WORK/forward.log" | head -n 3 | tr '\n' ' ' || true)
FWD_ERRORS=""
if [ "${FWD_ERR_COUNT:-0}" -gt 0 ]; then
    FWD_ERRORS="$FWD_ERR_COUNT 'error:' line(s) for the $(( 4 * 2 )) connections of the 4 adit runs, first: $(grep -m1 '^error:' "$WORK/forward.log")"
fi
[ -n "$FWD_OTHER" ] && FWD_ERRORS="$FWD_ERRORS; other: $FWD_OTHER"


# --- 4. report -------------------------------------------------------------------
CPU_MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
[ -n "$CPU_MODEL" ] || CPU_MODEL=$(uname -m)
# The commit, resolved from .git without running git (same as `git rev-parse --short HEAD`).
commit_of() {
    python3 - "$ROOT" <<'EOF'
import os, sys
root = sys.argv[1]
gitdir = os.path.join(root, ".git")
try:
    if os.path.isfile(gitdir):  # worktree: "gitdir: PATH"
        gitdir = open(gitdir).read().split(":", 1)[1].strip()
        gitdir = os.path.join(root, gitdir) if not os.path.isabs(gitdir) else gitdir
    common = gitdir
    if os.path.isfile(os.path.join(gitdir, "commondir")):
        common = os.path.normpath(os.path.join(gitdir, open(os.path.join(gitdir, "commondir")).read().strip()))
    head = open(os.path.join(gitdir, "HEAD")).read().strip()
    sha = head
    if head.startswith("ref: "):
        ref = head[5:]
        sha = None
        for d in (gitdir, common):
            p = os.path.join(d, ref)
            if os.path.isfile(p):
                sha = open(p).read().strip(); break
        if sha is None:
            for line in open(os.path.join(common, "packed-refs")):
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    sha = parts[0]; break
    print(sha[:7] if sha else "unknown")
except Exception:
    print("unknown")
EOF
}
COMMIT=${ADIT_COMMIT:-$(commit_of)}

REPORT="$WORK/report.md"
python3 - "$RUNS" "$TICKS" "$SECS" "$RSS_SERVER" "$RSS_AGENT" "$RSS_FWD" \
    "$(date -u)" "$(nproc)" "$CPU_MODEL" "$COMMIT" "$COMMAND" "$FWD_ERRORS" "$OTHER_CPU" "$LOAD" >"$REPORT" <<'EOF'
import json, statistics, sys
(runs_path, ticks, secs, rss_s, rss_a, rss_f, date, ncpu, cpu, commit, command, fwd_errors, other_cpu, load) = sys.argv[1:]
ticks = int(ticks)
runs = {}
for line in open(runs_path):
    name, d, n, path, s, a, f = line.rstrip("\n").split("\t")
    j = json.load(open(path))
    if "error" in j:
        sys.exit(f"iperf3 {name} {d} #{n}: {j['error']}")
    recv = j["end"]["sum_received"]
    runs.setdefault((name, d), []).append(dict(
        bps=recv["bits_per_second"], bytes=recv["bytes"],
        retr=j["end"].get("sum_sent", {}).get("retransmits"),
        cpu=(int(s) / ticks, int(a) / ticks, int(f) / ticks)))

def gbit(x): return x / 1e9
def fmt_runs(rs): return ", ".join(f"{gbit(r['bps']):.2f}" for r in rs)

direct = runs[("direct", "fwd")]
adit = runs[("adit", "fwd")]
direct_r = runs[("direct", "rev")]
adit_r = runs[("adit", "rev")]
med_direct = statistics.median(r["bps"] for r in direct)
med_adit = statistics.median(r["bps"] for r in adit)
med_direct_r = statistics.median(r["bps"] for r in direct_r)
med_adit_r = statistics.median(r["bps"] for r in adit_r)

def cpu_per_gb(rs):
    gb = sum(r["bytes"] for r in rs) / 1e9
    tot = [sum(r["cpu"][i] for r in rs) for i in range(3)]
    return gb, tot, [t / gb if gb else float("nan") for t in tot]

gb_f, cpu_f, per_f = cpu_per_gb(adit)
gb_r, cpu_r, per_r = cpu_per_gb(adit_r)
BAR = 3e9
passed = med_adit >= BAR

def mib(kib): return f"{int(kib) / 1024:.1f} MiB"

out = []
out.append("## iperf3 through adit forward (loopback)")
out.append("")
out.append(f"- date: {date}")
out.append(f"- machine: {ncpu} CPUs ({cpu}), Linux loopback")
out.append(f"- commit: {commit}")
out.append(f"- command: `{command}`")
out.append(f"- setup: release binaries; `adit-server`, `adit-agent` (enrolled as `bench`, `--allow 127.0.0.1:IPERF`), "
           f"`adit forward bench 127.0.0.1:FWD:127.0.0.1:IPERF` and `iperf3 -s` all on 127.0.0.1; "
           f"client → forward → TLS `adit/1` → server → TLS `adit/1` → agent → iperf3, so every byte is encrypted and decrypted twice. "
           f"`iperf3 -c 127.0.0.1 -p PORT -t {secs} -J`, one stream, runs alternating direct/adit ×3, then `-R` once each; "
           f"Gbit/s is `end.sum_received.bits_per_second`.")
out.append("- caveat: iperf3 client and server, the forward, the server and the agent all share the machine's cores; "
           "CPU figures are utime+stime from /proc/PID/stat over the adit runs only (iperf3's own CPU is not counted). "
           "On 2 cores the adit path is CPU-bound, so other load moves the Gbit/s figures by tens of percent between runs.")
out.append(f"- other processes during the measurements: {other_cpu}; load average after: {load}")
out.append(f"- bar (issue, first bar): ≥ 3 Gbit/s through adit forward, single stream: "
           f"**{'PASS' if passed else 'FAIL'}** ({gbit(med_adit):.2f} Gbit/s)")
out.append("")
out.append("| path | Gbit/s (median of 3) | ratio to direct | notes |")
out.append("| --- | --- | --- | --- |")
out.append(f"| direct loopback | {gbit(med_direct):.2f} | 1.00 | runs: {fmt_runs(direct)}; reverse (`-R`, 1 run): {gbit(med_direct_r):.2f} |")
out.append(f"| adit forward (encrypted tunnel, client→node) | {gbit(med_adit):.2f} | {med_adit / med_direct:.2f} | "
           f"runs: {fmt_runs(adit)}; bar ≥ 3 Gbit/s: **{'PASS' if passed else 'FAIL'}** |")
out.append(f"| adit forward reverse (`-R`, node→client) | {gbit(med_adit_r):.2f} | {med_adit_r / med_direct_r:.2f} | "
           f"1 run; ratio to direct `-R` ({gbit(med_direct_r):.2f}) |")
out.append(f"| CPU s/GB, client→node | — | — | server {per_f[0]:.2f}, agent {per_f[1]:.2f}, forward {per_f[2]:.2f}, "
           f"total {sum(per_f):.2f} ({sum(cpu_f):.1f} CPU s for {gb_f:.1f} GB) |")
out.append(f"| CPU s/GB, node→client (`-R`) | — | — | server {per_r[0]:.2f}, agent {per_r[1]:.2f}, forward {per_r[2]:.2f}, "
           f"total {sum(per_r):.2f} ({sum(cpu_r):.1f} CPU s for {gb_r:.1f} GB) |")
out.append(f"| RSS after the runs | — | — | server {mib(rss_s)}, agent {mib(rss_a)}, forward {mib(rss_f)} (VmRSS) |")
if fwd_errors.strip():
    out.append("")
    out.append(f"`adit forward` stderr during the runs (every iperf3 run still completed; iperf3 ends a test by closing sockets "
               f"with data in flight, which the forward reports as a reset): {fwd_errors.strip()}")
print("\n".join(out))
EOF

echo
cat "$REPORT"
echo

if [ "$WRITE" = 1 ]; then
    python3 - "$ROOT/bench/RESULTS.md" "$REPORT" <<'EOF'
import os, sys
path, report = sys.argv[1], sys.argv[2]
heading = "## iperf3 through adit forward (loopback)"
section = open(report).read().rstrip("\n") + "\n"
text = open(path).read() if os.path.exists(path) else "# Adit benchmark results\n"
lines = text.splitlines(keepends=True)
start = next((i for i, l in enumerate(lines) if l.rstrip("\r\n") == heading), None)
if start is None:
    if not text.endswith("\n"):
        text += "\n"
    text += "\n" + section
else:
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ") or lines[i].startswith("# ")), len(lines))
    rest = "".join(lines[end:])
    new = section + ("\n" + rest if rest else "")
    text = "".join(lines[:start]) + new
tmp = path + ".forward-tmp"
open(tmp, "w").write(text)
os.replace(tmp, path)
EOF
    log "updated bench/RESULTS.md"
fi
