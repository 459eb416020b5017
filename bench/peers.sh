#!/usr/bin/env bash
# Adit side by side with other reverse tunnels (issue 6), in one run.
#
# Usage: bench/peers.sh [--quick] [--write]
#   --quick   short runs (under 3 minutes once the binaries are built): 2 s
#             iperf3 runs, one round, fewer round-trip samples, no WAN part
#   --write   replace (or append) the section
#             "## Side by side with other tunnels (`bench/peers.sh`)" in
#             bench/RESULTS.md
#
# Environment:
#   ADIT_BIN_DIR  take adit-server, adit-agent, adit (and rr, if there) from
#                 this directory instead of building target/release
#
# Peers, alternating within each test: direct loopback (the ceiling), Adit
# (`adit forward` → adit-server → adit-agent, TLS 1.3 on both hops), rathole
# 0.5 in tcp mode and in noise mode, bore 0.6, and OpenSSH `ssh -R` against a
# throwaway sshd. rathole and bore are built once with `cargo install` into
# bench/.cache/peers; iperf3 and OpenSSH come from apt. A peer that cannot be
# installed or started is reported as such and the run goes on.
#
# Measured: iperf3 1 and 8 streams both directions, CPU s/GB of the tunnel
# processes (utime+stime from /proc/PID/stat); 1-byte round trips with
# bench/src/bin/rr.rs (p50/p99/p99.9) idle and while an iperf3 bulk transfer
# goes through the same tunnel ports; new connections per second and
# connect-to-first-byte (rr cps); VmRSS idle and after load; a perf profile of
# Adit's processes (bulk, round trips, new connections). A peer that stops
# carrying new connections is reported as stalled and skipped from then on;
# 8 streams ← runs last (it has stalled Adit's tunnel). The full run adds the WAN part
# (two network namespaces joined by a veth pair with tc netem, or by
# bench/wire.py where the kernel has no netem: 50 ms RTT with
# 0.5% loss, 200 ms with 2%).
#
# Everything listens on 127.0.0.1 (or 10.213.0.0/24 inside the namespaces this
# script creates); every process it starts is stopped and every namespace it
# creates is deleted on exit (trap EXIT); every wait and run has a time bound.
set -euo pipefail

QUICK=0
WRITE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --write) WRITE=1; shift ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (usage: bench/peers.sh [--quick] [--write])" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="$ROOT/bench/.cache"
PEERBIN="$CACHE/peers/bin"
COMMAND="bench/peers.sh"
[ "$QUICK" = 1 ] && COMMAND="$COMMAND --quick"
[ "$WRITE" = 1 ] && COMMAND="$COMMAND --write"
RUN_START=$(date +%s)

if [ "$QUICK" = 1 ]; then
    SECS=2          # per iperf3 run
    ROUNDS=1        # rounds of the single-stream client → server run
    PINGS=2000      # idle round trips
    BULK=4          # seconds of bulk during the loaded round trips
    CPS_SECS=2
    PROFILE_SECS=2
else
    SECS=5
    ROUNDS=3
    PINGS=10000
    BULK=8
    CPS_SECS=4
    PROFILE_SECS=4
fi
CPS_WORKERS=4
WAN_SECS=10

log() { echo "[peers.sh $(( $(date +%s) - RUN_START ))s] $*" >&2; }
die() { echo "[peers.sh] error: $*" >&2; exit 1; }

# --- 1. tools ------------------------------------------------------------------
apt_install() { # packages...
    log "installing $* with apt"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1; then
        apt-get update >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1 || return 1
    fi
}
command -v python3 >/dev/null || die "python3 is needed to parse results"
command -v iperf3 >/dev/null || apt_install iperf3 || true
command -v iperf3 >/dev/null || die "iperf3 is not installed"
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null; then
    apt_install openssh-server openssh-client || true
fi

SKIPPED=()   # "peer: reason" for every peer that could not run
mkdir -p "$CACHE/peers"
# rathole 0.5.0's lock file pins a `time` that no longer builds with current
# rustc, so it is resolved afresh; its tls/websocket features (OpenSSL) are
# left out: only tcp and noise are measured.
install_peer() { # binary crate version [cargo install flags...]
    local bin=$1 crate=$2 version=$3
    shift 3
    [ -x "$PEERBIN/$bin" ] && return 0
    log "cargo install $crate $version into bench/.cache/peers (once; a few minutes)"
    timeout 1200 cargo install "$crate" --version "$version" --root "$CACHE/peers" -j2 "$@" \
        >"$CACHE/$crate-install.log" 2>&1 && [ -x "$PEERBIN/$bin" ]
}
install_peer rathole rathole 0.5.0 --no-default-features --features server,client,noise \
    || SKIPPED+=("rathole: cargo install rathole failed (bench/.cache/rathole-install.log: $(grep -m1 '^error' "$CACHE/rathole-install.log" 2>/dev/null || echo '?'))")
install_peer bore bore-cli 0.6.0 --locked \
    || SKIPPED+=("bore: cargo install bore-cli failed (bench/.cache/bore-cli-install.log: $(grep -m1 '^error' "$CACHE/bore-cli-install.log" 2>/dev/null || echo '?'))")

# --- 2. Adit binaries and rr -------------------------------------------------------
if [ -n "${ADIT_BIN_DIR:-}" ]; then
    BIN="$ADIT_BIN_DIR"
    if [ ! -x "$BIN/rr" ]; then
        log "building rr"
        (cd "$ROOT" && cargo build --release -j2 -p adit-bench --bin rr) >&2
    fi
    RR="$BIN/rr"
    [ -x "$RR" ] || RR="$ROOT/target/release/rr"
else
    log "building release binaries (adit-server, adit-agent, adit, rr)"
    (cd "$ROOT" && cargo build --release -j2 -p adit-server -p adit-agent -p adit-cli --bins \
        && cargo build --release -j2 -p adit-bench --bin rr) >&2
    BIN="$ROOT/target/release"
    RR="$BIN/rr"
fi
for b in "$BIN/adit-server" "$BIN/adit-agent" "$BIN/adit" "$RR"; do
    [ -x "$b" ] || die "$b not found"
done

