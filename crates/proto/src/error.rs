//! Errors and wire codes.

use crate::frame::{FrameError, StreamId};

/// Codes carried by RESET frames.
pub mod reset_code {
    /// The stream was cancelled by its user; nothing went wrong.
    pub const CANCEL: u32 = 0;
    /// The receiver refused the stream (too many streams, or going away).
    pub const REFUSED: u32 = 1;
    /// The stream broke the protocol.
    pub const PROTOCOL: u32 = 2;
    /// Authorization (grant or local policy) denied the stream.
    pub const DENIED: u32 = 3;
    /// The target could not be reached.
    pub const UNREACHABLE: u32 = 4;
    /// The receiver failed internally.
    pub const INTERNAL: u32 = 5;
    /// The session or grant behind the stream expired.
    pub const EXPIRED: u32 = 6;
}

/// Codes carried by GOAWAY frames. `NO_ERROR` drains gracefully; any other
/// code closes the connection at once.
pub mod goaway_code {
    pub const NO_ERROR: u32 = 0;
    pub const PROTOCOL: u32 = 1;
    pub const FLOW_CONTROL: u32 = 2;
    pub const FRAME: u32 = 3;
    pub const VERSION: u32 = 4;
    pub const IDLE_TIMEOUT: u32 = 5;
    pub const FLOOD: u32 = 6;
    pub const INTERNAL: u32 = 7;
    /// The peer's identity was revoked.
    pub const REVOKED: u32 = 8;
    /// Refused by policy (unknown peer, expired credentials).
    pub const DENIED: u32 = 9;
}

/// A violation of `adit/1` by the peer. The connection is closed with a
/// GOAWAY carrying [`ProtocolError::goaway_code`] and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("the peer sent a {0} frame before HELLO")]
    HelloMissing(&'static str),
    #[error("the peer sent HELLO twice")]
    DuplicateHello,
    #[error(
        "no common protocol version: the peer speaks adit/{peer_min}..={peer_max}, \
         this endpoint speaks adit/{ours_min}..={ours_max}; upgrade the older side"
    )]
    VersionMismatch {
        peer_min: u16,
        peer_max: u16,
        ours_min: u16,
        ours_max: u16,
    },
    #[error("stream {0} was opened with the wrong parity for the peer's side")]
    WrongStreamParity(StreamId),
    #[error("stream id {0} reused or out of order")]
    StreamIdReuse(StreamId),
    #[error("{frame} frame for stream {stream}, which was never opened")]
    UnopenedStream {
        frame: &'static str,
        stream: StreamId,
    },
    #[error("stream {stream} exceeded its flow-control credit")]
    StreamFlowControl { stream: StreamId },
    #[error("the connection exceeded its flow-control credit")]
    ConnectionFlowControl,
    #[error("credit offset {0} is beyond the protocol limit")]
    CreditOverflow(u64),
    #[error("data or FIN on stream {0} after it was finished")]
    DataAfterFin(StreamId),
    #[error("FIN on stream {stream} at offset {fin} but {received} bytes were received")]
    FinOffsetMismatch {
        stream: StreamId,
        fin: u64,
        received: u64,
    },
    #[error("ACK on stream {stream} for offset {acked} beyond the {sent} bytes sent")]
    AckBeyondSent {
        stream: StreamId,
        acked: u64,
        sent: u64,
    },
    #[error("the peer floods control frames faster than it reads replies")]
    Flood,
    #[error("no frame from the peer for {0:?}: the link is dead")]
    IdleTimeout(std::time::Duration),
}

impl ProtocolError {
    /// The GOAWAY code that tells the peer what it did wrong.
    pub fn goaway_code(&self) -> u32 {
        match self {
            ProtocolError::Frame(_) => goaway_code::FRAME,
            ProtocolError::VersionMismatch { .. } => goaway_code::VERSION,
            ProtocolError::StreamFlowControl { .. }
            | ProtocolError::ConnectionFlowControl
            | ProtocolError::CreditOverflow(_) => goaway_code::FLOW_CONTROL,
            ProtocolError::Flood => goaway_code::FLOOD,
            ProtocolError::IdleTimeout(_) => goaway_code::IDLE_TIMEOUT,
            _ => goaway_code::PROTOCOL,
        }
    }
}

/// Why the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Both sides finished after a graceful GOAWAY.
    Drained,
    /// We detected a protocol violation (or a dead link).
    Local(ProtocolError),
    /// We closed on purpose with this code (e.g. revocation).
    LocalClose { code: u32, reason: String },
    /// The peer closed with an error GOAWAY.
    Peer { code: u32, reason: String },
    /// The transport under the connection ended (EOF or an I/O error) without a
    /// GOAWAY; the driver reports it with [`Connection::transport_lost`](crate::Connection::transport_lost).
    TransportLost(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Drained => write!(f, "closed gracefully"),
            CloseReason::Local(e) => write!(f, "{e}"),
            CloseReason::LocalClose { code, reason } => {
                write!(f, "closed locally (code {code}): {reason}")
            }
            CloseReason::Peer { code, reason } => {
                write!(f, "the peer closed the connection (code {code}): {reason}")
            }
            CloseReason::TransportLost(reason) => write!(f, "{reason}"),
        }
    }
}

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("stream {0} is closed")]
    Closed(StreamId),
    #[error("stream {0} was already finished for writing")]
    Finished(StreamId),
    #[error("stream reset (code {code}): {reason}")]
    Reset { code: u32, reason: String },
    #[error("the connection is closed")]
    ConnectionClosed,
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("the connection is going away; open a new one")]
    GoingAway,
    #[error("the peer allows at most {limit} concurrent streams")]
    TooManyStreams { limit: u32 },
    #[error("stream ids are exhausted on this connection; open a new one")]
    IdsExhausted,
    #[error("the connection is closed")]
    Closed,
}
