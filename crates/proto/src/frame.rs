//! The `adit/1` frame codec.
//!
//! Every frame is a fixed 10-byte header followed by a payload:
//!
//! ```text
//!  0        1        2                 6                 10
//! +--------+--------+-----------------+-----------------+=========+
//! |  type  | flags  | stream id (u32) |  length (u32)   | payload |
//! +--------+--------+-----------------+-----------------+=========+
//! ```
//!
//! All integers are big-endian. The decoder validates the type, the stream id
//! and the length against the receiver's limit *before* waiting for (and so
//! before buffering) the payload, and validates every field inside the payload
//! before building a value from it. Flags are reserved: senders set 0 and
//! receivers ignore them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 10;
/// Absolute upper bound on a frame payload, whatever a peer advertises.
pub const MAX_PAYLOAD_LIMIT: u32 = 16 * 1024 * 1024;
/// Longest reason text carried by RESET and GOAWAY.
pub const MAX_REASON_LEN: usize = 1024;
/// Longest stream kind in an OPEN header.
pub const MAX_KIND_LEN: usize = 64;
/// Longest target in an OPEN header.
pub const MAX_TARGET_LEN: usize = 1024;
/// Longest grant in an OPEN header.
pub const MAX_GRANT_LEN: usize = 8 * 1024;
/// Length of a HELLO payload.
const HELLO_LEN: u32 = 32;
/// Magic bytes at the start of a HELLO payload.
pub const HELLO_MAGIC: [u8; 4] = *b"ADIT";

/// Identifies a stream within one connection. Stream 0 is the control stream.
pub type StreamId = u32;

/// Numeric frame types on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Data = 0x0,
    Open = 0x1,
    Credit = 0x2,
    Fin = 0x3,
    Reset = 0x4,
    Ping = 0x5,
    Pong = 0x6,
    GoAway = 0x7,
    Ack = 0x8,
    Control = 0x9,
    Hello = 0xA,
}

impl FrameType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x0 => Self::Data,
            0x1 => Self::Open,
            0x2 => Self::Credit,
            0x3 => Self::Fin,
            0x4 => Self::Reset,
            0x5 => Self::Ping,
            0x6 => Self::Pong,
            0x7 => Self::GoAway,
            0x8 => Self::Ack,
            0x9 => Self::Control,
            0xA => Self::Hello,
            _ => return None,
        })
    }

    /// Frames that belong to the connection, and so must use stream 0.
    fn is_connection_level(self) -> bool {
        matches!(
            self,
            Self::Ping | Self::Pong | Self::GoAway | Self::Control | Self::Hello
        )
    }
}

/// The typed header that opens a stream: what kind of stream, where to, and
/// the control plane's authorization for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenHeader {
    /// Stream kind, e.g. `tcp`, `pty`, `exec`.
    pub kind: String,
    /// Kind-specific target, e.g. `127.0.0.1:22`.
    pub target: String,
    /// Opaque grant (a signed token) the receiver verifies before acting.
    pub grant: Bytes,
}

/// Capabilities and limits one side announces in its HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    pub capabilities: u64,
    /// Largest payload this side accepts.
    pub max_frame_payload: u32,
    /// Most concurrent streams the *peer* may open towards this side.
    pub max_streams: u32,
    /// Receive window this side grants each new stream.
    pub initial_stream_window: u32,
    /// Receive window this side grants the whole connection.
    pub initial_connection_window: u32,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: StreamId,
        payload: Bytes,
    },
    Open {
        stream: StreamId,
        header: OpenHeader,
    },
    /// Raises the highest byte offset the sender may send on `stream`
    /// (stream 0: on the whole connection).
    Credit {
        stream: StreamId,
        max_offset: u64,
    },
    /// The sender will send nothing more; `offset` is the stream's final length.
    Fin {
        stream: StreamId,
        offset: u64,
    },
    Reset {
        stream: StreamId,
        code: u32,
        reason: String,
    },
    Ping {
        opaque: u64,
    },
    Pong {
        opaque: u64,
    },
    GoAway {
        last_stream: StreamId,
        code: u32,
        reason: String,
    },
    /// The sender has received every byte of `stream` below `offset`. On
    /// stream 0 (only between peers that both announced
    /// [`crate::capability::PIPE_ACK`]): it has parsed every transport byte
    /// below `offset`.
    Ack {
        stream: StreamId,
        offset: u64,
    },
    /// An application control message on stream 0.
    Control {
        payload: Bytes,
    },
    Hello(Hello),
}

