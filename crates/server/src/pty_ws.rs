//! The browser terminal: `GET /v1/nodes/{node}/pty` upgraded to a WebSocket, a shell in
//! a PTY on the node (the protocol is in [`adit_api::pty`]).
//!
//! The WebSocket is one more client of a `shell` stream: after the same authorization
//! as every stream ([`crate::proxy::authorize`]), the session is relayed by
//! [`crate::proxy::relay_kind_to_agent`] like `adit shell`'s (grant, audit with the
//! operator's address, exit status, recording), with an in-memory pipe as its client.
//! This module only translates between WebSocket messages and toolbox frames on that
//! pipe.
//!
//! Checks, in order: the `Origin` (a browser page of another site must not drive a
//! user's terminal with the user's cookies or tokens: when present it must be the
//! server's own origin, the origin of the `Host` it was sent to, or one of
//! `allowed_origins`; 403 otherwise), the token (401), the size (400), the node and the
//! caller's right to connect to it (404, 403, 409 offline), and only then the upgrade
//! itself (426 for a request that is not a WebSocket handshake).

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use adit_api::kinds;
use adit_api::pty::{ClientMessage, PtyQuery, ServerMessage, BEARER_PROTOCOL_PREFIX, SUBPROTOCOL};
use adit_api::toolbox::{self, frame_type, Frame, ShellSpec};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream, ReadBuf,
};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::api::ApiFailure;
use crate::proxy::{Authorized, Refusal, RefusalKind, Relay, StreamKind};
use crate::state::{AppState, ClientAddr};

/// Bytes buffered in the pipe between the WebSocket and the relay, each way.
const PIPE_BUF: usize = 128 * 1024;
/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE: usize = 1024 * 1024;
/// Close codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_INVALID_DATA: u16 = 1007;
const CLOSE_ERROR: u16 = 1011;

// === origins ===

/// `scheme://host[:port]` in lowercase without a default port, path or trailing slash;
/// `None` when `s` is not such an origin (or a URL with only `/` as path).
pub fn normalize_origin(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let (scheme, rest) = s.split_once("://")?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let authority = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            if port == default_port {
                host.to_string()
            } else {
                authority.to_string()
            }
        }
        _ => authority.to_string(),
    };
    Some(format!("{scheme}://{authority}"))
}

/// Whether a browser page of `origin` may open the terminal: it is the server's public
/// origin, the `https` origin of the `Host` the request was sent to, or in `allowed`
/// (normalized origins).
pub fn origin_allowed(
    origin: &str,
    host: Option<&str>,
    public_url: &str,
    allowed: &[String],
) -> bool {
    let Some(origin) = normalize_origin(origin) else {
        return false;
    };
    normalize_origin(public_url).as_deref() == Some(origin.as_str())
        || host
            .and_then(|h| normalize_origin(&format!("https://{h}")))
            .as_deref()
            == Some(origin.as_str())
        || allowed.contains(&origin)
}

// === credentials ===

/// The token of a request: `Authorization: Bearer`, else a `bearer.<token>`
/// subprotocol. `Ok(None)` when there is none.
fn credential(headers: &HeaderMap) -> Result<Option<String>, ApiFailure> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let token = v
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiFailure::unauthenticated(
                    "the Authorization header is not of the form `Bearer <token>`",
                )
            })?;
        return Ok(Some(token.to_string()));
    }
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for p in offered {
        if let Some(token) = p.strip_prefix(BEARER_PROTOCOL_PREFIX) {
            if !token.is_empty() {
                return Ok(Some(token.to_string()));
            }
        }
    }
    Ok(None)
}

fn failure_of(refusal: &Refusal) -> ApiFailure {
    let reason = refusal.reason.clone();
    match refusal.kind {
        RefusalKind::BadRequest => ApiFailure::bad_request(reason),
        RefusalKind::Unauthenticated => ApiFailure::unauthenticated(reason),
        RefusalKind::Forbidden => ApiFailure::forbidden(reason),
        RefusalKind::NotFound => ApiFailure::not_found(reason),
        RefusalKind::Offline => ApiFailure::conflict(format!(
            "{reason}; the terminal opens once its agent is connected"
        )),
        RefusalKind::Internal => {
            tracing::error!(%reason, "the browser terminal failed");
            ApiFailure::internal("the server could not open the terminal; see the server log")
        }
    }
}

// === the endpoint ===

