//! `adit tokens create|ls|revoke`: join tokens for enrolling devices.

use std::time::SystemTime;

use adit_api::{paths, CreateJoinTokenRequest, CreatedJoinToken, JoinTokenInfo};
use anyhow::Result;

use super::Ctx;
use crate::cli::{TokensCommand, TokensCreateArgs};
use crate::client::path_with;
use crate::error::UsageError;
use crate::output::{
    api_time, format_labels, format_relative, format_time_and_relative, print_json, Table,
};

pub async fn run(ctx: &Ctx, cmd: TokensCommand) -> Result<u8> {
    match cmd {
        TokensCommand::Create(args) => create(ctx, args).await,
        TokensCommand::Ls => list(ctx).await,
        TokensCommand::Revoke { id } => revoke(ctx, &id).await,
    }
}

async fn create(ctx: &Ctx, args: TokensCreateArgs) -> Result<u8> {
    let ttl_secs = match args.ttl {
        Some(d) if d.as_secs() == 0 => {
            return Err(UsageError("--ttl must be at least 1s".into()).into())
        }
        Some(d) => Some(d.as_secs()),
        None => None,
    };
    let (_, api) = ctx.api()?;
    let request = CreateJoinTokenRequest {
        ttl_secs,
        uses: args.uses,
        labels: args.labels.into_iter().collect(),
    };
    let created: CreatedJoinToken = api.post(paths::JOIN_TOKENS, &request).await?;
    if ctx.json() {
        print_json(&created)?;
        return Ok(0);
    }
    // Only the token on stdout, so `$(adit tokens create)` works.
    println!("{}", created.token);
    eprintln!(
        "join token {}: expires {}, {} enrolment(s), labels {}",
        created.id,
        format_time_and_relative(created.expires_at, SystemTime::now()),
        format_allowed(created.uses_allowed),
        format_labels(&created.labels)
    );
    eprintln!(
        "enrol a device with: adit-agent enroll --server {} --token <token>  (shown once; it is not stored in clear)",
        api.server()
    );
    Ok(0)
}

async fn list(ctx: &Ctx) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let tokens: Vec<JoinTokenInfo> = api.get(paths::JOIN_TOKENS).await?;
    if ctx.json() {
        print_json(&tokens)?;
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut table = Table::new([
        "ID",
        "STATUS",
        "USES",
        "EXPIRES",
        "CREATED",
        "CREATED BY",
        "LABELS",
    ]);
    for t in &tokens {
        table.row([
            t.id.clone(),
            token_status(t, now).to_owned(),
            format!("{}/{}", t.uses, format_allowed(t.uses_allowed)),
            format_relative(t.expires_at, now),
            format_relative(t.created_at, now),
            t.created_by.clone(),
            format_labels(&t.labels),
        ]);
    }
    print!("{}", table.render());
    if tokens.is_empty() {
        eprintln!("no join tokens; create one with `adit tokens create`");
    }
    Ok(0)
}

async fn revoke(ctx: &Ctx, id: &str) -> Result<u8> {
    let (_, api) = ctx.api()?;
    api.delete(&path_with(paths::JOIN_TOKEN, "id", id)).await?;
    println!("revoked join token {id}");
    Ok(0)
}

/// `active`, `revoked`, `expired` or `used up`.
pub fn token_status(t: &JoinTokenInfo, now: SystemTime) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if api_time(t.expires_at) <= now {
        "expired"
    } else if matches!(t.uses_allowed, Some(n) if n > 0 && t.uses >= n) {
        "used up"
    } else {
        "active"
    }
}

fn format_allowed(allowed: Option<u32>) -> String {
    match allowed {
        None | Some(0) => "unlimited".into(),
        Some(n) => n.to_string(),
    }
}
