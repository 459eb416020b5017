#!/usr/bin/env bash
# Runs every check and test of the project. Installs what the tests need
# (OpenSSH server and client, rsync, curl, iproute2, python3, faketime) when missing. Usage: scripts/test.sh [--quick]
#   --quick  skips the fuzzing run and the release-mode checks
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

log() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v rsync >/dev/null 2>&1 || need_pkgs+=(rsync)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v faketime >/dev/null 2>&1 || need_pkgs+=(faketime)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing ${need_pkgs[*]}: run as root or install them" >&2
    exit 1
  fi
fi

export CARGO_TERM_COLOR=never
jobs=${CARGO_BUILD_JOBS:-2}

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy -j"$jobs" --workspace --all-targets -- -D warnings

log "shell scripts and their embedded Python parse"
for f in scripts/*.sh bench/*.sh .ci/run; do
    bash -n "$f"
    # Python fed to `python3 -` from a quoted heredoc (the benchmark reports).
    awk '/<<.PYEOF.$/ {f = 1; next} /^PYEOF$/ {f = 0; print "#---"} f' "$f" \
        | python3 -c 'import ast, sys; [ast.parse(p) for p in sys.stdin.read().split("#---\n")]' \
        || { echo "embedded Python in $f does not parse" >&2; exit 1; }
done

log "cargo deny check licenses bans sources (advisories need GitHub: see deny.toml)"
cargo deny --version >/dev/null 2>&1 || cargo install cargo-deny --locked -j"$jobs"
cargo deny check licenses bans sources

log "build binaries"
cargo build -j"$jobs" --workspace --bins

log "cargo test"
cargo test -j"$jobs" --workspace -- --test-threads=2

log "schemathesis against the OpenAPI document (bounded)"
bash scripts/schemathesis.sh

if [ "$quick" = 0 ]; then
  log "fuzzing (bounded)"
  scripts/fuzz.sh "${FUZZ_SECONDS:-25}"
fi

log "all checks passed"
