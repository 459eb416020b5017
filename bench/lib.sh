#!/usr/bin/env bash
# Shared by the bench scripts (sourced, not run).

# wait_ca_pin LOG TRIES: prints the CA pin (sha256:...) that adit-server wrote to LOG,
# polling every 0.1 s up to TRIES times; fails when it never appears.
wait_ca_pin() {
    local log=$1 tries=$2 pin="" _
    for _ in $(seq 1 "$tries"); do
        pin=$(sed -n 's/^CA fingerprint: \(sha256:[0-9A-Fa-f:]*\).*$/\1/p' "$log" 2>/dev/null | head -n 1)
        [ -n "$pin" ] && { printf '%s\n' "$pin"; return 0; }
        sleep 0.1
    done
    return 1
}