# --- 3. processes, ports, cleanup ------------------------------------------------------
WORK="$(mktemp -d /tmp/adit-peers-bench.XXXXXX)"
PIDS=()
NETNS=()
descendants() { # pid → its descendants, children first
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        descendants "$c"
        echo "$c"
    done
}
cleanup() {
    local rc=$? all=() i pid
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[$i]}
        all+=($(descendants "$pid") "$pid")
    done
    for pid in "${all[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${all[@]}"; do
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ "$rc" -ne 0 ]; then
        log "failed (exit $rc); logs:"
        for f in "$WORK"/*.log; do
            [ -f "$f" ] || continue
            echo "--- $(basename "$f") (last 15 lines)" >&2
            tail -n 15 "$f" >&2
        done
    fi
    if [ "${PEERS_KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        USED_PORTS="$USED_PORTS$p "
        echo "$p"
        return 0
    done
    die "no free port"
}
# Waits up to $2 seconds for a TCP listener on port $1 (socket table only;
# connects nothing). $3: a network namespace to look in.
wait_listening() {
    local port=$1 secs=$2 ns=${3:-} hex
    hex=$(printf '%04X' "$port")
    for _ in $(seq 1 $((secs * 10))); do
        if { if [ -n "$ns" ]; then ip netns exec "$ns" cat /proc/net/tcp; else cat /proc/net/tcp; fi; } \
            | awk -v p=":$hex" 'NR>1 && $4=="0A" && substr($2, length($2)-4)==p {f=1} END {exit !f}'; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}
alive() { kill -0 "$1" 2>/dev/null; }

TICKS=$(getconf CLK_TCK)
cpu_ticks() { # pids... → summed utime+stime (a vanished pid counts 0)
    local total=0 stat pid
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        set -- $stat
        total=$(( total + ${12} + ${13} ))
    done
    echo "$total"
}
rss_kib() { # pids... → summed VmRSS
    local total=0 pid v
    for pid in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || v=0
        total=$(( total + ${v:-0} ))
    done
    echo "$total"
}

# Targets: iperf3 server, and rr's echo server, which relays connections that
# are not rr's (iperf3's) to the iperf3 server, so one port carries both.
IPERF_PORT=$(free_port)
ECHO_PORT=$(free_port)
log "iperf3 -s on 127.0.0.1:$IPERF_PORT, rr serve on 127.0.0.1:$ECHO_PORT (work dir $WORK)"
IPERF_PID=""
start_iperf_server() {
    [ -n "$IPERF_PID" ] && { kill "$IPERF_PID" 2>/dev/null || true; wait "$IPERF_PID" 2>/dev/null || true; }
    iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >>"$WORK/iperf3-server.log" 2>&1 &
    IPERF_PID=$!
    PIDS+=("$IPERF_PID")
    wait_listening "$IPERF_PORT" 10 || die "iperf3 -s is not listening"
}
start_iperf_server
"$RR" serve --listen "127.0.0.1:$ECHO_PORT" --fallback "127.0.0.1:$IPERF_PORT" >"$WORK/rr-serve.log" 2>&1 &
PIDS+=($!)
wait_listening "$ECHO_PORT" 10 || die "rr serve is not listening"

# Per peer: local ports that reach IPERF_PORT and ECHO_PORT, and the tunnel's
# server-side, client-side and (Adit only) user-side pids.
declare -A P_IPERF P_ECHO P_SRV P_CLI P_USER P_DESC
PEERS=(direct)
P_IPERF[direct]=$IPERF_PORT; P_ECHO[direct]=$ECHO_PORT
P_SRV[direct]=""; P_CLI[direct]=""; P_USER[direct]=""
P_DESC[direct]="iperf3 and rr straight to the targets on 127.0.0.1"

# --- 4. start the peers --------------------------------------------------------------
start_adit() {
    local sp url pw pin token online fi fe
    sp=$(free_port); url="https://127.0.0.1:$sp"
    pw="bench-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    export ADIT_HOME="$WORK/adit-home"
    mkdir -p "$ADIT_HOME"
    log "adit: adit-server on 127.0.0.1:$sp"
    ADIT_BOOTSTRAP_ADMIN_PASSWORD="$pw" "$BIN/adit-server" start --data-dir "$WORK/adit-data" \
        --listen "127.0.0.1:$sp" >"$WORK/adit-server.log" 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    pin=""
    for _ in $(seq 1 300); do
        alive "$spid" || return 1
        pin=$(sed -n 's/^CA fingerprint: \(sha256:[0-9A-Fa-f:]*\).*$/\1/p' "$WORK/adit-server.log" | head -n 1)
        [ -n "$pin" ] && break
        sleep 0.1
    done
    [ -n "$pin" ] && wait_listening "$sp" 10 || return 1
    printf '%s\n' "$pw" | "$BIN/adit" login --server "$url" --user admin --password-stdin --ca-pin "$pin" \
        >"$WORK/adit-login.log" 2>&1 || return 1
    token=$("$BIN/adit" tokens create --ttl 10m 2>>"$WORK/adit-login.log") || return 1
    "$BIN/adit-agent" enroll --server "$url" --token "$token" --name bench --state-dir "$WORK/adit-agent" \
        >"$WORK/adit-enroll.log" 2>&1 || return 1
    "$BIN/adit-agent" run --state-dir "$WORK/adit-agent" --allow "127.0.0.1:$IPERF_PORT" \
        --allow "127.0.0.1:$ECHO_PORT" >"$WORK/adit-agent.log" 2>&1 &
    local apid=$!
    PIDS+=("$apid")
    online=0
    for _ in $(seq 1 300); do
        alive "$apid" || return 1
        if "$BIN/adit" nodes show bench --output json 2>/dev/null \
            | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("status")=="online" else 1)' 2>/dev/null; then
            online=1; break
        fi
        sleep 0.1
    done
    [ "$online" = 1 ] || return 1
    fi=$(free_port); fe=$(free_port)
    "$BIN/adit" forward bench "127.0.0.1:$fi:127.0.0.1:$IPERF_PORT" >"$WORK/adit-fwd-iperf.out" 2>"$WORK/adit-fwd-iperf.log" &
    local f1=$!
    PIDS+=("$f1")
    "$BIN/adit" forward bench "127.0.0.1:$fe:127.0.0.1:$ECHO_PORT" >"$WORK/adit-fwd-echo.out" 2>"$WORK/adit-fwd-echo.log" &
    local f2=$!
    PIDS+=("$f2")
    wait_listening "$fi" 30 && wait_listening "$fe" 30 || return 1
    P_IPERF[adit]=$fi; P_ECHO[adit]=$fe
    P_SRV[adit]="$spid"; P_CLI[adit]="$apid"; P_USER[adit]="$f1 $f2"
    P_DESC[adit]="\`adit forward\` (one process per port) → TLS 1.3 \`adit/1\` → adit-server → TLS 1.3 (mTLS) \`adit/1\` → adit-agent; both hops encrypted"
}

RATHOLE_KEYS=""
start_rathole() { # tcp|noise
    local mode=$1 name="rathole-$1" ctrl pi pe tok transport_s="" transport_c="" priv pub
    ctrl=$(free_port); pi=$(free_port); pe=$(free_port)
    tok=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    if [ "$mode" = noise ]; then
        RATHOLE_KEYS=$("$PEERBIN/rathole" --genkey 2>/dev/null) || return 1
        priv=$(printf '%s\n' "$RATHOLE_KEYS" | sed -n '/Private Key/{n;p}')
        pub=$(printf '%s\n' "$RATHOLE_KEYS" | sed -n '/Public Key/{n;p}')
        [ -n "$priv" ] && [ -n "$pub" ] || return 1
        transport_s=$'[server.transport]\ntype = "noise"\n[server.transport.noise]\nlocal_private_key = "'"$priv"$'"\n'
        transport_c=$'[client.transport]\ntype = "noise"\n[client.transport.noise]\nremote_public_key = "'"$pub"$'"\n'
    else
        transport_s=$'[server.transport]\ntype = "tcp"\n'
        transport_c=$'[client.transport]\ntype = "tcp"\n'
    fi
    cat >"$WORK/$name-server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$ctrl"
default_token = "$tok"
$transport_s
[server.services.iperf]
bind_addr = "127.0.0.1:$pi"
[server.services.echo]
bind_addr = "127.0.0.1:$pe"
EOF
    cat >"$WORK/$name-client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$ctrl"
default_token = "$tok"
$transport_c
[client.services.iperf]
local_addr = "127.0.0.1:$IPERF_PORT"
[client.services.echo]
local_addr = "127.0.0.1:$ECHO_PORT"
EOF
    log "$name: server on 127.0.0.1:$ctrl"
    RUST_LOG=warn "$PEERBIN/rathole" --server "$WORK/$name-server.toml" >"$WORK/$name-server.log" 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    wait_listening "$ctrl" 10 || return 1
    RUST_LOG=warn "$PEERBIN/rathole" --client "$WORK/$name-client.toml" >"$WORK/$name-client.log" 2>&1 &
    local cpid=$!
    PIDS+=("$cpid")
    wait_listening "$pi" 20 && wait_listening "$pe" 20 || return 1
    alive "$spid" && alive "$cpid" || return 1
    P_IPERF[$name]=$pi; P_ECHO[$name]=$pe
    P_SRV[$name]="$spid"; P_CLI[$name]="$cpid"; P_USER[$name]=""
    if [ "$mode" = noise ]; then
        P_DESC[$name]="rathole 0.5.0, \`noise\` transport (Noise_NK_25519_ChaChaPoly_BLAKE2s, the default); visitor → server in plaintext"
    else
        P_DESC[$name]="rathole 0.5.0, \`tcp\` transport: plaintext, one TCP data channel per visitor connection"
    fi
}

start_bore() {
    local pi pe
    # bore's control port is fixed (7835).
    if awk 'NR>1 && $4=="0A" && substr($2, length($2)-4)==":1E9B" {f=1} END {exit !f}' /proc/net/tcp; then
        echo "port 7835 (bore's fixed control port) is in use" >"$WORK/bore-why"
        return 1
    fi
    pi=$(free_port); pe=$(free_port)
    log "bore: server on 127.0.0.1:7835"
    "$PEERBIN/bore" server --bind-addr 127.0.0.1 >"$WORK/bore-server.log" 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    wait_listening 7835 10 || return 1
    "$PEERBIN/bore" local "$IPERF_PORT" --local-host 127.0.0.1 --to 127.0.0.1 --port "$pi" >"$WORK/bore-local-iperf.log" 2>&1 &
    local c1=$!
    PIDS+=("$c1")
    "$PEERBIN/bore" local "$ECHO_PORT" --local-host 127.0.0.1 --to 127.0.0.1 --port "$pe" >"$WORK/bore-local-echo.log" 2>&1 &
    local c2=$!
    PIDS+=("$c2")
    wait_listening "$pi" 20 && wait_listening "$pe" 20 || return 1
    P_IPERF[bore]=$pi; P_ECHO[bore]=$pe
    P_SRV[bore]="$spid"; P_CLI[bore]="$c1 $c2"; P_USER[bore]=""
    P_DESC[bore]="bore 0.6.0 (plaintext; one \`bore local\` per port, a new server connection per visitor)"
}

start_ssh() {
    local sp pi pe user d="$WORK/ssh"
    mkdir -p "$d"
    sp=$(free_port); pi=$(free_port); pe=$(free_port)
    ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" >/dev/null && ssh-keygen -q -t ed25519 -N '' -f "$d/id" >/dev/null || return 1
    cp "$d/id.pub" "$d/authorized_keys"
    mkdir -p /run/sshd 2>/dev/null || true
    cat >"$d/sshd_config" <<EOF
Port $sp
ListenAddress 127.0.0.1
HostKey $d/host_key
AuthorizedKeysFile $d/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
PermitRootLogin prohibit-password
AllowTcpForwarding yes
GatewayPorts no
LogLevel ERROR
EOF
    log "ssh -R: sshd on 127.0.0.1:$sp"
    /usr/sbin/sshd -D -e -f "$d/sshd_config" >"$WORK/sshd.log" 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    wait_listening "$sp" 10 || return 1
    user=$(id -un)
    ssh -F /dev/null -N -i "$d/id" -p "$sp" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o ExitOnForwardFailure=yes -o LogLevel=ERROR \
        -R "127.0.0.1:$pi:127.0.0.1:$IPERF_PORT" -R "127.0.0.1:$pe:127.0.0.1:$ECHO_PORT" \
        "$user@127.0.0.1" >"$WORK/ssh.log" 2>&1 &
    local cpid=$!
    PIDS+=("$cpid")
    wait_listening "$pi" 20 && wait_listening "$pe" 20 || return 1
    alive "$cpid" || return 1
    # The session's processes (privileged monitor and the forwarding child).
    P_SRV[ssh]="$(descendants "$spid" | tr '\n' ' ')"
    [ -n "${P_SRV[ssh]// /}" ] || return 1
    P_IPERF[ssh]=$pi; P_ECHO[ssh]=$pe
    P_CLI[ssh]="$cpid"; P_USER[ssh]=""
    P_DESC[ssh]="OpenSSH $(ssh -V 2>&1 | cut -d, -f1 | sed 's/^OpenSSH_//') \`ssh -R\` (both ports on one connection, default cipher chacha20-poly1305) to a throwaway sshd; server side = the session's sshd processes"
}

start_adit || die "Adit did not start (logs below)"
PEERS+=(adit)
for m in tcp noise; do
    [ -x "$PEERBIN/rathole" ] || break
    if start_rathole "$m"; then PEERS+=("rathole-$m"); else SKIPPED+=("rathole $m: did not start ($(tail -n 2 "$WORK/rathole-$m-"*.log 2>/dev/null | tr '\n' ' '))"); fi
done
if [ -x "$PEERBIN/bore" ]; then
    if start_bore; then PEERS+=(bore); else SKIPPED+=("bore: did not start ($(cat "$WORK/bore-why" 2>/dev/null || tail -n 2 "$WORK"/bore-*.log 2>/dev/null | tr '\n' ' '))"); fi
fi
if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null; then
    if start_ssh; then PEERS+=(ssh); else SKIPPED+=("ssh -R: did not start ($(tail -n 2 "$WORK/sshd.log" "$WORK/ssh.log" 2>/dev/null | tr '\n' ' '))"); fi
else
    SKIPPED+=("ssh -R: OpenSSH is not installed")
fi
log "peers: ${PEERS[*]}"
[ ${#SKIPPED[@]} -gt 0 ] && log "not run: ${SKIPPED[*]}"

all_pids() { echo "${P_SRV[$1]} ${P_CLI[$1]} ${P_USER[$1]}"; }
check_alive() { # peer
    local pid
    for pid in $(all_pids "$1"); do
        alive "$pid" || die "a process of $1 (pid $pid) exited"
    done
}

# --- 5. measure ------------------------------------------------------------------------
RUNS="$WORK/runs.tsv"   # kind peer n path cpu_ticks
: >"$RUNS"
MEM="$WORK/mem.tsv"      # phase peer srv_kib cli_kib user_kib
: >"$MEM"
STALLS="$WORK/stalls.tsv" # peer test-after-which-it-stalled
: >"$STALLS"
declare -A STALLED
snapshot_mem() {
    local p
    for p in "${PEERS[@]}"; do
        [ "$p" = direct ] && continue
        printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$p" "$(rss_kib ${P_SRV[$p]})" "$(rss_kib ${P_CLI[$p]})" "$(rss_kib ${P_USER[$p]})" >>"$MEM"
    done
}
# After each test: 10 round trips on a new connection through every peer, 8 s
# at most. A peer whose tunnel no longer carries new connections is marked
# stalled (reported with the test that preceded it) and skipped from then on.
probe_all() { # test-name
    local p
    for p in "${PEERS[@]}"; do
        [ -n "${STALLED[$p]:-}" ] && continue
        if ! timeout 8 "$RR" ping --connect "127.0.0.1:${P_ECHO[$p]}" --count 10 --warmup 0 >/dev/null 2>>"$WORK/rr-client.log"; then
            sleep 2
            if ! timeout 8 "$RR" ping --connect "127.0.0.1:${P_ECHO[$p]}" --count 10 --warmup 0 >/dev/null 2>>"$WORK/rr-client.log"; then
                log "$p no longer carries new connections after: $1"
                STALLED[$p]=$1
                local detail=""
                if [ "$p" = adit ]; then
                    local opened ended
                    opened=$(grep -c 'stream connected' "$WORK/adit-agent.log" || true)
                    ended=$(grep -c -e 'stream closed' -e 'stream ended' "$WORK/adit-agent.log" || true)
                    detail="adit-agent's log: $opened streams connected to a target, $ended ended, so $((opened - ended)) still open; adit-server and the agent stay up and the node stays online"
                fi
                printf '%s\t%s\t%s\n' "$p" "$1" "$detail" >>"$STALLS"
            fi
        fi
    done
}
usable() { [ -z "${STALLED[$1]:-}" ]; }

run_iperf() { # kind peer n port flags...
    local kind=$1 peer=$2 n=$3 port=$4 out c0 c1
    shift 4
    usable "$peer" || return 0
    out="$WORK/iperf-$kind-$peer-$n.json"
    check_alive "$peer"
    c0=$(cpu_ticks $(all_pids "$peer"))
    if ! timeout $((SECS + 20)) iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -J "$@" >"$out" 2>>"$WORK/iperf-client.log"; then
        log "iperf3 $kind through $peer failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error","?"))' "$out" 2>/dev/null || echo '?')"
        start_iperf_server   # a broken test can leave iperf3 -s busy
    fi
    c1=$(cpu_ticks $(all_pids "$peer"))
    printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$peer" "$n" "$out" $((c1 - c0)) >>"$RUNS"
}

# CPU that other processes (e.g. a concurrent build) took during the measurements:
# whole-machine busy ticks minus this script's process tree (live and waited-for).
busy_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
tree_ticks() {
    local total=0 pid stat
    for pid in $$ $(descendants $$); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        set -- $stat
        total=$(( total + ${12} + ${13} + ${14} + ${15} ))
    done
    echo "$total"
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY0=$(busy_ticks); OWN0=$(tree_ticks); T0=$(date +%s.%N)
snapshot_mem idle

log "round trips, idle ($PINGS × 1 byte per peer)"
for p in "${PEERS[@]}"; do
    out="$WORK/rr-idle-$p.json"
    timeout 60 "$RR" ping --connect "127.0.0.1:${P_ECHO[$p]}" --count "$PINGS" --size 1 --max-secs 20 \
        >"$out" 2>>"$WORK/rr-client.log" || log "rr ping through $p failed"
    printf '%s\t%s\t%s\t%s\t%s\n' rr-idle "$p" 1 "$out" 0 >>"$RUNS"
done
probe_all "idle round trips"

for n in $(seq 1 "$ROUNDS"); do
    for p in "${PEERS[@]}"; do
        log "iperf3 1 stream → through $p (round $n/$ROUNDS, ${SECS}s)"
        run_iperf s1-fwd "$p" "$n" "${P_IPERF[$p]}"
    done
done
probe_all "iperf3 1 stream →"
for p in "${PEERS[@]}"; do
    log "iperf3 1 stream ← (-R) through $p"
    run_iperf s1-rev "$p" 1 "${P_IPERF[$p]}" -R
done
probe_all "iperf3 1 stream ← (-R)"
for p in "${PEERS[@]}"; do
    log "iperf3 8 streams → through $p"
    run_iperf s8-fwd "$p" 1 "${P_IPERF[$p]}" -P 8
done
probe_all "iperf3 8 streams →"

for p in "${PEERS[@]}"; do
    usable "$p" || continue
    log "round trips under bulk through $p (iperf3 ${BULK}s on the same tunnel port)"
    check_alive "$p"
    bulk="$WORK/iperf-bulk-$p.json"
    timeout $((BULK + 20)) iperf3 -c 127.0.0.1 -p "${P_ECHO[$p]}" -t "$BULK" -J >"$bulk" 2>>"$WORK/iperf-client.log" &
    bpid=$!
    sleep 1
    out="$WORK/rr-bulk-$p.json"
    timeout $((BULK + 20)) "$RR" ping --connect "127.0.0.1:${P_ECHO[$p]}" --count 1000000 --warmup 10 --size 1 \
        --max-secs $((BULK - 2)) >"$out" 2>>"$WORK/rr-client.log" || log "rr ping under bulk through $p failed"
    if ! wait "$bpid"; then
        log "bulk iperf3 through $p failed"
        start_iperf_server
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' rr-bulk "$p" 1 "$out" 0 >>"$RUNS"
    printf '%s\t%s\t%s\t%s\t%s\n' bulk "$p" 1 "$bulk" 0 >>"$RUNS"
done
probe_all "round trips under bulk"

# Where a round trip waits under bulk, for Adit and rathole tcp: the same round
# trips while the bulk is capped at 1 Gbit/s (the CPUs are then not saturated),
# and the scheduler's view (perf sched: run time, switches and the delay from
# wake-up to running of every thread) during an uncapped bulk.
SCHED_OK=0
if command -v perf >/dev/null && perf sched record -o "$WORK/sched-probe.data" -- true >/dev/null 2>&1; then
    SCHED_OK=1
fi
for p in adit rathole-tcp; do
    usable "$p" || continue
    log "round trips under 1 Gbit/s bulk through $p"
    bulk="$WORK/iperf-bulk1g-$p.json"
    timeout $((BULK + 20)) iperf3 -c 127.0.0.1 -p "${P_ECHO[$p]}" -t "$BULK" -b 1G -J >"$bulk" 2>>"$WORK/iperf-client.log" &
    bpid=$!
    sleep 1
    out="$WORK/rr-bulk1g-$p.json"
    timeout $((BULK + 20)) "$RR" ping --connect "127.0.0.1:${P_ECHO[$p]}" --count 1000000 --warmup 10 --size 1 \
        --max-secs $((BULK - 2)) >"$out" 2>>"$WORK/rr-client.log" || log "rr ping under 1 Gbit/s bulk through $p failed"
    wait "$bpid" || { log "capped bulk iperf3 through $p failed"; start_iperf_server; }
    printf '%s\t%s\t%s\t%s\t%s\n' rr-bulk1g "$p" 1 "$out" 0 >>"$RUNS"
    printf '%s\t%s\t%s\t%s\t%s\n' bulk1g "$p" 1 "$bulk" 0 >>"$RUNS"
    [ "$SCHED_OK" = 1 ] || continue
    log "perf sched: $p while round trips share the tunnel with a bulk transfer"
    timeout $((BULK + 20)) iperf3 -c 127.0.0.1 -p "${P_ECHO[$p]}" -t "$BULK" -J >/dev/null 2>>"$WORK/iperf-client.log" &
    bpid=$!
    sleep 1
    timeout $((BULK + 20)) "$RR" ping --connect "127.0.0.1:${P_ECHO[$p]}" --count 1000000 --warmup 10 --size 1 \
        --max-secs $((BULK - 2)) >/dev/null 2>>"$WORK/rr-client.log" &
    rpid=$!
    sleep 1
    perf sched record -a -o "$WORK/sched-$p.data" -- sleep 2 >/dev/null 2>&1 || true
    wait "$rpid" || true
    wait "$bpid" || start_iperf_server
    timeout 120 perf sched timehist -i "$WORK/sched-$p.data" 2>/dev/null >"$WORK/sched-$p.txt" || true
    rm -f "$WORK/sched-$p.data"
    echo "$(all_pids "$p")" >"$WORK/sched-$p.pids"
done

for p in "${PEERS[@]}"; do
    usable "$p" || continue
    log "new connections through $p (${CPS_SECS}s, $CPS_WORKERS workers)"
    check_alive "$p"
    out="$WORK/rr-cps-$p.json"
    c0=$(cpu_ticks $(all_pids "$p"))
    timeout $((CPS_SECS + 30)) "$RR" cps --connect "127.0.0.1:${P_ECHO[$p]}" --secs "$CPS_SECS" --workers "$CPS_WORKERS" \
        >"$out" 2>>"$WORK/rr-client.log" || log "rr cps through $p failed"
    c1=$(cpu_ticks $(all_pids "$p"))
    printf '%s\t%s\t%s\t%s\t%s\n' cps "$p" 1 "$out" $((c1 - c0)) >>"$RUNS"
    sleep 1   # let the tunnel close what the last connections left
done
# Time to first byte of one connection at a time: what a new connection costs
# through an established tunnel, without other connections queued on the CPUs.
for p in "${PEERS[@]}"; do
    usable "$p" || continue
    log "new connections one at a time through $p (2s)"
    out="$WORK/rr-cps1-$p.json"
    timeout 40 "$RR" cps --connect "127.0.0.1:${P_ECHO[$p]}" --secs 2 --workers 1 \
        >"$out" 2>>"$WORK/rr-client.log" || log "rr cps (1 worker) through $p failed"
    printf '%s\t%s\t%s\t%s\t%s\n' cps1 "$p" 1 "$out" 0 >>"$RUNS"
    sleep 1
done
probe_all "new connections (rr cps)"

# --- 6. profile Adit (perf, software clock) ----------------------------------------------
PROFILE_NOTE=""
if [ "$PROFILE_SECS" -gt 0 ] && usable adit; then
    if command -v perf >/dev/null && perf record -e cpu-clock -o "$WORK/perf-probe.data" -- true >/dev/null 2>&1; then
        ctx_switches() { # pids... → context switches of all their threads
            cat $(for p in "$@"; do echo /proc/"$p"/task/*/status; done) 2>/dev/null \
                | awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}'
        }
        profile() { # name "label:pid ..." command...
            local name=$1 targets=$2 t ppids=()
            shift 2
            for t in $targets; do
                perf record -e cpu-clock -F 997 -p "${t#*:}" -o "$WORK/perf-$name-${t%%:*}.data" \
                    -- sleep "$PROFILE_SECS" >/dev/null 2>&1 &
                ppids+=($!)
            done
            local cs0 cs1
            cs0=$(ctx_switches $(all_pids adit))
            "$@" >"$WORK/perf-$name.out" 2>/dev/null || true
            cs1=$(ctx_switches $(all_pids adit))
            echo $((cs1 - cs0)) >"$WORK/perf-$name.ctx"
            for t in "${ppids[@]}"; do wait "$t" || true; done
            for t in $targets; do
                timeout 120 perf report -i "$WORK/perf-$name-${t%%:*}.data" --stdio --no-children -n --sort dso,sym 2>/dev/null \
                    | grep -E '^ +[0-9.]+%' >"$WORK/perf-$name-${t%%:*}.txt" || true
            done
        }
        set -- ${P_USER[adit]}
        log "perf: Adit during a single-stream iperf3 (${PROFILE_SECS}s)"
        profile bulk "adit-server:${P_SRV[adit]} adit-agent:${P_CLI[adit]} adit-forward:$1" \
            timeout $((PROFILE_SECS + 20)) iperf3 -c 127.0.0.1 -p "${P_IPERF[adit]}" -t $((PROFILE_SECS + 1)) -J
        log "perf: Adit during rr ping, idle (${PROFILE_SECS}s)"
        profile rtt "adit-server:${P_SRV[adit]} adit-agent:${P_CLI[adit]} adit-forward:$2" \
            timeout $((PROFILE_SECS + 20)) "$RR" ping --connect "127.0.0.1:${P_ECHO[adit]}" --count 10000000 --max-secs $((PROFILE_SECS + 1))
        log "perf: Adit during rr cps (${PROFILE_SECS}s)"
        profile cps "adit-server:${P_SRV[adit]} adit-agent:${P_CLI[adit]} adit-forward:$2" \
            timeout $((PROFILE_SECS + 20)) "$RR" cps --connect "127.0.0.1:${P_ECHO[adit]}" --secs $((PROFILE_SECS + 1)) --workers "$CPS_WORKERS"
        probe_all "perf profiles"
    else
        PROFILE_NOTE="perf record -e cpu-clock does not work here; no profile taken"
    fi
