//! `adit api-tokens create|ls|revoke`: tokens that act as you from automation.

use std::time::SystemTime;

use adit_api::{paths, ApiTokenInfo, CreateApiTokenRequest, CreatedApiToken};
use anyhow::Result;

use super::Ctx;
use crate::cli::ApiTokensCommand;
use crate::client::path_with;
use crate::output::{api_time, format_relative, format_time_and_relative, print_json, Table};

pub async fn run(ctx: &Ctx, cmd: ApiTokensCommand) -> Result<u8> {
    match cmd {
        ApiTokensCommand::Create { name, ttl } => create(ctx, name, ttl.as_secs()).await,
        ApiTokensCommand::Ls => list(ctx).await,
        ApiTokensCommand::Revoke { id } => revoke(ctx, &id).await,
    }
}

async fn create(ctx: &Ctx, name: String, ttl_secs: u64) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let created: CreatedApiToken = api
        .post(paths::API_TOKENS, &CreateApiTokenRequest { name, ttl_secs })
        .await?;
    if ctx.json() {
        print_json(&created)?;
        return Ok(0);
    }
    println!("{}", created.token);
    eprintln!(
        "API token {} ({}) acts as {} until {}; shown once, keep it secret. Use it as \
         ADIT_TOKEN=<token> adit ... or `Authorization: Bearer <token>`",
        created.info.id,
        created.info.name,
        created.info.user,
        format_time_and_relative(created.info.expires_at, SystemTime::now())
    );
    Ok(0)
}

async fn list(ctx: &Ctx) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let rows: Vec<ApiTokenInfo> = api.get(paths::API_TOKENS).await?;
    if ctx.json() {
        print_json(&rows)?;
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut table = Table::new(["ID", "NAME", "USER", "STATUS", "EXPIRES", "CREATED BY"]);
    for t in &rows {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else if api_time(t.expires_at) <= now {
            "expired"
        } else {
            "active"
        };
        table.row([
            t.id.clone(),
            t.name.clone(),
            t.user.clone(),
            status.to_string(),
            format_relative(t.expires_at, now),
            t.created_by.clone(),
        ]);
    }
    print!("{}", table.render());
    if rows.is_empty() {
        eprintln!("no API tokens; create one with `adit api-tokens create NAME --ttl 30d`");
    }
    Ok(0)
}

async fn revoke(ctx: &Ctx, id: &str) -> Result<u8> {
    let (_, api) = ctx.api()?;
    api.delete(&path_with(paths::API_TOKEN, "id", id)).await?;
    if ctx.json() {
        print_json(&serde_json::json!({ "id": id, "revoked": true }))?;
    } else {
        println!("revoked API token {id}");
    }
    Ok(0)
}
