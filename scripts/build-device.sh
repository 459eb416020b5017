#!/usr/bin/env bash
# Builds adit-agent for a device: the `device` profile (size-optimised, whole-program
# LTO, one codegen unit, panic=abort, stripped), linked statically against the C
# library, so the device needs nothing but a Linux kernel (3.2 or later), still
# position-independent (the kernel places it at a random address), with its
# relocations packed (`-z pack-relative-relocs`, binutils ≥ 2.38): fewer pages
# touched at start-up. On this machine's build: 5.7 MB on disk, about 4.7 MB
# resident when idle (bench/agent-rss.sh).
#
# Usage: scripts/build-device.sh [--target TRIPLE]
#   --target  the device's Rust target (default: this machine's, e.g.
#             x86_64-unknown-linux-gnu); its standard library and a linker for it
#             must be installed (rustup target add TRIPLE, and a cross gcc)
# Prints the path of the binary on the last line.
#
# Names resolve through /etc/hosts and DNS (glibc has both built in since 2.34); NSS
# modules that a dynamically linked glibc would load at run time (mDNS, LDAP,
# systemd-resolved's `resolve`) are not available to a static binary. Where those
# matter, use the dynamically linked `cargo build --profile device -p adit-agent`.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TRIPLE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --target) TRIPLE="${2:?--target needs a value}"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (usage: scripts/build-device.sh [--target TRIPLE])" >&2; exit 2 ;;
    esac
done
if [ -z "$TRIPLE" ]; then
    TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
fi
case "$TRIPLE" in
    *-linux-gnu*) ;;
    *) echo "scripts/build-device.sh: $TRIPLE is not a glibc Linux target; build it with" \
            "cargo build --profile device -p adit-agent --target $TRIPLE" >&2; exit 2 ;;
esac

cd "$ROOT"
# With --target, RUSTFLAGS reach only the agent and its dependencies, not build
# scripts or proc-macros (which run here and must stay dynamically linked).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs" \
    cargo build -j"${CARGO_BUILD_JOBS:-2}" --profile device -p adit-agent --target "$TRIPLE" >&2
echo "${CARGO_TARGET_DIR:-$ROOT/target}/$TRIPLE/device/adit-agent"
