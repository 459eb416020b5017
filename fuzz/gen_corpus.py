#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets.

Run from anywhere: `python3 fuzz/gen_corpus.py`. The files it writes are
committed under fuzz/corpus/<target>/; rerun it when the frame format or the
mux_frames program format (see fuzz_targets/mux_frames.rs) changes.
"""

import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"

# Frame types (crates/proto/src/frame.rs).
DATA, OPEN, CREDIT, FIN, RESET, PING, PONG, GOAWAY, ACK, CONTROL, HELLO = range(11)


def frame(kind, stream, payload=b""):
    return struct.pack(">BBII", kind, 0, stream, len(payload)) + payload


def str8(s):
    return bytes([len(s)]) + s


def str16(s):
    return struct.pack(">H", len(s)) + s


def hello(max_payload=65536, streams=100, sw=1 << 20, cw=1 << 22):
    body = b"ADIT" + struct.pack(">HHQIIII", 1, 1, 1, max_payload, streams, sw, cw)
    return frame(HELLO, 0, body)


def open_(stream, kind=b"tcp", target=b"127.0.0.1:22", grant=b"signed-grant"):
    return frame(OPEN, stream, str8(kind) + str16(target) + struct.pack(">H", len(grant)) + grant)


def u64(kind, stream, v):
    return frame(kind, stream, struct.pack(">Q", v))


def reset(stream, code, reason):
    return frame(RESET, stream, struct.pack(">I", code) + str16(reason))


def goaway(last, code, reason):
    return frame(GOAWAY, 0, struct.pack(">II", last, code) + str16(reason))


FRAME_DECODE = {
    "hello": hello(),
    "open_data_fin": open_(1) + frame(DATA, 1, b"hello") + u64(FIN, 1, 5),
    "credit_ack": u64(CREDIT, 0, 1 << 30) + u64(CREDIT, 3, 4096) + u64(ACK, 3, 100),
    "ping_pong": u64(PING, 0, 7) + u64(PONG, 0, 7),
    "reset_goaway": reset(5, 3, b"denied") + goaway(4, 0, b"bye"),
    "control": frame(CONTROL, 0, b'{"op":"refresh"}'),
    "every_frame": hello() + open_(1) + frame(DATA, 1, b"x" * 300) + u64(CREDIT, 1, 1 << 21)
    + u64(ACK, 1, 0) + u64(FIN, 1, 300) + reset(1, 0, b"") + u64(PING, 0, 1)
    + u64(PONG, 0, 1) + frame(CONTROL, 0, b"") + goaway(1, 0, b"done"),
    "partial_header": hello()[:7],
    "too_large": struct.pack(">BBII", DATA, 0, 1, 0xFFFFFFFF),
    # The longest reasons the encoder emits (MAX_REASON_LEN).
    "reset_max_reason": reset(1, 2, b"r" * 1024),
    "goaway_max_reason": goaway(0, 1, b"g" * 1024),
}


# mux_frames opcodes (fuzz_targets/mux_frames.rs, `Op`).
(RAW, M_OPEN, M_DATA, M_CREDIT, M_FIN, M_RESET, M_ACK, M_PINGPONG, M_GOAWAY, M_CONTROL,
 APP_OPEN, APP_WRITE, APP_READ, APP_END, TRANSMIT, MISC) = range(16)
FIRST_KNOWN = 0  # stream selector: the first stream either side opened
SECOND_KNOWN = 1


def raw(data):
    assert len(data) < 256
    return bytes([RAW, len(data)]) + data


def prog(config, hello_sel, *ops):
    return bytes([config, hello_sel]) + b"".join(ops)


MUX_FRAMES = {
    # Client opens a stream, sends data, the app reads it, both finish.
    "echo_default": prog(
        0, 0x4A,
        bytes([M_OPEN, 0, 3, 1]),
        bytes([M_DATA, FIRST_KNOWN]) + struct.pack(">H", 100),
        bytes([APP_READ, FIRST_KNOWN]) + struct.pack(">H", 64),
        bytes([APP_WRITE, FIRST_KNOWN]) + struct.pack(">H", 100),
        bytes([TRANSMIT]) + struct.pack(">H", 1000),
        bytes([M_FIN, FIRST_KNOWN, 4]),
        bytes([APP_READ, FIRST_KNOWN]) + struct.pack(">H", 64),
        bytes([APP_READ, FIRST_KNOWN]) + struct.pack(">H", 64),
        bytes([APP_END, 0, FIRST_KNOWN, 0]),
        bytes([TRANSMIT]) + struct.pack(">H", 1000),
    ),
    # Tight limits: the app writes more than the credit, the client grants more.
    "flow_control_small": prog(
        1, 0x2A,
        bytes([APP_OPEN, 5]),
        bytes([APP_WRITE, FIRST_KNOWN]) + struct.pack(">H", 4000),
        bytes([TRANSMIT]) + struct.pack(">H", 2000),
        bytes([M_ACK, FIRST_KNOWN, 5, 0]),
        bytes([M_CREDIT, FIRST_KNOWN, 6]) + struct.pack(">H", 30000),
        bytes([M_CREDIT, 0xC0, 6]) + struct.pack(">H", 30000),
        bytes([TRANSMIT]) + struct.pack(">H", 2000),
        bytes([APP_END, 0, FIRST_KNOWN, 0]),
        bytes([TRANSMIT]) + struct.pack(">H", 2000),
    ),
    # Client floods data past the stream window of the small config.
    "overrun_small": prog(
        1, 0x0A,
        bytes([M_OPEN, 0, 3, 0]),
        bytes([M_DATA, FIRST_KNOWN]) + struct.pack(">H", 1000),
        bytes([M_DATA, FIRST_KNOWN]) + struct.pack(">H", 1000),
        bytes([APP_READ, FIRST_KNOWN]) + struct.pack(">H", 1500),
        bytes([TRANSMIT]) + struct.pack(">H", 500),
    ),
    # Pings, pongs, control, timers, and a graceful goaway from the client.
    "ping_goaway": prog(
        0, 0x4A,
        bytes([TRANSMIT]) + struct.pack(">H", 100),
        bytes([M_PINGPONG, 0]) + bytes(8),
        bytes([M_PINGPONG, 2]) + struct.pack(">Q", 99),
        bytes([M_CONTROL, 4]),
        bytes([MISC, 0]) + struct.pack(">H", 20000),
        bytes([MISC, 2, 0, 0]),
        bytes([M_OPEN, 0, 3, 0]),
        bytes([M_GOAWAY, 0xC0, 0, 2]),
        bytes([M_RESET, FIRST_KNOWN, 1, 2]),
        bytes([TRANSMIT]) + struct.pack(">H", 1000),
    ),
    # App-side streams: open, reset, detach, goaway, close.
    "app_lifecycle": prog(
        1, 0x4A,
        bytes([APP_OPEN, 3]),
        bytes([APP_OPEN, 3]),
        bytes([APP_WRITE, FIRST_KNOWN]) + struct.pack(">H", 10),
        bytes([APP_END, 1, FIRST_KNOWN, 4]),
        bytes([APP_END, 2, SECOND_KNOWN, 0]),
        bytes([MISC, 3, 0, 20]),
        bytes([MISC, 4, 0, 0]),
        bytes([TRANSMIT]) + struct.pack(">H", 1000),
        bytes([MISC, 5, 0, 8]),
        bytes([TRANSMIT]) + struct.pack(">H", 1000),
    ),
    # Raw bytes: a valid frame, then garbage.
    "raw_bytes": prog(
        0, 0x4A,
        raw(open_(1)),
        raw(frame(DATA, 1, b"abc")),
        raw(b"\xee" + bytes(9)),
        bytes([TRANSMIT]) + struct.pack(">H", 1000),
    ),
}


def main():
    for target, seeds in (("frame_decode", FRAME_DECODE), ("mux_frames", MUX_FRAMES)):
        d = ROOT / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            assert len(data) < 4096, name
            (d / name).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds in {d}")


if __name__ == "__main__":
    main()