fi

# Last, because it has stalled Adit's tunnel (see the report).
for p in "${PEERS[@]}"; do
    log "iperf3 8 streams ← (-R) through $p"
    run_iperf s8-rev "$p" 1 "${P_IPERF[$p]}" -P 8 -R
done
probe_all "iperf3 8 streams ← (-R)"
snapshot_mem load
for p in "${PEERS[@]}"; do check_alive "$p"; done

BUSY1=$(busy_ticks); OWN1=$(tree_ticks); T1=$(date +%s.%N)
OTHER_CPU=$(python3 -c 'import sys; b0,b1,o0,o1,t,t0,t1,n=map(float,sys.argv[1:]); print(f"{max(0.0,((b1-b0)-(o1-o0))/t):.0f} CPU s of {(t1-t0)*n:.0f} available ({(t1-t0):.0f} s × {n:.0f} CPUs)")' \
    "$BUSY0" "$BUSY1" "$OWN0" "$OWN1" "$TICKS" "$T0" "$T1" "$(nproc)")

# --- 7. WAN: two namespaces, veth, tc netem ------------------------------------------------
WAN_TSV="$WORK/wan.tsv"   # profile path n kind json
: >"$WAN_TSV"
WAN_NOTE=""
WAN_LINK=""
run_wan() {
    local a="adit-peers-a-$$" b="adit-peers-b-$$" sp url pw pin token online fi fe prof delay loss
    ip netns add "$a" 2>/dev/null || { WAN_NOTE="cannot create network namespaces (ip netns add failed)"; return 0; }
    NETNS+=("$a")
    ip netns add "$b" || { WAN_NOTE="cannot create network namespaces"; return 0; }
    NETNS+=("$b")
    ip link add "vpa$$" type veth peer name "vpb$$" || { WAN_NOTE="cannot create a veth pair"; return 0; }
    ip link set "vpa$$" netns "$a" && ip link set "vpb$$" netns "$b" || { WAN_NOTE="cannot move the veth ends"; return 0; }
    ip -n "$a" addr add 10.213.0.1/24 dev "vpa$$"; ip -n "$b" addr add 10.213.0.2/24 dev "vpb$$"
    ip -n "$a" link set lo up; ip -n "$b" link set lo up
    ip -n "$a" link set "vpa$$" up; ip -n "$b" link set "vpb$$" up
    local err link=veth wire_params="$WORK/wire.params"
    WAN_LINK="a veth pair with \`tc qdisc ... netem\` on both ends"
    if [ "${PEERS_WAN_NO_NETEM:-0}" != 1 ]; then  # (test hook: plumbing without netem)
        if ! err=$(ip netns exec "$a" tc qdisc add dev "vpa$$" root netem delay 25ms loss 0.5% 2>&1); then
            # No netem here: the same link made by bench/wire.py, two TUN devices joined by
            # a process that delays and drops packets, instead of the veth pair.
            ip -n "$a" link del "vpa$$" 2>/dev/null || true
            link=wire
            echo "25 0.5" >"$wire_params"
            python3 "$ROOT/bench/wire.py" "wta$$" "wtb$$" "$wire_params" >"$WORK/wire.log" 2>&1 &
            PIDS+=($!)
            for _ in $(seq 1 50); do grep -q '^ready' "$WORK/wire.log" && break; sleep 0.1; done
            grep -q '^ready' "$WORK/wire.log" || {
                WAN_NOTE="tc netem is not available on this kernel (\`tc qdisc add ... netem\`: ${err//$'\n'/ }) and bench/wire.py did not start ($(tail -n 1 "$WORK/wire.log")); the WAN part was skipped"
                return 0; }
            ip link set "wta$$" netns "$a" && ip link set "wtb$$" netns "$b" || { WAN_NOTE="cannot move the TUN devices"; return 0; }
            ip -n "$a" addr add 10.213.0.1/24 dev "wta$$"; ip -n "$b" addr add 10.213.0.2/24 dev "wtb$$"
            ip -n "$a" link set "wta$$" up; ip -n "$b" link set "wtb$$" up
            WAN_LINK="\`bench/wire.py\` (this kernel has no netem: \`tc qdisc add ... netem\` answers \"${err//$'\n'/ }\"): two TUN devices, one in each namespace, joined by a userspace process that delays every packet and drops packets at random in each direction, at most 1000 packets waiting per direction (netem's default limit)"
        else
            ip netns exec "$b" tc qdisc add dev "vpb$$" root netem delay 25ms loss 0.5% || { WAN_NOTE="tc netem failed on the second veth end"; return 0; }
        fi
    fi
    log "WAN: namespaces $a (server, client) and $b (device), $link 10.213.0.1 ↔ 10.213.0.2"
    # Device side (b): targets on its loopback for the agent, and on the veth address for direct.
    local wi=5201 we=5202
    ip netns exec "$b" iperf3 -s -B 127.0.0.1 -p "$wi" >"$WORK/wan-iperf-lo.log" 2>&1 & PIDS+=($!)
    ip netns exec "$b" iperf3 -s -B 10.213.0.2 -p "$wi" >"$WORK/wan-iperf-veth.log" 2>&1 & PIDS+=($!)
    ip netns exec "$b" "$RR" serve --listen "127.0.0.1:$we" --fallback "127.0.0.1:$wi" >"$WORK/wan-rr-lo.log" 2>&1 & PIDS+=($!)
    ip netns exec "$b" "$RR" serve --listen "10.213.0.2:$we" --fallback "10.213.0.2:$wi" >"$WORK/wan-rr-veth.log" 2>&1 & PIDS+=($!)
    wait_listening "$wi" 10 "$b" && wait_listening "$we" 10 "$b" || { WAN_NOTE="WAN targets did not start"; return 0; }
    # Server side (a): adit-server on the veth address, the forwards on a's loopback.
    sp=8443; url="https://10.213.0.1:$sp"
    pw="bench-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    local home="$WORK/wan-home"
    mkdir -p "$home"
    ADIT_BOOTSTRAP_ADMIN_PASSWORD="$pw" ip netns exec "$a" "$BIN/adit-server" start --data-dir "$WORK/wan-data" \
        --listen "10.213.0.1:$sp" --public-url "$url" >"$WORK/wan-server.log" 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    pin=""
    for _ in $(seq 1 300); do
        alive "$spid" || break
        pin=$(sed -n 's/^CA fingerprint: \(sha256:[0-9A-Fa-f:]*\).*$/\1/p' "$WORK/wan-server.log" | head -n 1)
        [ -n "$pin" ] && break
        sleep 0.1
    done
    [ -n "$pin" ] && wait_listening "$sp" 10 "$a" || { WAN_NOTE="adit-server did not start in the namespace"; return 0; }
    printf '%s\n' "$pw" | ADIT_HOME="$home" ip netns exec "$a" "$BIN/adit" login --server "$url" --user admin \
        --password-stdin --ca-pin "$pin" >"$WORK/wan-login.log" 2>&1 || { WAN_NOTE="adit login failed in the namespace"; return 0; }
    token=$(ADIT_HOME="$home" ip netns exec "$a" "$BIN/adit" tokens create --ttl 10m 2>>"$WORK/wan-login.log") \
        || { WAN_NOTE="adit tokens create failed in the namespace"; return 0; }
    ip netns exec "$b" "$BIN/adit-agent" enroll --server "$url" --token "$token" --name wan --state-dir "$WORK/wan-agent" \
        >"$WORK/wan-enroll.log" 2>&1 || { WAN_NOTE="adit-agent enroll failed over the veth"; return 0; }
    ip netns exec "$b" "$BIN/adit-agent" run --state-dir "$WORK/wan-agent" --allow "127.0.0.1:$wi" --allow "127.0.0.1:$we" \
        >"$WORK/wan-agent.log" 2>&1 &
    PIDS+=($!)
    online=0
    for _ in $(seq 1 300); do
        if ADIT_HOME="$home" ip netns exec "$a" "$BIN/adit" nodes show wan --output json 2>/dev/null \
            | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("status")=="online" else 1)' 2>/dev/null; then
            online=1; break
        fi
        sleep 0.2
    done
    [ "$online" = 1 ] || { WAN_NOTE="the agent did not come online over the veth"; return 0; }
    fi=6201; fe=6202
    ADIT_HOME="$home" ip netns exec "$a" "$BIN/adit" forward wan "127.0.0.1:$fi:127.0.0.1:$wi" >/dev/null 2>"$WORK/wan-fwd1.log" & PIDS+=($!)
    ADIT_HOME="$home" ip netns exec "$a" "$BIN/adit" forward wan "127.0.0.1:$fe:127.0.0.1:$we" >/dev/null 2>"$WORK/wan-fwd2.log" & PIDS+=($!)
    wait_listening "$fi" 30 "$a" && wait_listening "$fe" 30 "$a" || { WAN_NOTE="adit forward did not start in the namespace"; return 0; }
    for prof in "25ms 0.5%" "100ms 2%"; do
        delay=${prof% *}; loss=${prof#* }
        if [ "$link" = wire ]; then
            echo "${delay%ms} ${loss%\%}" >"$wire_params"
            sleep 0.5
        elif [ "${PEERS_WAN_NO_NETEM:-0}" != 1 ]; then
            ip netns exec "$a" tc qdisc replace dev "vpa$$" root netem delay "$delay" loss "$loss"
            ip netns exec "$b" tc qdisc replace dev "vpb$$" root netem delay "$delay" loss "$loss"
        fi
        local tag="${delay}-${loss}" n path host port
        for n in 1 2; do
            for path in direct adit; do
                if [ "$path" = direct ]; then host=10.213.0.2; port=$wi; else host=127.0.0.1; port=$fi; fi
                log "WAN $delay/$loss each way: iperf3 1 stream through $path (#$n, ${WAN_SECS}s)"
                timeout $((WAN_SECS + 40)) ip netns exec "$a" iperf3 -c "$host" -p "$port" -t "$WAN_SECS" -J \
                    >"$WORK/wan-$tag-$path-$n.json" 2>>"$WORK/wan-iperf-client.log" || true
                printf '%s\t%s\t%s\t%s\t%s\n' "$tag" "$path" "$n" iperf "$WORK/wan-$tag-$path-$n.json" >>"$WAN_TSV"
            done
        done
        for path in direct adit; do
            if [ "$path" = direct ]; then host=10.213.0.2; port=$we; else host=127.0.0.1; port=$fe; fi
            log "WAN $delay/$loss: round trips under bulk through $path"
            timeout $((WAN_SECS + 40)) ip netns exec "$a" iperf3 -c "$host" -p "$port" -t "$WAN_SECS" -J \
                >"$WORK/wan-$tag-$path-bulk.json" 2>>"$WORK/wan-iperf-client.log" &
            local bp=$!
            sleep 1
            timeout $((WAN_SECS + 40)) ip netns exec "$a" "$RR" ping --connect "$host:$port" --count 100000 --warmup 3 \
                --max-secs $((WAN_SECS - 2)) >"$WORK/wan-$tag-$path-rr.json" 2>>"$WORK/rr-client.log" || true
            wait "$bp" || true
            printf '%s\t%s\t%s\t%s\t%s\n' "$tag" "$path" 1 rr "$WORK/wan-$tag-$path-rr.json" >>"$WAN_TSV"
        done
    done
    [ "${PEERS_WAN_NO_NETEM:-0}" = 1 ] && WAN_NOTE="test run without netem (PEERS_WAN_NO_NETEM=1): no delay, no loss"
    return 0
}
if [ "$QUICK" = 1 ]; then
    WAN_NOTE="not run in --quick mode"
