//! `adit login`, `adit logout`, `adit status`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use adit_api::{paths, CaInfo, LoginRequest, LoginResponse, WhoAmI};
use adit_pki::{CaPin, Secret};
use anyhow::{anyhow, bail, Context as _, Result};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde_json::json;

use super::Ctx;
use crate::cli::LoginArgs;
use crate::client::{ApiClient, ServerUrl, API_ALPN};
use crate::error::{NotLoggedIn, UsageError};
use crate::output::{format_relative, format_time_and_relative, render_fields};
use crate::profile::Profile;

/// How the server's certificate is verified during login.
enum Trust {
    /// `--ca-pin`: the chain must contain the CA with this hash.
    Pin(CaPin),
    /// `--ca-file`, or the CA saved by an earlier login to the same server.
    CaPem(String),
}

// === login ===

pub async fn login(ctx: &Ctx, args: LoginArgs) -> Result<u8> {
    let store = ctx.store()?;
    // A broken old profile must not prevent logging in again.
    let previous = store.load().unwrap_or(None);
    let server = match (&ctx.server_override, &previous) {
        (Some(s), _) => ServerUrl::parse(s)?,
        (None, Some(p)) => ServerUrl::parse(&p.server)?,
        (None, None) => {
            return Err(UsageError("pass --server https://HOST:PORT".into()).into());
        }
    };

    let trust = match (&args.ca_pin, &args.ca_file, &previous) {
        (Some(pin), _, _) => Trust::Pin(*pin),
        (None, Some(file), _) => Trust::CaPem(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the CA certificate {}", file.display()))?,
        ),
        (None, None, Some(p)) if ServerUrl::parse(&p.server).ok().as_ref() == Some(&server) => {
            Trust::CaPem(p.ca_pem.clone())
        }
        (None, None, _) => {
            return Err(UsageError(format!(
                "adit does not know how to verify {server}: pass --ca-pin (printed by adit-server at start) \
                 or --ca-file with the server's CA certificate; adit never talks to a server it cannot verify"
            ))
            .into());
        }
    };

    let tls = match &trust {
        Trust::Pin(pin) => adit_pki::pinned_client_config(*pin, API_ALPN)?,
        Trust::CaPem(pem) => adit_pki::client_config(pem, None, API_ALPN)
            .context("the CA certificate is not usable")?,
    };
    let anonymous = ApiClient::new(server.clone(), tls.clone(), None)?;

    // Fetch and check the CA before asking for the password, so a wrong pin
    // or address fails fast and the password only ever goes to a verified server.
    let ca: CaInfo = anonymous.get(paths::CA).await?;
    let ca_pem = match &trust {
        Trust::Pin(pin) => {
            let der = CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes())
                .next()
                .ok_or_else(|| anyhow!("the server sent no CA certificate at {}", paths::CA))?
                .context("the server's CA certificate is not valid PEM")?;
            if !pin.matches(&der) {
                bail!(
                    "the CA certificate served by {server} does not match --ca-pin {pin}; \
                     check the pin printed by adit-server"
                );
            }
            ca.ca_pem
        }
        Trust::CaPem(pem) => pem.clone(),
    };

    let password = read_password(ctx, &args, &server)?;
    let request = LoginRequest {
        tenant: args.tenant.clone(),
        user: args.user.clone(),
        password: password.into_inner(),
    };
    let login: LoginResponse = anonymous.post(paths::LOGIN, &request).await.map_err(|e| {
        // Refused credentials are this command's failure, not a missing login:
        // no "run adit login" hint, exit status 1.
        match e.downcast_ref::<crate::error::ApiFailure>() {
            Some(f) if f.is_unauthenticated() => anyhow!("{}", f.message),
            _ => e.context(format!("login as {} failed", args.user)),
        }
    })?;

    let profile = Profile {
        server: server.to_string(),
        ca_pem,
        user: login.user,
        tenant: login.tenant,
        access_token: Secret::new(login.access_token),
        expires_at: login.expires_at,
    };
    store.save(&profile)?;
    println!(
        "logged in to {} as {} (tenant {}); token expires {}",
        profile.server,
        profile.user,
        profile.tenant,
        format_relative(profile.expires_at, SystemTime::now())
    );
    Ok(0)
}

