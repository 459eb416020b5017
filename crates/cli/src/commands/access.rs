//! `adit access create|ls|show|extend|rm`: remote access configurations;
//! `adit access token|tokens|revoke-token`: session tokens.

use std::time::{Duration, SystemTime};

use adit_api::{
    paths, remote_access_state, CreateRemoteAccessRequest, CreateSessionTokenRequest,
    CreatedSessionToken, RemoteAccessInfo, RemoteAccessQuery, SessionTokenInfo,
    UpdateRemoteAccessRequest,
};
use anyhow::Result;

use super::Ctx;
use crate::cli::{AccessCommand, AccessCreateArgs, AccessTokenArgs};
use crate::client::{path_with, ApiClient};
use crate::output::{
    format_relative, format_time_and_relative, or_dash, print_json, render_fields, Table,
};

/// How long `create --endpoint` waits for the endpoint.
pub const START_WAIT: Duration = Duration::from_secs(10);
/// How often it asks meanwhile.
pub const START_POLL: Duration = Duration::from_millis(200);

pub async fn run(ctx: &Ctx, cmd: AccessCommand) -> Result<u8> {
    match cmd {
        AccessCommand::Create(args) => create(ctx, args).await,
        AccessCommand::Ls { node, all } => list(ctx, node, all).await,
        AccessCommand::Show { id } => show(ctx, &id).await,
        AccessCommand::Extend { id, ttl } => extend(ctx, &id, ttl).await,
        AccessCommand::Rm { id } => remove(ctx, &id).await,
        AccessCommand::Token(args) => issue_token(ctx, args).await,
        AccessCommand::Tokens => list_tokens(ctx).await,
        AccessCommand::RevokeToken { id } => revoke_token(ctx, &id).await,
    }
}

async fn issue_token(ctx: &Ctx, args: AccessTokenArgs) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let request = CreateSessionTokenRequest {
        node: args.node,
        ttl_secs: args.ttl.as_secs(),
        instances: Some(args.instances),
        enc: args.enc,
    };
    let created: CreatedSessionToken = api.post(paths::SESSION_TOKENS, &request).await?;
    if ctx.json() {
        print_json(&created)?;
        return Ok(0);
    }
    // Only the token on stdout, so `$(adit access token ...)` works.
    println!("{}", created.token);
    let info = &created.info;
    eprintln!(
        "session token {} for node {}: {} instance(s), expires {}",
        info.id,
        info.node,
        info.instances,
        format_time_and_relative(info.expires_at, SystemTime::now())
    );
    eprintln!(
        "use it with: adit --token <token> ssh USER@{} (no login needed; revoke with `adit access revoke-token {}`)",
        info.node, info.id
    );
    Ok(0)
}

