//! One stream from the server: authorize it, connect the local target, splice bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_proto::{reset_code, OpenHeader};
use adit_tunnel::Stream;
use tokio::net::TcpStream;

use crate::config::AllowList;
use crate::expiry::SessionClocks;
use crate::policy::{self, Authorized, Request};
use crate::state::Credentials;

/// Timeout of the TCP connect to a local target.
pub const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one accepted stream to completion. Refusals and failures reset the stream
/// with a reason; nothing here can fail the tunnel.
pub async fn handle(
    mut stream: Stream,
    header: OpenHeader,
    creds: Arc<Credentials>,
    allow: Arc<AllowList>,
    clocks: Arc<SessionClocks>,
) {
    let Authorized { claims, request } = match policy::authorize(&header, &creds, &allow) {
        Ok(a) => a,
        Err(denial) => {
            tracing::warn!(stream = %stream.id(), reason = %denial.reason, "stream refused");
            stream.reset(denial.code, &denial.reason);
            return;
        }
    };
    // A session's stream ends with the session, whatever the proxy does.
    let session_end = match (&claims.ses, claims.sxp) {
        (Some(ses), Some(sxp)) => Some((ses.clone(), clocks.watch(ses, sxp))),
        _ => None,
    };
    if let Some((ses, end)) = &session_end {
        if *end.borrow() <= crate::clock::server_now_ms() {
            tracing::warn!(jti = %claims.jti, session = %ses, "stream refused: session expired");
            stream.reset(reset_code::EXPIRED, "the remote-access session has expired");
            return;
        }
    }
    let target = match request {
        Request::Tcp(target) => target,
        toolbox => {
            serve_toolbox(stream, &claims, toolbox, &allow, session_end).await;
            return;
        }
    };
    let started = Instant::now();
    let addr = (target.host(), target.port());
    let mut tcp = match tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(addr)).await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let reason = format!("cannot connect to {target}: {e}");
            tracing::warn!(jti = %claims.jti, usr = %claims.usr, %target, error = %e, "target unreachable");
            stream.reset(reset_code::UNREACHABLE, &reason);
            return;
        }
        Err(_) => {
            let reason = format!(
                "connecting to {target} timed out after {}s",
                TARGET_CONNECT_TIMEOUT.as_secs()
            );
            tracing::warn!(jti = %claims.jti, usr = %claims.usr, %target, "target connect timed out");
            stream.reset(reset_code::UNREACHABLE, &reason);
            return;
        }
    };
    // Interactive protocols (ssh) must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    tracing::info!(jti = %claims.jti, usr = %claims.usr, %target, "stream connected");

    // Copies both ways; when one side ends, the other side's write half is shut down,
    // so half-close crosses the tunnel in both directions.
    // 64 KiB buffers: fewer, fuller DATA frames and fewer wake-ups per byte.
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut tcp, 64 * 1024, 64 * 1024);
    let copied = match session_end {
        None => copy.await,
        Some((ses, end)) => tokio::select! {
            r = copy => r,
            _ = crate::expiry::ended(end) => {
                tracing::info!(
                    jti = %claims.jti, usr = %claims.usr, %target, session = %ses,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "session expired: stream cut by the agent"
                );
                stream.reset(reset_code::EXPIRED, "the remote-access session has expired");
                return;
            }
        },
    };
    match copied {
        Ok((to_target, from_target)) => {
            tracing::info!(
                jti = %claims.jti, usr = %claims.usr, %target,
                bytes_to_target = to_target, bytes_from_target = from_target,
                duration_ms = started.elapsed().as_millis() as u64,
                "stream closed"
            );
        }
        Err(e) => {
            tracing::info!(
                jti = %claims.jti, usr = %claims.usr, %target, error = %e,
                duration_ms = started.elapsed().as_millis() as u64,
                "stream ended with an error"
            );
            stream.reset(
                reset_code::CANCEL,
                &format!("stream to {target} failed: {e}"),
            );
        }
    }
}

/// Serves an `exec`, `shell`, `file`, `query` or `action` stream, cut at the session's end like TCP ones.
async fn serve_toolbox(
    mut stream: Stream,
    claims: &adit_pki::GrantClaims,
    request: Request,
    allow: &AllowList,
    session_end: Option<(String, tokio::sync::watch::Receiver<i64>)>,
) {
    let started = Instant::now();
    let (kind, what) = match &request {
        Request::Exec(spec) => ("exec", spec.command_line()),
        Request::Shell(_) => ("shell", String::new()),
        Request::File(spec) => ("file", format!("{} {}", spec.op.as_str(), spec.path)),
        Request::Query(spec) => ("query", format!("{} {}", spec.what, spec.args_line())),
        Request::Action(spec, _) => ("action", spec.command_line()),
        Request::Tcp(t) => ("tcp", t.to_string()),
    };
    tracing::info!(jti = %claims.jti, usr = %claims.usr, kind, what = %what, "toolbox stream started");
    let work = async {
        match &request {
            Request::Exec(spec) => format!("{:?}", crate::exec::serve(&mut stream, spec).await),
            Request::Shell(spec) => {
                let shell = allow.toolbox().shell.clone();
                format!("{:?}", crate::pty::serve(&mut stream, spec, &shell).await)
            }
            Request::File(spec) => format!(
                "{:?}",
                crate::files::serve(&mut stream, spec, &allow.toolbox().file_roots).await
            ),
            Request::Query(spec) => format!(
                "{:?}",
                crate::query::serve(&mut stream, spec, &allow.toolbox().file_roots).await
            ),
            Request::Action(_, exec) => {
                format!("{:?}", crate::exec::serve(&mut stream, exec).await)
            }
            Request::Tcp(_) => "not a toolbox stream".to_owned(),
        }
    };
    let outcome = match session_end {
        None => work.await,
        Some((ses, end)) => tokio::select! {
            outcome = work => outcome,
            _ = crate::expiry::ended(end) => {
                stream.reset(reset_code::EXPIRED, "the remote-access session has expired");
                format!("session {ses} expired: stream cut by the agent")
            }
        },
    };
    tracing::info!(
        jti = %claims.jti, usr = %claims.usr, kind, what = %what, %outcome,
        duration_ms = started.elapsed().as_millis() as u64,
        "toolbox stream ended"
    );
}
