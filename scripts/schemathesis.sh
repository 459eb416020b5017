#!/usr/bin/env bash
# Property-based API testing with schemathesis against a throwaway adit-server.
#
#   scripts/schemathesis.sh
#
# Starts target/debug/adit-server (built by `cargo build --workspace --bins`, as
# scripts/test.sh does) on a temporary data directory and a free loopback port, logs
# in as the bootstrap admin, enrols two (offline) nodes with target/debug/adit-agent
# and opens a remote access configuration on each, so that the node, remote access and
# session token operations have something to find. Then it runs schemathesis on every
# operation of the server's own OpenAPI document (GET /v1/openapi.json, generated from
# crates/api/src/openapi.rs) with these checks on every response:
#
#   not_a_server_error          no 5xx, whatever the input
#   status_code_conformance     every status is one the document lists for the operation
#   content_type_conformance    the Content-Type is the documented one
#   response_schema_conformance the body matches the documented schema exactly
#
# in both modes (valid inputs, and inputs that violate the schema), in the coverage,
# fuzzing and stateful phases (the stateful one follows the document's links, e.g.
# from a created or listed resource to its deletion), at most ST_MAX_EXAMPLES (default
# 100) generated cases per operation and phase, with a fixed seed (ST_SEED) so a
# failure reproduces. Any finding makes the script exit non-zero. It talks only to
# 127.0.0.1 (and to PyPI when it has to install schemathesis into
# target/schemathesis-venv). The whole run is bounded by ST_TIMEOUT seconds (default
# 150); the server is killed on exit, however it ends.
#
# No operation is left out. The destructive ones cannot break the run: schemathesis
# reuses names and ids from responses, so it does name the admin, but deleting oneself
# and removing the last tenant-wide admin binding are refused (409), changing one's own
# password needs the current one, and a password change does not end an access token.
# Only the node revocation is ordered: it runs in a second pass (see below).
#
# Environment: ADIT_BIN_DIR (where adit-server is; default target/debug),
# SCHEMATHESIS_VENV, ST_MAX_EXAMPLES, ST_SEED, ST_TIMEOUT.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
st_version="4.32.5"
venv="${SCHEMATHESIS_VENV:-$root/target/schemathesis-venv}"
max_examples="${ST_MAX_EXAMPLES:-100}"
seed="${ST_SEED:-20261125}"
run_timeout="${ST_TIMEOUT:-150}"
bin_dir="${ADIT_BIN_DIR:-$root/target/debug}"
server_bin="$bin_dir/adit-server"
agent_bin="$bin_dir/adit-agent"

log() { printf '==> %s\n' "$*"; }

for b in "$server_bin" "$agent_bin"; do
    if [ ! -x "$b" ]; then
        echo "$b is missing: run \`cargo build --workspace --bins\` first" >&2
        exit 1
    fi
done

st="$venv/bin/st"
if ! "$st" --version 2>/dev/null | grep -qF "$st_version"; then
    log "installing schemathesis $st_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$st_version"
fi
py="$venv/bin/python"

