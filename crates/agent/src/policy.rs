//! Whether a stream the server opens may proceed: the control plane's grant and the
//! agent's own allow-list must both agree.

use adit_api::kinds;
use adit_api::toolbox::{ActionSpec, ExecSpec, FileSpec, QuerySpec, ShellSpec};
use adit_pki::{GrantClaims, JwtErrorKind, AUD_GRANT};
use adit_proto::{reset_code, OpenHeader};

use crate::config::{AllowList, Target};
use crate::state::Credentials;

/// Why a stream was refused; sent to the server as the RESET reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denial {
    /// RESET code (see [`adit_proto::reset_code`]).
    pub code: u32,
    pub reason: String,
}

impl Denial {
    fn denied(reason: impl Into<String>) -> Self {
        Self {
            code: reset_code::DENIED,
            reason: reason.into(),
        }
    }
}

/// An authorized stream: the verified grant and what to do.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub claims: GrantClaims,
    pub request: Request,
}

/// What an authorized stream asks for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Connect this local target.
    Tcp(Target),
    /// Run a command.
    Exec(ExecSpec),
    /// Open a login shell in a PTY.
    Shell(ShellSpec),
    /// Copy a file (the path is checked against the file roots when it is opened).
    File(FileSpec),
    /// Answer a diagnostic query (`ls`/`cat` paths are checked against the file roots).
    Query(QuerySpec),
    /// Run a configured device action: the action asked for and the command it runs.
    Action(ActionSpec, ExecSpec),
}

/// Checks an `OPEN` header: the kind is supported and allowed here, the grant is signed
/// by a grant key of the control plane, unexpired, for this node, tenant, kind and
/// target, and the target is in the local allow-list (tcp) or the toolbox is enabled
/// (exec, shell, file).
pub fn authorize(
    header: &OpenHeader,
    creds: &Credentials,
    allow: &AllowList,
) -> Result<Authorized, Denial> {
    let toolbox = allow.toolbox();
    // The agent has the final say: the kinds it was not started with are refused
    // whatever the grant says.
    match header.kind.as_str() {
        kinds::TCP => {}
        kinds::EXEC if !toolbox.allow_exec => {
            return Err(Denial::denied(
                "this agent does not allow exec; start it with --allow-exec",
            ))
        }
        kinds::SHELL if !toolbox.allow_shell => {
            return Err(Denial::denied(
                "this agent does not allow shell; start it with --allow-shell",
            ))
        }
        kinds::FILE if toolbox.file_roots.is_empty() => {
            return Err(Denial::denied(
                "this agent allows no file transfers; start it with --file-root DIR",
            ))
        }
        kinds::QUERY if !toolbox.allow_query => return Err(Denial::denied(
            "this agent does not allow queries (started with --deny-query or allow_query = false)",
        )),
        kinds::ACTION if toolbox.actions.is_empty() => return Err(Denial::denied(
            "this agent has no device actions configured ([actions.NAME] in agent.toml, or --action NAME=CMD)",
        )),
        kinds::EXEC | kinds::SHELL | kinds::FILE | kinds::QUERY | kinds::ACTION => {}
        other => {
            return Err(Denial::denied(format!(
                "unsupported stream kind {:?}",
                truncate(other)
            )))
        }
    }
    if header.grant.is_empty() {
        return Err(Denial::denied("grant missing"));
    }
    let token = std::str::from_utf8(&header.grant)
        .map_err(|_| Denial::denied("grant rejected (malformed)"))?;
    // Repeated streams of one user to one target carry the same grant: its signature
    // is verified once; the checks below run for every stream.
    let now = crate::clock::server_now();
    let claims = match creds.verified_grants.get(token, now) {
        Some(claims) => claims,
        None => {
            let claims: GrantClaims =
                creds
                    .jwks
                    .verify_at(token, AUD_GRANT, Some(now))
                    .map_err(|e| {
                        let why = match e.jwt_kind() {
                            Some(JwtErrorKind::Expired) => "expired".to_owned(),
                            Some(kind) => kind.to_string(),
                            None => "invalid".to_owned(),
                        };
                        Denial::denied(format!("grant rejected ({why})"))
                    })?;
            creds
                .verified_grants
                .insert(token, &claims, claims.exp, now);
            claims
        }
    };
    if claims.sub != creds.node.node_id {
        return Err(Denial::denied("grant is for another node"));
    }
    if claims.ten != creds.node.tenant_id {
        return Err(Denial::denied("grant is for another tenant"));
    }
    if claims.knd != header.kind {
        return Err(Denial::denied("grant is for another stream kind"));
    }
    if claims.tgt != header.target {
        return Err(Denial::denied("grant is for another target"));
    }
    let request = match header.kind.as_str() {
        kinds::EXEC => {
            Request::Exec(adit_api::toolbox::parse_exec(&header.target).map_err(Denial::denied)?)
        }
        kinds::SHELL => {
            Request::Shell(adit_api::toolbox::parse_shell(&header.target).map_err(Denial::denied)?)
        }
        kinds::FILE => {
            Request::File(adit_api::toolbox::parse_file(&header.target).map_err(Denial::denied)?)
        }
        kinds::QUERY => {
            let spec = adit_api::toolbox::parse_query(&header.target).map_err(Denial::denied)?;
            // A query that reaches the network goes only where a tcp stream may.
            if let Some(reach) = spec.reach().map_err(Denial::denied)? {
                allow
                    .allows_reach(&reach)
                    .map_err(|why| Denial::denied(format!("query {}: {why}", spec.what)))?;
            }
            Request::Query(spec)
        }
        kinds::ACTION => {
            let spec = adit_api::toolbox::parse_action(&header.target).map_err(Denial::denied)?;
            // The agent's own configuration decides what runs: the grant only names the
            // action, and an unconfirmed destructive one is refused whatever it says.
            let argv = toolbox.action_argv(&spec).map_err(Denial::denied)?;
            let exec = ExecSpec {
                argv,
                env: Vec::new(),
                cwd: None,
            };
            Request::Action(spec, exec)
        }
        _ => {
            // The proxy classified this text for the access policy: refuse any spelling
            // it could have read differently (whitespace, IPv4 shorthand, zone ids...).
            adit_api::policy::check_target(&header.target)
                .map_err(|e| Denial::denied(format!("invalid target: {e}")))?;
            let target = Target::parse(&header.target)
                .map_err(|e| Denial::denied(format!("invalid target: {e}")))?;
            if !allow.allows(&target) {
                return Err(Denial::denied(format!(
                    "target {target} is not in this agent's allow-list"
                )));
            }
            Request::Tcp(target)
        }
    };
    Ok(Authorized { claims, request })
}

/// Peer-supplied strings are shortened before they go into logs and reasons.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