async fn list_tokens(ctx: &Ctx) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let rows: Vec<SessionTokenInfo> = api.get(paths::SESSION_TOKENS).await?;
    if ctx.json() {
        print_json(&rows)?;
        return Ok(0);
    }
    if rows.is_empty() {
        eprintln!("no session tokens; issue one with `adit access token NODE --ttl 1h`");
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut table = Table::new(["ID", "NODE", "STATUS", "INSTANCES", "EXPIRES", "CREATED BY"]);
    for t in &rows {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else if crate::output::api_time(t.expires_at) <= now {
            "expired"
        } else {
            "active"
        };
        table.row([
            t.id.clone(),
            t.node.clone(),
            status.to_string(),
            t.instances.to_string(),
            format_relative(t.expires_at, now),
            t.created_by.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(0)
}

async fn revoke_token(ctx: &Ctx, id: &str) -> Result<u8> {
    let (_, api) = ctx.api()?;
    api.delete(&path_with(paths::SESSION_TOKEN, "id", id))
        .await?;
    if !ctx.json() {
        println!("revoked session token {id}: new streams are refused and open ones are cut");
    } else {
        print_json(&serde_json::json!({ "id": id, "revoked": true }))?;
    }
    Ok(0)
}

fn one(id: &str) -> String {
    path_with(paths::REMOTE_ACCESS_ONE, "id", id)
}

async fn create(ctx: &Ctx, args: AccessCreateArgs) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let request = CreateRemoteAccessRequest {
        node: args.node,
        ttl_secs: args.ttl.as_secs().max(1),
        endpoint: args.endpoint,
        user: args.user,
        port: args.port,
        allowed_cidrs: args.allow_from,
    };
    let mut info: RemoteAccessInfo = api.post(paths::REMOTE_ACCESS, &request).await?;
    let mut started = !request.endpoint;
    if request.endpoint {
        info = wait_started(&api, info).await?;
        started = is_started(&info);
    }
    if ctx.json() {
        print_json(&info)?;
    } else if request.endpoint && started {
        println!("{}", started_line(&info, api.server().host()));
    } else if request.endpoint {
        println!(
            "{} {}: {}",
            info.resource_id,
            remote_access_state::short(&info.current_state),
            info.configuration_status
        );
    } else {
        println!(
            "{} {} for node {} until {}",
            info.resource_id,
            remote_access_state::short(&info.current_state),
            info.node_name,
            format_time_and_relative(info.expiration_timestamp, SystemTime::now())
        );
    }
    if request.endpoint && !started {
        eprintln!(
            "note: the endpoint did not open within {} s (is the node online?); the server \
             keeps trying until it expires. Check with `adit access show {}`",
            START_WAIT.as_secs(),
            info.resource_id
        );
    }
    Ok(0)
}

/// Whether the endpoint is up.
pub fn is_started(info: &RemoteAccessInfo) -> bool {
    info.current_state == remote_access_state::STARTED && info.local_port.is_some()
}

/// Whether waiting longer cannot help.
fn is_final(info: &RemoteAccessInfo) -> bool {
    info.current_state == remote_access_state::DELETED
        || info.current_state == remote_access_state::ERROR
}

/// Polls until the endpoint is up, the configuration failed, or [`START_WAIT`] passes.
async fn wait_started(api: &ApiClient, mut info: RemoteAccessInfo) -> Result<RemoteAccessInfo> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let path = one(&info.resource_id);
    while !is_started(&info) && !is_final(&info) {
        if tokio::time::Instant::now() + START_POLL > deadline {
            break;
        }
        tokio::time::sleep(START_POLL).await;
        info = api.get(&path).await?;
    }
    Ok(info)
}

/// `rmtacconf-ab12cd34 STARTED: ssh -p 40123 pi@adit.example.com`.
pub fn started_line(info: &RemoteAccessInfo, server_host: &str) -> String {
    format!(
        "{} {}: {}",
        info.resource_id,
        remote_access_state::short(&info.current_state),
        ssh_command(info, server_host)
    )
}

/// The ssh command that uses the endpoint (`ssh -p PORT [USER@]HOST`).
pub fn ssh_command(info: &RemoteAccessInfo, server_host: &str) -> String {
    let port = info.local_port.map_or("?".into(), |p| p.to_string());
    match &info.user {
        Some(user) => format!("ssh -p {port} {user}@{server_host}"),
        None => format!("ssh -p {port} {server_host}"),
    }
}

async fn list(ctx: &Ctx, node: Option<String>, all: bool) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let query = RemoteAccessQuery {
        node,
        state: None,
        include_deleted: all.then_some(true),
    }
    .to_query_string();
    let path = if query.is_empty() {
        paths::REMOTE_ACCESS.to_string()
    } else {
        format!("{}?{query}", paths::REMOTE_ACCESS)
    };
    let rows: Vec<RemoteAccessInfo> = api.get(&path).await?;
    if ctx.json() {
        print_json(&rows)?;
        return Ok(0);
    }
    if rows.is_empty() {
        eprintln!("no remote access; create one with `adit access create NODE --ttl 1h`");
        return Ok(0);
    }
    let now = SystemTime::now();
    let host = api.server().host().to_string();
    let mut table = Table::new([
        "ID",
        "NODE",
        "STATE",
        "TARGET",
        "ENDPOINT",
        "EXPIRES",
        "CREATED BY",
        "STATUS",
    ]);
    for r in &rows {
        table.row([
            r.resource_id.clone(),
            r.node_name.clone(),
            state_cell(r),
            r.target.clone(),
            endpoint_cell(r, &host),
            expires_cell(r, now),
            r.created_by.clone(),
            or_dash(
                Some(&r.configuration_status)
                    .filter(|s| !s.is_empty())
                    .map(String::as_str),
            ),
        ]);
    }
    print!("{}", table.render());
    Ok(0)
}