work="$(mktemp -d "${TMPDIR:-/tmp}/adit-schemathesis.XXXXXX")"
server_pid=""
cleanup() {
    local rc=$?
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$work/server.log" ]; then
        echo "--- last lines of the server log ---" >&2
        tail -n 40 "$work/server.log" >&2 || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
password="$("$py" -c 'import secrets; print(secrets.token_urlsafe(24))')"
base="https://127.0.0.1:$port"

log "starting adit-server on 127.0.0.1:$port"
ADIT_BOOTSTRAP_ADMIN_PASSWORD="$password" ADIT_LOG="${ADIT_LOG:-warn,adit_server=info}" \
    "$server_bin" start --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/server.log" 2>&1 &
server_pid=$!

pin=""
for _ in $(seq 1 300); do
    pin="$(grep -o 'CA fingerprint: sha256:[0-9a-f]*' "$work/server.log" | awk '{print $3}' || true)"
    [ -n "$pin" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "adit-server exited during start-up" >&2
        exit 1
    fi
    sleep 0.1
done
[ -n "$pin" ] || { echo "adit-server did not start within 30 s" >&2; exit 1; }

# The CA comes from the server itself over an unverified connection (loopback, and the
# server is our own child); it is accepted only if it has the pin the server printed.
# The login then, and schemathesis, verify TLS against it.
log "fetching the CA (pin $pin), logging in as admin, enrolling two nodes with remote access"
ADIT_PASSWORD="$password" "$py" - "$base" "$pin" "$work" <<'EOF'
import hashlib, json, os, ssl, sys, urllib.request

base, pin, work = sys.argv[1:4]
insecure = ssl.create_default_context()
insecure.check_hostname = False
insecure.verify_mode = ssl.CERT_NONE
with urllib.request.urlopen(base + "/v1/ca", context=insecure, timeout=10) as r:
    ca = json.load(r)
der = ssl.PEM_cert_to_DER_cert(ca["ca_pem"])
if "sha256:" + hashlib.sha256(der).hexdigest() != pin or ca["pin"] != pin:
    sys.exit("the CA served does not match the pin the server printed")
ca_path = os.path.join(work, "ca.pem")
with open(ca_path, "w") as f:
    f.write(ca["ca_pem"])

verified = ssl.create_default_context(cafile=ca_path)
body = json.dumps({"user": "admin", "password": os.environ["ADIT_PASSWORD"]}).encode()
req = urllib.request.Request(
    base + "/v1/login", data=body, headers={"Content-Type": "application/json"}
)
with urllib.request.urlopen(req, context=verified, timeout=30) as r:
    token = json.load(r)["access_token"]
with open(os.path.join(work, "token"), "w") as f:
    f.write(token)

body = json.dumps({"ttl_secs": 600, "uses": 2, "labels": {"site": "schemathesis"}}).encode()
req = urllib.request.Request(
    base + "/v1/join-tokens",
    data=body,
    headers={"Content-Type": "application/json", "Authorization": "Bearer " + token},
)
with urllib.request.urlopen(req, context=verified, timeout=30) as r:
    join = json.load(r)["token"]
with open(os.path.join(work, "join-token"), "w") as f:
    f.write(join)
EOF

# Two enrolled (offline) nodes, so that node, remote access and session token
# operations get past "no such node": schemathesis reuses the names and ids it sees in
# responses.
for n in 1 2; do
    ADIT_JOIN_TOKEN="$(cat "$work/join-token")" "$agent_bin" enroll --server "$base" \
        --name "st-node-$n" --state-dir "$work/agent-$n" >"$work/agent-$n.log" 2>&1 || {
        cat "$work/agent-$n.log" >&2
        exit 1
    }
done
# And remote access configurations on them, which the document's links from the
# listing lead schemathesis to (get, extend, delete).
"$py" - "$base" "$work" <<'EOF'
import json, os, ssl, sys, urllib.request

base, work = sys.argv[1:3]
ctx = ssl.create_default_context(cafile=os.path.join(work, "ca.pem"))
token = open(os.path.join(work, "token")).read()
for node, endpoint in (("st-node-1", True), ("st-node-2", False)):
    body = json.dumps({"node": node, "ttl_secs": 900, "endpoint": endpoint}).encode()
    req = urllib.request.Request(
        base + "/v1/remote-access",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + token},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        assert r.status == 201, r.status
EOF

# Two passes: every operation but the node revocation, then the revocation. A revoked
# node ends its remote access configurations and refuses new ones, so revoking first
# would leave the remote access and session token operations nothing to work on.
# One worker: with several, hypothesis's concurrent ast.parse trips a CPython 3.11 bug
# ("AST constructor recursion depth mismatch") inside schemathesis.
deadline=$((SECONDS + run_timeout))
report_dir="${ST_REPORT_DIR:-$work/report}"
run_pass() {
    local name="$1"
    shift
    local left=$((deadline - SECONDS))
    if [ "$left" -le 0 ]; then
        echo "no time left for the schemathesis pass '$name' (ST_TIMEOUT=$run_timeout)" >&2
        return 124
    fi
    log "schemathesis $st_version, pass '$name': $base/v1/openapi.json (at most $max_examples examples per operation and phase, seed $seed)"
    NO_COLOR=1 timeout --kill-after=10 "$left" "$st" run "$base/v1/openapi.json" \
        --tls-verify "$work/ca.pem" \
        --header "Authorization: Bearer $(cat "$work/token")" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
        --phases examples,coverage,fuzzing,stateful \
        --mode all \
        --max-examples "$max_examples" \
        --seed "$seed" \
        --workers 1 \
        --request-timeout 30 \
        --warnings off \
        --report junit,har --report-dir "$report_dir/$name" \
        "$@"
}

rc=0
run_pass main --exclude-operation-id revokeNode || rc=$?
run_pass revocation --include-operation-id revokeNode \
    --include-operation-id listNodes --include-operation-id getNode || { [ "$rc" -ne 0 ] || rc=$?; }
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "schemathesis did not finish within $run_timeout s" >&2
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "adit-server died during the run" >&2
    rc=1
fi
exit "$rc"
