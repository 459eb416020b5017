//! One module per command family; [`run`] dispatches.

pub mod access;
mod api_tokens;
mod audit;
mod cp;
mod exec;
mod fanout;
mod forward;
mod inspect;
mod nodes;
mod policy;
mod query;
mod recordings;
mod roles;
mod session;
mod shell;
pub mod ssh;
mod tcp;
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
        token: cli.token.map(adit_pki::Secret::new),
        instance: cli.instance,
    };
    match cli.command {
        Command::Login(args) => session::login(&ctx, args).await,
        Command::Logout => session::logout(&ctx),
        Command::Status => session::status(&ctx).await,
        Command::Tokens(cmd) => tokens::run(&ctx, cmd).await,
        Command::Nodes(cmd) => nodes::run(&ctx, cmd).await,
        Command::Policy(cmd) => policy::run(&ctx, cmd).await,
        Command::Ssh(args) => ssh::ssh(&ctx, args),
        Command::Forward(args) => forward::forward(&ctx, args).await,
        Command::ProxyStdio(args) => forward::proxy_stdio(&ctx, args).await,
        Command::Exec(args) => exec::exec(&ctx, args).await,
        Command::Query(args) => query::query(&ctx, args).await,
        Command::Tcp(args) => tcp::tcp(&ctx, args).await,
        Command::Shell(args) => shell::shell(&ctx, args).await,
        Command::Cp(args) => cp::cp(&ctx, args).await,
        Command::Config(ConfigCommand::Ssh) => ssh::config_ssh(&ctx),
        Command::Completions { shell } => inspect::completions(shell),
        Command::Token(TokenCommand::Decode { jwt }) => inspect::decode(&ctx, jwt),
        Command::Tenants(cmd) => tenants::run(&ctx, cmd).await,
        Command::Users(cmd) => users::run(&ctx, cmd).await,
        Command::Roles(cmd) => roles::run(&ctx, cmd).await,
        Command::Audit(cmd) => audit::run(&ctx, cmd).await,
        Command::Recordings(cmd) => recordings::run(&ctx, cmd).await,
        Command::Access(cmd) => access::run(&ctx, cmd).await,
        Command::ApiTokens(cmd) => api_tokens::run(&ctx, cmd).await,
    }
}

/// What every command may need: the environment and the global flags.
pub struct Ctx {
    pub env: Env,
    pub output: OutputFormat,
    pub server_override: Option<String>,
    /// `--token` / `ADIT_TOKEN`: a session token or an API token.
    pub token: Option<adit_pki::Secret>,
    /// `--instance` / `ADIT_INSTANCE`: the session-token instance.
    pub instance: Option<u8>,
}

/// What `--token` holds.
pub enum GivenToken<'a> {
    /// An Edge-View session token, with its claims (not verified here: the server does).
    Session(&'a str, Box<adit_pki::SessionClaims>),
    /// An API token (or any access token): replaces the saved login's token.
    Access(&'a adit_pki::Secret),
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

    /// What `--token` holds, if given.
    pub fn given_token(&self) -> Result<Option<GivenToken<'_>>> {
        let Some(secret) = &self.token else {
            return Ok(None);
        };
        let jwt = secret.expose().trim();
        let payload = adit_pki::decode_unverified(jwt).map_err(|e| {
            crate::error::UsageError(format!("--token is not a token adit understands: {e}"))
        })?;
        let claims = payload["claims"].clone();
        if claims["aud"].as_str() == Some(adit_pki::AUD_SESSION) {
            let claims: adit_pki::SessionClaims = serde_json::from_value(claims).map_err(|e| {
                crate::error::UsageError(format!("--token is a malformed session token: {e}"))
            })?;
            return Ok(Some(GivenToken::Session(jwt, Box::new(claims))));
        }
        Ok(Some(GivenToken::Access(secret)))
    }

    /// An authenticated API client; refuses an expired token (exit 3). With an API token
    /// in `--token`, that token is used with the saved login's server and CA.
    pub fn api(&self) -> Result<(Profile, ApiClient)> {
        // A session token first: it never reaches the API, whatever the profile.
        let given = self.given_token()?;
        if let Some(GivenToken::Session(..)) = given {
            return Err(crate::error::UsageError(
                "--token holds a session token, which only reaches its node: `adit ssh`, \
                 `forward`, `proxy-stdio`, `exec`, `shell` and `cp`; log in for other commands"
                    .into(),
            )
            .into());
        }
        let mut profile = self.profile().map_err(|e| match given {
            Some(_) => anyhow::anyhow!(
                "{e}; an API token is used with the server and CA of a saved login \
                 (run `adit login` once on this machine)"
            ),
            None => e,
        })?;
        let token = match given {
            Some(GivenToken::Access(secret)) => {
                profile.access_token = secret.clone();
                secret.clone()
            }
            // No --token (a session token was refused above): the saved login's.
            _ => profile.valid_token(SystemTime::now())?.clone(),
        };
        let client = api_client(self.server_for(&profile)?, &profile.ca_pem, Some(token))?;
        Ok((profile, client))
    }

    /// A tunnel dialer: for the session token in `--token` (its server and CA pin come
    /// from the token), else for the saved login.
    pub fn dialer(&self) -> Result<Dialer> {
        match self.given_token()? {
            Some(GivenToken::Session(jwt, claims)) => {
                let server = ServerUrl::parse(&claims.dep).map_err(|e| {
                    anyhow::anyhow!("the session token names an unusable server: {e}")
                })?;
                let pin: adit_pki::CaPin = claims.pin.parse().map_err(|e| {
                    anyhow::anyhow!("the session token carries an unusable CA pin: {e}")
                })?;
                // The server checks the instance against the token and says why it refuses.
                let instance = self.instance.unwrap_or(1);
                Dialer::for_session_token(jwt, instance, pin, server, self.env.proxy_settings()?)
            }
            Some(GivenToken::Access(secret)) => {
                let mut profile = self.profile()?;
                profile.access_token = secret.clone();
                // The token's own expiry is checked by the server (year 9999 here).
                profile.expires_at = 253_402_300_799_000;
                Dialer::for_profile(
                    &profile,
                    self.server_for(&profile)?,
                    self.env.proxy_settings()?,
                )
            }
            None => {
                let profile = self.profile()?;
                Dialer::for_profile(
                    &profile,
                    self.server_for(&profile)?,
                    self.env.proxy_settings()?,
                )
            }
        }
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
