//! Parsing of `adit tenants|users|roles|audit`, without running anything.

use std::time::{Duration, UNIX_EPOCH};

use adit_cli::cli::{
    parse_role_spec, parse_time_arg, AuditCommand, Cli, Command, RoleSpec, RolesCommand,
    TenantsCommand, TimeArg, UsersCommand,
};
use adit_cli::output::OutputFormat;
use clap::Parser;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("adit").chain(args.iter().copied()))
}

fn labels(pairs: &[(&str, &str)]) -> adit_api::Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn tenants() {
    let cli = parse(&["tenants", "ls", "--output", "json"]).unwrap();
    assert_eq!(cli.output, OutputFormat::Json);
    assert!(matches!(cli.command, Command::Tenants(TenantsCommand::Ls)));
    assert!(matches!(
        parse(&["tenants", "list"]).unwrap().command,
        Command::Tenants(TenantsCommand::Ls)
    ));
    let Command::Tenants(TenantsCommand::Create(c)) = parse(&[
        "tenants",
        "create",
        "acme",
        "--admin-user",
        "alice",
        "--admin-password-stdin",
    ])
    .unwrap()
    .command
    else {
        panic!()
    };
    assert_eq!(c.name, "acme");
    assert_eq!(c.admin_user.as_deref(), Some("alice"));
    assert!(c.admin_password_stdin);
    let Command::Tenants(TenantsCommand::Create(c)) =
        parse(&["tenants", "create", "acme"]).unwrap().command
    else {
        panic!()
    };
    assert!(c.admin_user.is_none() && !c.admin_password_stdin);
    // A password without a user, and a missing name, are usage errors.
    let err = parse(&["tenants", "create", "acme", "--admin-password-stdin"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(parse(&["tenants", "create"]).is_err());
}

#[test]
fn users() {
    assert!(matches!(
        parse(&["users", "ls"]).unwrap().command,
        Command::Users(UsersCommand::Ls)
    ));
    let Command::Users(UsersCommand::Create(c)) = parse(&[
        "users",
        "create",
        "bob",
        "--password-stdin",
        "--role",
        "operator:site=a,env=prod",
        "--role",
        "auditor",
    ])
    .unwrap()
    .command
    else {
        panic!()
    };
    assert_eq!(c.name, "bob");
    assert!(c.password_stdin);
    assert_eq!(
        c.roles,
        vec![
            RoleSpec {
                role: "operator".into(),
                selector: labels(&[("site", "a"), ("env", "prod")]),
            },
            RoleSpec {
                role: "auditor".into(),
                selector: labels(&[]),
            },
        ]
    );
    assert!(matches!(
        parse(&["users", "disable", "bob"]).unwrap().command,
        Command::Users(UsersCommand::Disable { user }) if user == "bob"
    ));
    assert!(matches!(
        parse(&["users", "enable", "bob"]).unwrap().command,
        Command::Users(UsersCommand::Enable { user }) if user == "bob"
    ));
    assert!(parse(&["users", "disable"]).is_err());
    let err = parse(&["users", "create", "bob", "--role", "root"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("roles are fixed"), "{err}");

    let Command::Users(UsersCommand::Rm { user, yes }) =
        parse(&["users", "rm", "bob", "-y"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!((user.as_str(), yes), ("bob", true));
    assert!(parse(&["users", "rm"]).is_err());

    let Command::Users(UsersCommand::Passwd {
        user,
        password_stdin,
    }) = parse(&["users", "passwd"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!((user, password_stdin), (None, false));
    let Command::Users(UsersCommand::Passwd {
        user,
        password_stdin,
    }) = parse(&["users", "passwd", "bob", "--password-stdin"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!((user.as_deref(), password_stdin), (Some("bob"), true));
}

#[test]
fn roles() {
    let Command::Roles(RolesCommand::Ls { user }) = parse(&["roles", "ls"]).unwrap().command else {
        panic!()
    };
    assert!(user.is_none());
    let Command::Roles(RolesCommand::Ls { user }) =
        parse(&["roles", "ls", "--user", "bob"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!(user.as_deref(), Some("bob"));
    let Command::Roles(RolesCommand::Bind {
        user,
        role,
        selector,
    }) = parse(&[
        "roles",
        "bind",
        "bob",
        "operator",
        "--selector",
        "site=a",
        "--selector",
        "env=prod",
    ])
    .unwrap()
    .command
    else {
        panic!()
    };
    assert_eq!((user.as_str(), role.as_str()), ("bob", "operator"));
    assert_eq!(
        selector,
        vec![("site".into(), "a".into()), ("env".into(), "prod".into())]
    );
    let err = parse(&["roles", "bind", "bob", "superuser"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("admin, operator, viewer, auditor"), "{err}");
    assert!(parse(&["roles", "bind", "bob", "viewer", "--selector", "x"]).is_err());
    let Command::Roles(RolesCommand::Rm { id }) = parse(&["roles", "rm", "b-1"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!(id, "b-1");
    // Roles are fixed: there is no `roles create`, and the help says so.
    assert!(parse(&["roles", "create", "custom"]).is_err());
    let help = parse(&["roles", "--help"]).unwrap_err().to_string();
    assert!(help.contains("fixed"), "{help}");
}

#[test]
fn audit() {
    let cli = parse(&[
        "audit",
        "ls",
        "--since",
        "1h",
        "--until",
        "2025-01-02T03:04:05Z",
        "--node",
        "kiosk-7.adit",
        "--actor",
        "alice",
        "--action",
        "stream.open",
        "--limit",
        "50",
        "--output",
        "json",
    ])
    .unwrap();
    assert_eq!(cli.output, OutputFormat::Json);
    let Command::Audit(AuditCommand::Ls(a)) = cli.command else {
        panic!()
    };
    assert_eq!(
        a.filter.since,
        Some(TimeArg::Ago(Duration::from_secs(3600)))
    );
    assert_eq!(
        a.filter.until,
        Some(TimeArg::At(UNIX_EPOCH + Duration::from_secs(1_735_787_045)))
    );
    assert_eq!(a.filter.node.as_deref(), Some("kiosk-7"));
    assert_eq!(a.filter.actor.as_deref(), Some("alice"));
    assert_eq!(a.filter.action.as_deref(), Some("stream.open"));
    assert_eq!(a.limit, Some(50));
    let Command::Audit(AuditCommand::Ls(a)) = parse(&["audit", "ls"]).unwrap().command else {
        panic!()
    };
    assert!(a.filter.since.is_none() && a.limit.is_none());
    assert!(parse(&["audit", "ls", "--limit", "0"]).is_err());
    assert!(parse(&["audit", "ls", "--limit", "10001"]).is_err());
    let err = parse(&["audit", "ls", "--since", "yesterday"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("RFC 3339"), "{err}");

    let Command::Audit(AuditCommand::Export(f)) = parse(&["audit", "export", "--since", "7d"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(f.since, Some(TimeArg::Ago(Duration::from_secs(7 * 86_400))));
    // Export has no --limit: it writes everything that matches.
    assert!(parse(&["audit", "export", "--limit", "5"]).is_err());
}

#[test]
fn role_specs() {
    assert_eq!(
        parse_role_spec("operator:site=a,env=prod").unwrap(),
        RoleSpec {
            role: "operator".into(),
            selector: labels(&[("site", "a"), ("env", "prod")]),
        }
    );
    assert_eq!(parse_role_spec("admin").unwrap().selector, labels(&[]));
    assert_eq!(
        parse_role_spec("viewer: site = b ").unwrap().selector,
        labels(&[("site", "b")])
    );
    for bad in [
        "operator:",
        "operator:site",
        "operator:site=a,",
        "operator:site=a,site=b",
        "owner:site=a",
        "",
    ] {
        assert!(parse_role_spec(bad).is_err(), "{bad}");
    }
}

#[test]
fn durations_and_times() {
    assert_eq!(
        parse_time_arg("90m").unwrap(),
        TimeArg::Ago(Duration::from_secs(5400))
    );
    assert_eq!(
        parse_time_arg("1h 30m").unwrap(),
        TimeArg::Ago(Duration::from_secs(5400))
    );
    assert_eq!(
        parse_time_arg("2025-01-02T03:04:05Z").unwrap(),
        TimeArg::At(UNIX_EPOCH + Duration::from_secs(1_735_787_045))
    );
    // Offsets and fractions are honoured.
    assert_eq!(
        parse_time_arg("2025-01-02T05:04:05.250+02:00").unwrap(),
        TimeArg::At(UNIX_EPOCH + Duration::from_millis(1_735_787_045_250))
    );
    for bad in ["", "soon", "2025-01-02", "2025-13-02T00:00:00Z", "-1h"] {
        assert!(parse_time_arg(bad).is_err(), "{bad}");
    }

    // Relative times count back from now; absolute ones are fixed.
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(
        TimeArg::Ago(Duration::from_secs(3600)).to_millis(now),
        1_699_996_400_000
    );
    assert_eq!(
        parse_time_arg("2025-01-02T03:04:05Z")
            .unwrap()
            .to_millis(now),
        1_735_787_045_000
    );
}

#[test]
fn api_query_strings() {
    let q = adit_api::AuditQuery {
        since: Some(1),
        actor: Some("a b&c".into()),
        ..Default::default()
    };
    assert_eq!(q.to_query_string(), "since=1&actor=a%20b%26c");
    assert_eq!(adit_api::AuditQuery::default().to_query_string(), "");
}
