//! Fleet fan-out for `adit exec --selector` and `adit query --selector`: the nodes whose
//! labels match, run concurrently (bounded) over one shared tunnel, each with its own
//! result, and a summary.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_api::{paths, Labels, NodeInfo};
use anyhow::Result;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Ctx;
use crate::output::Table;
use crate::tunnel::{Connection, Dialer};

/// How one node's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Ran and succeeded (exit 0, or a query answered).
    Ok,
    /// Ran and failed (a non-zero exit status).
    Failed,
    /// The node matched but has no tunnel: not tried.
    Offline,
    /// An on-demand node with no tunnel now (no live session): not tried, and not a
    /// failure, since it is idle as designed.
    OnDemand,
    /// Could not run: refused, or the stream failed.
    Error,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Offline => "offline",
            Self::OnDemand => "on-demand",
            Self::Error => "error",
        }
    }
}

/// One node's result row.
pub(crate) struct Outcome<T> {
    pub node: String,
    pub status: Status,
    pub exit: Option<i32>,
    pub duration: Duration,
    /// What went wrong (`Error`, `Offline`).
    pub error: Option<String>,
    pub value: Option<T>,
}

/// The nodes whose labels match `selector`, sorted by name, split into online and
/// offline (revoked nodes are left out).
pub(crate) async fn select(ctx: &Ctx, selector: &Labels) -> Result<(Vec<NodeInfo>, Vec<NodeInfo>)> {
    let (_, api) = ctx.api()?;
    let mut nodes: Vec<NodeInfo> = api.get(paths::NODES).await?;
    nodes.retain(|n| {
        n.revoked_at.is_none() && selector.iter().all(|(k, v)| n.labels.get(k) == Some(v))
    });
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes.into_iter().partition(|n| n.status == "online"))
}

/// Runs `job` on every online node, at most `parallel` at once, over one tunnel;
/// `report` sees each outcome as it completes. Offline nodes get an `Offline` outcome.
/// Returns every outcome, sorted by node name.
pub(crate) async fn run<T, F, Fut>(
    dialer: Dialer,
    online: Vec<NodeInfo>,
    offline: Vec<NodeInfo>,
    parallel: usize,
    job: F,
    mut report: impl FnMut(&Outcome<T>),
) -> Result<Vec<Outcome<T>>>
where
    T: Send + 'static,
    F: Fn(Arc<Dialer>, Arc<Connection>, String) -> Fut,
    Fut: Future<Output = (Status, Option<i32>, Option<String>, Option<T>)> + Send + 'static,
{
    let mut outcomes = Vec::new();
    if !online.is_empty() {
        let connection = Arc::new(dialer.connect().await?);
        let dialer = Arc::new(dialer);
        let permits = Arc::new(Semaphore::new(parallel.max(1)));
        let mut tasks = JoinSet::new();
        for node in online {
            let permits = permits.clone();
            let work = job(dialer.clone(), connection.clone(), node.name.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let started = Instant::now();
                let (status, exit, error, value) = work.await;
                Outcome {
                    node: node.name,
                    status,
                    exit,
                    duration: started.elapsed(),
                    error,
                    value,
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(outcome) => {
                    report(&outcome);
                    outcomes.push(outcome);
                }
                Err(e) => anyhow::bail!("a fan-out task failed: {e}"),
            }
        }
        if let Ok(connection) = Arc::try_unwrap(connection) {
            connection.finish().await;
        }
    }
    for node in offline {
        let (status, error) = if is_idle_on_demand(&node) {
            (
                Status::OnDemand,
                format!(
                    "on-demand, no tunnel now: open one with `adit access create {} --ttl 1h`",
                    node.name
                ),
            )
        } else {
            (Status::Offline, "the node is offline".to_owned())
        };
        let outcome = Outcome {
            node: node.name,
            status,
            exit: None,
            duration: Duration::ZERO,
            error: Some(error),
            value: None,
        };
        report(&outcome);
        outcomes.push(outcome);
    }
    outcomes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(outcomes)
}

/// The summary table: NODE, STATUS, EXIT, DURATION, ERROR.
pub(crate) fn summary<T>(outcomes: &[Outcome<T>]) -> String {
    let mut table = Table::new(["NODE", "STATUS", "EXIT", "DURATION", "ERROR"]);
    for o in outcomes {
        table.row([
            o.node.clone(),
            o.status.as_str().to_owned(),
            o.exit.map_or("-".to_owned(), |c| c.to_string()),
            if matches!(o.status, Status::Offline | Status::OnDemand) {
                "-".to_owned()
            } else {
                format!("{:.2}s", o.duration.as_secs_f64())
            },
            o.error.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    let ok = outcomes.iter().filter(|o| o.status == Status::Ok).count();
    let idle = outcomes
        .iter()
        .filter(|o| o.status == Status::OnDemand)
        .count();
    let idle = if idle > 0 {
        format!(" ({idle} on-demand without a tunnel, not tried)")
    } else {
        String::new()
    };
    format!(
        "{}{ok} of {} nodes ok{idle}\n",
        table.render(),
        outcomes.len()
    )
}

/// 0 when every node that could run did and succeeded (idle on-demand nodes are not
/// failures), else 1.
pub(crate) fn exit_code<T>(outcomes: &[Outcome<T>]) -> u8 {
    u8::from(
        outcomes
            .iter()
            .any(|o| !matches!(o.status, Status::Ok | Status::OnDemand)),
    )
}

/// An on-demand node without a tunnel: idle as designed, not broken.
pub(crate) fn is_idle_on_demand(n: &NodeInfo) -> bool {
    n.status == "offline" && n.tunnel_mode == "on-demand" && n.revoked_at.is_none()
}

/// "no node matches" as a clear error.
pub(crate) fn none_matched(selector: &Labels) -> anyhow::Error {
    let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    anyhow::anyhow!(
        "no node matches the selector {}; see `adit nodes ls` for the labels",
        sel.join(",")
    )
}

#[cfg(test)]
mod on_demand_tests {
    use super::*;

    fn outcome(node: &str, status: Status) -> Outcome<()> {
        Outcome {
            node: node.into(),
            status,
            exit: None,
            duration: Duration::ZERO,
            error: None,
            value: None,
        }
    }

    #[test]
    fn idle_on_demand_nodes_are_not_failures() {
        let idle = [outcome("a", Status::Ok), outcome("b", Status::OnDemand)];
        assert_eq!(exit_code(&idle), 0);
        assert!(
            summary(&idle).contains("1 of 2 nodes ok (1 on-demand without a tunnel, not tried)")
        );
        for bad in [Status::Offline, Status::Failed, Status::Error] {
            assert_eq!(exit_code(&[outcome("a", Status::Ok), outcome("b", bad)]), 1);
        }
    }
}
