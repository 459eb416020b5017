//! `adit policy ls|set|unset|effective`: access policies of the tenant (admins).

use std::time::SystemTime;

use adit_api::paths;
use adit_api::policy::{self, EffectivePolicy, PolicyInfo, PolicyRules, Rule};
use anyhow::Result;

use super::Ctx;
use crate::cli::{PolicyCommand, PolicyScopeArgs, PolicySetArgs, PolicyUnsetArgs, RuleArg};
use crate::client::{path_with, ApiClient};
use crate::error::UsageError;
use crate::output::{format_relative, print_json, Table};

pub async fn run(ctx: &Ctx, cmd: PolicyCommand) -> Result<u8> {
    match cmd {
        PolicyCommand::Ls => list(ctx).await,
        PolicyCommand::Set(args) => set(ctx, args).await,
        PolicyCommand::Unset(args) => unset(ctx, args).await,
        PolicyCommand::Effective { node } => effective(ctx, &node).await,
    }
}

/// The scope as the API path names it.
fn scope_of(args: &PolicyScopeArgs) -> String {
    match (&args.project, &args.node) {
        (Some(sel), _) => format!("project:{}", policy::selector_string(sel)),
        (None, Some(node)) => format!("node:{node}"),
        // clap requires exactly one of the three.
        (None, None) => "tenant".to_owned(),
    }
}

/// The current rules of `scope` (empty when it has no policy).
async fn current(api: &ApiClient, args: &PolicyScopeArgs) -> Result<PolicyRules> {
    let all: Vec<PolicyInfo> = api.get(paths::POLICIES).await?;
    let found = all.into_iter().find(|p| match (&args.project, &args.node) {
        (Some(sel), _) => p.level == "project" && p.selector.as_ref() == Some(sel),
        (None, Some(node)) => {
            p.level == "node"
                && (p.node.as_deref() == Some(node.as_str())
                    || p.node_id.as_deref() == Some(node.as_str()))
        }
        (None, None) => p.level == "tenant",
    });
    Ok(found.map(|p| p.rules).unwrap_or_default())
}