/// Why bytes could not be decoded as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{kind:?} frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { kind: FrameType, len: u32, max: u32 },
    #[error("{kind:?} frame must use stream 0, got stream {stream}")]
    ExpectedStreamZero { kind: FrameType, stream: StreamId },
    #[error("{0:?} frame must not use stream 0")]
    UnexpectedStreamZero(FrameType),
    #[error("{kind:?} frame payload is malformed: {why}")]
    Malformed { kind: FrameType, why: &'static str },
}

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Data { .. } => FrameType::Data,
            Frame::Open { .. } => FrameType::Open,
            Frame::Credit { .. } => FrameType::Credit,
            Frame::Fin { .. } => FrameType::Fin,
            Frame::Reset { .. } => FrameType::Reset,
            Frame::Ping { .. } => FrameType::Ping,
            Frame::Pong { .. } => FrameType::Pong,
            Frame::GoAway { .. } => FrameType::GoAway,
            Frame::Ack { .. } => FrameType::Ack,
            Frame::Control { .. } => FrameType::Control,
            Frame::Hello(_) => FrameType::Hello,
        }
    }

    fn stream(&self) -> StreamId {
        match self {
            Frame::Data { stream, .. }
            | Frame::Open { stream, .. }
            | Frame::Credit { stream, .. }
            | Frame::Fin { stream, .. }
            | Frame::Reset { stream, .. }
            | Frame::Ack { stream, .. } => *stream,
            _ => 0,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        match self {
            Frame::Data { payload, .. } | Frame::Control { payload } => {
                out.extend_from_slice(payload)
            }
            Frame::Open { header, .. } => {
                put_str8(out, &header.kind);
                put_str16(out, &header.target);
                out.put_u16(header.grant.len() as u16);
                out.extend_from_slice(&header.grant);
            }
            Frame::Credit { max_offset, .. } => out.put_u64(*max_offset),
            Frame::Fin { offset, .. } | Frame::Ack { offset, .. } => out.put_u64(*offset),
            Frame::Reset { code, reason, .. } => {
                out.put_u32(*code);
                put_str16(out, truncate(reason, MAX_REASON_LEN));
            }
            Frame::Ping { opaque } | Frame::Pong { opaque } => out.put_u64(*opaque),
            Frame::GoAway {
                last_stream,
                code,
                reason,
            } => {
                out.put_u32(*last_stream);
                out.put_u32(*code);
                put_str16(out, truncate(reason, MAX_REASON_LEN));
            }
            Frame::Hello(h) => {
                out.extend_from_slice(&HELLO_MAGIC);
                out.put_u16(h.min_version);
                out.put_u16(h.max_version);
                out.put_u64(h.capabilities);
                out.put_u32(h.max_frame_payload);
                out.put_u32(h.max_streams);
                out.put_u32(h.initial_stream_window);
                out.put_u32(h.initial_connection_window);
            }
        }
        let len = (out.len() - start - HEADER_LEN) as u32;
        let header = &mut out[start..start + HEADER_LEN];
        header[0] = self.frame_type() as u8;
        header[1] = 0;
        header[2..6].copy_from_slice(&self.stream().to_be_bytes());
        header[6..10].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends a DATA frame for `payload` without building a [`Frame`].
    pub fn encode_data(stream: StreamId, payload: &[u8], out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + payload.len());
        out.put_u8(FrameType::Data as u8);
        out.put_u8(0);
        out.put_u32(stream);
        out.put_u32(payload.len() as u32);
        out.extend_from_slice(payload);
    }

    /// Decodes one frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame. A header
    /// announcing more than `max_payload` bytes is refused at once, so a peer
    /// cannot make the receiver buffer an oversized frame.
    pub fn decode(buf: &mut BytesMut, max_payload: u32) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let raw_type = buf[0];
        let kind = FrameType::from_u8(raw_type).ok_or(FrameError::UnknownType(raw_type))?;
        let stream = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
        let len = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]);
        let max = match kind {
            FrameType::Data | FrameType::Control => max_payload.min(MAX_PAYLOAD_LIMIT),
            FrameType::Open => (4 + MAX_KIND_LEN + MAX_TARGET_LEN + MAX_GRANT_LEN) as u32,
            // code (4) + reason length (2) + reason; GOAWAY adds last stream (4).
            FrameType::Reset => (6 + MAX_REASON_LEN) as u32,
            FrameType::GoAway => (10 + MAX_REASON_LEN) as u32,
            FrameType::Hello => HELLO_LEN,
            _ => 8,
        };
        if len > max {
            return Err(FrameError::TooLarge { kind, len, max });
        }
        if kind.is_connection_level() {
            if stream != 0 {
                return Err(FrameError::ExpectedStreamZero { kind, stream });
            }
        } else if stream == 0 && !matches!(kind, FrameType::Credit | FrameType::Ack) {
            return Err(FrameError::UnexpectedStreamZero(kind));
        }
        let total = HEADER_LEN + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let mut payload = buf.split_to(len as usize).freeze();
        let frame = match kind {
            FrameType::Data => Frame::Data { stream, payload },
            FrameType::Control => Frame::Control { payload },
            FrameType::Open => {
                let m = |why| FrameError::Malformed { kind, why };
                let kind_s = get_str8(&mut payload).ok_or(m("bad stream kind"))?;
                let target = get_str16(&mut payload).ok_or(m("bad target"))?;
                let grant_len = get_u16(&mut payload).ok_or(m("missing grant length"))? as usize;
                if kind_s.len() > MAX_KIND_LEN
                    || target.len() > MAX_TARGET_LEN
                    || grant_len > MAX_GRANT_LEN
                {
                    return Err(m("field too long"));
                }
                if payload.len() != grant_len {
                    return Err(m("grant length does not match payload"));
                }
                Frame::Open {
                    stream,
                    header: OpenHeader {
                        kind: kind_s,
                        target,
                        grant: payload,
                    },
                }
            }
            FrameType::Credit => Frame::Credit {
                stream,
                max_offset: exact_u64(kind, &payload)?,
            },
            FrameType::Fin => Frame::Fin {
                stream,
                offset: exact_u64(kind, &payload)?,
            },
            FrameType::Ack => Frame::Ack {
                stream,
                offset: exact_u64(kind, &payload)?,
            },
            FrameType::Ping => Frame::Ping {
                opaque: exact_u64(kind, &payload)?,
            },
            FrameType::Pong => Frame::Pong {
                opaque: exact_u64(kind, &payload)?,
            },
            FrameType::Reset => {
                let m = |why| FrameError::Malformed { kind, why };
                let code = get_u32(&mut payload).ok_or(m("missing code"))?;
                let reason = get_str16(&mut payload).ok_or(m("bad reason"))?;
                if !payload.is_empty() {
                    return Err(m("trailing bytes"));
                }
                Frame::Reset {
                    stream,
                    code,
                    reason,
                }
            }
            FrameType::GoAway => {
                let m = |why| FrameError::Malformed { kind, why };
                let last_stream = get_u32(&mut payload).ok_or(m("missing last stream"))?;
                let code = get_u32(&mut payload).ok_or(m("missing code"))?;
                let reason = get_str16(&mut payload).ok_or(m("bad reason"))?;
                if !payload.is_empty() {
                    return Err(m("trailing bytes"));
                }
                Frame::GoAway {
                    last_stream,
                    code,
                    reason,
                }
            }
            FrameType::Hello => {
                if payload.len() != HELLO_LEN as usize || payload[..4] != HELLO_MAGIC {
                    return Err(FrameError::Malformed {
                        kind,
                        why: "not an adit HELLO",
                    });
                }
                payload.advance(4);
                Frame::Hello(Hello {
                    min_version: payload.get_u16(),
                    max_version: payload.get_u16(),
                    capabilities: payload.get_u64(),
                    max_frame_payload: payload.get_u32(),
                    max_streams: payload.get_u32(),
                    initial_stream_window: payload.get_u32(),
                    initial_connection_window: payload.get_u32(),
                })
            }
        };
        Ok(Some(frame))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str8(out: &mut Vec<u8>, s: &str) {
    let s = truncate(s, u8::MAX as usize);
    out.put_u8(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    let s = truncate(s, u16::MAX as usize);
    out.put_u16(s.len() as u16);
    out.extend_from_slice(s.as_bytes());
}

fn exact_u64(kind: FrameType, payload: &Bytes) -> Result<u64, FrameError> {
    <[u8; 8]>::try_from(payload.as_ref())
        .map(u64::from_be_bytes)
        .map_err(|_| FrameError::Malformed {
            kind,
            why: "expected exactly 8 bytes",
        })
}

fn get_u16(b: &mut Bytes) -> Option<u16> {
    (b.len() >= 2).then(|| b.get_u16())
}

fn get_u32(b: &mut Bytes) -> Option<u32> {
    (b.len() >= 4).then(|| b.get_u32())
}

fn get_string(b: &mut Bytes, len: usize) -> Option<String> {
    if b.len() < len {
        return None;
    }
    let raw = b.split_to(len);
    String::from_utf8(raw.to_vec()).ok()
}

fn get_str8(b: &mut Bytes) -> Option<String> {
    if b.is_empty() {
        return None;
    }
    let len = b.get_u8() as usize;
    get_string(b, len)
}

fn get_str16(b: &mut Bytes) -> Option<String> {
    let len = get_u16(b)? as usize;
    get_string(b, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) {
        let mut out = Vec::new();
        f.encode(&mut out);
        let mut buf = BytesMut::from(&out[..]);
        let got = Frame::decode(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(got, f);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_roundtrips() {
        roundtrip(Frame::Data {
            stream: 7,
            payload: Bytes::from_static(b"hello"),
        });
        roundtrip(Frame::Open {
            stream: 1,
            header: OpenHeader {
                kind: "tcp".into(),
                target: "127.0.0.1:22".into(),
                grant: Bytes::from_static(b"signed"),
            },
        });
        roundtrip(Frame::Credit {
            stream: 0,
            max_offset: u64::MAX,
        });
        roundtrip(Frame::Fin {
            stream: 3,
            offset: 42,
        });
        roundtrip(Frame::Reset {
            stream: 3,
            code: 4,
            reason: "denied".into(),
        });
        roundtrip(Frame::Ping { opaque: 9 });
        roundtrip(Frame::Pong { opaque: 9 });
        roundtrip(Frame::GoAway {
            last_stream: 11,
            code: 1,
            reason: "bye".into(),
        });
        roundtrip(Frame::Ack {
            stream: 5,
            offset: 1000,
        });
        roundtrip(Frame::Control {
            payload: Bytes::from_static(b"{}"),
        });
        roundtrip(Frame::Hello(Hello {
            min_version: 1,
            max_version: 1,
            capabilities: 3,
            max_frame_payload: 65536,
            max_streams: 100,
            initial_stream_window: 1 << 20,
            initial_connection_window: 1 << 22,
        }));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut out = Vec::new();
        Frame::Ping { opaque: 1 }.encode(&mut out);
        for cut in 0..out.len() {
            let mut buf = BytesMut::from(&out[..cut]);
            assert_eq!(Frame::decode(&mut buf, 1024).unwrap(), None);
        }
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            Frame::decode(&mut buf, 65536),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn unknown_type_and_wrong_stream_are_refused() {
        let mut buf = BytesMut::from(&[0xEEu8, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(
            Frame::decode(&mut buf, 1024),
            Err(FrameError::UnknownType(0xEE))
        );
        let mut buf = BytesMut::from(&[5u8, 0, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(matches!(
            Frame::decode(&mut buf, 1024),
            Err(FrameError::ExpectedStreamZero { .. })
        ));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(matches!(
            Frame::decode(&mut buf, 1024),
            Err(FrameError::UnexpectedStreamZero(FrameType::Data))
        ));
    }

    #[test]
    fn reason_longer_than_the_limit_is_refused() {
        // Found by fuzzing: a RESET carrying a 1025-byte reason must not decode,
        // since it could never be re-encoded as received.
        let reason = vec![b'x'; MAX_REASON_LEN + 1];
        let mut out = vec![4u8, 0, 0, 0, 0, 1];
        out.extend_from_slice(&((6 + reason.len()) as u32).to_be_bytes());
        out.extend_from_slice(&7u32.to_be_bytes());
        out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        out.extend_from_slice(&reason);
        let mut buf = BytesMut::from(&out[..]);
        assert!(matches!(
            Frame::decode(&mut buf, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn open_with_lying_lengths_is_malformed() {
        // kind length 200 but only 3 bytes follow.
        let mut payload = vec![200u8, b't', b'c', b'p'];
        let mut out = vec![1u8, 0, 0, 0, 0, 1];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.append(&mut payload);
        let mut buf = BytesMut::from(&out[..]);
        assert!(matches!(
            Frame::decode(&mut buf, 1024),
            Err(FrameError::Malformed { .. })
        ));
    }
}
