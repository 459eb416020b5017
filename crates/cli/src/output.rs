//! Rendering results: aligned tables for people, the API's JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adit_api::Labels;
use clap::ValueEnum;
use serde::Serialize;

/// How listings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

// === impl Table ===

/// A table with a header row; columns are separated by two spaces and padded
/// to their widest cell (the last column is never padded).
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are kept.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(display_width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < columns {
                    line.extend(std::iter::repeat_n(' ', width - display_width(cell)));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key:  value` lines with the values aligned.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(k, _)| display_width(k) + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in fields {
        let key = format!("{k}:");
        out.push_str(&key);
        out.extend(std::iter::repeat_n(' ', width - display_width(&key) + 2));
        out.push_str(v);
        out.push('\n');
    }
    out
}

fn display_width(s: &str) -> usize {
    s.chars().count()
}

// === times ===

/// Converts an API timestamp to a `SystemTime`.
///
/// The API speaks unix milliseconds; values too small to be milliseconds of
/// this century (before 1973) are taken as seconds, so a server that sends
/// seconds still shows sensible dates rather than January 1970.
pub fn api_time(value: i64) -> SystemTime {
    let ms = if value.unsigned_abs() < 100_000_000_000 {
        value.saturating_mul(1000)
    } else {
        value
    };
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// `2025-01-02T03:04:05Z`.
pub fn format_time(value: i64) -> String {
    humantime::format_rfc3339_seconds(api_time(value)).to_string()
}

/// `in 43m`, `5m ago`, relative to `now`.
pub fn format_relative(value: i64, now: SystemTime) -> String {
    let t = api_time(value);
    match t.duration_since(now) {
        Ok(ahead) => format!("in {}", coarse(ahead)),
        Err(e) => {
            let behind = e.duration();
            if behind < Duration::from_secs(1) {
                "just now".into()
            } else {
                format!("{} ago", coarse(behind))
            }
        }
    }
}

/// `2025-01-02T03:04:05Z (in 43m)`.
pub fn format_time_and_relative(value: i64, now: SystemTime) -> String {
    format!("{} ({})", format_time(value), format_relative(value, now))
}

/// The largest whole unit: `3d`, `5h`, `12m`, `40s`.
fn coarse(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `a=1,b=2`, or `-` when there are none.
pub fn format_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The value or `-`.
pub fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ms = 1_700_000_000_000i64;
        assert_eq!(format_relative(ms + 43 * 60_000, now), "in 43m");
        assert_eq!(format_relative(ms - 5 * 60_000, now), "5m ago");
        assert_eq!(format_relative(ms, now), "in 0s");
        assert_eq!(format_relative(ms - 200, now), "just now");
        // Seconds are recognised as such.
        assert_eq!(format_relative(1_700_000_000 + 7200, now), "in 2h");
        assert_eq!(format_time(ms), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn labels() {
        let mut l = Labels::new();
        assert_eq!(format_labels(&l), "-");
        l.insert("site".into(), "lab".into());
        l.insert("env".into(), "prod".into());
        assert_eq!(format_labels(&l), "env=prod,site=lab");
    }
}
