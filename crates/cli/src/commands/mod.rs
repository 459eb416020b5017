//! One module per command family; [`run`] dispatches.

pub mod access;
mod audit;
mod forward;
mod inspect;
mod nodes;
mod roles;
mod session;
pub mod ssh;
mod tenants;
mod tokens;
mod users;

use std::time::SystemTime;

use anyhow::Result;

use crate::cli::{Cli, Command, ConfigCommand, TokenCommand};
use crate::client::{ApiClient, ServerUrl};
use crate::environment::Env;
use crate::output::OutputFormat;
use crate::profile::{Profile, ProfileStore};
use crate::tunnel::Dialer;

/// Runs one command; returns the exit status on success.
pub async fn run(cli: Cli, env: Env) -> Result<u8> {
    let ctx = Ctx {
        env,
        output: cli.output,
        server_override: cli.server,
    };
    match cli.command {
        Command::Login(args) => session::login(&ctx, args).await,
        Command::Logout => session::logout(&ctx),
        Command::Status => session::status(&ctx).await,
        Command::Tokens(cmd) => tokens::run(&ctx, cmd).await,
        Command::Nodes(cmd) => nodes::run(&ctx, cmd).await,
        Command::Ssh(args) => ssh::ssh(&ctx, args),
        Command::Forward(args) => forward::forward(&ctx, args).await,
        Command::ProxyStdio(args) => forward::proxy_stdio(&ctx, args).await,
        Command::Config(ConfigCommand::Ssh) => ssh::config_ssh(&ctx),
        Command::Completions { shell } => inspect::completions(shell),
        Command::Token(TokenCommand::Decode { jwt }) => inspect::decode(&ctx, jwt),
        Command::Tenants(cmd) => tenants::run(&ctx, cmd).await,
        Command::Users(cmd) => users::run(&ctx, cmd).await,
        Command::Roles(cmd) => roles::run(&ctx, cmd).await,
        Command::Audit(cmd) => audit::run(&ctx, cmd).await,
        Command::Access(cmd) => access::run(&ctx, cmd).await,
    }
}

/// What every command may need: the environment and the global flags.
pub struct Ctx {
    pub env: Env,
    pub output: OutputFormat,
    pub server_override: Option<String>,
}

impl Ctx {
    pub fn store(&self) -> Result<ProfileStore> {
        Ok(ProfileStore::new(self.env.profile_dir()?))
    }

    /// The saved login, or a "not logged in" error (exit 3).
    pub fn profile(&self) -> Result<Profile> {
        self.store()?.require()
    }

    /// `--server` if given, else the profile's server.
    pub fn server_for(&self, profile: &Profile) -> Result<ServerUrl> {
        ServerUrl::parse(self.server_override.as_deref().unwrap_or(&profile.server))
    }

    /// An authenticated API client; refuses an expired token (exit 3).
    pub fn api(&self) -> Result<(Profile, ApiClient)> {
        let profile = self.profile()?;
        let token = profile.valid_token(SystemTime::now())?.clone();
        let client = api_client(self.server_for(&profile)?, &profile.ca_pem, Some(token))?;
        Ok((profile, client))
    }

    /// A tunnel dialer for the saved login.
    pub fn dialer(&self) -> Result<Dialer> {
        let profile = self.profile()?;
        Dialer::for_profile(
            &profile,
            self.server_for(&profile)?,
            self.env.proxy_settings()?,
        )
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// A client trusting only the CA in `ca_pem`.
pub fn api_client(
    server: ServerUrl,
    ca_pem: &str,
    token: Option<adit_pki::Secret>,
) -> Result<ApiClient> {
    use anyhow::Context as _;
    let tls = adit_pki::client_config(ca_pem, None, crate::client::API_ALPN)
        .context("the saved CA certificate is unusable; log in again with --ca-pin or --ca-file")?;
    ApiClient::new(server, tls, token)
}

/// Asks `question` on the terminal; `true` for y/yes.
pub(crate) fn confirm(question: &str) -> Result<bool> {
    use std::io::Write as _;
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