/// `a,b, c` → `["a", "b", "c"]`; `inherit` → `None`.
fn list_arg(s: &str) -> Option<Vec<String>> {
    if s.trim() == "inherit" {
        return None;
    }
    Some(
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

async fn set(ctx: &Ctx, args: PolicySetArgs) -> Result<u8> {
    let flags = [
        ("device", args.device),
        ("app", args.app),
        ("external", args.external),
        ("exec", args.exec),
        ("shell", args.shell),
        ("file", args.file),
        ("query", args.query),
        ("actions", args.actions),
    ];
    if flags.iter().all(|(_, v)| v.is_none()) && args.targets.is_none() && args.file_roots.is_none()
    {
        return Err(UsageError(
            "name at least one flag (e.g. --exec deny) or list (--targets, --file-roots)".into(),
        )
        .into());
    }
    let (_, api) = ctx.api()?;
    let mut rules = current(&api, &args.scope).await?;
    for (name, value) in flags {
        if let Some(v) = value {
            let rule = match v {
                RuleArg::Allow => Some(Rule::Allow),
                RuleArg::Deny => Some(Rule::Deny),
                RuleArg::Inherit => None,
            };
            rules.set_flag(name, rule);
        }
    }
    if let Some(t) = &args.targets {
        rules.targets = list_arg(t);
    }
    if let Some(r) = &args.file_roots {
        rules.file_roots = list_arg(r);
    }
    rules.validate().map_err(UsageError)?;
    save(ctx, &api, &scope_of(&args.scope), rules).await
}

async fn unset(ctx: &Ctx, args: PolicyUnsetArgs) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let scope = scope_of(&args.scope);
    if args.fields.is_empty() {
        api.delete(&path_with(paths::POLICY, "scope", &scope))
            .await?;
        if !ctx.json() {
            println!("removed the policy of {scope}; its values are inherited again");
        }
        return Ok(0);
    }
    let mut rules = current(&api, &args.scope).await?;
    for field in &args.fields {
        match field.as_str() {
            "targets" => rules.targets = None,
            "file-roots" | "file_roots" => rules.file_roots = None,
            f if rules.set_flag(f, None) => {}
            other => {
                return Err(UsageError(format!(
                    "unknown policy field `{other}`; use {}, targets or file-roots",
                    policy::FLAGS.join(", ")
                ))
                .into())
            }
        }
    }
    save(ctx, &api, &scope, rules).await
}

/// Stores `rules` at `scope` (an empty policy is removed) and prints the result.
async fn save(ctx: &Ctx, api: &ApiClient, scope: &str, rules: PolicyRules) -> Result<u8> {
    let path = path_with(paths::POLICY, "scope", scope);
    if rules.is_empty() {
        // Nothing left to set: the scope inherits everything. A scope without a policy
        // is fine too.
        match api.delete(&path).await {
            Ok(()) => {}
            Err(e)
                if e.downcast_ref::<crate::error::ApiFailure>()
                    .is_some_and(|f| f.status == 404) => {}
            Err(e) => return Err(e),
        }
        if !ctx.json() {
            println!("{scope} now sets nothing; everything is inherited");
        }
        return Ok(0);
    }
    let info: PolicyInfo = api.put(&path, &rules).await?;
    if ctx.json() {
        print_json(&info)?;
    } else {
        println!("{}: {}", scope_label(&info), format_rules(&info.rules));
    }
    Ok(0)
}

fn scope_label(p: &PolicyInfo) -> String {
    match (p.level.as_str(), &p.node) {
        ("node", Some(name)) => format!("node:{name}"),
        _ => p.scope.clone(),
    }
}

/// `device=deny exec=allow targets=127.0.0.1:22,*:80`.
pub fn format_rules(r: &PolicyRules) -> String {
    let mut parts: Vec<String> = policy::FLAGS
        .iter()
        .filter_map(|f| r.flag(f).map(|v| format!("{f}={}", v.as_str())))
        .collect();
    if let Some(t) = &r.targets {
        parts.push(format!("targets={}", t.join(",")));
    }
    if let Some(f) = &r.file_roots {
        parts.push(format!("file-roots={}", f.join(",")));
    }
    if parts.is_empty() {
        "(inherits everything)".into()
    } else {
        parts.join(" ")
    }
}

async fn list(ctx: &Ctx) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let all: Vec<PolicyInfo> = api.get(paths::POLICIES).await?;
    if ctx.json() {
        print_json(&all)?;
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut table = Table::new(["SCOPE", "RULES", "UPDATED BY", "UPDATED"]);
    for p in &all {
        table.row([
            scope_label(p),
            format_rules(&p.rules),
            p.updated_by.clone(),
            format_relative(p.updated_at, now),
        ]);
    }
    print!("{}", table.render());
    if all.is_empty() {
        eprintln!(
            "no policies: the built-in defaults apply (everything the agents allow); set one \
             with `adit policy set --tenant --external deny`"
        );
    }
    Ok(0)
}

async fn effective(ctx: &Ctx, node: &str) -> Result<u8> {
    let (_, api) = ctx.api()?;
    let p: EffectivePolicy = api
        .get(&path_with(paths::NODE_POLICY, "node", node))
        .await?;
    if ctx.json() {
        print_json(&p)?;
        return Ok(0);
    }
    print!("{}", render_effective(&p));
    Ok(0)
}

/// The effective policy as a table of flags, then the lists.
pub fn render_effective(p: &EffectivePolicy) -> String {
    let mut table = Table::new(["FLAG", "VALUE", "DECIDED BY"]);
    for flag in policy::FLAGS {
        if let Some(d) = p.flags.get(*flag) {
            table.row([
                (*flag).to_owned(),
                if d.allow { "allow" } else { "deny" }.to_owned(),
                d.decided_by.clone(),
            ]);
        }
    }
    let mut out = format!("policy of node {} ({})\n", p.node, p.node_id);
    out.push_str(&table.render());
    for (name, lists) in [("targets", &p.targets), ("file roots", &p.file_roots)] {
        if lists.is_empty() {
            out.push_str(&format!("{name}: any (default)\n"));
        }
        for l in lists {
            out.push_str(&format!(
                "{name}: {} (decided by {})\n",
                l.patterns.join(", "),
                l.decided_by
            ));
        }
    }
    out
}