/// `--password-stdin`, else `ADIT_PASSWORD`, else one line of a piped stdin,
/// else a prompt on the terminal with echo turned off.
fn read_password(ctx: &Ctx, args: &LoginArgs, server: &ServerUrl) -> Result<Secret> {
    if args.password_stdin {
        return read_line_from_stdin();
    }
    if let Some(password) = &ctx.env.password {
        return Ok(password.clone());
    }
    if !std::io::stdin().is_terminal() {
        return read_line_from_stdin();
    }
    eprint!("Password for {} at {server}: ", args.user);
    std::io::stderr().flush()?;
    // `stty` is the portable way to stop echo without unsafe termios calls.
    let echo_off = stty("-echo");
    if !echo_off {
        eprintln!();
        bail!(
            "cannot turn off terminal echo to read the password; use --password-stdin \
             (e.g. `pass show adit | adit login ... --password-stdin`) or set ADIT_PASSWORD"
        );
    }
    let line = read_line_from_stdin();
    stty("echo");
    eprintln!();
    line
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

fn read_line_from_stdin() -> Result<Secret> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("no password on stdin (expected one line)");
    }
    Ok(Secret::new(password))
}

// === logout ===

pub fn logout(ctx: &Ctx) -> Result<u8> {
    let store = ctx.store()?;
    if store.delete()? {
        println!("logged out (deleted {})", store.path().display());
    } else {
        println!("not logged in");
    }
    Ok(0)
}

// === status ===

pub async fn status(ctx: &Ctx) -> Result<u8> {
    let store = ctx.store()?;
    let profile = store.require()?;
    let now = SystemTime::now();
    let server = ctx.server_for(&profile)?;
    let expired = profile.is_expired(now);

    let whoami = if expired {
        None
    } else {
        let client = super::api_client(
            server.clone(),
            &profile.ca_pem,
            Some(profile.access_token.clone()),
        )?;
        Some(client.get::<WhoAmI>(paths::WHOAMI).await)
    };

    if ctx.json() {
        let whoami_json = match &whoami {
            Some(Ok(w)) => serde_json::to_value(w)?,
            _ => serde_json::Value::Null,
        };
        crate::output::print_json(&json!({
            "server": server.to_string(),
            "user": profile.user,
            "tenant": profile.tenant,
            "expires_at": profile.expires_at,
            "expired": expired,
            "profile": store.path(),
            "whoami": whoami_json,
        }))?;
    } else {
        let token = if expired {
            format!(
                "EXPIRED {}",
                format_time_and_relative(profile.expires_at, now)
            )
        } else {
            format!(
                "valid until {}",
                format_time_and_relative(profile.expires_at, now)
            )
        };
        let mut fields = vec![
            ("server", server.to_string()),
            ("user", profile.user.clone()),
            ("tenant", profile.tenant.clone()),
            ("token", token),
        ];
        if let Some(Ok(w)) = &whoami {
            fields.push(("roles", format_roles(w)));
        }
        fields.push(("profile", store.path().display().to_string()));
        print!("{}", render_fields(&fields));
    }

    if expired {
        return Err(NotLoggedIn {
            reason: format!("the access token expired; log in again to {server}"),
        }
        .into());
    }
    match whoami {
        Some(Err(e)) => Err(e.context("cannot ask the server who you are")),
        _ => Ok(0),
    }
}

fn format_roles(w: &WhoAmI) -> String {
    if w.roles.is_empty() {
        return "(none)".into();
    }
    w.roles
        .iter()
        .map(|r| {
            if r.selector.is_empty() {
                r.role.clone()
            } else {
                format!("{} [{}]", r.role, crate::output::format_labels(&r.selector))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
