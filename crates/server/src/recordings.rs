//! Recordings of PTY sessions in asciicast v2, one file per session.
//!
//! Every `shell` stream the proxy relays (from `adit shell` or the browser-terminal
//! WebSocket) is recorded: the relay taps the toolbox frames on their way
//! ([`Tap::feed`], no buffering of the stream), the taps send events over a channel, and
//! a blocking writer task appends them to `<data>/recordings/<tenant id>/<id>.cast`
//! (directories 0700, files 0600) as they come, next to `<id>.json`, the
//! [`RecordingInfo`] (written at the start and rewritten at the end).
//!
//! - Output (`STDOUT`/`STDERR` frames) becomes `[t, "o", data]`; resizes `[t, "r",
//!   "COLSxROWS"]`; keystrokes `[t, "i", data]` only when `record_input` is on (off by
//!   default: they include passwords typed at prompts).
//! - Terminal bytes are not always UTF-8, asciicast data is a string: each direction is
//!   decoded incrementally (a sequence split across frames is joined, invalid bytes
//!   become U+FFFD), see [`Utf8Stream`].
//! - A recording is capped at `max_bytes`: the event that would pass the cap is replaced
//!   by a marker `[t, "m", "adit: recording truncated ..."]`, nothing more is written and
//!   the info says `truncated`; the session itself goes on.
//! - Memory is bounded: at most [`QUEUE_MAX`] bytes wait for the writer; beyond that
//!   output is left out of the recording (a marker says how much), never held.
//!
//! Recordings are files of this server: with several servers (HA), each keeps those of
//! the sessions it relayed.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use adit_api::toolbox::{check_header, frame_type, FRAME_HEADER_LEN};
use adit_api::RecordingInfo;
use serde_json::json;
use tokio::sync::mpsc;

use crate::state::AppState;

/// Directory under the data directory.
pub const DIR: &str = "recordings";
/// Bytes of events that may wait for the writer before output is left out.
pub const QUEUE_MAX: usize = 4 * 1024 * 1024;
/// Room kept under the cap for the truncation marker.
const MARKER_RESERVE: u64 = 160;
/// Largest info file read back.
const MAX_INFO_FILE: u64 = 64 * 1024;

/// How PTY sessions are recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSettings {
    /// Record at all.
    pub enabled: bool,
    /// Largest recording file, in bytes.
    pub max_bytes: u64,
    /// Record keystrokes (`"i"` events) too.
    pub record_input: bool,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 16 * 1024 * 1024,
            record_input: false,
        }
    }
}

/// A new recording id: `rec-` and 32 hex digits.
fn new_id() -> String {
    format!("rec-{}", uuid::Uuid::new_v4().simple())
}

/// Whether `id` is shaped like a recording id (and so safe as a file name).
pub fn is_recording_id(id: &str) -> bool {
    id.len() == 36
        && id.starts_with("rec-")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The directory of `tenant_id`'s recordings, if the id is a safe path component.
pub fn tenant_dir(data_dir: &Path, tenant_id: &str) -> Option<PathBuf> {
    let safe = !tenant_id.is_empty()
        && tenant_id.len() <= 128
        && tenant_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    safe.then(|| data_dir.join(DIR).join(tenant_id))
}

/// The asciicast file of recording `id` of `tenant_id`, if both are well-formed.
pub fn cast_path(data_dir: &Path, tenant_id: &str, id: &str) -> Option<PathBuf> {
    if !is_recording_id(id) {
        return None;
    }
    tenant_dir(data_dir, tenant_id).map(|d| d.join(format!("{id}.cast")))
}

/// The tenant's recordings, newest first, at most `limit`, those `keep` accepts.
pub fn list(
    data_dir: &Path,
    tenant_id: &str,
    limit: usize,
    keep: impl Fn(&RecordingInfo) -> bool,
) -> io::Result<Vec<RecordingInfo>> {
    let Some(dir) = tenant_dir(data_dir, tenant_id) else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if !is_recording_id(stem) {
            continue;
        }
        match read_info(&path) {
            Some(info) if info.id == stem && keep(&info) => out.push(info),
            Some(_) => {}
            None => tracing::warn!(path = %path.display(), "unreadable recording info; skipped"),
        }
    }
    out.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
    out.truncate(limit);
    Ok(out)
}

