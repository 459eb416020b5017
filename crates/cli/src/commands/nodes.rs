//! `adit nodes ls|show|label|revoke|action`.

use std::io::IsTerminal as _;
use std::time::SystemTime;

use adit_api::toolbox::{ActionSpec, Frame};
use adit_api::{kinds, paths, NodeInfo, NodeLabelsRequest};
use anyhow::Result;
use tokio::io::AsyncWriteExt as _;

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
        NodesCommand::Label { node, changes } => label(ctx, &node, &changes).await,
        NodesCommand::Revoke { node, yes } => revoke(ctx, &node, yes).await,
        NodesCommand::Action {
            node,
            action,
            args,
            yes,
        } => run_action(ctx, &node, action, args, yes).await,
    }
}

/// Runs a device action: checked against what the node's agent reported (so a typo or a
/// missing `--yes` is explained before anything is sent), then one `action` stream whose
/// output and exit status are the hook's. The agent checks again and has the final say.
async fn run_action(
    ctx: &Ctx,
    node: &str,
    action: String,
    args: Vec<String>,
    yes: bool,
) -> Result<u8> {
    let spec = ActionSpec {
        name: action,
        args,
        confirmed: yes,
    };
    spec.validate().map_err(UsageError)?;
    let (_, api) = ctx.api()?;
    let info: NodeInfo = api.get(&path_with(paths::NODE, "node", node)).await?;
    let listed = || {
        info.actions
            .iter()
            .map(|a| {
                let d = if a.destructive { " (destructive)" } else { "" };
                if a.description.is_empty() {
                    format!("  {}{d}", a.name)
                } else {
                    format!("  {}{d}: {}", a.name, a.description)
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let Some(known) = info.actions.iter().find(|a| a.name == spec.name) else {
        return Err(UsageError(if info.actions.is_empty() {
            format!(
                "node {} reports no device actions; its agent defines them in agent.toml \
                 ([actions.NAME] with command = [...]) or with --action NAME=CMD",
                info.name
            )
        } else {
            format!(
                "node {} has no action `{}`; its actions:\n{}",
                info.name,
                spec.name,
                listed()
            )
        })
        .into());
    };
    if known.destructive && !yes {
        return Err(UsageError(format!(
            "action `{}` on node {} is destructive{}; pass --yes to run it",
            spec.name,
            info.name,
            if known.description.is_empty() {
                String::new()
            } else {
                format!(" ({})", known.description)
            }
        ))
        .into());
    }
    let target = super::exec::toolbox_target(&info.name, &spec)?;
    let dialer = ctx.dialer()?;
    let connection = dialer.connect().await?;
    let stream = dialer.open_stream(&connection, kinds::ACTION, target)?;
    let (read, mut write) = tokio::io::split(stream);
    // Actions read no input.
    write.write_all(&Frame::Eof.to_bytes()).await?;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let result = super::exec::receive(read, &mut stdout, Some(&mut stderr)).await;
    drop(write);
    connection.finish().await;
    let code =
        result.map_err(|e| e.context(format!("action {} on node {}", spec.name, info.name)))?;
    if code != 0 && !ctx.json() {
        eprintln!(
            "action {} on node {} exited with status {code}",
            spec.name, info.name
        );
    }
    Ok(super::exec::exit_status(code))
}

async fn list(ctx: &Ctx) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let nodes: Vec<NodeInfo> = api.get(paths::NODES).await?;
    if ctx.json() {
        print_json(&nodes)?;
        return Ok(0);
    }
    if nodes.is_empty() {
        eprintln!("no nodes; enrol one with a token from `adit tokens create`");
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut table = Table::new(["NAME", "STATUS", "LAST SEEN", "OS", "AGENT", "LABELS", "ID"]);
    for n in &nodes {
        table.row([
            n.name.clone(),
            node_status(n),
            last_seen(n, now),
            or_dash(n.os.as_deref()),
            or_dash(n.agent_version.as_deref()),
            format_labels(&n.labels),
            n.id.clone(),
        ]);
    }
    print!("{}", table.render());
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

/// `KEY=VALUE` sets, `KEY-` removes.
fn label_changes(changes: &[String]) -> Result<NodeLabelsRequest, UsageError> {
    let mut req = NodeLabelsRequest {
        set: Default::default(),
        remove: Vec::new(),
    };
    for c in changes {
        if let Some((k, v)) = c.split_once('=') {
            if k.is_empty() {
                return Err(UsageError(format!("`{c}`: the label key is empty")));
            }
            req.set.insert(k.to_owned(), v.to_owned());
        } else if let Some(k) = c.strip_suffix('-').filter(|k| !k.is_empty()) {
            req.remove.push(k.to_owned());
        } else {
            return Err(UsageError(format!(
                "`{c}`: write KEY=VALUE to set a label or KEY- to remove it"
            )));
        }
    }
    Ok(req)
}

async fn label(ctx: &Ctx, node: &str, changes: &[String]) -> Result<u8> {
    let req = label_changes(changes)?;
    let (_, api) = ctx.api()?;
    let info: NodeInfo = api
        .patch(&path_with(paths::NODE_LABELS, "node", node), &req)
        .await?;
    if ctx.json() {
        print_json(&info)?;
    } else {
        println!("node {} labels: {}", info.name, format_labels(&info.labels));
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

/// `now` for a node whose tunnel is up (its `last_seen` is when it connected), else
/// how long ago it was last seen.
fn last_seen(n: &NodeInfo, now: SystemTime) -> String {
    if n.status == "online" && n.revoked_at.is_none() {
        return "now".into();
    }
    n.last_seen.map_or("-".into(), |t| format_relative(t, now))
}

fn node_status(n: &NodeInfo) -> String {
    if n.revoked_at.is_some() {
        "revoked".into()
    } else if super::fanout::is_idle_on_demand(n) {
        // Idle as designed: a session (`adit access create`) brings its tunnel up.
        "on-demand".into()
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
        (
            "commands",
            format!(
                "{} device, {} app, {} external",
                n.commands.device, n.commands.app, n.commands.external
            ),
        ),
        (
            "last command",
            n.commands.last.as_ref().map_or("-".into(), |l| {
                format!(
                    "{} {} by {}{} {}",
                    l.kind,
                    if l.what.is_empty() { "-" } else { &l.what },
                    l.actor,
                    l.source
                        .as_deref()
                        .map_or(String::new(), |s| format!(" from {s}")),
                    format_time_and_relative(l.at, now)
                )
            }),
        ),
        (
            "actions",
            if n.actions.is_empty() {
                "-".into()
            } else {
                n.actions
                    .iter()
                    .map(|a| {
                        let mut s = a.name.clone();
                        if a.destructive {
                            s.push_str(" (destructive)");
                        }
                        if !a.description.is_empty() {
                            s.push_str(&format!(": {}", a.description));
                        }
                        s
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::label_changes;

    #[test]
    fn label_changes_parse() {
        let req = label_changes(&["site=berlin".into(), "ring-".into(), "empty=".into()]).unwrap();
        assert_eq!(req.set.get("site").map(String::as_str), Some("berlin"));
        assert_eq!(req.set.get("empty").map(String::as_str), Some(""));
        assert_eq!(req.remove, ["ring"]);
        for bad in ["ring", "-", "=x"] {
            assert!(label_changes(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
