//! `adit/1`: the multiplexed wire protocol that carries every Adit tunnel.
//!
//! This crate does no I/O and reads no clock (in the manner of
//! `quinn-proto`): it is a frame codec ([`frame`]) and a state machine
//! ([`Connection`]) that a driver feeds with bytes and time. That makes it
//! testable with two in-memory peers and fuzzable without sockets.
//!
//! We write our own mux because the product needs properties no existing one
//! has together: per-stream byte offsets (the hook for resuming streams across
//! reconnects), credit windows that grow to the path's bandwidth × delay,
//! interactive streams that never wait behind bulk ones, and a decoder that is
//! fuzzed.

pub mod config;
pub mod connection;
pub mod error;
pub mod frame;

pub use config::{Config, ConfigError, ALPN, MAX_VERSION, MIN_VERSION};
pub use connection::{Connection, Event, ReadOutcome, Segments, Side, Stats, MAX_CREDIT_OFFSET};
pub use error::{goaway_code, reset_code, CloseReason, OpenError, ProtocolError, StreamError};
pub use frame::{Frame, FrameError, FrameType, Hello, OpenHeader, StreamId, MAX_PAYLOAD_LIMIT};
