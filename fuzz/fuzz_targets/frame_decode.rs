//! Fuzzes the `adit/1` frame decoder with arbitrary bytes.
//!
//! For several receive limits it decodes frames until the decoder asks for
//! more bytes or refuses them, and checks that
//! - decoding never panics, always consumes bytes for a frame and never for
//!   an incomplete one,
//! - every decoded frame re-encodes to bytes that decode to the same frame
//!   (`decode(encode(f)) == f`), with nothing left over,
//! - feeding the same bytes in two pieces gives the same frames as feeding
//!   them at once (the driver's reads split frames anywhere).
#![no_main]

use adit_proto::{Frame, FrameError, MAX_PAYLOAD_LIMIT};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const LIMITS: [u32; 4] = [0, 1024, 64 * 1024, MAX_PAYLOAD_LIMIT];

/// Decodes frames from `buf` until it needs more bytes or fails.
fn decode_all(buf: &mut BytesMut, max_payload: u32) -> (Vec<Frame>, Option<FrameError>) {
    let mut frames = Vec::new();
    loop {
        let before = buf.len();
        match Frame::decode(buf, max_payload) {
            Ok(Some(frame)) => {
                assert!(buf.len() < before, "a decoded frame consumed no bytes");
                frames.push(frame);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame consumed bytes");
                return (frames, None);
            }
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn check_roundtrip(frame: &Frame, max_payload: u32) {
    let mut wire = Vec::new();
    frame.encode(&mut wire);
    let mut buf = BytesMut::from(&wire[..]);
    match Frame::decode(&mut buf, max_payload) {
        Ok(Some(again)) => {
            assert_eq!(&again, frame, "decode(encode(f)) != f");
            assert!(buf.is_empty(), "re-encoded frame left {} bytes", buf.len());
        }
        other => panic!("re-encoded {frame:?} did not decode: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    for max_payload in LIMITS {
        let mut whole = BytesMut::from(data);
        let (frames, error) = decode_all(&mut whole, max_payload);
        for frame in &frames {
            check_roundtrip(frame, max_payload);
        }

        // The same bytes arriving in two reads, split where the first byte says.
        let split = data
            .first()
            .map_or(0, |b| usize::from(*b) % (data.len() + 1));
        let mut pieces = BytesMut::from(&data[..split]);
        let (mut got, mut got_error) = decode_all(&mut pieces, max_payload);
        if got_error.is_none() {
            pieces.extend_from_slice(&data[split..]);
            let (more, more_error) = decode_all(&mut pieces, max_payload);
            got.extend(more);
            got_error = more_error;
        }
        // Headers are checked as soon as they are complete and payloads once
        // they are, so where the bytes are split cannot change the outcome.
        assert_eq!(got, frames, "split delivery changed the decoded frames");
        assert_eq!(got_error, error, "split delivery changed the error");
    }
});
