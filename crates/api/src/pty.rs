//! The browser-terminal WebSocket ([`crate::paths::NODE_PTY`]) and session recordings
//! ([`crate::paths::RECORDINGS`]).
//!
//! WebSocket protocol: **binary** messages carry terminal bytes both ways (keystrokes to
//! the PTY, the PTY's output back). **Text** messages carry one JSON object each:
//!
//! - client → server: `{"type":"resize","cols":C,"rows":R}` ([`ClientMessage`]);
//! - server → client: `{"type":"exit","code":N}` when the shell exits (N is 128 + the
//!   signal when a signal ended it, as shells report it), then a normal close (1000);
//!   `{"type":"error","message":"..."}` when the session cannot start or ends in a
//!   failure, then a close with code 1011 (or 1007 for a malformed client message)
//!   ([`ServerMessage`]).
//!
//! Authentication: `Authorization: Bearer <token>` where the client can set headers;
//! browsers, which cannot, offer two subprotocols instead:
//! `new WebSocket(url, ["adit.pty.v1", "bearer." + token])`. The server answers with
//! [`SUBPROTOCOL`] only (the token is never echoed). Tokens are not accepted in the URL:
//! URLs end up in proxy logs, browser history and `Referer` headers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The subprotocol a browser offers (and the server selects).
pub const SUBPROTOCOL: &str = "adit.pty.v1";
/// Prefix of the subprotocol that carries the token (`bearer.<JWT>`).
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";
/// Largest terminal the endpoint accepts, in columns and rows.
pub const MAX_COLS: u16 = 1000;
pub const MAX_ROWS: u16 = 1000;
/// Longest text (JSON) message a client may send; longer ones are refused.
pub const MAX_TEXT_MESSAGE: usize = 1024;

/// Query parameters of [`crate::paths::NODE_PTY`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PtyQuery {
    /// Initial width in columns (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub cols: Option<u16>,
    /// Initial height in rows (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub rows: Option<u16>,
}

impl PtyQuery {
    /// The size to start with: the defaults where absent; an error naming the bad value.
    pub fn size(&self) -> Result<(u16, u16), String> {
        let cols = self.cols.unwrap_or(crate::toolbox::DEFAULT_COLS);
        let rows = self.rows.unwrap_or(crate::toolbox::DEFAULT_ROWS);
        check_size(cols, rows)?;
        Ok((cols, rows))
    }
}

/// Whether `cols` × `rows` is a terminal size the endpoint accepts.
pub fn check_size(cols: u16, rows: u16) -> Result<(), String> {
    if !(1..=MAX_COLS).contains(&cols) || !(1..=MAX_ROWS).contains(&rows) {
        return Err(format!(
            "terminal size {cols}x{rows} is out of range: cols 1 to {MAX_COLS}, rows 1 to {MAX_ROWS}"
        ));
    }
    Ok(())
}

/// A text message from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    /// The terminal was resized.
    Resize { cols: u16, rows: u16 },
}

impl ClientMessage {
    /// Parses and validates one text message. The error says what was wrong and what
    /// is expected; it never echoes more than a few characters of the input.
    pub fn parse(text: &str) -> Result<Self, String> {
        const EXPECTED: &str = r#"expected {"type":"resize","cols":C,"rows":R}"#;
        if text.len() > MAX_TEXT_MESSAGE {
            return Err(format!(
                "text message of {} bytes is longer than {MAX_TEXT_MESSAGE}; {EXPECTED}",
                text.len()
            ));
        }
        let msg: Self = serde_json::from_str(text)
            .map_err(|e| format!("invalid control message ({e}); {EXPECTED}"))?;
        match msg {
            Self::Resize { cols, rows } => check_size(cols, rows)?,
        }
        Ok(msg)
    }
}