/// When a live configuration expires; `-` once it is deleted (it expires no more).
fn expires_cell(r: &RemoteAccessInfo, now: SystemTime) -> String {
    if r.current_state == remote_access_state::DELETED {
        "-".into()
    } else {
        format_relative(r.expiration_timestamp, now)
    }
}

/// `STARTED`, or `STARTED→DELETED` while a change is pending.
fn state_cell(r: &RemoteAccessInfo) -> String {
    let current = remote_access_state::short(&r.current_state);
    if r.desired_state == r.current_state || r.current_state == remote_access_state::DELETED {
        return current.to_string();
    }
    // A new configuration wants STARTED; only show a pending deletion.
    if r.desired_state == remote_access_state::DELETED {
        format!("{current}→DELETED")
    } else {
        current.to_string()
    }
}

fn endpoint_cell(r: &RemoteAccessInfo, host: &str) -> String {
    match (r.endpoint, r.local_port) {
        (false, _) => "-".into(),
        (true, Some(port)) => crate::cli::host_port(host, port),
        (true, None) => "pending".into(),
    }
}

async fn show(ctx: &Ctx, id: &str) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let info: RemoteAccessInfo = api.get(&one(id)).await?;
    if ctx.json() {
        print_json(&info)?;
    } else {
        print!(
            "{}",
            render_access(&info, api.server().host(), SystemTime::now())
        );
    }
    Ok(0)
}

/// The fields of one configuration, aligned.
pub fn render_access(r: &RemoteAccessInfo, server_host: &str, now: SystemTime) -> String {
    let time = |t: i64| format_time_and_relative(t, now);
    let mut fields = vec![
        ("id", r.resource_id.clone()),
        ("node", format!("{} ({})", r.node_name, r.instance)),
        (
            "state",
            remote_access_state::short(&r.current_state).to_string(),
        ),
        (
            "desired",
            remote_access_state::short(&r.desired_state).to_string(),
        ),
        (
            "status",
            format!(
                "{} [{}] {}",
                or_dash(
                    Some(&r.configuration_status)
                        .filter(|s| !s.is_empty())
                        .map(String::as_str)
                ),
                r.configuration_status_indicator,
                format_relative(r.configuration_status_timestamp, now)
            ),
        ),
        ("kind", r.kind.clone()),
        ("target", r.target.clone()),
        ("user", or_dash(r.user.as_deref())),
        ("endpoint", endpoint_cell(r, server_host)),
        (
            "allowed from",
            if r.allowed_cidrs.is_empty() {
                "any".into()
            } else {
                r.allowed_cidrs.join(", ")
            },
        ),
        ("expires", time(r.expiration_timestamp)),
        ("created by", r.created_by.clone()),
        ("created", time(r.created_at)),
        ("updated", time(r.updated_at)),
    ];
    if is_started(r) {
        fields.push(("connect", ssh_command(r, server_host)));
    }
    render_fields(&fields)
}

async fn extend(ctx: &Ctx, id: &str, ttl: Duration) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let info: RemoteAccessInfo = api
        .patch(
            &one(id),
            &UpdateRemoteAccessRequest {
                ttl_secs: ttl.as_secs().max(1),
            },
        )
        .await?;
    if ctx.json() {
        print_json(&info)?;
    } else {
        println!(
            "{} now expires {}",
            info.resource_id,
            format_time_and_relative(info.expiration_timestamp, SystemTime::now())
        );
    }
    Ok(0)
}

async fn remove(ctx: &Ctx, id: &str) -> Result<u8> {
    let (_, api) = ctx.api()?;
    api.delete(&one(id)).await?;
    if ctx.json() {
        let info: RemoteAccessInfo = api.get(&one(id)).await?;
        print_json(&info)?;
    } else {
        println!("deleting {id}: the server closes its endpoint and connections");
    }
    Ok(0)
}
