#!/usr/bin/env python3
"""A lossy, slow link between two network namespaces, for kernels without netem.

Usage: bench/wire.py NAME_A NAME_B PARAMS_FILE

Creates two TUN devices, NAME_A and NAME_B (the caller moves each into its own
namespace and gives them addresses in one subnet), and carries every IP packet
from one to the other after a delay, dropping some at random: what
`tc qdisc add dev X root netem delay D loss P` on both ends of a veth pair does.
PARAMS_FILE holds "DELAY_MS LOSS_PERCENT" (one way, applied in each direction);
it is read again whenever it changes, so one wire serves several profiles.
Like netem's default, at most 1000 packets wait in each direction; more are
dropped. Runs until killed; prints "ready" once both devices exist.
"""

import fcntl
import heapq
import os
import random
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
LIMIT = 1000  # packets waiting per direction (netem's default limit)


def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def read_params(path, old):
    try:
        delay_ms, loss_pct = open(path).read().split()[:2]
        return float(delay_ms) / 1000.0, float(loss_pct) / 100.0
    except (OSError, ValueError):
        return old


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    name_a, name_b, params_path = sys.argv[1:]
    fa, fb = tun(name_a), tun(name_b)
    other = {fa: fb, fb: fa}
    waiting = {fa: 0, fb: 0}  # packets queued towards each device
    params = read_params(params_path, (0.0, 0.0))
    mtime = None
    queue = []  # (due, seq, out_fd, packet)
    seq = 0
    rng = random.Random(0x5EED)
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        try:
            m = os.stat(params_path).st_mtime_ns
        except OSError:
            m = None
        if m != mtime:
            mtime = m
            params = read_params(params_path, params)
        delay, loss = params
        while queue and queue[0][0] <= now:
            _, _, out, pkt = heapq.heappop(queue)
            waiting[out] -= 1
            try:
                os.write(out, pkt)
            except BlockingIOError:
                pass  # the device's queue is full: the packet is lost, as on a wire
            except OSError:
                pass
        timeout = max(0.0, queue[0][0] - now) if queue else 0.2
        ready, _, _ = select.select([fa, fb], [], [], min(timeout, 0.2))
        now = time.monotonic()
        for fd in ready:
            for _ in range(256):
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                out = other[fd]
                if rng.random() < loss or waiting[out] >= LIMIT:
                    continue
                waiting[out] += 1
                seq += 1
                heapq.heappush(queue, (now + delay, seq, out, pkt))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
