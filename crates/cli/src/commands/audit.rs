//! `adit audit ls|export`: the tenant's audit log.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use adit_api::{paths, ApiError, AuditEventInfo, AuditQuery};
use anyhow::{anyhow, Context as _, Result};

use super::Ctx;
use crate::cli::{AuditCommand, AuditFilterArgs, AuditLsArgs};
use crate::error::ApiFailure;
use crate::output::{format_time, or_dash, print_json, Table};

/// Longest detail summary shown in the table.
const DETAIL_WIDTH: usize = 60;

pub async fn run(ctx: &Ctx, cmd: AuditCommand) -> Result<u8> {
    match cmd {
        AuditCommand::Ls(args) => list(ctx, args).await,
        AuditCommand::Export(args) => export(ctx, args).await,
    }
}

/// The API query for the flags, relative times counted back from `now`.
pub fn audit_query(args: &AuditFilterArgs, limit: Option<u32>, now: SystemTime) -> AuditQuery {
    AuditQuery {
        since: args.since.map(|t| t.to_millis(now)),
        until: args.until.map(|t| t.to_millis(now)),
        node: args.node.clone(),
        actor: args.actor.clone(),
        action: args.action.clone(),
        after_seq: None,
        limit,
    }
}

/// `path?query`, or `path` when the query is empty.
pub fn with_query(path: &str, q: &AuditQuery) -> String {
    let qs = q.to_query_string();
    if qs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{qs}")
    }
}

async fn list(ctx: &Ctx, args: AuditLsArgs) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let q = audit_query(&args.filter, args.limit, SystemTime::now());
    let events: Vec<AuditEventInfo> = api.get(&with_query(paths::AUDIT, &q)).await?;
    if ctx.json() {
        print_json(&events)?;
        return Ok(0);
    }
    let mut table = Table::new([
        "TIME", "ACTOR", "SOURCE", "NODE", "ACTION", "OUTCOME", "DETAIL",
    ]);
    for e in &events {
        table.row([
            format_time(e.time),
            e.actor.clone(),
            or_dash(e.source.as_deref()),
            or_dash(e.node.as_deref().or(e.node_id.as_deref())),
            e.action.clone(),
            e.outcome.clone(),
            summarize_detail(&e.detail),
        ]);
    }
    print!("{}", table.render());
    let limit = args.limit.unwrap_or(1000) as usize;
    if events.len() >= limit {
        eprintln!(
            "showing the first {} events; narrow with --since/--until, raise --limit, or use `adit audit export`",
            events.len()
        );
    } else if events.is_empty() {
        eprintln!("no audit events match");
    }
    Ok(0)
}

/// `key=value key=value` of a JSON object (values compact), cut to a table-friendly width.
pub fn summarize_detail(detail: &serde_json::Value) -> String {
    let text = match detail {
        serde_json::Value::Null => return "-".into(),
        serde_json::Value::Object(map) if map.is_empty() => return "-".into(),
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > DETAIL_WIDTH {
        let cut: String = text.chars().take(DETAIL_WIDTH - 3).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Streams the server's JSON Lines to stdout as they arrive.
async fn export(ctx: &Ctx, args: AuditFilterArgs) -> Result<u8> {
    let profile = ctx.profile()?;
    let token = profile.valid_token(SystemTime::now())?.clone();
    let server = ctx.server_for(&profile)?;
    let tls = adit_pki::client_config(&profile.ca_pem, None, crate::client::API_ALPN)
        .context("the saved CA certificate is unusable; log in again with --ca-pin or --ca-file")?;
    // No overall timeout: an export of a large log takes as long as it takes.
    let http = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .http1_only()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("adit/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")?;
    let q = audit_query(&args, None, SystemTime::now());
    let url = server.join(&with_query(paths::AUDIT_EXPORT, &q))?;
    let mut resp = http
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| anyhow!("could not reach the server at {server}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        return Err(match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) => ApiFailure {
                status: status.as_u16(),
                code: e.code,
                message: e.message,
            },
            Err(_) => ApiFailure {
                status: status.as_u16(),
                code: String::new(),
                message: format!("the server answered HTTP {status}"),
            },
        }
        .into());
    }
    let mut out = std::io::stdout().lock();
    let mut lines: u64 = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                out.write_all(&chunk).context("cannot write to stdout")?;
            }
            Ok(None) => break,
            Err(e) => {
                out.flush().ok();
                return Err(anyhow!(
                    "the export was cut short after {lines} events ({e}); the output is incomplete, run it again"
                ));
            }
        }
    }
    out.flush().context("cannot write to stdout")?;
    eprintln!("exported {lines} audit events");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::TimeArg;
    use serde_json::json;

    #[test]
    fn detail_summaries() {
        assert_eq!(summarize_detail(&json!(null)), "-");
        assert_eq!(summarize_detail(&json!({})), "-");
        assert_eq!(
            summarize_detail(&json!({"name": "kiosk", "n": 3, "gone": null})),
            "n=3 name=kiosk"
        );
        let long = summarize_detail(&json!({"x": "y".repeat(200)}));
        assert_eq!(long.chars().count(), DETAIL_WIDTH);
        assert!(long.ends_with("..."));
        assert_eq!(summarize_detail(&json!({"a": "b\nc"})), "a=b c");
    }

    #[test]
    fn queries_from_flags() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(10_000);
        let args = AuditFilterArgs {
            since: Some(TimeArg::Ago(Duration::from_secs(3600))),
            until: None,
            node: Some("kiosk 7".into()),
            actor: None,
            action: Some("stream.open".into()),
        };
        let q = audit_query(&args, Some(50), now);
        assert_eq!(q.since, Some(6_400_000));
        assert_eq!(
            with_query(paths::AUDIT, &q),
            "/v1/audit?since=6400000&node=kiosk%207&action=stream.open&limit=50"
        );
        let empty = AuditFilterArgs {
            since: None,
            until: None,
            node: None,
            actor: None,
            action: None,
        };
        assert_eq!(
            with_query(paths::AUDIT_EXPORT, &audit_query(&empty, None, now)),
            "/v1/audit/export"
        );
    }
}