/// `GET /v1/nodes/{node}/pty`.
pub async fn node_pty(
    State(state): State<AppState>,
    Path(node_key): Path<String>,
    query: Result<Query<PtyQuery>, QueryRejection>,
    headers: HeaderMap,
    addr: Option<Extension<ClientAddr>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let allowed = origin.to_str().is_ok_and(|o| {
            origin_allowed(
                o,
                host,
                &state.settings.public_url,
                &state.settings.allowed_origins,
            )
        });
        if !allowed {
            return ApiFailure::forbidden(format!(
                "origin '{}' may not open a terminal on this server: only pages of {} (or \
                 an origin in the server's `allowed_origins`) may",
                crate::api::shown(origin.to_str().unwrap_or("(not text)")),
                state.settings.public_url
            ))
            .into_response();
        }
    }
    let token = match credential(&headers) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return ApiFailure::unauthenticated(format!(
                "this endpoint needs a token: `Authorization: Bearer <token>`, or from a \
                 browser the WebSocket subprotocols `{SUBPROTOCOL}` and \
                 `{BEARER_PROTOCOL_PREFIX}<token>`"
            ))
            .into_response()
        }
        Err(f) => return f.into_response(),
    };
    let size = match query {
        Ok(Query(q)) => q.size(),
        Err(e) => Err(format!(
            "invalid query ({}); parameters are cols and rows, 1 to {}",
            e.body_text(),
            adit_api::pty::MAX_COLS
        )),
    };
    let (cols, rows) = match size {
        Ok(s) => s,
        Err(why) => return ApiFailure::bad_request(why).into_response(),
    };
    let peer = crate::api::source(addr).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let conn = state.token_instances.connection_id();
    let authorized = match crate::proxy::authorize(
        &state,
        &token,
        &node_key,
        adit_api::policy::Request::Shell,
        conn,
    ) {
        Ok(a) => a,
        Err((refusal, ctx)) => {
            release(&state, conn);
            crate::metrics::Metrics::inc(&state.metrics.streams_denied);
            // A node the caller cannot see is a plain 404, not audited (as in the
            // rest of the API): the audit log must not become a list of guessed names.
            let ctx = ctx.filter(|_| refusal.kind != RefusalKind::NotFound);
            if let Some(ctx) = ctx {
                crate::audit::record(
                    &state,
                    &ctx.tenant_id,
                    &ctx.actor,
                    Some(peer),
                    ctx.node_id.as_deref(),
                    crate::audit::STREAM_OPEN,
                    crate::audit::DENIED,
                    json!({ "kind": kinds::SHELL, "via": "websocket", "reason": refusal.reason }),
                );
            }
            return failure_of(&refusal).into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            release(&state, conn);
            let mut r = ApiFailure::new(
                StatusCode::UPGRADE_REQUIRED,
                "invalid_request",
                format!(
                    "this endpoint is a WebSocket ({}): connect with a WebSocket client, e.g. \
                     new WebSocket(\"wss://HOST/v1/nodes/NODE/pty\", [\"{SUBPROTOCOL}\", \
                     \"{BEARER_PROTOCOL_PREFIX}\" + token])",
                    e.body_text()
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            return r;
        }
    };
    let spec = ShellSpec {
        cols,
        rows,
        term: None,
        tty: true,
    };
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            session(socket, &state, authorized, spec, peer).await;
            release(&state, conn);
        })
}

/// Frees what a session token's instance held for this connection.
fn release(state: &AppState, conn: u64) {
    state.token_instances.connection_closed(conn);
    state.token_instances.release_connection(conn);
}

/// One terminal session: the relay to the agent and the WebSocket bridge, until both end.
async fn session(
    socket: WebSocket,
    state: &AppState,
    auth: Authorized,
    spec: ShellSpec,
    peer: SocketAddr,
) {
    let (ours, theirs) = tokio::io::duplex(PIPE_BUF);
    let gone = CancellationToken::new();
    let client = ClientSide {
        io: theirs,
        gone: Box::pin(gone.clone().cancelled_owned()),
        token: gone.clone(),
    };
    let (done_tx, done_rx) = oneshot::channel();
    let target = serde_json::to_string(&spec).unwrap_or_default();
    let relay = async {
        let mut client = client;
        let r = Relay {
            tenant_id: &auth.tenant_id,
            actor: &auth.actor,
            node_id: &auth.node.id,
            node_name: &auth.node.name,
            target: &target,
            session: None,
            cancel: auth.token.as_ref().map(|(_, _, cut)| cut),
            token: auth.token.as_ref().map(|(jti, k, _)| (jti.as_str(), *k)),
            session_expires: None,
            backing: auth.backing.clone(),
        };
        let stream = StreamKind {
            kind: kinds::SHELL,
            what: json!({ "cols": spec.cols, "rows": spec.rows, "via": "websocket" }),
            via: "websocket",
        };
        let result =
            crate::proxy::relay_kind_to_agent(state, &auth.agent, &mut client, r, stream, peer)
                .await;
        drop(client);
        let _ = done_tx.send(result);
    };
    tokio::join!(relay, bridge(socket, ours, gone, done_rx));
}