/// A text message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ServerMessage {
    /// The shell exited with this status; a normal close follows.
    Exit { code: i32 },
    /// The session failed or could not start; a close follows.
    Error { message: String },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        // Serialising these plain enums cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Query parameters of [`crate::paths::RECORDINGS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingQuery {
    /// Only recordings of this node (name or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only recordings of this user's sessions (user name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// At most this many (the newest; default and maximum 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
}

/// One recording of a PTY session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingInfo {
    /// `rec-` and 32 hex digits.
    pub id: String,
    pub node_id: String,
    /// The node's name when the session started.
    pub node: String,
    /// Who the session ran as: the user, or the issuer of the session token used.
    pub user: String,
    /// How the session reached the node: `shell` (`adit shell`) or `websocket` (the
    /// browser-terminal endpoint).
    pub via: String,
    /// The operator's source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Initial terminal size.
    pub cols: u16,
    pub rows: u16,
    /// When the session started and ended (unix ms); `ended_at` is absent while it runs.
    pub started_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// Size of the asciicast file in bytes.
    pub size: u64,
    /// The size cap was reached: the recording stops there (the session did not).
    pub truncated: bool,
    /// Whether keystrokes were recorded too (`"i"` events; off by default).
    pub input_recorded: bool,
    /// The shell's exit status, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl RecordingQuery {
    /// The query string (without `?`), parameters percent-encoded.
    pub fn to_query_string(&self) -> String {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let mut parts = Vec::new();
        if let Some(n) = &self.node {
            parts.push(format!("node={}", enc(n)));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user={}", enc(u)));
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit={l}"));
        }
        parts.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resize_messages() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"resize","cols":120,"rows":40}"#),
            Ok(ClientMessage::Resize {
                cols: 120,
                rows: 40
            })
        );
        for bad in [
            "",
            "resize",
            "{}",
            r#"{"type":"resize"}"#,
            r#"{"type":"resize","cols":0,"rows":40}"#,
            r#"{"type":"resize","cols":80,"rows":70000}"#,
            r#"{"type":"resize","cols":-1,"rows":4}"#,
            r#"{"type":"resize","cols":80,"rows":24,"x":1}"#,
            r#"{"type":"exit","code":1}"#,
            r#"[1,2]"#,
        ] {
            let err = ClientMessage::parse(bad).unwrap_err();
            assert!(
                err.contains("resize") || err.contains("range"),
                "{bad}: {err}"
            );
        }
        let long = format!(
            r#"{{"type":"resize","cols":80,"rows":24}}{}"#,
            " ".repeat(2000)
        );
        assert!(ClientMessage::parse(&long).unwrap_err().contains("longer"));
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            ServerMessage::Exit { code: 3 }.to_json(),
            r#"{"type":"exit","code":3}"#
        );
        let e = ServerMessage::Error {
            message: "no \"shell\"".into(),
        };
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&e.to_json()).unwrap(),
            e
        );
    }

    #[test]
    fn query_sizes() {
        assert_eq!(PtyQuery::default().size(), Ok((80, 24)));
        let q = PtyQuery {
            cols: Some(0),
            rows: None,
        };
        assert!(q.size().is_err());
        assert_eq!(
            RecordingQuery {
                node: Some("a b".into()),
                user: Some("bob".into()),
                limit: Some(5)
            }
            .to_query_string(),
            "node=a%20b&user=bob&limit=5"
        );
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = ClientMessage::parse(&text);
        }

        #[test]
        fn parsing_json_like_text_never_panics(
            ty in prop_oneof![Just("resize".to_string()), Just("exit".to_string()), ".{0,8}"],
            cols in any::<i64>(),
            rows in prop_oneof![any::<i64>().prop_map(|r| r.to_string()), ".{0,12}"],
            extra in ".{0,20}",
        ) {
            let text = format!(r#"{{"type":"{ty}","cols":{cols},"rows":{rows}{extra}"#);
            if let Ok(ClientMessage::Resize { cols, rows }) = ClientMessage::parse(&text) {
                prop_assert!((1..=MAX_COLS).contains(&cols) && (1..=MAX_ROWS).contains(&rows));
            }
        }
    }
}
