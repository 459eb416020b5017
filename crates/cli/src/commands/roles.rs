//! `adit roles ls|bind|rm`. The four roles are fixed; bindings give them to users,
//! optionally narrowed to nodes by label selectors.

use std::time::SystemTime;

use adit_api::{paths, BindRoleRequest, RoleBindingInfo};
use anyhow::Result;

use super::Ctx;
use crate::cli::RolesCommand;
use crate::client::path_with;
use crate::output::{format_labels, format_relative, print_json, Table};

pub async fn run(ctx: &Ctx, cmd: RolesCommand) -> Result<u8> {
    match cmd {
        RolesCommand::Ls { user } => list(ctx, user.as_deref()).await,
        RolesCommand::Bind {
            user,
            role,
            selector,
        } => bind(ctx, user, role, selector).await,
        RolesCommand::Rm { id } => remove(ctx, &id).await,
    }
}

/// `/v1/roles`, or `/v1/roles?user=…` for one user.
pub fn list_path(user: Option<&str>) -> String {
    match user {
        Some(u) => format!("{}?user={}", paths::ROLES, encode(u)),
        None => paths::ROLES.to_owned(),
    }
}

fn encode(s: &str) -> String {
    // One path segment is percent-encoded the same way as one query value.
    path_with("{v}", "v", s)
}

async fn list(ctx: &Ctx, user: Option<&str>) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let bindings: Vec<RoleBindingInfo> = api.get(&list_path(user)).await?;
    if ctx.json() {
        print_json(&bindings)?;
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut table = Table::new(["ID", "USER", "ROLE", "SELECTOR", "CREATED"]);
    for b in &bindings {
        table.row([
            b.id.clone(),
            b.user.clone(),
            b.role.clone(),
            if b.selector.is_empty() {
                "(all nodes)".to_owned()
            } else {
                format_labels(&b.selector)
            },
            format_relative(b.created_at, now),
        ]);
    }
    print!("{}", table.render());
    if bindings.is_empty() {
        eprintln!("no role bindings");
    }
    Ok(0)
}

async fn bind(
    ctx: &Ctx,
    user: String,
    role: String,
    selector: Vec<(String, String)>,
) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let request = BindRoleRequest {
        user,
        role,
        selector: selector.into_iter().collect(),
    };
    let b: RoleBindingInfo = api.post(paths::ROLES, &request).await?;
    if ctx.json() {
        print_json(&b)?;
    } else {
        println!(
            "bound {} to {} on {} (binding {})",
            b.role,
            b.user,
            if b.selector.is_empty() {
                "all nodes".to_owned()
            } else {
                format!("nodes with {}", format_labels(&b.selector))
            },
            b.id
        );
    }
    Ok(0)
}

async fn remove(ctx: &Ctx, id: &str) -> Result<u8> {
    let (_, api) = ctx.api()?;
    api.delete(&path_with(paths::ROLE, "id", id)).await?;
    println!("removed role binding {id}");
    Ok(0)
}