fn read_info(path: &Path) -> Option<RecordingInfo> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    let mut text = Vec::new();
    file.take(MAX_INFO_FILE).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes `info` next to its recording, atomically (temporary file, then rename).
fn write_info(dir: &Path, info: &RecordingInfo) -> io::Result<()> {
    let tmp = dir.join(format!("{}.json.tmp", info.id));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(info).map_err(io::Error::other)?)?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(format!("{}.json", info.id)))
}

fn create_dir_private(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

// === Utf8Stream ===

/// Turns a byte stream that arrives in arbitrary chunks into text: a UTF-8 sequence cut
/// by a chunk boundary is completed by the next chunk, invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    /// The start of an incomplete sequence (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text of `bytes`, given what came before.
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        let joined;
        let mut rest: &[u8] = if self.pending.is_empty() {
            bytes
        } else {
            let mut b = std::mem::take(&mut self.pending);
            b.extend_from_slice(bytes);
            joined = b;
            &joined
        };
        let mut out = String::with_capacity(rest.len());
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    return out;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        None => {
                            self.pending = after.to_vec();
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end of the stream: U+FFFD for an unfinished sequence.
    pub fn finish(&mut self) -> String {
        if std::mem::take(&mut self.pending).is_empty() {
            String::new()
        } else {
            char::REPLACEMENT_CHARACTER.to_string()
        }
    }
}

// === CastWriter ===

/// Writes an asciicast v2 file incrementally: the header line, then one event per line,
/// never more than `max_bytes` in all (see the module documentation).
pub struct CastWriter<W: Write> {
    out: W,
    written: u64,
    max_bytes: u64,
    truncated: bool,
    last_t: f64,
    output: Utf8Stream,
    input: Utf8Stream,
}

impl<W: Write> CastWriter<W> {
    /// Writes `header` (which must be a JSON object; `version` is set to 2) as the first
    /// line.
    pub fn new(mut out: W, mut header: serde_json::Value, max_bytes: u64) -> io::Result<Self> {
        header["version"] = json!(2);
        let mut line = serde_json::to_vec(&header).map_err(io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)?;
        Ok(Self {
            out,
            written: line.len() as u64,
            max_bytes,
            truncated: false,
            last_t: 0.0,
            output: Utf8Stream::default(),
            input: Utf8Stream::default(),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether the cap was reached.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Terminal output at `t` seconds since the start.
    pub fn output(&mut self, t: f64, bytes: &[u8]) -> io::Result<()> {
        let text = self.output.decode(bytes);
        self.event(t, "o", &text)
    }

    /// Keystrokes at `t`.
    pub fn input(&mut self, t: f64, bytes: &[u8]) -> io::Result<()> {
        let text = self.input.decode(bytes);
        self.event(t, "i", &text)
    }

    /// The terminal became `cols` × `rows` at `t`.
    pub fn resize(&mut self, t: f64, cols: u16, rows: u16) -> io::Result<()> {
        self.event(t, "r", &format!("{cols}x{rows}"))
    }

    /// A marker (`"m"` event) at `t`.
    pub fn marker(&mut self, t: f64, label: &str) -> io::Result<()> {
        self.event(t, "m", label)
    }

    /// Writes what the decoders still hold and flushes; returns the writer.
    pub fn finish(mut self, t: f64) -> io::Result<W> {
        let out = self.output.finish();
        self.event(t, "o", &out)?;
        let inp = self.input.finish();
        self.event(t, "i", &inp)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn event(&mut self, t: f64, code: &str, data: &str) -> io::Result<()> {
        if self.truncated || data.is_empty() {
            return Ok(());
        }
        // Times never go back, whatever the caller's clock did.
        let t = if t.is_finite() && t > self.last_t {
            t
        } else {
            self.last_t
        };
        self.last_t = t;
        let t = (t * 1e6).round() / 1e6;
        let mut line = serde_json::to_vec(&json!([t, code, data])).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.written + line.len() as u64 + MARKER_RESERVE > self.max_bytes {
            self.truncated = true;
            let mut marker = serde_json::to_vec(&json!([
                t,
                "m",
                format!(
                    "adit: recording truncated at its {}-byte limit",
                    self.max_bytes
                )
            ]))
            .map_err(io::Error::other)?;
            marker.push(b'\n');
            if self.written + marker.len() as u64 <= self.max_bytes {
                self.out.write_all(&marker)?;
                self.written += marker.len() as u64;
            }
            return self.out.flush();
        }
        self.out.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }
}

// === FrameTap ===

/// What a tap sees in a stream of toolbox frames.
#[derive(Debug, PartialEq, Eq)]
pub enum TapEvent<'a> {
    /// Part (or all) of the payload of a byte frame of this type.
    Bytes(u8, &'a [u8]),
    /// A `RESIZE` frame.
    Resize(u16, u16),
}

/// Follows toolbox frames in a byte stream cut anywhere, without buffering payloads;
/// stops at the first malformed header (the agent resets such a stream anyway).
#[derive(Debug, Default)]
pub struct FrameTap {
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    ty: u8,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The payload of a `RESIZE` frame, collected.
    fixed: [u8; 4],
    fixed_have: usize,
    failed: bool,
}

impl FrameTap {
    /// Feeds the next bytes; `emit` sees byte payloads and resizes as they complete.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(TapEvent<'_>)) {
        while !data.is_empty() && !self.failed {
            if self.left > 0 {
                let n = self.left.min(data.len());
                let (chunk, rest) = data.split_at(n);
                match self.ty {
                    frame_type::STDIN | frame_type::STDOUT | frame_type::STDERR => {
                        emit(TapEvent::Bytes(self.ty, chunk))
                    }
                    frame_type::RESIZE => {
                        let end = (self.fixed_have + n).min(4);
                        self.fixed[self.fixed_have..end]
                            .copy_from_slice(&chunk[..end - self.fixed_have]);
                        self.fixed_have = end;
                        if self.fixed_have == 4 {
                            let [a, b, c, d] = self.fixed;
                            emit(TapEvent::Resize(
                                u16::from_be_bytes([a, b]),
                                u16::from_be_bytes([c, d]),
                            ));
                        }
                    }
                    _ => {}
                }
                self.left -= n;
                data = rest;
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < FRAME_HEADER_LEN {
                continue;
            }
            self.have = 0;
            let [ty, a, b, c, d] = self.header;
            match check_header(ty, u32::from_be_bytes([a, b, c, d])) {
                Ok(len) => {
                    self.ty = ty;
                    self.left = len;
                    self.fixed_have = 0;
                }
                Err(_) => self.failed = true,
            }
        }
    }
}

// === Recording ===

/// What a recording is of.
#[derive(Debug, Clone)]
pub struct RecordingMeta {
    pub tenant_id: String,
    pub node_id: String,
    pub node: String,
    pub user: String,
    /// `shell` or `websocket` ([`RecordingInfo::via`]).
    pub via: &'static str,
    pub source: Option<std::net::SocketAddr>,
    /// The remote-access session, if the stream belongs to one.
    pub session: Option<String>,
    pub cols: u16,
    pub rows: u16,
    pub term: Option<String>,
}

enum Event {
    Output(f64, Vec<u8>),
    Input(f64, Vec<u8>),
    Resize(f64, u16, u16),
    /// Output that was left out because the writer fell behind.
    Gap(f64, usize),
    End(f64, Option<i32>),
    /// Nothing happened worth keeping (the agent refused the stream): delete it.
    Discard,
}

/// What the taps share with the writer.
struct Shared {
    started: Instant,
    tx: mpsc::UnboundedSender<Event>,
    /// Bytes sent to the writer and not yet written.
    queued: Arc<AtomicUsize>,
    record_input: bool,
    /// Output is being left out; a marker was sent.
    gapped: AtomicBool,
    /// The agent sent output.
    saw_output: AtomicBool,
}

impl Shared {
    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn send_bytes(&self, input: bool, bytes: &[u8]) {
        if !input && !bytes.is_empty() {
            self.saw_output.store(true, Ordering::Relaxed);
        }
        let t = self.t();
        if self.queued.load(Ordering::Relaxed) + bytes.len() > QUEUE_MAX {
            if !self.gapped.swap(true, Ordering::Relaxed) {
                let _ = self.tx.send(Event::Gap(t, bytes.len()));
            }
            return;
        }
        self.gapped.store(false, Ordering::Relaxed);
        self.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        let event = if input {
            Event::Input(t, bytes.to_vec())
        } else {
            Event::Output(t, bytes.to_vec())
        };
        let _ = self.tx.send(event);
    }
}

/// A recording being made. Dropping it without [`Recording::finish`] ends it too (with
/// no exit status).
pub struct Recording {
    id: String,
    shared: Arc<Shared>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

/// One direction of a recorded stream.
pub struct Tap {
    shared: Arc<Shared>,
    frames: FrameTap,
}

impl Tap {
    /// Feeds the stream's next bytes (client → agent or agent → client).
    pub fn feed(&mut self, bytes: &[u8]) {
        let shared = &self.shared;
        self.frames.feed(bytes, |event| match event {
            TapEvent::Bytes(frame_type::STDOUT | frame_type::STDERR, b) => {
                shared.send_bytes(false, b)
            }
            TapEvent::Bytes(frame_type::STDIN, b) if shared.record_input => {
                shared.send_bytes(true, b)
            }
            TapEvent::Bytes(..) => {}
            TapEvent::Resize(cols, rows) => {
                let _ = shared.tx.send(Event::Resize(shared.t(), cols, rows));
            }
        });
    }
}

impl Recording {
    /// Starts recording a PTY session; `None` when recordings are off or the files
    /// cannot be created (logged: a session is never refused for its recording).
    pub fn start(state: &AppState, meta: RecordingMeta) -> Option<Self> {
        let settings = state.settings.recordings.clone();
        if !settings.enabled {
            return None;
        }
        match Self::try_start(&state.settings.data_dir, meta, &settings) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "cannot record this PTY session; it goes on unrecorded");
                None
            }
        }
    }

    fn try_start(
        data_dir: &Path,
        meta: RecordingMeta,
        settings: &RecordingSettings,
    ) -> io::Result<Self> {
        let dir = tenant_dir(data_dir, &meta.tenant_id)
            .ok_or_else(|| io::Error::other("the tenant id is not a safe directory name"))?;
        create_dir_private(&dir)?;
        let id = new_id();
        let started_at = adit_store::now_millis();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(format!("{id}.cast")))?;
        let mut header = json!({
            "version": 2,
            "width": meta.cols,
            "height": meta.rows,
            "timestamp": started_at / 1000,
            "title": format!("{} on {}", meta.user, meta.node),
            "adit": {
                "id": id,
                "tenant_id": meta.tenant_id,
                "node_id": meta.node_id,
                "node": meta.node,
                "user": meta.user,
                "via": meta.via,
                "source": meta.source.map(|s| s.to_string()),
                "session": meta.session,
                "input_recorded": settings.record_input,
            },
        });
        if let Some(term) = &meta.term {
            header["env"] = json!({ "TERM": term });
        }
        let writer = CastWriter::new(io::BufWriter::new(file), header, settings.max_bytes)?;
        let mut info = RecordingInfo {
            id: id.clone(),
            node_id: meta.node_id,
            node: meta.node,
            user: meta.user,
            via: meta.via.to_string(),
            source: meta.source.map(|s| s.to_string()),
            cols: meta.cols,
            rows: meta.rows,
            started_at,
            ended_at: None,
            size: writer.written(),
            truncated: false,
            input_recorded: settings.record_input,
            exit_code: None,
        };
        write_info(&dir, &info)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            started: Instant::now(),
            tx,
            queued: queued.clone(),
            record_input: settings.record_input,
            gapped: AtomicBool::new(false),
            saw_output: AtomicBool::new(false),
        });
        let cast_file = dir.join(format!("{id}.cast"));
        let task = tokio::task::spawn_blocking(move || {
            let result = write_events(writer, rx, &queued, &mut info);
            if let Ok(Kept::Discarded) = result {
                let _ = std::fs::remove_file(&cast_file);
                let _ = std::fs::remove_file(dir.join(format!("{}.json", info.id)));
                return;
            }
            if let Err(e) = &result {
                tracing::warn!(recording = %info.id, error = %e, "writing the recording failed; it ends here");
            }
            if info.ended_at.is_none() {
                info.ended_at = Some(adit_store::now_millis());
            }
            if let Err(e) = write_info(&dir, &info) {
                tracing::warn!(recording = %info.id, error = %e, "cannot write the recording's info");
            }
        });
        Ok(Self {
            id,
            shared,
            writer: Some(task),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The taps for the client → agent and agent → client bytes.
    pub fn taps(&self) -> (Tap, Tap) {
        let tap = || Tap {
            shared: self.shared.clone(),
            frames: FrameTap::default(),
        };
        (tap(), tap())
    }

    /// Whether the agent sent any output so far.
    pub fn saw_output(&self) -> bool {
        self.shared.saw_output.load(Ordering::Relaxed)
    }

    /// Deletes the recording: the stream never started (the agent refused it).
    pub fn discard(mut self) {
        let _ = self.shared.tx.send(Event::Discard);
        self.writer = None;
    }

    /// Ends the recording with the shell's exit status; the returned task completes
    /// once the file and its info are written.
    pub fn finish(mut self, exit_code: Option<i32>) -> Option<tokio::task::JoinHandle<()>> {
        let _ = self.shared.tx.send(Event::End(self.shared.t(), exit_code));
        self.writer.take()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.shared.tx.send(Event::End(self.shared.t(), None));
        }
    }
}

/// What the writer task did with the recording.
#[derive(Debug, PartialEq, Eq)]
enum Kept {
    Written,
    Discarded,
}

/// The writer task: events → file, until `End` or every sender is gone.
fn write_events(
    mut writer: CastWriter<io::BufWriter<std::fs::File>>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    queued: &AtomicUsize,
    info: &mut RecordingInfo,
) -> io::Result<Kept> {
    let mut last_t = 0.0;
    let mut since_flush = 0usize;
    loop {
        // Flush when the queue runs dry, so a live recording can be read as it grows.
        let event = match rx.try_recv() {
            Ok(e) => Some(e),
            Err(_) => {
                writer.out.flush()?;
                since_flush = 0;
                rx.blocking_recv()
            }
        };
        let Some(event) = event else { break };
        match event {
            Event::Output(t, b) => {
                queued.fetch_sub(b.len(), Ordering::Relaxed);
                since_flush += b.len();
                last_t = t;
                writer.output(t, &b)?;
            }
            Event::Input(t, b) => {
                queued.fetch_sub(b.len(), Ordering::Relaxed);
                last_t = t;
                writer.input(t, &b)?;
            }
            Event::Resize(t, cols, rows) => {
                last_t = t;
                writer.resize(t, cols, rows)?;
            }
            Event::Gap(t, n) => {
                last_t = t;
                writer.marker(
                    t,
                    &format!("adit: output left out of the recording from here ({n}+ bytes): the disk could not keep up"),
                )?;
            }
            Event::End(t, code) => {
                last_t = t;
                info.exit_code = code;
                info.ended_at = Some(adit_store::now_millis());
                break;
            }
            Event::Discard => return Ok(Kept::Discarded),
        }
        if since_flush > 64 * 1024 {
            writer.out.flush()?;
            since_flush = 0;
        }
    }
    info.truncated = writer.truncated();
    let mut file = writer.finish(last_t)?;
    file.flush()?;
    let size = file.get_ref().metadata()?.len();
    info.size = size;
    Ok(Kept::Written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_api::toolbox::Frame;

    fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn cast(max: u64, f: impl FnOnce(&mut CastWriter<Vec<u8>>)) -> Vec<serde_json::Value> {
        let mut w = CastWriter::new(Vec::new(), json!({"width": 80, "height": 24}), max).unwrap();
        f(&mut w);
        lines(&w.finish(99.0).unwrap())
    }

    #[test]
    fn header_and_events() {
        let v = cast(1 << 20, |w| {
            w.output(0.5, b"hello \x1b[1mworld\x1b[0m\r\n").unwrap();
            w.resize(1.0, 100, 30).unwrap();
            w.input(1.5, b"ls\r").unwrap();
            w.output(0.2, b"late clock").unwrap();
        });
        assert_eq!(v[0]["version"], 2);
        assert_eq!(v[0]["width"], 80);
        assert_eq!(v[1], json!([0.5, "o", "hello \u{1b}[1mworld\u{1b}[0m\r\n"]));
        assert_eq!(v[2], json!([1.0, "r", "100x30"]));
        assert_eq!(v[3], json!([1.5, "i", "ls\r"]));
        // Times never go back.
        assert_eq!(v[4], json!([1.5, "o", "late clock"]));
        assert_eq!(v.len(), 5);
    }

    #[test]
    fn utf8_split_across_chunks_and_invalid_bytes() {
        let text = "é€😀 ok";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut s = Utf8Stream::default();
            let mut out = s.decode(&bytes[..cut]);
            out.push_str(&s.decode(&bytes[cut..]));
            out.push_str(&s.finish());
            assert_eq!(out, text, "cut at {cut}");
        }
        // Byte by byte.
        let mut s = Utf8Stream::default();
        let out: String = bytes.iter().map(|b| s.decode(&[*b])).collect();
        assert_eq!(out, text);
        // Invalid bytes become U+FFFD, and an unfinished sequence at the end too.
        let mut s = Utf8Stream::default();
        assert_eq!(s.decode(b"a\xffb\xc3"), "a\u{fffd}b");
        assert_eq!(s.decode(b"("), "\u{fffd}(");
        assert_eq!(s.decode(b"\xe2\x82"), "");
        assert_eq!(s.finish(), "\u{fffd}");
        let v = cast(1 << 20, |w| {
            w.output(0.1, b"\xf0\x9f").unwrap();
            w.output(0.2, b"\x98\x80!").unwrap();
            w.output(0.3, b"\x00\x07\xfe").unwrap();
        });
        assert_eq!(v[1], json!([0.2, "o", "😀!"]));
        assert_eq!(v[2], json!([0.3, "o", "\u{0}\u{7}\u{fffd}"]));
    }

    #[test]
    fn the_cap_truncates_with_a_marker() {
        let max = 1024;
        let mut w = CastWriter::new(Vec::new(), json!({}), max).unwrap();
        for i in 0..100 {
            w.output(f64::from(i), &[b'x'; 50]).unwrap();
        }
        assert!(w.truncated());
        let written = w.written();
        let bytes = w.finish(100.0).unwrap();
        assert_eq!(bytes.len() as u64, written);
        assert!(written <= max, "{written} > {max}");
        let v = lines(&bytes);
        let last = v.last().unwrap();
        assert_eq!(last[1], "m");
        assert!(last[2].as_str().unwrap().contains("truncated"), "{last}");
        assert!(v[1..v.len() - 1].iter().all(|e| e[1] == "o"));
        // Under the cap, no marker.
        let v = cast(max, |w| w.output(0.0, b"small").unwrap());
        assert!(v.iter().all(|e| e.get(1) != Some(&json!("m"))));
    }

    #[test]
    fn the_tap_follows_frames_cut_anywhere() {
        let mut bytes = Frame::Stdout(b"hello".to_vec()).to_bytes();
        bytes.extend(
            Frame::Resize {
                cols: 120,
                rows: 40,
            }
            .to_bytes(),
        );
        bytes.extend(Frame::Stdin(b"typed".to_vec()).to_bytes());
        bytes.extend(Frame::Exit(3).to_bytes());
        bytes.extend(Frame::Stderr(b"err".to_vec()).to_bytes());
        for step in [1, 2, 3, 5, 7, bytes.len()] {
            let mut tap = FrameTap::default();
            let mut out = Vec::new();
            let mut resizes = Vec::new();
            let mut typed = Vec::new();
            for chunk in bytes.chunks(step) {
                tap.feed(chunk, |e| match e {
                    TapEvent::Bytes(frame_type::STDIN, b) => typed.extend_from_slice(b),
                    TapEvent::Bytes(_, b) => out.extend_from_slice(b),
                    TapEvent::Resize(c, r) => resizes.push((c, r)),
                });
            }
            assert_eq!(out, b"helloerr", "step {step}");
            assert_eq!(typed, b"typed");
            assert_eq!(resizes, [(120, 40)]);
        }
        // A malformed header stops the tap, nothing panics.
        let mut tap = FrameTap::default();
        let mut n = 0;
        tap.feed(&[99, 0, 0, 0, 1, 1, 2, 3], |_| n += 1);
        assert_eq!(n, 0);
    }

    #[test]
    fn ids_and_paths() {
        let id = new_id();
        assert!(is_recording_id(&id), "{id}");
        for bad in [
            "",
            "rec-",
            "rec-../../etc/passwd",
            &id.to_uppercase(),
            &format!("{id}x"),
        ] {
            assert!(!is_recording_id(bad), "{bad}");
        }
        let data = Path::new("/data");
        assert!(cast_path(data, "t-1", &id).is_some());
        assert!(cast_path(data, "../t", &id).is_none());
        assert!(cast_path(data, "t", "rec-x").is_none());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_make_valid_events(
                chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
                max in 200u64..4000,
            ) {
                let mut w = CastWriter::new(Vec::new(), json!({}), max).unwrap();
                let mut all = Vec::new();
                for (i, c) in chunks.iter().enumerate() {
                    w.output(i as f64 * 0.1, c).unwrap();
                    all.extend_from_slice(c);
                }
                let out = w.finish(10.0).unwrap();
                let mut truncated = false;
                prop_assert!(out.len() as u64 <= max);
                let text = std::str::from_utf8(&out).unwrap();
                let mut data = String::new();
                let mut last = 0.0f64;
                for (i, line) in text.lines().enumerate() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if i == 0 {
                        prop_assert_eq!(&v["version"], &json!(2));
                        continue;
                    }
                    let t = v[0].as_f64().unwrap();
                    prop_assert!(t >= last);
                    last = t;
                    if v[1] == "o" {
                        data.push_str(v[2].as_str().unwrap());
                    }
                    // Finishing may be what reaches the cap: the marker says so.
                    truncated |= v[1] == "m";
                }
                if !truncated {
                    prop_assert_eq!(data, String::from_utf8_lossy(&all).into_owned());
                }
                let mut tap = FrameTap::default();
                tap.feed(&all, |_| {});
            }
        }
    }
}
