//! `adit nodes ls|show|revoke`.

use std::io::IsTerminal as _;
use std::time::SystemTime;

use adit_api::{paths, NodeInfo};
use anyhow::Result;

use super::Ctx;
use crate::cli::NodesCommand;
use crate::client::path_with;
use crate::error::UsageError;
use crate::output::{
    format_labels, format_relative, format_time_and_relative, or_dash, print_json, render_fields,
    Table,
};

pub async fn run(ctx: &Ctx, cmd: NodesCommand) -> Result<u8> {
    match cmd {
        NodesCommand::Ls => list(ctx).await,
        NodesCommand::Show { node } => show(ctx, &node).await,
        NodesCommand::Revoke { node, yes } => revoke(ctx, &node, yes).await,
    }
}

async fn list(ctx: &Ctx) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let nodes: Vec<NodeInfo> = api.get(paths::NODES).await?;
    if ctx.json() {
        print_json(&nodes)?;
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut table = Table::new(["NAME", "STATUS", "LAST SEEN", "OS", "AGENT", "LABELS", "ID"]);
    for n in &nodes {
        table.row([
            n.name.clone(),
            node_status(n),
            n.last_seen.map_or("-".into(), |t| format_relative(t, now)),
            or_dash(n.os.as_deref()),
            or_dash(n.agent_version.as_deref()),
            format_labels(&n.labels),
            n.id.clone(),
        ]);
    }
    print!("{}", table.render());
    if nodes.is_empty() {
        eprintln!("no nodes; enrol one with a token from `adit tokens create`");
    }
    Ok(0)
}

async fn show(ctx: &Ctx, node: &str) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let info: NodeInfo = api.get(&path_with(paths::NODE, "node", node)).await?;
    if ctx.json() {
        print_json(&info)?;
    } else {
        print!("{}", render_node(&info, SystemTime::now()));
    }
    Ok(0)
}

async fn revoke(ctx: &Ctx, node: &str, yes: bool) -> Result<u8> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(UsageError(format!(
                "revoking {node} cannot be undone; pass --yes to confirm"
            ))
            .into());
        }
        let question = format!(
            "Revoke node {node}? Its tunnel drops at once and it must enrol again with a new token."
        );
        if !super::confirm(&question)? {
            eprintln!("not revoked");
            return Ok(1);
        }
    }
    let (_, api) = ctx.api()?;
    let info: NodeInfo = api
        .post_empty(&path_with(paths::NODE_REVOKE, "node", node))
        .await?;
    if ctx.json() {
        print_json(&info)?;
    } else {
        println!("revoked node {} ({})", info.name, info.id);
    }
    Ok(0)
}

fn node_status(n: &NodeInfo) -> String {
    if n.revoked_at.is_some() {
        "revoked".into()
    } else {
        n.status.clone()
    }
}

/// The fields of one node, aligned.
pub fn render_node(n: &NodeInfo, now: SystemTime) -> String {
    let time = |t: Option<i64>| t.map_or("-".into(), |t| format_time_and_relative(t, now));
    render_fields(&[
        ("name", n.name.clone()),
        ("id", n.id.clone()),
        ("status", node_status(n)),
        ("last seen", time(n.last_seen)),
        ("labels", format_labels(&n.labels)),
        ("hostname", or_dash(n.hostname.as_deref())),
        ("os", or_dash(n.os.as_deref())),
        ("agent", or_dash(n.agent_version.as_deref())),
        (
            "addresses",
            if n.addresses.is_empty() {
                "-".into()
            } else {
                n.addresses.join(", ")
            },
        ),
        ("tunnel mode", or_dash(Some(&n.tunnel_mode))),
        ("cert expires", time(n.cert_not_after)),
        ("revoked", time(n.revoked_at)),
        ("enrolled", time(Some(n.created_at))),
        ("sessions", n.activity.active_sessions.to_string()),
        ("session since", time(n.activity.session_started_at)),
        ("session until", time(n.activity.session_expires_at)),
        (
            "streams",
            format!(
                "{} open, {} since the server started",
                n.activity.streams_active, n.activity.streams_total
            ),
        ),
        ("last stream", time(n.activity.last_stream_at)),
    ])
}