/// Moves messages between the WebSocket and the pipe until the relay is over or the
/// client is gone, then says how it ended and closes.
async fn bridge(
    socket: WebSocket,
    pipe: DuplexStream,
    gone: CancellationToken,
    done: oneshot::Receiver<Result<(), String>>,
) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut from_relay, mut to_relay) = tokio::io::split(pipe);
    let mut protocol_error: Option<String> = None;
    let mut exit_sent = false;
    let mut client_gone = false;
    {
        let inbound = async {
            while let Some(msg) = ws_rx.next().await {
                let frames = match msg {
                    Ok(Message::Binary(bytes)) => {
                        let mut out = Vec::with_capacity(bytes.len() + 16);
                        toolbox::encode_chunked(frame_type::STDIN, &bytes, &mut out);
                        out
                    }
                    Ok(Message::Text(text)) => match ClientMessage::parse(&text) {
                        Ok(ClientMessage::Resize { cols, rows }) => {
                            Frame::Resize { cols, rows }.to_bytes()
                        }
                        Err(why) => {
                            protocol_error = Some(why);
                            break;
                        }
                    },
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                };
                if to_relay.write_all(&frames).await.is_err() {
                    // The relay is over; the outbound side reports how.
                    std::future::pending::<()>().await;
                }
            }
            client_gone = protocol_error.is_none();
        };
        let outbound = async {
            let mut buf =
                Vec::with_capacity(toolbox::FRAME_HEADER_LEN + toolbox::MAX_FRAME_PAYLOAD);
            let mut chunk = vec![0u8; 32 * 1024];
            loop {
                let n = match from_relay.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    let (frame, used) = match toolbox::decode(&buf) {
                        Ok(Some(x)) => x,
                        Ok(None) => break,
                        // The agent's frames are checked by the relay too; stop here.
                        Err(_) => return,
                    };
                    buf.drain(..used);
                    let msg = match frame {
                        Frame::Stdout(b) | Frame::Stderr(b) => Message::Binary(b),
                        Frame::Exit(code) => {
                            exit_sent = true;
                            Message::Text(ServerMessage::Exit { code }.to_json())
                        }
                        Frame::Error(message) => {
                            Message::Text(ServerMessage::Error { message }.to_json())
                        }
                        _ => continue,
                    };
                    if ws_tx.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        };
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
    }
    // The client closed or broke the protocol: the relay stops (the agent's shell with
    // it); otherwise the relay has ended already.
    gone.cancel();
    let result = done.await.unwrap_or(Ok(()));
    if client_gone {
        return;
    }
    let (message, code, reason) = match (protocol_error, result) {
        (Some(why), _) => (Some(why), CLOSE_INVALID_DATA, "invalid message"),
        (None, Ok(())) if exit_sent => (None, CLOSE_NORMAL, "exited"),
        (None, Ok(())) => (
            Some("the session ended without an exit status".to_string()),
            CLOSE_ERROR,
            "ended",
        ),
        (None, Err(why)) => (Some(why), CLOSE_ERROR, "failed"),
    };
    if let Some(message) = message {
        let _ = ws_tx
            .send(Message::Text(ServerMessage::Error { message }.to_json()))
            .await;
    }
    let _ = ws_tx
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    let _ = ws_tx.close().await;
}

// === ClientSide ===

/// The relay's end of the pipe: reads fail once the WebSocket client is gone, so the
/// relay resets the agent's stream (ending the shell) instead of waiting for output.
struct ClientSide {
    io: DuplexStream,
    gone: Pin<Box<WaitForCancellationFutureOwned>>,
    token: CancellationToken,
}

impl ClientSide {
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> bool {
        self.token.is_cancelled() || self.gone.as_mut().poll(cx).is_ready()
    }
}

fn gone_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the WebSocket client went away",
    )
}

impl AsyncRead for ClientSide {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.poll_gone(cx) {
            return Poll::Ready(Err(gone_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientSide {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.token.is_cancelled() {
            return Poll::Ready(Err(gone_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let public = "https://adit.example.com:8443";
        let ok = |o: &str, host: Option<&str>| origin_allowed(o, host, public, &[]);
        assert!(ok("https://adit.example.com:8443", None));
        assert!(ok("HTTPS://Adit.Example.com:8443", None));
        assert!(!ok("https://adit.example.com", None));
        assert!(!ok("https://evil.example", Some("adit.example.com:8443")));
        assert!(!ok("http://adit.example.com:8443", None));
        assert!(!ok("null", None));
        assert!(!ok("", None));
        assert!(ok("https://10.0.0.5:8443", Some("10.0.0.5:8443")));
        assert!(ok("https://adit.lan", Some("adit.lan:443")));
        assert!(!ok("https://adit.lan.evil.example", Some("adit.lan")));
        let allowed = vec![normalize_origin("https://console.example.com/").unwrap()];
        assert!(origin_allowed(
            "https://console.example.com:443",
            None,
            public,
            &allowed
        ));
        assert_eq!(
            normalize_origin("https://[::1]:443"),
            Some("https://[::1]".into())
        );
        assert_eq!(normalize_origin("https://x/path"), None);
        assert_eq!(normalize_origin("ftp://x"), None);
        assert_eq!(normalize_origin("https://u@x"), None);
        assert_eq!(normalize_origin("https://x:8x"), None);
    }

    #[test]
    fn credentials() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h).unwrap(), None);
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("adit.pty.v1, bearer.a.b.c"),
        );
        assert_eq!(credential(&h).unwrap().as_deref(), Some("a.b.c"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer x.y.z"),
        );
        assert_eq!(credential(&h).unwrap().as_deref(), Some("x.y.z"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(credential(&h).is_err());
    }
}