elif ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    WAN_NOTE="\`ip\`/\`tc\` (iproute2) are not installed; the WAN part was skipped"
else
    run_wan
fi

# --- 8. report -------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
[ -n "$CPU_MODEL" ] || CPU_MODEL=$(uname -m)
# The commit, resolved from .git (what `git rev-parse --short HEAD` prints).
commit_of() {
    python3 - "$ROOT" <<'EOF'
import os, sys
root = sys.argv[1]
gitdir = os.path.join(root, ".git")
try:
    if os.path.isfile(gitdir):
        gitdir = open(gitdir).read().split(":", 1)[1].strip()
        gitdir = os.path.join(root, gitdir) if not os.path.isabs(gitdir) else gitdir
    common = gitdir
    if os.path.isfile(os.path.join(gitdir, "commondir")):
        common = os.path.normpath(os.path.join(gitdir, open(os.path.join(gitdir, "commondir")).read().strip()))
    head = open(os.path.join(gitdir, "HEAD")).read().strip()
    sha = head
    if head.startswith("ref: "):
        ref, sha = head[5:], None
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
META="$WORK/meta.json"
python3 - "$META" <<EOF
import json, sys
json.dump({
    "date": "$(date -u)",
    "ncpu": "$(nproc)",
    "cpu": """$CPU_MODEL""",
    "kernel": "$(uname -r)",
    "commit": "${ADIT_COMMIT:-$(commit_of)}",
    "command": "$COMMAND",
    "load_before": "$LOAD_BEFORE",
    "other_cpu": "$OTHER_CPU",
    "secs": $SECS, "rounds": $ROUNDS, "pings": $PINGS, "bulk": $BULK,
    "cps_secs": $CPS_SECS, "cps_workers": $CPS_WORKERS, "wan_secs": $WAN_SECS,
    "ticks": $TICKS, "quick": $QUICK, "profile_secs": $PROFILE_SECS,
    "elapsed": $(( $(date +%s) - RUN_START )),
}, open(sys.argv[1], "w"))
EOF
{
    for p in "${PEERS[@]}"; do printf 'desc\t%s\t%s\n' "$p" "${P_DESC[$p]}"; done
    for s in "${SKIPPED[@]}"; do printf 'skipped\t%s\n' "$s"; done
    printf 'wan_note\t%s\n' "$WAN_NOTE"
    printf 'wan_link\t%s\n' "$WAN_LINK"
    printf 'profile_note\t%s\n' "$PROFILE_NOTE"
} >"$WORK/notes.tsv"

REPORT="$WORK/report.md"
python3 - "$WORK" "$ROOT/bench/RESULTS.md" >"$REPORT" <<'PYEOF'
import json, os, re, statistics, sys
work, results_md = sys.argv[1], sys.argv[2]
meta = json.load(open(os.path.join(work, "meta.json")))
ticks = meta["ticks"]

def load(path):
    try:
        return json.load(open(path))
    except Exception:
        return None

runs = {}
for line in open(os.path.join(work, "runs.tsv")):
    kind, peer, n, path, cpu = line.rstrip("\n").split("\t")
    runs.setdefault((kind, peer), []).append((load(path), int(cpu) / ticks))

desc, skipped, notes = {}, [], {}
for line in open(os.path.join(work, "notes.tsv")):
    parts = line.rstrip("\n").split("\t")
    if parts[0] == "desc":
        desc[parts[1]] = parts[2]
    elif parts[0] == "skipped":
        skipped.append(parts[1])
    else:
        notes[parts[0]] = parts[1] if len(parts) > 1 else ""
peers = list(desc)
stalls = {}
for line in open(os.path.join(work, "stalls.tsv")):
    peer, after, detail = (line.rstrip("\n").split("\t") + [""])[:3]
    stalls[peer] = (after, detail)
mem = {}
for line in open(os.path.join(work, "mem.tsv")):
    phase, peer, s, c, u = line.rstrip("\n").split("\t")
    mem[(phase, peer)] = (int(s), int(c), int(u))

NAMES = {"direct": "direct loopback (ceiling)", "adit": "**Adit**", "rathole-tcp": "rathole tcp",
         "rathole-noise": "rathole noise", "bore": "bore", "ssh": "OpenSSH `ssh -R`"}

def iperf_ok(j):
    return j is not None and "error" not in j and "end" in j and "sum_received" in j["end"]

def gbps(kind, peer):
    vals = [j["end"]["sum_received"]["bits_per_second"] / 1e9 for j, _ in runs.get((kind, peer), []) if iperf_ok(j)]
    return statistics.median(vals) if vals else None

def gbps_all(kind, peer):
    return [j["end"]["sum_received"]["bits_per_second"] / 1e9 for j, _ in runs.get((kind, peer), []) if iperf_ok(j)]

def cpu_per_gb(peer):
    cpu = gb = 0.0
    for kind in ("s1-fwd", "s1-rev", "s8-fwd", "s8-rev"):
        for j, c in runs.get((kind, peer), []):
            if iperf_ok(j):
                cpu += c
                gb += j["end"]["sum_received"]["bytes"] / 1e9
    return cpu / gb if gb else None

def rr(kind, peer):
    r = runs.get((kind, peer))
    return r[0][0] if r and r[0][0] else None

def fmt(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"

def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b

def fr(x):
    return "–" if x is None else f"{x:.2f}×"

def lat(j):
    if not j or j.get("p50_us") is None:
        return None
    return (j["p50_us"], j["p99_us"], j["p999_us"])

def fmt_lat(t):
    return "–" if t is None else f"{t[0]:.0f} / {t[1]:.0f} / {t[2]:.0f}"

def mib(k):
    return f"{k / 1024:.1f}"

# Figures per peer
fig = {}
for p in peers:
    f = {}
    f["s1f"] = gbps("s1-fwd", p); f["s1r"] = gbps("s1-rev", p)
    f["s8f"] = gbps("s8-fwd", p); f["s8r"] = gbps("s8-rev", p)
    f["cpu"] = cpu_per_gb(p) if p != "direct" else None
    f["idle"] = lat(rr("rr-idle", p)); f["bulk"] = lat(rr("rr-bulk", p))
    f["idle_n"] = (rr("rr-idle", p) or {}).get("n")
    f["bulk_n"] = (rr("rr-bulk", p) or {}).get("n")
    b = runs.get(("bulk", p))
    f["bulk_gbps"] = b[0][0]["end"]["sum_received"]["bits_per_second"] / 1e9 if b and iperf_ok(b[0][0]) else None
    c = rr("cps", p)
    f["cps"] = c.get("cps") if c else None
    f["cps_err"] = c.get("errors") if c else None
    f["cps_first_err"] = c.get("first_error") if c else None
    c1 = rr("cps1", p)
    f["ttfb"] = (c1["p50_us"], c1["p99_us"]) if c1 and c1.get("p50_us") is not None else None
    cpsr = runs.get(("cps", p))
    f["cps_cpu"] = (cpsr[0][1] / c["n"] * 1e6) if (cpsr and c and c.get("n")) else None
    f["mem_idle"] = mem.get(("idle", p)); f["mem_load"] = mem.get(("load", p))
    fig[p] = f

def mem_cell(m, p):
    if m is None:
        return "–"
    s, c, u = m
    cell = f"{mib(s)} / {mib(c)}"
    if p == "adit":
        cell += f" (+{mib(u)} forwards)"
    return cell

def row(p):
    f = fig[p]
    bulk = fmt_lat(f["bulk"])
    if f["bulk_gbps"] is not None:
        bulk += f" ({f['bulk_gbps']:.1f})"
    cps = "–" if f["cps"] is None else f"{f['cps']:.0f}"
    if f["cps_err"]:
        cps += f" ({f['cps_err']} errors)"
    ttfb = "–" if f["ttfb"] is None else f"{f['ttfb'][0]:.0f} / {f['ttfb'][1]:.0f}"
    return [NAMES.get(p, p), fmt(f["s1f"]), fmt(f["s1r"]), fmt(f["s8f"]), fmt(f["s8r"]),
            fmt(f["cpu"]), fmt_lat(f["idle"]), bulk, cps, ttfb, fmt(f["cps_cpu"], 0),
            mem_cell(f["mem_idle"], p), mem_cell(f["mem_load"], p)]

def rrow(p):
    a, f = fig["adit"], fig[p]
    def lr(x, y):
        if x is None or y is None:
            return "–"
        return " / ".join(f"{ratio(u, v):.2f}" if v else "–" for u, v in zip(x, y)) + "×"
    def msum(m, adit):
        if m is None:
            return None
        return m[0] + m[1] + (m[2] if adit else 0)
    ttfb = "–"
    if a["ttfb"] and f["ttfb"]:
        ttfb = f"{a['ttfb'][0] / f['ttfb'][0]:.2f} / {a['ttfb'][1] / f['ttfb'][1]:.2f}×"
    return [f"*Adit ÷ {NAMES.get(p, p).strip('*')}*", fr(ratio(a["s1f"], f["s1f"])), fr(ratio(a["s1r"], f["s1r"])),
            fr(ratio(a["s8f"], f["s8f"])), fr(ratio(a["s8r"], f["s8r"])), fr(ratio(a["cpu"], f["cpu"])),
            lr(a["idle"], f["idle"]), lr(a["bulk"], f["bulk"]), fr(ratio(a["cps"], f["cps"])), ttfb,
            fr(ratio(a["cps_cpu"], f["cps_cpu"])),
            "total " + fr(ratio(msum(a["mem_idle"], True), msum(f["mem_idle"], False))) if p != "direct" else "–",
            "total " + fr(ratio(msum(a["mem_load"], True), msum(f["mem_load"], False))) if p != "direct" else "–"]

out = []
W = out.append
W("## Side by side with other tunnels (`bench/peers.sh`)")
W("")
W(f"- date: {meta['date']}; run time {meta['elapsed']} s")
W(f"- machine: {meta['ncpu']} CPUs ({meta['cpu']}), Linux {meta['kernel']}, loopback; load average before the measurements: "
  f"{meta['load_before']}, after: {' '.join(open('/proc/loadavg').read().split()[0:3])}; other processes during the loopback "
  f"measurements: {meta['other_cpu']}")
W(f"- commit: {meta['commit']}")
W(f"- command: `{meta['command']}`")
W("- peers (set up by the script, all on 127.0.0.1, each reaching the same two targets: `iperf3 -s` and "
  "`rr serve`, an echo server that relays non-rr connections to the iperf3 server so bulk and round trips share one tunnel port):")
for p in peers:
    W(f"  - {NAMES.get(p, p).strip('*')}: {desc[p]}")
for s in skipped:
    W(f"  - **not run**: {s}")
W(f"- method: peers alternate within each test. iperf3 `-t {meta['secs']}`: 1 stream client→server "
  f"({meta['rounds']} round{'s' if meta['rounds'] > 1 else ''}, median), then 1 stream `-R`, 8 streams (`-P 8`) once each, and 8 streams `-R` "
  f"last (after the round trips, new connections and profiles); Gbit/s = `end.sum_received`. CPU s/GB: utime+stime of the tunnel processes "
  f"(/proc/PID/stat; Adit: server, agent and forward) over all four iperf3 tests ÷ GB received. "
  f"Round trips: `rr ping`, 1-byte messages one at a time on one connection, {meta['pings']} idle; under bulk: as many as fit "
  f"in {meta['bulk'] - 2} s while `iperf3 -t {meta['bulk']}` runs through the same tunnel port (Gbit/s of that bulk in brackets). "
  f"New connections: `rr cps`, {meta['cps_workers']} workers for {meta['cps_secs']} s, each connection "
  f"connect → 1 byte → echo → close; µs CPU/conn = tunnel processes' CPU ÷ connections; first byte = connect start → echo "
  f"received, with one connection at a time (`rr cps --workers 1`, 2 s). "
  f"RSS: VmRSS server / client side in MiB (ssh: the session's sshd processes / ssh; Adit: adit-server / adit-agent, plus the two `adit forward` processes), "
  f"idle after setup and after all the tests.")
W("- caveat: 2 cores shared by the iperf3 or rr ends, the echo server and every tunnel process, so every path is CPU-bound "
  "and figures move by tens of percent between runs; compare ratios within this run. Adit encrypts both hops "
  "(user → server and server → device); rathole and bore carry the user → server hop in plaintext and rathole tcp and bore "
  "do not encrypt at all.")
W("")
hdr = ["peer", "1 stream → Gbit/s", "1 stream ←", "8 streams →", "8 streams ←", "CPU s/GB",
       "RTT idle p50 / p99 / p99.9 µs", "RTT under bulk p50 / p99 / p99.9 µs (bulk Gbit/s)", "conn/s",
       "first byte p50 / p99 µs (1 at a time)", "µs CPU / conn", "RSS idle MiB", "RSS after load MiB"]
W("| " + " | ".join(hdr) + " |")
W("|" + " --- |" * len(hdr))
W("| " + " | ".join(row("direct")) + " |")
W("| " + " | ".join(row("adit")) + " |")
for p in peers:
    if p in ("direct", "adit"):
        continue
    W("| " + " | ".join(row(p)) + " |")
for p in peers:
    if p == "adit":
        continue
    W("| " + " | ".join(rrow(p)) + " |")
W("")
W("Ratio rows: Adit's figure ÷ the peer's (throughput and conn/s: higher is better for Adit; latency, CPU and memory: lower is better).")
for p, (after, detail) in stalls.items():
    W(f"- **{NAMES.get(p, p).strip('*')} stalled**: after \"{after}\" a new connection through it got no echo within 8 s (twice, 2 s apart); "
      f"its later tests were skipped (– in the table){'; ' + detail if detail else ''}. The 8-streams-← test runs last because it "
      "has stalled Adit's tunnel in earlier runs.")
for p in peers:
    e = fig[p]
    if e["cps_err"]:
        W(f"- {NAMES.get(p, p).strip('*')}: {e['cps_err']} failed connections in `rr cps`, first: `{e['cps_first_err']}`")
W("")

# WAN
wan = {}
wan_path = os.path.join(work, "wan.tsv")
for line in open(wan_path):
    tag, path, n, kind, f = line.rstrip("\n").split("\t")
    wan.setdefault((tag, path, kind), []).append(load(f))
wan_res = {}
if wan:
    W("### WAN (two network namespaces)")
    W("")
    if notes.get("wan_link"):
        W(f"Link: {notes['wan_link']}. Direct: iperf3 and rr from one namespace to the targets in the other; Adit: "
          f"`adit forward` and adit-server in one namespace, the agent in the other (its tunnel crosses the link), the targets "
          f"on the agent's loopback.")
        W("")
    if notes.get("wan_note"):
        W(f"Note: {notes['wan_note']}")
        W("")
    W("| link | direct 1 stream Gbit/s | Adit 1 stream Gbit/s | Adit ÷ direct | RTT under bulk p50 / p99 ms: direct | Adit |")
    W("| --- | --- | --- | --- | --- | --- |")
    for tag, label in (("25ms-0.5%", "25 ms + 0.5% loss each way (50 ms RTT)"), ("100ms-2%", "100 ms + 2% loss each way (200 ms RTT)")):
        d = [j["end"]["sum_received"]["bits_per_second"] / 1e9 for j in wan.get((tag, "direct", "iperf"), []) if iperf_ok(j)]
        a = [j["end"]["sum_received"]["bits_per_second"] / 1e9 for j in wan.get((tag, "adit", "iperf"), []) if iperf_ok(j)]
        dm = statistics.median(d) if d else None
        am = statistics.median(a) if a else None
        wan_res[tag] = (dm, am)
        def ms(js):
            j = js[0] if js else None
            if not j or j.get("p50_us") is None:
                return "–"
            return f"{j['p50_us'] / 1000:.1f} / {j['p99_us'] / 1000:.1f} (n={j['n']})"
        W(f"| {label} | {fmt(dm, 3)} ({', '.join(f'{x:.3f}' for x in d)}) | {fmt(am, 3)} ({', '.join(f'{x:.3f}' for x in a)}) | "
          f"{fr(ratio(am, dm))} | {ms(wan.get((tag, 'direct', 'rr')))} | {ms(wan.get((tag, 'adit', 'rr')))} |")
    W("")

# Profiles
def read_profile(name):
    prof = {}
    for label in ("adit-server", "adit-agent", "adit-forward"):
        path = os.path.join(work, f"perf-{name}-{label}.txt")
        if not os.path.exists(path):
            continue
        rows = []
        for line in open(path):
            m = re.match(r"^\s*([\d.]+)%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$", line)
            if m:
                rows.append((float(m.group(1)), int(m.group(2)), m.group(3), m.group(4), m.group(5)))
        if rows:
            prof[label] = rows
    return prof

def short(sym):
    sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
    sym = re.sub(r"<[^<>]*>", "<…>", sym)
    return sym if len(sym) <= 70 else sym[:67] + "…"

def profile_lines(name, secs):
    prof = read_profile(name)
    lines = []
    for label, rows in prof.items():
        samples = sum(r[1] for r in rows)
        kern = sum(r[0] for r in rows if r[3] == "k")
        crypto = sum(r[0] for r in rows if re.search(r"aes|gcm|ghash|chacha|poly1305|sha256|p256|ecdsa|bn_|ring_core|fiat", r[4], re.I))
        top = ", ".join(f"{short(r[4])} {r[0]:.0f}%" for r in rows[:5])
        lines.append(f"  - {label}: {samples / (997 * secs) * 100:.0f}% of a core; kernel {kern:.0f}%, crypto {crypto:.0f}%; top: {top}")
    return lines

# Targets
a = fig["adit"]
def g(p, k):
    return fig.get(p, {}).get(k)

agent_doc = None
try:
    txt = open(results_md).read()
    sec = txt[txt.index("## Agent memory when idle"):]
    sec = sec[:sec.find("\n## ", 3) if "\n## " in sec[3:] else len(sec)]
    # Table rows: | build | binary size | VmRSS | ...; the smallest VmRSS and its build.
    rows = re.findall(r"^\| ([^|]+) \| [^|]+ \| ([\d,]+) kB \|", sec, re.M)
    if rows:
        build, kb = min(rows, key=lambda r: int(r[1].replace(",", "")))
        agent_doc = (int(kb.replace(",", "")), build.strip())
except ValueError:
    pass

targets = []
def target(key, text, value, ok):
    targets.append((key, text, value, ok))

rt, rn = g("rathole-tcp", "s1f"), g("rathole-noise", "s1f")
r = ratio(a["s1f"], rt)
target("tput_tcp", "1 stream ≥ 1.2× rathole tcp", f"{fmt(a['s1f'])} vs {fmt(rt)} Gbit/s = {fr(r)}", None if r is None else r >= 1.2)
r = ratio(a["s1f"], rn)
target("tput_noise", "1 stream ≥ 3× rathole noise", f"{fmt(a['s1f'])} vs {fmt(rn)} Gbit/s = {fr(r)}", None if r is None else r >= 3)
d = fig["direct"]
add50 = a["idle"][0] - d["idle"][0] if a["idle"] and d["idle"] else None
target("rtt_idle", "added RTT p50 idle ≤ 30 µs", f"{fmt(add50, 0)} µs (Adit {a['idle'][0] if a['idle'] else '–'} − direct {d['idle'][0] if d['idle'] else '–'})",
       None if add50 is None else add50 <= 30)
add99 = a["bulk"][1] - d["bulk"][1] if a["bulk"] and d["bulk"] else None
target("rtt_bulk", "added RTT p99 under bulk ≤ 1 ms", f"{fmt(add99, 0)} µs (Adit {a['bulk'][1] if a['bulk'] else '–'} − direct {d['bulk'][1] if d['bulk'] else '–'})",
       None if add99 is None else add99 <= 1000)
r = ratio(a["cps"], g("rathole-tcp", "cps"))
rn2 = ratio(a["cps"], g("rathole-noise", "cps"))
target("cps", "connections/s ≥ 1.5× rathole", f"{fmt(a['cps'], 0)} vs {fmt(g('rathole-tcp', 'cps'), 0)} (tcp) = {fr(r)}; vs noise {fr(rn2)}",
       None if r is None else r >= 1.5)
if a["ttfb"] and a["idle"] and d["ttfb"] and d["idle"]:
    # A new connection's first exchange through the tunnel costs one tunnel round trip
    # more than direct when nothing else is added: connect, open and the echo's way.
    extra_ttfb = a["ttfb"][0] - d["ttfb"][0]
    extra_rtt = a["idle"][0] - d["idle"][0]
    target("ttfb", "new connection ≤ 1 tunnel round trip (first byte p50, one connection at a time, minus direct's ≤ idle RTT p50 minus direct's)",
           f"{extra_ttfb:.0f} µs (Adit {a['ttfb'][0]:.0f} − direct {d['ttfb'][0]:.0f}) vs one tunnel round trip {extra_rtt:.0f} µs "
           f"(= {extra_ttfb / extra_rtt:.1f} round trips)" if extra_rtt > 0 else "–", extra_ttfb <= extra_rtt)
agent_kib = a["mem_idle"][1] if a["mem_idle"] else None
doc = f"; smallest build ({agent_doc[1]}): {agent_doc[0]:,} kB (`bench/agent-rss.sh`, section \"Agent memory when idle\")" if agent_doc else ""
target("rss", "agent idle RSS ≤ 5 MB", f"this run (release build): {fmt(agent_kib / 1024 if agent_kib else None, 1)} MiB{doc}",
       (agent_doc[0] if agent_doc else agent_kib or 1e9) <= 5_000_000 / 1024)  # /proc's kB are KiB
if "25ms-0.5%" in wan_res and wan_res["25ms-0.5%"][0] and not notes.get("wan_note", "").startswith("test run"):
    dm, am = wan_res["25ms-0.5%"]
    r = ratio(am, dm)
    target("wan", "50 ms / 0.5% loss: 1 stream ≥ 80% of direct", f"{fr(r)}", None if r is None else r >= 0.8)
else:
    target("wan", "50 ms / 0.5% loss: 1 stream ≥ 80% of direct", notes.get("wan_note") or "not measured", None)

W("### Issue 6 targets")
W("")
W("| target | this run | met |")
W("| --- | --- | --- |")
for key, text, value, ok in targets:
    W(f"| {text} | {value} | {'–' if ok is None else ('yes' if ok else '**no**')} |")
W("")

def ctx_per(name, unit):
    try:
        ctx = int(open(os.path.join(work, f"perf-{name}.ctx")).read())
        j = json.load(open(os.path.join(work, f"perf-{name}.out")))
    except Exception:
        return None
    if unit == "n":
        n = j.get("n")
    else:
        n = j["end"]["sum_received"]["bytes"] / 1e6 if iperf_ok(j) else None
    return ctx / n if n else None

ctx_rtt, ctx_cps, ctx_mb = ctx_per("rtt", "n"), ctx_per("cps", "n"), ctx_per("bulk", "mb")
def cs(x, what):
    return f"{x:.1f} context switches of Adit's threads per {what}" if x is not None else "context switches not measured"
rt_cpu, rn_cpu = g("rathole-tcp", "cpu"), g("rathole-noise", "cpu")
def share_range(name, pattern):
    vals = [sum(r[0] for r in rows if re.search(pattern, r[4], re.I)) for rows in read_profile(name).values()]
    return f"{min(vals):.0f}–{max(vals):.0f} %" if vals else "?"
CRYPTO = r"aes|gcm|ghash|chacha|poly1305|sha256|p256|ecdsa|bn_|ring_core|fiat"
crypto_bulk, memmove_bulk = share_range("bulk", CRYPTO), share_range("bulk", r"memmove|memcpy")
vals = [sum(r[0] for r in rows if r[3] == "k") for rows in read_profile("bulk").values()]
kernel_bulk = f"{min(vals):.0f}–{max(vals):.0f} %" if vals else "?"
def added(p):
    x, d0 = g(p, "idle"), fig["direct"]["idle"]
    return x[0] - d0[0] if x and d0 else None
add_adit, add_rt = added("adit"), added("rathole-tcp")
vals = [sum(r[1] for r in rows) / (997 * (meta.get("profile_secs") or 4)) * 100 for rows in read_profile("bulk").values()]
core_bulk = f"{min(vals):.0f}–{max(vals):.0f} % of a core" if vals else "? % of a core"
def sched(peer):
    """Scheduler figures over the `perf sched` window for `peer`'s tunnel processes:
    (their run time as a share of all CPUs, switches per second, mean and p99 delay
    from wake-up to running in µs, everything's run time as a share of all CPUs)."""
    try:
        pids = set(open(os.path.join(work, f"sched-{peer}.pids")).read().split())
        lines = open(os.path.join(work, f"sched-{peer}.txt")).read().splitlines()
    except OSError:
        return None
    t0 = t1 = None
    own_run = all_run = 0.0
    delays = []
    for line in lines:
        m = re.match(r"\s*([\d.]+)\s+\[\d+\]\s+(.*?)\[(\d+)(?:/(\d+))?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)
        if not m:
            continue
        t = float(m.group(1))
        t0 = t if t0 is None else t0
        t1 = t
        name, pid = m.group(2), m.group(4) or m.group(3)
        run, delay = float(m.group(7)), float(m.group(6))
        if name.startswith("<idle>") or name.startswith("perf"):
            continue
        all_run += run
        if pid in pids:
            own_run += run
            delays.append(delay * 1000)
    if not delays or t1 is None or t1 <= t0:
        return None
    secs = t1 - t0
    ncpu = int(meta["ncpu"])
    delays.sort()
    return (own_run / 1000 / (secs * ncpu) * 100, len(delays) / secs, statistics.mean(delays),
            delays[min(len(delays) - 1, int(0.99 * len(delays)))], all_run / 1000 / (secs * ncpu) * 100)

def sched_text(peer, label):
    x = sched(peer)
    if not x:
        return f"{label}: not measured"
    return (f"{label}'s processes ran {x[0]:.0f} % of both CPUs (everything {x[4]:.0f} %), switching {x[1]:.0f} times a second, "
            f"each wake-up waiting {x[2]:.0f} µs on average for a CPU (p99 {x[3]:.0f} µs)")

def capped(peer):
    t = lat(rr("rr-bulk1g", peer))
    j = rr("bulk1g", peer)
    g_ = j["end"]["sum_received"]["bits_per_second"] / 1e9 if j and "end" in j else None
    return "–" if t is None else f"p50 {t[0]:.0f} / p99 {t[1]:.0f} µs (bulk {fmt(g_)} Gbit/s)"

EXPLAIN = {
    "tput_tcp": (
        f"every byte crosses three Adit processes and is encrypted and decrypted twice (forward → server, server → agent, AES-256-GCM), "
        f"against two processes and no cryptography for rathole tcp: Adit spends {fmt(a['cpu'])} CPU s/GB against rathole tcp's {fmt(rt_cpu)}. "
        f"In the profile the three processes are busy {core_bulk} each, which with the iperf3 ends fills the two cores; "
        f"cryptography (AES-GCM) is {crypto_bulk} of each process's samples, `memmove` (copies between the TLS plaintext buffers, the "
        f"mux and the sockets) {memmove_bulk}, and the kernel (socket copies, wake-ups) {kernel_bulk} ({cs(ctx_mb, 'MB')}). "
        f"With two TLS hops the target needs less CPU per GB than plaintext rathole, which cannot be had by tuning. "
        f"Next step: stop re-encrypting on the server: end-to-end encryption between `adit forward` and the agent (the `--enc` the "
        f"session tokens already name) with the server relaying records, which removes one decrypt + encrypt and one process's copies; "
        f"then fewer copies per hop (decrypt in place with rustls' unbuffered API, 256 KiB reads)."),
    "tput_noise": (
        f"rathole noise encrypts one hop (ChaCha20-Poly1305, visitor → server stays plaintext) and spends {fmt(rn_cpu)} CPU s/GB; Adit "
        f"encrypts two hops with {fmt(a['cpu'])} CPU s/GB through three processes, so at about the same CPU per GB it cannot be 3× faster "
        f"on the same two cores. Same next step as above: one encrypted hop instead of two (server relays ciphertext), fewer copies."),
    "rtt_idle": (
        f"the idle round trip is dominated by wake-ups, not by cryptography (0–2 % crypto in the idle profile; the kernel's scheduler "
        f"symbols `finish_task_switch`/`_raw_spin_unlock_irqrestore` lead in all three processes; {cs(ctx_rtt, 'round trip')}, where one per hop would be 6). "
        f"A round trip crosses six process hops more than direct (forward, server and agent, each way), each a loopback socket "
        f"write and a thread wake-up: {fmt(add_adit / 6 if add_adit is not None else None, 0)} µs per extra hop for Adit, against "
        f"{fmt(add_rt / 4 if add_rt is not None else None, 0)} µs per extra hop for plaintext rathole tcp (four extra hops, "
        f"{fmt(add_rt, 0)} µs added), so at this VM's wake-up cost even a plaintext relay of Adit's shape cannot add only 30 µs; "
        f"the agent and `adit forward` run on one thread each (no wake-ups between worker threads there), the server on a "
        f"multi-threaded runtime. "
        f"Next step: write frames straight into the TLS session when the driver is idle instead of waking its task (one task "
        f"wake-up fewer per hop), then count wake-ups per round trip again; a relay that does not terminate TLS on the server "
        f"(above) removes two of the six hops' crypto work."),
    "rtt_bulk": (
        f"the echo shares the two tunnel TCP connections, and in each of Adit's processes the thread and tunnel driver task, with "
        f"the bulk stream (p50 under bulk {fmt((a['bulk'] or [None])[0], 0)} µs against rathole tcp's "
        f"{fmt((g('rathole-tcp', 'bulk') or [None])[0], 0)} µs, whose echo has its own TCP data channel and a copy task that sleeps "
        f"between messages). The wait is for a CPU, not for buffered data: with the same bulk capped at 1 Gbit/s, so that the two "
        f"cores are not saturated, Adit's round trips take {capped('adit')} (rathole tcp: {capped('rathole-tcp')}). "
        f"`perf sched` during the uncapped bulk: {sched_text('adit', 'Adit')}; {sched_text('rathole-tcp', 'rathole tcp')}. "
        f"An echo crosses seven such wake-ups in Adit (forward, server, agent, echo server, back), and in each process it queues "
        f"behind the bulk data that the same driver is encrypting, decrypting and framing when it gets the CPU. The tunnels' own "
        f"buffers are bounded: each keeps unparsed bulk data below max(512 KiB, 2 × bandwidth × delay) (the mux's pipe limit); "
        f"pipe floors of 64 KiB to 512 KiB (2026-11-26, one-peer runs, section \"Round trips under bulk\") gave p50 1.9–3.6 ms "
        f"whatever the floor, and making tunnel stream reads yield after 64 KiB changed nothing either. In one process (the "
        f"mux benchmark, 12 Gbit/s of bulk) the p99 is 0.3–0.55 ms. Next step: a second, lightly loaded tunnel connection "
        f"between the same peers for interactive streams (rathole gives every visitor connection its own TCP channel), so that "
        f"a keystroke is not behind bulk records that the receiving driver must decrypt in order, and its driver sleeps, and so "
        f"wakes first, while the bulk one is busy; then measure this row again."),
    "cps": (
        f"each new connection costs {fmt(a['cps_cpu'], 0)} µs of CPU in Adit's processes against rathole tcp's "
        f"{fmt(g('rathole-tcp', 'cps_cpu'), 0)} µs. ECDSA is no longer in the cps profile: the server reuses a signed grant for "
        f"identical streams while more than half its 60 s is left, the agent remembers grants it verified, and access tokens are "
        f"verified once each (every stream is still authorized and checked on both sides); the store keeps its prepared "
        f"statements (rusqlite's cache of 16 had every stream compile its queries again) and audit transactions gather events for "
        f"2 ms under load; the agent and the forward run on one thread. What is left is wake-ups "
        f"({cs(ctx_cps, 'connection')}; the kernel's scheduler symbols lead every Adit process's profile), the audit trail's "
        f"durable commits, and the server's store reads per stream (user, tenant, role bindings, node and its policy: "
        f"`sqlite3VdbeExec`). Next steps: fewer wake-ups per "
        f"stream open (each new stream wakes a tunnel driver and a stream task in each of the three processes); audit appends "
        f"on a second SQLite connection; keep the authorization inputs of a client tunnel (user, roles, "
        f"node policy) in memory and drop them on change instead of reading them per stream."),
    "ttfb": (
        f"no side waits for the other before sending (the forward sends the OPEN and the first DATA without waiting for the "
        f"agent's answer; the agent's reply is the echo itself), so the cost above one echo is processing, not round trips: "
        f"the server authorises the stream (store reads) and spawns its relay, the agent checks the grant and connects the "
        f"target, each process wakes a driver and a stream task (with {meta['cps_workers']} connections at a time, "
        f"{fmt(a['cps_cpu'], 0)} µs of CPU per connection across the three processes). The forward already sends the OPEN and "
        f"the first DATA in one TLS record. One measured part: the server's store reads wait while the audit trail's "
        f"transaction syncs under the same lock (2026-11-26, one connection at a time, alternated: first byte p50 629–672 µs "
        f"with `synchronous=FULL`, 551–592 µs with the sync switched off as an experiment). Next steps: audit appends on a "
        f"second SQLite connection (WAL lets reads go on while it syncs), the authorization inputs kept in memory, and the "
        f"wake-up work of the connections/s item."),
    "rss": (
        "see the section \"Agent memory when idle\" (`bench/agent-rss.sh`): about 0.5 MB of the agent's RSS is its own heap "
        "and stack, the rest mapped code and data; a dynamically linked build is also charged the shared libc, libm and ld.so "
        "pages it touches. Next step: touch less code at start-up (the CLI parser, the log filter, the HTTP client used only to "
        "renew or long-poll), then measure again."),
    "wan": (
        "Adit's single stream over the lossy link is limited by the agent's TCP connection to the server (one loss stalls every "
        "stream multiplexed on it) and by the mux's stream and connection windows, which must grow to the link's bandwidth × RTT. "
        "Next step: log the stream window the auto-tuning reaches during this test, compare with `iperf3 -w` of the same size direct."
    ) if "25ms-0.5%" in wan_res and not notes.get("wan_note") else (
        "not measured on this machine: its kernel has no `sch_netem` (`tc qdisc add ... netem` answers \"Specified qdisc kind is "
        "unknown\", and there is no module directory to load it from). The harness runs the WAN part by itself where netem works "
        "(plumbing checked here with `PEERS_WAN_NO_NETEM=1`: namespaces, veth, server, agent and forwards across 10.213.0.0/24). "
        "Next step: run `bench/peers.sh` on a machine whose kernel has netem."
    ) if "netem is not available" in notes.get("wan_note", "") else notes.get("wan_note") or "not measured.",
}

failed = [t for t in targets if t[3] is False or (t[3] is None and t[0] == "wan")]
bulk_prof = profile_lines("bulk", meta.get("profile_secs") or 4)
rtt_prof = profile_lines("rtt", meta.get("profile_secs") or 4)
cps_prof = profile_lines("cps", meta.get("profile_secs") or 4)
if failed:
    W("### Targets not met: profile and next step")
    W("")
    if bulk_prof:
        W(f"Profile of Adit's processes (`perf record -e cpu-clock`, {meta.get('profile_secs')} s each, after the new-connection test) "
          "during a single-stream iperf3 client → server:")
        W("")
        out.extend(bulk_prof)
        W("")
    if rtt_prof:
        W("… during idle 1-byte round trips (`rr ping`):")
        W("")
        out.extend(rtt_prof)
        W("")
    if cps_prof:
        W("… and during `rr cps` (new connections):")
        W("")
        out.extend(cps_prof)
        W("")
    if not bulk_prof and not cps_prof:
        W(f"No profile in this run ({notes.get('profile_note') or 'quick mode'}).")
        W("")
    for key, text, value, ok in failed:
        W(f"- **{text}** ({value}): {EXPLAIN.get(key, 'see the profile above.')}")
    if bulk_prof or rtt_prof or cps_prof:
        W("")
        W("Reading the profiles: `perf record -e cpu-clock` (no hardware counters in this VM) per process; \"% of a core\" is "
          "samples ÷ (997 Hz × seconds); kernel and crypto are shares of that process's samples. In a VM the software clock "
          "samples land where interrupts are re-enabled, so scheduler wake-ups show up as `finish_task_switch` and "
          "`_raw_spin_unlock_irqrestore`.")
    W("")
print("\n".join(out))
PYEOF
echo
cat "$REPORT"
echo

if [ "$WRITE" = 1 ]; then
    python3 - "$ROOT/bench/RESULTS.md" "$REPORT" <<'EOF'
import os, sys
path, report = sys.argv[1], sys.argv[2]
heading = "## Side by side with other tunnels (`bench/peers.sh`)"
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
    text = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
tmp = path + ".peers-tmp"
open(tmp, "w").write(text)
os.replace(tmp, path)
EOF
    log "updated bench/RESULTS.md"
fi
log "done in $(( $(date +%s) - RUN_START ))s"
