//! `adit users ls|create|rm|disable|enable|passwd`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use adit_api::{
    paths, CreateUserRequest, RoleInfo, SetPasswordRequest, UpdateUserRequest, UserInfo,
};
use anyhow::{bail, Context as _, Result};

use super::Ctx;
use crate::cli::{UsersCommand, UsersCreateArgs};
use crate::client::path_with;
use crate::error::UsageError;
use crate::output::{format_labels, format_relative, print_json, Table};

pub async fn run(ctx: &Ctx, cmd: UsersCommand) -> Result<u8> {
    match cmd {
        UsersCommand::Ls => list(ctx).await,
        UsersCommand::Create(args) => create(ctx, args).await,
        UsersCommand::Rm { user, yes } => remove(ctx, &user, yes).await,
        UsersCommand::Disable { user } => set_disabled(ctx, &user, true).await,
        UsersCommand::Enable { user } => set_disabled(ctx, &user, false).await,
        UsersCommand::Passwd {
            user,
            password_stdin,
        } => passwd(ctx, user, password_stdin).await,
    }
}

async fn list(ctx: &Ctx) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let users: Vec<UserInfo> = api.get(paths::USERS).await?;
    if ctx.json() {
        print_json(&users)?;
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut table = Table::new(["NAME", "ROLES", "STATUS", "CREATED", "ID"]);
    for u in &users {
        table.row([
            u.name.clone(),
            format_roles(&u.roles),
            if u.disabled { "disabled" } else { "active" }.to_owned(),
            format_relative(u.created_at, now),
            u.id.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(0)
}

async fn create(ctx: &Ctx, args: UsersCreateArgs) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let password = read_new_password(
        &format!("Password for new user {}", args.name),
        args.password_stdin,
    )?;
    let request = CreateUserRequest {
        name: args.name,
        password,
        roles: args
            .roles
            .into_iter()
            .map(|r| RoleInfo {
                role: r.role,
                selector: r.selector,
            })
            .collect(),
    };
    let user: UserInfo = api.post(paths::USERS, &request).await?;
    if ctx.json() {
        print_json(&user)?;
    } else {
        println!(
            "created user {} ({}) with roles {}",
            user.name,
            user.id,
            format_roles(&user.roles)
        );
        if user.roles.is_empty() {
            eprintln!("the user can log in but do nothing yet; bind a role with `adit roles bind`");
        }
    }
    Ok(0)
}

async fn remove(ctx: &Ctx, user: &str, yes: bool) -> Result<u8> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(UsageError(format!(
                "deleting user {user} cannot be undone; pass --yes to confirm"
            ))
            .into());
        }
        if !super::confirm(&format!(
            "Delete user {user}? Their role bindings go and their access tokens stop working."
        ))? {
            eprintln!("not deleted");
            return Ok(1);
        }
    }
    let (_, api) = ctx.api()?;
    api.delete(&path_with(paths::USER, "user", user)).await?;
    println!("deleted user {user}");
    Ok(0)
}

async fn set_disabled(ctx: &Ctx, user: &str, disabled: bool) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let info: UserInfo = api
        .patch(
            &path_with(paths::USER, "user", user),
            &UpdateUserRequest { disabled },
        )
        .await?;
    if ctx.json() {
        print_json(&info)?;
    } else if disabled {
        println!(
            "disabled user {}: it cannot log in and its tokens are refused",
            info.name
        );
    } else {
        println!("enabled user {}", info.name);
    }
    Ok(0)
}

async fn passwd(ctx: &Ctx, user: Option<String>, password_stdin: bool) -> Result<u8> {
    let (profile, api) = ctx.api()?;
    let own = user.as_deref().is_none_or(|u| u == profile.user);
    let target = user.unwrap_or_else(|| profile.user.clone());
    let request = if own {
        let (current, new) = if password_stdin {
            let mut lines = std::io::stdin().lock().lines();
            let mut next = |what: &str| -> Result<String> {
                let line = lines
                    .next()
                    .transpose()
                    .context("cannot read stdin")?
                    .unwrap_or_default();
                let line = line.trim_end_matches(['\r', '\n']).to_owned();
                if line.is_empty() {
                    bail!("no {what} on stdin (expected the current password on the first line and the new one on the second)");
                }
                Ok(line)
            };
            (next("current password")?, next("new password")?)
        } else {
            let current = read_secret("Current password", false)?;
            let new = read_new_password("New password", false)?;
            (current, new)
        };
        SetPasswordRequest {
            current: Some(current),
            new,
        }
    } else {
        SetPasswordRequest {
            current: None,
            new: read_new_password(&format!("New password for {target}"), password_stdin)?,
        }
    };
    let path = path_with(paths::USER_PASSWORD, "user", &target);
    let _: UserInfo = api.post(&path, &request).await?;
    if own {
        println!("password changed; your current login stays valid until it expires");
    } else {
        println!("password of {target} reset");
    }
    Ok(0)
}

/// `admin`, `operator(site=a,env=prod)`, comma-separated; `-` when none.
pub fn format_roles(roles: &[RoleInfo]) -> String {
    if roles.is_empty() {
        return "-".into();
    }
    roles
        .iter()
        .map(|r| {
            if r.selector.is_empty() {
                r.role.clone()
            } else {
                format!("{}({})", r.role, format_labels(&r.selector))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// === reading passwords ===

/// A new password: the first line of stdin with `from_stdin` (or when stdin is not a
/// terminal), else asked twice on the terminal without echo.
pub(super) fn read_new_password(prompt: &str, from_stdin: bool) -> Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        return read_secret(prompt, true);
    }
    let first = read_secret(prompt, false)?;
    let again = read_secret("Again", false)?;
    if first != again {
        bail!("the two passwords differ; try again");
    }
    Ok(first)
}

/// One line: from stdin with `from_stdin` or a non-terminal stdin, else asked on the
/// terminal with echo off.
fn read_secret(prompt: &str, from_stdin: bool) -> Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        return read_line();
    }
    eprint!("{prompt}: ");
    std::io::stderr().flush()?;
    if !stty("-echo") {
        eprintln!();
        bail!("cannot turn off terminal echo to read the password; use --password-stdin");
    }
    let line = read_line();
    stty("echo");
    eprintln!();
    line
}

fn read_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("no password on stdin (expected one line)");
    }
    Ok(password.to_owned())
}

fn stty(arg: &str) -> bool {
    Command::new("stty")
        .arg(arg)
        .stdin(Stdio::inherit())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
