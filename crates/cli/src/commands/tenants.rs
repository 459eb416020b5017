//! `adit tenants ls|create` (admins of the `default` tenant only).

use std::time::SystemTime;

use adit_api::{paths, CreateTenantRequest, CreatedTenant, TenantInfo};
use anyhow::Result;

use super::users::{format_roles, read_new_password};
use super::Ctx;
use crate::cli::{TenantsCommand, TenantsCreateArgs};
use crate::output::{format_relative, print_json, Table};

pub async fn run(ctx: &Ctx, cmd: TenantsCommand) -> Result<u8> {
    match cmd {
        TenantsCommand::Ls => list(ctx).await,
        TenantsCommand::Create(args) => create(ctx, args).await,
    }
}

async fn list(ctx: &Ctx) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let tenants: Vec<TenantInfo> = api.get(paths::TENANTS).await?;
    if ctx.json() {
        print_json(&tenants)?;
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut table = Table::new(["NAME", "CREATED", "ID"]);
    for t in &tenants {
        table.row([
            t.name.clone(),
            format_relative(t.created_at, now),
            t.id.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(0)
}

async fn create(ctx: &Ctx, args: TenantsCreateArgs) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let admin_password = match &args.admin_user {
        Some(user) => Some(read_new_password(
            &format!("Password for {user}, admin of {}", args.name),
            args.admin_password_stdin,
        )?),
        None => None,
    };
    let request = CreateTenantRequest {
        name: args.name,
        admin_user: args.admin_user,
        admin_password,
    };
    let created: CreatedTenant = api.post(paths::TENANTS, &request).await?;
    if ctx.json() {
        print_json(&created)?;
        return Ok(0);
    }
    println!(
        "created tenant {} ({})",
        created.tenant.name, created.tenant.id
    );
    match &created.admin_user {
        Some(u) => println!(
            "created user {} ({}) with roles {}; log in with `adit login --tenant {} --user {}`",
            u.name,
            u.id,
            format_roles(&u.roles),
            created.tenant.name,
            u.name
        ),
        None => eprintln!(
            "the tenant has no users yet; create it with --admin-user to give it an admin"
        ),
    }
    Ok(0)
}
