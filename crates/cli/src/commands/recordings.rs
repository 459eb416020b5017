//! `adit recordings ls|play|export`: recordings of PTY sessions (asciicast v2).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::Duration;

use adit_api::{paths, RecordingInfo, RecordingQuery};
use anyhow::{bail, Context as _, Result};

use super::Ctx;
use crate::cli::{RecordingsCommand, RecordingsExportArgs, RecordingsLsArgs, RecordingsPlayArgs};
use crate::client::path_with;
use crate::output::{format_time, or_dash, print_json, Table};

pub async fn run(ctx: &Ctx, cmd: RecordingsCommand) -> Result<u8> {
    match cmd {
        RecordingsCommand::Ls(args) => list(ctx, args).await,
        RecordingsCommand::Play(args) => play(ctx, args).await,
        RecordingsCommand::Export(args) => export(ctx, args).await,
    }
}

async fn list(ctx: &Ctx, args: RecordingsLsArgs) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let q = RecordingQuery {
        node: args.node,
        user: args.user,
        limit: args.limit,
    }
    .to_query_string();
    let path = if q.is_empty() {
        paths::RECORDINGS.to_owned()
    } else {
        format!("{}?{q}", paths::RECORDINGS)
    };
    let found: Vec<RecordingInfo> = api.get(&path).await?;
    if ctx.json() {
        print_json(&found)?;
        return Ok(0);
    }
    let mut table = Table::new([
        "ID", "STARTED", "DURATION", "NODE", "USER", "VIA", "SOURCE", "SIZE", "EXIT",
    ]);
    for r in &found {
        let duration = match r.ended_at {
            Some(end) => humantime::format_duration(Duration::from_secs(
                u64::try_from((end - r.started_at) / 1000).unwrap_or(0),
            ))
            .to_string(),
            None => "running".to_owned(),
        };
        let size = if r.truncated {
            format!("{} (truncated)", r.size)
        } else {
            r.size.to_string()
        };
        table.row([
            r.id.clone(),
            format_time(r.started_at),
            duration,
            r.node.clone(),
            r.user.clone(),
            r.via.clone(),
            or_dash(r.source.as_deref()),
            size,
            r.exit_code
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
        ]);
    }
    print!("{}", table.render());
    if found.is_empty() {
        eprintln!("no recordings match");
    }
    Ok(0)
}

async fn fetch(ctx: &Ctx, id: &str) -> Result<bytes::Bytes> {
    let (_, api) = ctx.api()?;
    api.get_bytes(&path_with(paths::RECORDING, "id", id)).await
}

async fn export(ctx: &Ctx, args: RecordingsExportArgs) -> Result<u8> {
    let cast = fetch(ctx, &args.id).await?;
    match &args.file {
        Some(path) => {
            // Recordings show everything a session printed: keep the copy private.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            f.write_all(&cast)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {} bytes to {}", cast.len(), path.display());
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&cast).context("cannot write to stdout")?;
            out.flush().context("cannot write to stdout")?;
        }
    }
    Ok(0)
}

/// One event of an asciicast v2 file.
#[derive(Debug, Clone, PartialEq)]
pub struct CastEvent {
    pub time: f64,
    pub code: String,
    pub data: String,
}

/// Parses an asciicast v2 file: the header (checked to be version 2) and its events.
pub fn parse_cast(text: &str) -> Result<(serde_json::Value, Vec<CastEvent>)> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap_or_default())
        .context("the recording has no asciicast header")?;
    if header["version"] != 2 {
        bail!(
            "the recording is asciicast version {}, this adit plays version 2",
            header["version"]
        );
    }
    let mut events = Vec::new();
    for (i, line) in lines.enumerate() {
        let v: (f64, String, String) = serde_json::from_str(line)
            .with_context(|| format!("event {} of the recording is malformed", i + 1))?;
        events.push(CastEvent {
            time: v.0,
            code: v.1,
            data: v.2,
        });
    }
    Ok((header, events))
}

/// How long to wait before an event `gap` seconds after the previous one.
pub fn delay(gap: f64, speed: f64, max_wait: Option<f64>) -> Duration {
    let mut secs = (gap / speed).max(0.0);
    if let Some(max) = max_wait {
        secs = secs.min(max);
    }
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
}

async fn play(ctx: &Ctx, args: RecordingsPlayArgs) -> Result<u8> {
    let cast = fetch(ctx, &args.id).await?;
    let text = String::from_utf8_lossy(&cast);
    let (_, events) = parse_cast(&text)?;
    let mut out = std::io::stdout();
    let mut markers = Vec::new();
    let mut previous = 0.0;
    for e in events {
        let wait = delay(e.time - previous, args.speed, args.max_wait);
        previous = e.time;
        match e.code.as_str() {
            "o" => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                out.write_all(e.data.as_bytes())
                    .context("cannot write to stdout")?;
                out.flush().context("cannot write to stdout")?;
            }
            "m" => markers.push(e.data),
            _ => {}
        }
    }
    for m in markers {
        eprintln!("[{m}]");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_parse_and_delays_scale() {
        let text = "{\"version\":2,\"width\":80,\"height\":24}\n[0.5,\"o\",\"hi\"]\n[1.0,\"r\",\"100x30\"]\n";
        let (h, events) = parse_cast(text).unwrap();
        assert_eq!(h["width"], 80);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "hi");
        assert!(parse_cast("{\"version\":1}\n").is_err());
        assert!(parse_cast("{\"version\":2}\n[1,\"o\"]\n").is_err());
        assert_eq!(delay(2.0, 2.0, None), Duration::from_secs(1));
        assert_eq!(delay(10.0, 1.0, Some(0.5)), Duration::from_millis(500));
        assert_eq!(delay(-1.0, 1.0, None), Duration::ZERO);
    }
}
