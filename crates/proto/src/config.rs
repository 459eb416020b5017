//! Limits and tunables of one `adit/1` connection.

use std::time::Duration;

/// Protocol versions this implementation speaks.
pub const MIN_VERSION: u16 = 1;
/// Highest protocol version this implementation speaks.
pub const MAX_VERSION: u16 = 1;
/// The ALPN identifier for tunnels.
pub const ALPN: &[u8] = b"adit/1";

/// Capability bits announced in HELLO.
pub mod capability {
    /// The peer understands ACK frames and keeps offsets for resumption.
    pub const OFFSETS: u64 = 1 << 0;
    /// The peer acknowledges the transport bytes it has parsed (ACK on stream
    /// 0), so a sender can keep bulk data in its own queues, where
    /// interactive data overtakes it, instead of in the kernel's buffers.
    pub const PIPE_ACK: u64 = 1 << 1;
}

/// Limits and tunables for one connection. The defaults suit a tunnel over
/// TLS on anything from loopback to a 200 ms cellular link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Most concurrent streams the peer may open towards us; more are refused
    /// with a RESET.
    pub max_streams: u32,
    /// Largest frame payload we accept.
    pub max_frame_payload: u32,
    /// Largest DATA payload we send (also bounded by the peer's limit); small
    /// enough that an interactive frame never waits long behind a bulk one.
    pub max_data_chunk: u32,
    /// Receive window each new stream starts with.
    pub initial_stream_window: u32,
    /// Receive window a stream may grow to when the path's bandwidth × delay
    /// needs it.
    pub max_stream_window: u64,
    /// Receive window of the whole connection at start.
    pub initial_connection_window: u32,
    /// Receive window the connection may grow to.
    pub max_connection_window: u64,
    /// Bytes an application may queue on one stream before writes block.
    pub stream_send_buffer: usize,
    /// Streams queued with at most this many bytes are sent before bulk ones.
    pub interactive_threshold: usize,
    /// How often to ping the peer (keep-alive and RTT measurement).
    pub ping_interval: Duration,
    /// The link is declared dead when nothing arrives for this long.
    pub idle_timeout: Duration,
    /// Keep bulk data that was handed to the transport but not yet parsed by
    /// the peer below a limit that follows the path's bandwidth × delay
    /// (needs [`capability::PIPE_ACK`] on both sides). Bulk data then waits
    /// in stream queues, where interactive data overtakes it, rather than in
    /// socket buffers, where it cannot.
    pub pipe_limit: bool,
    /// The least that limit is: enough to keep loopback and LAN links full.
    pub min_pipe_limit: u64,
    /// Acknowledge the peer's transport bytes every this many parsed bytes.
    pub pipe_ack_interval: u32,
    /// Control frames (pongs, credits, resets) allowed to wait for sending;
    /// a peer that makes us queue more is flooding and is disconnected.
    pub max_queued_control_frames: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_streams: 1024,
            max_frame_payload: 256 * 1024,
            max_data_chunk: 32 * 1024,
            initial_stream_window: 512 * 1024,
            max_stream_window: 16 * 1024 * 1024,
            initial_connection_window: 1024 * 1024,
            max_connection_window: 64 * 1024 * 1024,
            stream_send_buffer: 256 * 1024,
            interactive_threshold: 2048,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            pipe_limit: true,
            min_pipe_limit: 512 * 1024,
            pipe_ack_interval: 64 * 1024,
            max_queued_control_frames: 4096,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mux configuration: {0}")]
pub struct ConfigError(pub &'static str);

impl Config {
    /// Checks that the limits are consistent with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_streams == 0 {
            return Err(ConfigError("max_streams must be at least 1"));
        }
        if self.max_frame_payload < 1024 || self.max_frame_payload > crate::MAX_PAYLOAD_LIMIT {
            return Err(ConfigError(
                "max_frame_payload must be between 1 KiB and 16 MiB",
            ));
        }
        if self.max_data_chunk == 0 {
            return Err(ConfigError("max_data_chunk must be at least 1"));
        }
        if self.initial_stream_window < 16 * 1024 {
            return Err(ConfigError("initial_stream_window must be at least 16 KiB"));
        }
        if self.max_stream_window < u64::from(self.initial_stream_window) {
            return Err(ConfigError(
                "max_stream_window must not be below initial_stream_window",
            ));
        }
        if u64::from(self.initial_connection_window) < u64::from(self.initial_stream_window) {
            return Err(ConfigError(
                "initial_connection_window must not be below initial_stream_window",
            ));
        }
        if self.max_connection_window < u64::from(self.initial_connection_window) {
            return Err(ConfigError(
                "max_connection_window must not be below initial_connection_window",
            ));
        }
        if self.stream_send_buffer == 0 {
            return Err(ConfigError("stream_send_buffer must be at least 1"));
        }
        if self.pipe_ack_interval < 1024 {
            return Err(ConfigError("pipe_ack_interval must be at least 1 KiB"));
        }
        // A full pipe always holds enough unparsed bytes for the peer to
        // acknowledge some, so the sender never waits for an ACK that cannot come.
        if self.min_pipe_limit < 2 * u64::from(self.pipe_ack_interval) {
            return Err(ConfigError(
                "min_pipe_limit must be at least twice pipe_ack_interval",
            ));
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(ConfigError(
                "idle_timeout must be longer than ping_interval",
            ));
        }
        Ok(())
    }
}
